//! The long-running installer loop and its SIGTERM behaviour.
//!
//! Polling, not inotify: the inputs are a handful of small files (token, CA, the default
//! network's config) checked every few seconds, the projected token changes by a symlink swap
//! in a kubelet-managed directory that inotify follows poorly, and a few seconds' delay in
//! picking up a re-rendered default network is harmless. Polling needs no extra dependency
//! and cannot miss an event. (The plugin's token is the installer's to renew: see
//! [`super::token`].)
//!
//! On SIGTERM the installer exits and leaves the binary, kubeconfig and config in place.
//! Removing the config would not uninstall kactus cleanly: the runtime would fall back to the
//! next config (the plain default network) for pods created meanwhile, silently without
//! their secondary networks, and would send DEL for existing pods to a plugin that never
//! set up their attachments, leaking their IPAM leases; with no other config the node would
//! go NetworkNotReady. The DaemonSet pod is replaced on every rolling update, so it must not
//! take the node's networking with it. Uninstalling is a deliberate step: [`super::uninstall`].
//!
//! A handler is installed because the installer is PID 1 in its container, and the kernel
//! does not deliver a signal whose action is the default to PID 1 of a PID namespace: without
//! one, every pod deletion would wait out the whole grace period and end in SIGKILL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::reconcile::{Changes, Reconciler};
use super::{InstallArgs, InstallError};

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn request_termination(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Whether SIGTERM or SIGINT arrived (after [`install_signal_handlers`]).
pub(super) fn terminated() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}

pub(super) fn install_signal_handlers() -> Result<(), InstallError> {
    let action = SigAction::new(SigHandler::Handler(request_termination), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(InstallError::Signal)?;
    }
    Ok(())
}

/// Sends log records to stderr (what `kubectl logs` shows); a logger already set by the
/// caller wins.
pub(super) fn init_logging(level: log::LevelFilter) {
    let _already_set = simplelog::WriteLogger::init(level, simplelog::Config::default(), std::io::stderr());
}

/// `kactus install`: reconcile now, then every poll interval until SIGTERM (or once with
/// `--once`, where any error is returned).
pub fn run(args: &InstallArgs) -> Result<(), InstallError> {
    init_logging(args.log_level);
    let mut reconciler = Reconciler::default();
    if args.once {
        let changes = reconciler.reconcile(args)?;
        report(args, &changes);
        return Ok(());
    }
    install_signal_handlers()?;
    log::info!(
        "kactus install: bin dir {}, conf dir {}, polling every {}s",
        args.cni_bin_dir.display(),
        args.cni_conf_dir.display(),
        args.poll_interval().as_secs()
    );
    let mut last_error: Option<String> = None;
    while !TERMINATE.load(Ordering::SeqCst) {
        match reconciler.reconcile(args) {
            Ok(changes) => {
                if last_error.take().is_some() {
                    log::info!("recovered: kactus is configured on this node");
                }
                report(args, &changes);
            }
            Err(e) => {
                // Log each distinct problem once, not every poll.
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    log::warn!("{message}; retrying every {}s", args.poll_interval().as_secs());
                    last_error = Some(message);
                }
            }
        }
        sleep_unless_terminated(args.poll_interval());
    }
    log::info!(
        "terminating: leaving {} and {} in place so the node keeps working",
        args.cni_bin_dir.join("kactus").display(),
        args.config_path().display()
    );
    Ok(())
}

fn report(args: &InstallArgs, changes: &Changes) {
    if changes.binary {
        log::info!("installed {}", args.cni_bin_dir.join("kactus").display());
    }
    if changes.node_local {
        log::info!("installed {}", args.cni_bin_dir.join(super::NODE_LOCAL_BINARY).display());
    }
    if changes.node_file {
        log::info!("wrote {}", args.node_file_path().display());
    }
    if changes.kubeconfig {
        log::info!("wrote {}", args.kubeconfig_path().display());
    }
    if changes.config {
        log::info!("wrote {} wrapping {}", args.config_path().display(), changes.default_network.display());
    }
    if let Some(first) = &changes.shadowed_by {
        log::warn!(
            "{} sorts before {}: the runtime uses it and kactus is bypassed \
             (rename it, or pass --config-file-name with an earlier name)",
            first.display(),
            args.config_path().display()
        );
    }
}

pub(super) fn sleep_unless_terminated(interval: Duration) {
    let deadline = Instant::now() + interval;
    while !TERMINATE.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(200)));
    }
}
