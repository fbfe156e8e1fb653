//! `podagent`: the node daemon that hot-plugs pod networks when pod annotations change.

use clap::Parser;
use kactus::podagent::mount_ns::PluginMountNamespace;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Adds and removes networks in running pods when their annotations change")]
struct Cli {
    /// This node's name (default: $NODE_NAME, from the downward API).
    #[arg(long)]
    node_name: Option<String>,
    /// kubeconfig to use; without it, the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where the node's CNI configs are; the first in lexical order is run.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Where the node's CNI plugin binaries are.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// CNI_PATH given to the plugin (default: the bin dir).
    #[arg(long)]
    cni_path: Option<String>,
    /// kactus's cacheDir, where running pods' sandboxes are found without the runtime.
    #[arg(long, default_value = "/var/lib/cni/kactus")]
    kactus_cache_dir: PathBuf,
    /// How pods' sandboxes are found: from the runtime over CRI, from kactus's cache, or the
    /// runtime when its socket answers and the cache otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    sandbox_lookup: kactus::podagent::locator::SandboxLookup,
    /// The runtime's CRI endpoint, `unix:///run/containerd/containerd.sock` or a bare path
    /// (default: the first that exists of /run/containerd/containerd.sock,
    /// /var/run/crio/crio.sock).
    #[arg(long, value_parser = kactus::podagent::cri::socket_path)]
    cri_socket: Option<PathBuf>,
    /// The mount namespace the node's CNI plugin runs in, so it and its delegates run in the
    /// host's filesystem as under the runtime. "host": /proc/1/ns/mnt (the host's, with
    /// hostPID), or where that cannot be opened, the container runtime's (the process serving
    /// the CRI socket); a path: that namespace file; "none": podagent's own.
    #[arg(long, default_value = "host", value_parser = PluginMountNamespace::parse)]
    plugin_mount_namespace: PluginMountNamespace,
    /// Pods reconciled at once (one pod's hung plugin never holds up the others).
    #[arg(long, default_value_t = 4)]
    concurrent_pods: u16,
    /// Address of /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9648")]
    metrics_addr: SocketAddr,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Compare every pod again this often, changed or not.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// The fast path's unix socket, where kactus asks for what it would read from the
    /// apiserver (its config's `podagentSocket`, e.g. /run/kactus/podagent.sock, as the
    /// DaemonSet passes it); without it, no fast path.
    #[arg(long)]
    fastpath_socket: Option<PathBuf>,
    /// Fast-path requests answered at once; beyond, podagent answers "busy" (kactus then
    /// reads the apiserver itself) rather than queueing.
    #[arg(long, default_value_t = 16)]
    fastpath_max_concurrent: usize,
    /// Bound on one CNI plugin call.
    #[arg(long, default_value_t = 120)]
    plugin_timeout_seconds: u64,
    /// While the MultiNetworkPolicy CRD is not served, look for it again this often (once
    /// it is, policies are enforced without a restart).
    #[arg(long, default_value_t = 30)]
    policy_crd_recheck_seconds: u64,
}

fn main() {
    let cli = Cli::parse();
    let Some(level) = kactus::logging::parse_level(&cli.log_level) else {
        eprintln!("podagent: --log-level {:?} is not a level", cli.log_level);
        std::process::exit(2);
    };
    kactus::logging::init(None, level);
    let Some(node_name) = cli.node_name.or_else(|| std::env::var("NODE_NAME").ok()).filter(|n| !n.is_empty()) else {
        eprintln!("podagent: --node-name or NODE_NAME is required");
        std::process::exit(2);
    };
    let opts = kactus::podagent::Options {
        node_name,
        kubeconfig: cli.kubeconfig,
        cni_path: cli.cni_path.unwrap_or_else(|| cli.cni_bin_dir.to_string_lossy().into_owned()),
        cni_conf_dir: cli.cni_conf_dir,
        cni_bin_dir: cli.cni_bin_dir,
        kactus_cache_dir: cli.kactus_cache_dir,
        sandbox_lookup: cli.sandbox_lookup,
        cri_socket: cli.cri_socket,
        plugin_mount_namespace: cli.plugin_mount_namespace,
        concurrent_pods: cli.concurrent_pods.max(1),
        metrics_addr: cli.metrics_addr,
        resync: Duration::from_secs(cli.resync_seconds.max(1)),
        plugin_timeout: Duration::from_secs(cli.plugin_timeout_seconds.max(1)),
        fastpath_socket: cli.fastpath_socket.filter(|p| !p.as_os_str().is_empty()),
        fastpath_max_concurrent: cli.fastpath_max_concurrent,
        policy_crd_recheck: Duration::from_secs(cli.policy_crd_recheck_seconds.max(1)),
    };
    if let Err(e) = kactus::podagent::run(opts) {
        log::error!("podagent: {e}");
        eprintln!("podagent: {e}");
        std::process::exit(1);
    }
}
