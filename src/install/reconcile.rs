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
use super::files::{install_binary, with_newline, write_if_changed};
use super::kactus_config::{render_kactus_config, render_kactus_conflist, RenderOptions};
use super::kubeconfig::{self, api_server_from_env, read_ca, render_kubeconfig, KUBECONFIG_MODE};
use super::token::TokenKeeper;
use super::{InstallArgs, InstallError};

/// Mode of the generated config: readable by all (runtimes, debugging), no secrets in it.
pub const CONFIG_MODE: u32 = 0o644;
/// Mode of `kactus.d/`.
pub const KACTUS_DIR_MODE: u32 = 0o755;

/// What a pass changed on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The kactus binary was (re)installed.
    pub binary: bool,
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
        self.binary || self.kubeconfig || self.config
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

        let default = match &args.master_config {
            Some(path) => DefaultNetwork::load(path)?,
            None => find_default_network(&args.cni_conf_dir, &args.config_file_name)?,
        };
        let opts = RenderOptions {
            name: args.network_name.clone(),
            kubeconfig: args.kubeconfig_path(),
            cache_dir: args.cache_dir.clone(),
            cni_version: args.cni_version.clone(),
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
        let src = match &args.binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(InstallError::CurrentExe)?,
        };
        let dest = args.cni_bin_dir.join("kactus");
        let before = fingerprint(&src, &dest);
        if before.is_some() && before == self.verified_binary {
            return Ok(false);
        }
        let installed = install_binary(&src, &args.cni_bin_dir)?;
        self.verified_binary = fingerprint(&src, &dest);
        Ok(installed)
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
}

/// One pass with nothing remembered: the full comparison of every file.
pub fn reconcile_once(args: &InstallArgs) -> Result<Changes, InstallError> {
    Reconciler::default().reconcile(args)
}

/// The first config file in lexical order when it is not `own`: the runtime would use it.
fn first_config_if_not(conf_dir: &Path, own: &Path) -> Result<Option<PathBuf>, InstallError> {
    Ok(config_files(conf_dir)?.into_iter().next().filter(|first| first != own))
}
