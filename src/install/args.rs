//! The flags of `kactus install`. Every host path is a flag so that the installer can run
//! against temp dirs in tests and against unusual node layouts (e.g. `/usr/libexec/cni`).

use std::path::PathBuf;
use std::time::Duration;

/// The conventional CNI binary directory, searched by every runtime's `CNI_PATH` default.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// The conventional CNI config directory that containerd and CRI-O read.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Where kubelet mounts the pod's service-account token and CA.
pub const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kactus plugin's cache dir written into the generated config (DESIGN.md section 2).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/kactus";
/// The file the installer writes; `00-` so it sorts first (see `crate::install` docs).
pub const DEFAULT_CONFIG_FILE_NAME: &str = "00-kactus.conflist";
/// The `name` of the generated network config.
pub const DEFAULT_NETWORK_NAME: &str = "kactus-net";
/// Subdirectory of the conf dir holding the plugin's kubeconfig (as Kaloom's kactus did).
pub const KACTUS_SUBDIR: &str = "kactus.d";
/// File name of the plugin's kubeconfig inside [`KACTUS_SUBDIR`].
pub const KUBECONFIG_FILE_NAME: &str = "kactus-kubeconfig.yaml";
/// The node-local IPAM plugin, shipped beside kactus in the image and installed beside it.
pub const NODE_LOCAL_BINARY: &str = "node-local";
/// The service account whose token the plugin uses (manifests/kactus-serviceaccount-and-rbac.yaml).
pub const DEFAULT_PLUGIN_SERVICE_ACCOUNT: &str = "kactus";
/// Where the plugin's service account lives when the installer's pod does not say.
pub const DEFAULT_PLUGIN_NAMESPACE: &str = "kube-system";
/// Lifetime asked for the plugin's token: a day, as Calico asks for its CNI plugin's.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: u64 = 24 * 60 * 60;

/// `kactus install`: put the kactus binary, its kubeconfig and its CNI config on this node,
/// and keep them current.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Host CNI binary directory to copy the kactus binary into.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// Host CNI config directory to write the kactus config (and kactus.d/) into.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,

    /// Binary to install; defaults to the running executable.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// Default network config to wrap as the master delegate; auto-detected when absent
    /// (the first other .conf/.conflist/.json in the conf dir, in lexical order).
    #[arg(long, value_name = "PATH")]
    pub master_config: Option<PathBuf>,

    /// cniVersion of the generated config; defaults to the default network's.
    #[arg(long, value_name = "VERSION")]
    pub cni_version: Option<String>,

    /// File name of the generated config inside the conf dir; must sort first.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONFIG_FILE_NAME)]
    pub config_file_name: String,

    /// `name` of the generated network config.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NETWORK_NAME)]
    pub network_name: String,

    /// `cacheDir` written into the generated config (a path on the host).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,

    /// `podagentSocket` written into the generated config: podagent's fast-path socket (as
    /// manifests/podagent-ds.yaml serves it), asked before the apiserver. On a node where
    /// podagent does not run the socket is absent and kactus reads the apiserver itself at
    /// once; an empty one writes none (the apiserver only).
    #[arg(long, value_name = "PATH", default_value = crate::fastpath::DEFAULT_SOCKET)]
    pub podagent_socket: String,

    /// `logFile` of the plugin (a path on the host; its directory is made 0700 by the plugin);
    /// an empty one writes none, and the plugin logs to the runtime's stderr.
    #[arg(long, value_name = "PATH", default_value = crate::logging::DEFAULT_PLUGIN_LOG_FILE)]
    pub plugin_log_file: PathBuf,

    /// `logLevel` of the plugin: off, error, warn, info (a line per call), debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub plugin_log_level: log::LevelFilter,

    /// `logOptions.maxSize` of the plugin's log: MiB at which it is rotated.
    #[arg(long, value_name = "MIB", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub plugin_log_max_size: u64,

    /// `logOptions.maxBackups` of the plugin's log: rotated files kept (`.1` the newest).
    #[arg(long, value_name = "COUNT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub plugin_log_max_backups: u32,

    /// Directory holding the installer's own service-account `token`, `ca.crt` and
    /// `namespace` (the token is used only to request the plugin's).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SERVICE_ACCOUNT_DIR)]
    pub service_account_dir: PathBuf,

    /// Service account the plugin's token is requested for (TokenRequest API).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PLUGIN_SERVICE_ACCOUNT)]
    pub plugin_service_account: String,

    /// Namespace of that service account; defaults to the installer pod's own.
    #[arg(long, value_name = "NAMESPACE")]
    pub plugin_service_account_namespace: Option<String>,

    /// Lifetime to ask for the plugin's token (at least 600); it is replaced once half of
    /// whatever the apiserver granted has passed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TOKEN_EXPIRATION_SECONDS,
          value_parser = clap::value_parser!(u64).range(600..))]
    pub token_expiration_seconds: u64,

    /// Seconds between checks that the apiserver still accepts the plugin's token (a
    /// `GET /version`; a token revoked early is then replaced).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub token_check_seconds: u64,

    /// Apiserver URL for the kubeconfig; defaults to
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
    #[arg(long, value_name = "URL")]
    pub api_server: Option<String>,

    /// Seconds between checks of the token, the default network config and the binary.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub poll_interval: u64,

    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Install once and exit (for init containers and tests); errors are fatal.
    #[arg(long)]
    pub once: bool,

    /// This node's name (default: $NODE_NAME, from the downward API), written with the
    /// kubeconfig's path to kactus.d/node.json for the node-local IPAM plugin.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

/// `kactus uninstall`: take kactus off this node once no pod needs it.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Host CNI binary directory kactus was installed into.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// Host CNI config directory holding the kactus config and kactus.d/.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,

    /// File name of the kactus config inside the conf dir.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONFIG_FILE_NAME)]
    pub config_file_name: String,

    /// kactus's cache dir, when the config (which names it) is already gone.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,

    /// Seconds between looks while pods still need kactus.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub poll_interval: u64,

    /// Remove kactus even though pods still have attachments (their leases leak).
    #[arg(long)]
    pub force: bool,

    /// Try once and exit: 0 once removed, 1 while pods still need kactus.
    #[arg(long)]
    pub once: bool,

    /// Only say whether kactus is off this node (exit 0) or not (1): the readiness probe.
    #[arg(long)]
    pub check: bool,

    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,
}

impl UninstallArgs {
    /// The kactus config's path.
    pub fn config_path(&self) -> PathBuf {
        self.cni_conf_dir.join(&self.config_file_name)
    }

    /// The poll interval, at least one second.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval.max(1))
    }
}

impl InstallArgs {
    /// The directory the plugin's kubeconfig lives in.
    pub fn kactus_dir(&self) -> PathBuf {
        self.cni_conf_dir.join(KACTUS_SUBDIR)
    }

    /// The plugin's kubeconfig path, as written into the generated config.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kactus_dir().join(KUBECONFIG_FILE_NAME)
    }

    /// The node file of the node-local IPAM plugin (see `crate::ipam::node`).
    pub fn node_file_path(&self) -> PathBuf {
        self.kactus_dir().join(crate::ipam::node::NODE_FILE_NAME)
    }

    /// `--node-name`, else `NODE_NAME`; none means no node file (node-local's native mode
    /// then says it has no node identity).
    pub fn node_name(&self) -> Option<String> {
        self.node_name.clone().or_else(|| std::env::var("NODE_NAME").ok()).filter(|n| !n.is_empty())
    }

    /// The generated config's path.
    pub fn config_path(&self) -> PathBuf {
        self.cni_conf_dir.join(&self.config_file_name)
    }

    /// The poll interval, at least one second so a typo cannot spin the CPU.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval.max(1))
    }

    /// How often the plugin's token is checked with the apiserver, at least every second.
    pub fn token_check_interval(&self) -> Duration {
        Duration::from_secs(self.token_check_seconds.max(1))
    }

    /// The plugin's service account's namespace: the flag, else the installer pod's own (the
    /// manifests keep both in one namespace), else kube-system.
    pub fn plugin_namespace(&self) -> String {
        if let Some(namespace) = &self.plugin_service_account_namespace {
            return namespace.clone();
        }
        std::fs::read_to_string(self.service_account_dir.join("namespace"))
            .ok()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| DEFAULT_PLUGIN_NAMESPACE.to_string())
    }
}
