//! `kactus`: the CNI meta-plugin (run by the container runtime with `CNI_COMMAND` set), and
//! `kactus install`, the installer DaemonSet's entrypoint.

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kactus install", about = "Install kactus on this node: binary, kubeconfig and CNI config")]
struct Install {
    #[command(flatten)]
    args: kactus::install::InstallArgs,
}

fn main() -> ExitCode {
    // The runtime execs the plugin without arguments; only the installer takes any. Nothing
    // is parsed on the plugin's path beyond that check, to keep its start-up minimal.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "install") {
        let install = Install::parse_from(std::iter::once("kactus install".into()).chain(argv));
        return match kactus::install::run(&install.args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kactus install: {e}");
                ExitCode::FAILURE
            }
        };
    }
    one_malloc_arena();
    kactus::plugin::run_from_process().print()
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
