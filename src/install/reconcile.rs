//! One pass of the installer: make the node's files match what they should be.
//!
//! The order matters: the binary and the kubeconfig go in place before the config, because
//! the config is what makes the runtime start calling kactus. Each step compares before it
//! writes, so a pass over an up-to-date node writes nothing (no mtime changes, nothing for
//! the runtime's own config watcher to react to).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::default_network::{config_files, find_default_network, DefaultNetwork};
use super::files::{install_binary_as, with_newline, write_atomic, write_if_changed};
use super::kactus_config::{render_kactus_config, render_kactus_conflist, PluginLog, RenderOptions};
use super::kubeconfig::{self, api_server_from_env, read_ca, render_kubeconfig, KUBECONFIG_MODE};
use super::token::TokenKeeper;
use super::{InstallArgs, InstallError, NODE_LOCAL_BINARY};
use crate::ipam::node::NodeFile;

/// Mode of the generated config: readable by all (runtimes, debugging), no secrets in it.
pub const CONFIG_MODE: u32 = 0o644;
/// Mode of `kactus.d/`.
pub const KACTUS_DIR_MODE: u32 = 0o755;

/// What a pass changed on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The kactus binary was (re)installed.
    pub binary: bool,
    /// The node-local IPAM plugin was (re)installed beside it.
    pub node_local: bool,
    /// node-local's node file was (re)written.
    pub node_file: bool,
    /// The kubeconfig was (re)written.
    pub kubeconfig: bool,
    /// The kactus config was (re)written.
    pub config: bool,
    /// The default network that is wrapped.
    pub default_network: PathBuf,
    /// A config that sorts before kactus's own, so the runtime uses it instead of kactus.
    pub shadowed_by: Option<PathBuf>,
}

impl Changes {
    /// Whether anything was written.
    pub fn any(&self) -> bool {
        self.binary || self.node_local || self.node_file || self.kubeconfig || self.config
    }
}

/// Identity of the source and installed binary as last verified, so the long-running loop
/// does not re-read megabytes every few seconds when nothing was touched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BinaryFingerprint {
    src: (u64, Option<SystemTime>),
    dest: (u64, Option<SystemTime>),
}

fn fingerprint(src: &Path, dest: &Path) -> Option<BinaryFingerprint> {
    let stat = |p: &Path| fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()));
    Some(BinaryFingerprint { src: stat(src)?, dest: stat(dest)? })
}

/// Runs passes, remembering what the last one verified and the plugin's token.
#[derive(Debug, Default)]
pub struct Reconciler {
    verified_binary: Option<BinaryFingerprint>,
    verified_node_local: Option<BinaryFingerprint>,
    /// Whether this process wrote the node file yet (see [`Reconciler::install_node_file`]).
    node_file_written: bool,
    token: TokenKeeper,
}

impl Reconciler {
    /// One pass; see the module docs for the order.
    pub fn reconcile(&mut self, args: &InstallArgs) -> Result<Changes, InstallError> {
        let mut changes = Changes {
            binary: self.install_binary(args)?,
            kubeconfig: self.install_kubeconfig(args)?,
            ..Changes::default()
        };
        changes.node_local = self.install_node_local(args)?;
        changes.node_file = self.install_node_file(args)?;

        let default = match &args.master_config {
            Some(path) => DefaultNetwork::load(path)?,
            None => find_default_network(&args.cni_conf_dir, &args.config_file_name)?,
        };
        let opts = RenderOptions {
            name: args.network_name.clone(),
            kubeconfig: args.kubeconfig_path(),
            cache_dir: args.cache_dir.clone(),
            cni_version: args.cni_version.clone(),
            podagent_socket: Some(args.podagent_socket.clone()).filter(|s| !s.is_empty()).map(Into::into),
            log: PluginLog {
                file: Some(args.plugin_log_file.clone()).filter(|f| !f.as_os_str().is_empty()),
                level: args.plugin_log_level,
                max_size_mib: args.plugin_log_max_size,
                max_backups: args.plugin_log_max_backups,
            },
        };
        let conflist = render_kactus_conflist(&render_kactus_config(&default, &opts)?);
        let text = serde_json::to_string_pretty(&conflist)
            .map_err(|e| InstallError::io("render", args.config_path(), std::io::Error::other(e)))?;
        changes.config = write_if_changed(&args.config_path(), &with_newline(text), CONFIG_MODE)?;
        changes.default_network = default.path;
        changes.shadowed_by = first_config_if_not(&args.cni_conf_dir, &args.config_path())?;
        Ok(changes)
    }

    fn install_binary(&mut self, args: &InstallArgs) -> Result<bool, InstallError> {
        install_if_changed(&mut self.verified_binary, &source_binary(args)?, &args.cni_bin_dir, "kactus")
    }

    /// Copies node-local, which the image ships beside kactus, beside it on the node; an
    /// image (or `--binary`) without it installs kactus alone.
    fn install_node_local(&mut self, args: &InstallArgs) -> Result<bool, InstallError> {
        let src = source_binary(args)?.with_file_name(NODE_LOCAL_BINARY);
        if !src.is_file() {
            return Ok(false);
        }
        install_if_changed(&mut self.verified_node_local, &src, &args.cni_bin_dir, NODE_LOCAL_BINARY)
    }

    /// Writes the plugin's kubeconfig: the apiserver, the pod's CA and the plugin's token.
    fn install_kubeconfig(&mut self, args: &InstallArgs) -> Result<bool, InstallError> {
        let ca_pem = read_ca(&args.service_account_dir)?;
        let server = match &args.api_server {
            Some(url) => url.clone(),
            None => api_server_from_env()?,
        };
        let path = args.kubeconfig_path();
        let on_disk = kubeconfig::token_in(&path);
        let token = self.token.token(args, &server, on_disk.as_deref(), &path)?;
        let credentials = kubeconfig::ServiceAccountCredentials { token: token.token, ca_pem };
        let text = render_kubeconfig(&server, &credentials, &path)?;
        let dir = args.kactus_dir();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| InstallError::io("create directory", &dir, e))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(KACTUS_DIR_MODE))
                .map_err(|e| InstallError::io("chmod", &dir, e))?;
        }
        write_if_changed(&path, &with_newline(text), KUBECONFIG_MODE)
    }

    /// Writes `kactus.d/node.json` (this node's name and the kubeconfig) for node-local. The
    /// first pass of an installer process writes it anew whatever is there: a new file is
    /// how node-local learns that a new installer pod started (as one does after the Node
    /// was deleted and registered again) and checks its slices with the apiserver.
    fn install_node_file(&mut self, args: &InstallArgs) -> Result<bool, InstallError> {
        let Some(node_name) = args.node_name() else { return Ok(false) };
        let file = NodeFile { node_name, kubeconfig: args.kubeconfig_path() };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| InstallError::io("render", args.node_file_path(), std::io::Error::other(e)))?;
        let path = args.node_file_path();
        if self.node_file_written {
            return write_if_changed(&path, &with_newline(text), CONFIG_MODE);
        }
        write_atomic(&path, &with_newline(text), CONFIG_MODE)?;
        self.node_file_written = true;
        Ok(true)
    }
}

/// The kactus binary to install: `--binary`, else the running one.
fn source_binary(args: &InstallArgs) -> Result<PathBuf, InstallError> {
    match &args.binary {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe().map_err(InstallError::CurrentExe),
    }
}

/// Installs `src` as `<dir>/<name>` unless it is what the last pass verified.
fn install_if_changed(
    verified: &mut Option<BinaryFingerprint>,
    src: &Path,
    dir: &Path,
    name: &str,
) -> Result<bool, InstallError> {
    let dest = dir.join(name);
    let before = fingerprint(src, &dest);
    if before.is_some() && before == *verified {
        return Ok(false);
    }
    let installed = install_binary_as(src, dir, name)?;
    *verified = fingerprint(src, &dest);
    Ok(installed)
}

/// One pass with nothing remembered: the full comparison of every file.
pub fn reconcile_once(args: &InstallArgs) -> Result<Changes, InstallError> {
    Reconciler::default().reconcile(args)
}

/// The first config file in lexical order when it is not `own`: the runtime would use it.
fn first_config_if_not(conf_dir: &Path, own: &Path) -> Result<Option<PathBuf>, InstallError> {
    Ok(config_files(conf_dir)?.into_iter().next().filter(|first| first != own))
}
