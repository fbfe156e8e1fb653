//! `kactus install`, the DaemonSet installer: puts kactus on a node and keeps it current.
//!
//! Each pass ([`reconcile_once`], or [`Reconciler`] in the loop) does, in this order:
//! 1. copies the running binary (or `--binary`) to `<cni-bin-dir>/kactus` atomically, and the
//!    `node-local` IPAM plugin beside it when the image has one;
//! 2. writes `<conf-dir>/kactus.d/kactus-kubeconfig.yaml` (0600) with the plugin's own token
//!    from the TokenRequest API ([`token`]: not bound to this pod, replaced well before it
//!    expires) and the pod's CA, and, given the node's name, `kactus.d/node.json` for
//!    node-local;
//! 3. writes `<conf-dir>/00-kactus.conflist`, the first config in lexical order, wrapping the
//!    default network (auto-detected, or `--master-config`) as the `masterPlugin` delegate.
//!
//! [`run()`] repeats that every few seconds until SIGTERM, then leaves everything in place;
//! [`uninstall()`] takes it all off the node again once no pod needs it.
//! Why a conflist and capabilities: see [`kactus_config`]. Why polling and why nothing is
//! removed on SIGTERM: see [`mod@run`].

mod args;
pub mod default_network;
mod error;
pub mod files;
pub mod kactus_config;
pub mod kubeconfig;
pub mod reconcile;
pub mod run;
pub mod token;
pub mod uninstall;

pub use args::*;
pub use default_network::{find_default_network, DefaultNetwork};
pub use error::InstallError;
pub use files::{install_binary, install_binary_as, write_atomic, write_if_changed};
pub use kactus_config::{render_kactus_config, render_kactus_conflist, PluginLog, RenderOptions};
pub use kubeconfig::{api_server_url, read_ca, render_kubeconfig};
pub use reconcile::{reconcile_once, Changes, Reconciler};
pub use run::run;
pub use uninstall::{uninstall, uninstall_once};
