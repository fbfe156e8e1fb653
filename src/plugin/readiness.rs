//! STATUS (CNI 1.1): can kactus take ADDs? Only if the master network can: its plugins must
//! be installed, and a master that speaks 1.1 is asked. Anything else is code 50.

use super::config::KactusConfig;
use crate::cni::exec::{exec_plugin, find_plugin};
use crate::cni::{code, CniArgs, CniEnv, CniError, Command, Invocation, Version};
use serde_json::Map;

pub fn status(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    let master = &cfg.master;
    let not_available = |e: CniError| {
        // A master's own 50/51 is passed on as it said it; anything else means "not available".
        let c = if matches!(e.code, code::PLUGIN_NOT_AVAILABLE | code::PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY) {
            e.code
        } else {
            code::PLUGIN_NOT_AVAILABLE
        };
        CniError::new(c, format!("master network {:?} ({}) is not ready: {}", master.name, master.types(), e.msg))
    };
    for plugin in master.plugins.iter() {
        let t = plugin.get("type").and_then(|v| v.as_str()).unwrap_or_default();
        find_plugin(t, &env.path).map_err(not_available)?;
    }
    if master.version() < Version::V1_1_0 {
        return Ok(());
    }
    let args = CniArgs::default();
    let inv = Invocation {
        command: Command::Status,
        container_id: "",
        netns: None,
        ifname: "",
        args: &args,
        cni_path: &env.path,
        timeout: cfg.delegate_timeout,
    };
    for i in 0..master.plugins.len() {
        let t = master.plugins[i].get("type").and_then(|v| v.as_str()).unwrap_or_default();
        let stdin = master.plugin_stdin(i, &Map::new(), None).to_string();
        exec_plugin(&inv, t, stdin.as_bytes()).map_err(not_available)?;
    }
    Ok(())
}
