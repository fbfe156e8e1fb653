//! Finding the cluster's default network config, the one kactus wraps as its master delegate.
//!
//! Runtimes (containerd, CRI-O, via libcni) load the first file in lexical order whose name
//! ends in `.conf`, `.conflist` or `.json`. Before kactus is installed that file *is* the
//! default network; afterwards kactus's own file sorts first, so the default network is the
//! first *other* file, skipping anything that is itself a kactus config (a leftover from an
//! older install under another name must not be wrapped inside the new one).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::InstallError;

/// File name endings libcni loads as network configs.
pub const CONFIG_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// A default network config as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultNetwork {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its JSON: a single-plugin conf (`type`) or a list (`plugins`).
    pub config: Value,
}

impl DefaultNetwork {
    /// Reads and checks a config file; used for `--master-config`, where a kactus config is
    /// an error rather than something to skip.
    pub fn load(path: &Path) -> Result<Self, InstallError> {
        let config = read_json(path)?;
        if is_kactus_config(&config) {
            return Err(InstallError::InvalidDefaultNetwork {
                path: path.to_path_buf(),
                reason: "it is a kactus config itself; kactus cannot be its own master delegate".into(),
            });
        }
        Self::checked(path, config)
    }

    fn checked(path: &Path, config: Value) -> Result<Self, InstallError> {
        check_cni_config(&config)
            .map_err(|reason| InstallError::InvalidDefaultNetwork { path: path.to_path_buf(), reason })?;
        Ok(DefaultNetwork { path: path.to_path_buf(), config })
    }
}

/// Reads a file as JSON, naming the file in the error.
fn read_json(path: &Path) -> Result<Value, InstallError> {
    let text = fs::read_to_string(path).map_err(|e| InstallError::InvalidDefaultNetwork {
        path: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    serde_json::from_str(&text)
        .map_err(|e| InstallError::InvalidDefaultNetwork { path: path.to_path_buf(), reason: format!("not JSON: {e}") })
}

/// Whether `config` has the shape of a CNI conf (`type`) or conflist (non-empty `plugins`,
/// each with a `type`). The reason says what is missing.
pub fn check_cni_config(config: &Value) -> Result<(), String> {
    let object = config.as_object().ok_or("not a JSON object")?;
    if let Some(plugins) = object.get("plugins") {
        let plugins = plugins.as_array().ok_or("\"plugins\" is not a list")?;
        if plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        for (i, plugin) in plugins.iter().enumerate() {
            if plugin.get("type").and_then(Value::as_str).is_none() {
                return Err(format!("plugins[{i}] has no \"type\""));
            }
        }
        Ok(())
    } else if object.get("type").and_then(Value::as_str).is_some() {
        Ok(())
    } else {
        Err("neither a conf with \"type\" nor a conflist with \"plugins\"".into())
    }
}

/// Whether `config` is a kactus config: a conf of type `kactus`, or a list containing one.
pub fn is_kactus_config(config: &Value) -> bool {
    let is_kactus = |v: &Value| v.get("type").and_then(Value::as_str) == Some("kactus");
    is_kactus(config)
        || config.get("plugins").and_then(Value::as_array).is_some_and(|plugins| plugins.iter().any(is_kactus))
}

/// The config files in `conf_dir` in the order runtimes consider them (lexical by name).
pub fn config_files(conf_dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = fs::read_dir(conf_dir).map_err(|e| InstallError::io("list directory", conf_dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| InstallError::io("list directory", conf_dir, e))?;
        let path = entry.path();
        let has_config_extension =
            path.extension().and_then(|e| e.to_str()).is_some_and(|e| CONFIG_EXTENSIONS.contains(&e));
        // Directories such as kactus.d are never configs; is_file follows symlinks, as the
        // runtimes do.
        if has_config_extension && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The first config in `conf_dir`, in lexical order, that is neither `own_name` nor a kactus
/// config. The first candidate decides: if it is unreadable or not a CNI config, that is an
/// error rather than a reason to pick the next one, because wrapping the wrong network would
/// silently change every new pod's eth0 (a half-written file is retried on the next poll).
pub fn find_default_network(conf_dir: &Path, own_name: &str) -> Result<DefaultNetwork, InstallError> {
    for path in config_files(conf_dir)? {
        if path.file_name().and_then(|n| n.to_str()) == Some(own_name) {
            continue;
        }
        let config = read_json(&path)?;
        if is_kactus_config(&config) {
            log::debug!("skipping {}: a kactus config, not a default network", path.display());
            continue;
        }
        return DefaultNetwork::checked(&path, config);
    }
    Err(InstallError::NoDefaultNetwork { conf_dir: conf_dir.to_path_buf() })
}
