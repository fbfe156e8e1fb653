//! STATUS (CNI 1.1): can kactus take ADDs? Only if the master network can: its plugins must
//! be installed, and a master that speaks 1.1 is asked. Anything else is code 50.

use super::config::KactusConfig;
use crate::cni::chain;
use crate::cni::exec::find_plugin;
use crate::cni::{code, CniEnv, CniError, Version};

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
    for i in 0..master.plugins.len() {
        find_plugin(master.plugin_type(i), &env.path).map_err(not_available)?;
    }
    if master.version() < Version::V1_1_0 {
        return Ok(());
    }
    chain::status(master, &env.path, cfg.delegate_timeout).map_err(not_available)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::test_plugin::FakePlugin;
    use serde_json::json;

    fn run_status(fake: &FakePlugin, version: &str) -> Result<(), CniError> {
        let conf = json!({"cniVersion": "1.1.0", "name": "k",
            "delegates": [{"cniVersion": version, "type": "fakenet", "masterPlugin": true}]});
        let cfg = KactusConfig::from_bytes(conf.to_string().as_bytes()).unwrap();
        let path = fake.path();
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("STATUS".into()),
            "CNI_PATH" => Some(path.clone()),
            _ => None,
        })
        .unwrap();
        status(&cfg, &env)
    }

    #[test]
    fn a_1_1_master_is_asked_and_its_failure_is_code_50() {
        let fake = FakePlugin::new("fakenet");
        run_status(&fake, "1.1.0").unwrap();
        assert_eq!(fake.calls().iter().filter(|c| c.command == "STATUS").count(), 1);
        fake.fail_with(11, "flannel subnet file missing");
        let e = run_status(&fake, "1.1.0").unwrap_err();
        assert_eq!(e.code, 50);
        assert!(e.msg.contains("not ready") && e.msg.contains("flannel subnet file missing"), "{}", e.msg);
        fake.fail_with(51, "degraded");
        assert_eq!(run_status(&fake, "1.1.0").unwrap_err().code, 51, "the master's own 51 is kept");
    }

    #[test]
    fn an_older_master_is_not_asked() {
        let fake = FakePlugin::new("fakenet");
        fake.fail_with(11, "would fail if asked");
        run_status(&fake, "1.0.0").unwrap();
        assert!(fake.calls().is_empty());
    }
}
