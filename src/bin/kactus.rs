//! `kactus`: the CNI meta-plugin (run by the container runtime with `CNI_COMMAND` set),
//! `kactus install`, the installer DaemonSet's entrypoint, and `kactus uninstall`, which takes
//! kactus off a node again.

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kactus install", about = "Install kactus on this node: binary, kubeconfig and CNI config")]
struct Install {
    #[command(flatten)]
    args: kactus::install::InstallArgs,
}

#[derive(Parser)]
#[command(
    name = "kactus uninstall",
    about = "Take kactus off this node once no pod needs it: its CNI config, credentials, binary and cache"
)]
struct Uninstall {
    #[command(flatten)]
    args: kactus::install::UninstallArgs,
}

/// What the reference plugins print when run without `CNI_COMMAND`, plus kactus's own modes.
fn about() -> String {
    format!(
        "CNI kactus plugin version {version}\n\
         CNI protocol versions supported: {versions}\n\
         \n\
         kactus is a CNI meta-plugin: the container runtime runs it with CNI_COMMAND set and the\n\
         network config on stdin; it runs the cluster's own plugin for eth0 and one delegate per\n\
         network the pod's annotation asks for.\n\
         \n\
         Usage:\n  \
           CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC CNI_CONTAINERID=... kactus < config\n  \
           kactus install [FLAGS]     put kactus on this node and keep it current (the DaemonSet's entrypoint)\n  \
           kactus uninstall [FLAGS]   take it off again once no pod needs it (see README, \"Uninstall\")\n  \
           kactus install --help | kactus uninstall --help\n",
        version = env!("CARGO_PKG_VERSION"),
        versions = kactus::cni::version::SUPPORTED.join(", "),
    )
}

fn main() -> ExitCode {
    // The runtime execs the plugin without arguments and with CNI_COMMAND; only the other
    // modes take arguments. Nothing is parsed on the plugin's path beyond these checks, to
    // keep its start-up minimal.
    let mut argv = std::env::args_os();
    let first = argv.nth(1);
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("install") => {
            let install = Install::parse_from(std::iter::once("kactus install".into()).chain(argv));
            return exit(kactus::install::run(&install.args), "kactus install");
        }
        Some("uninstall") => {
            let uninstall = Uninstall::parse_from(std::iter::once("kactus uninstall".into()).chain(argv));
            return exit(kactus::install::uninstall(&uninstall.args), "kactus uninstall");
        }
        Some("-h" | "--help" | "help" | "-V" | "--version" | "version") => {
            eprint!("{}", about());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // From a terminal (no CNI_COMMAND) say what this is, as the reference plugins do, instead
    // of waiting for a config on stdin.
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        eprint!("{}", about());
        return match first {
            None => ExitCode::SUCCESS,
            Some(arg) => unknown_argument(arg),
        };
    }
    one_malloc_arena();
    kactus::plugin::run_from_process().print()
}

fn unknown_argument(arg: OsString) -> ExitCode {
    eprintln!("\nkactus: unknown argument {arg:?}");
    ExitCode::from(2)
}

fn exit<E: std::fmt::Display>(result: Result<(), E>, mode: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The plugin lives for milliseconds but starts a dozen short threads (NAD fetches, events,
/// fsyncs, delegate I/O); glibc would give each its own malloc arena (a fresh mapping to fault
/// in). One arena is plenty for this little allocation and keeps that off the pod's start-up.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
