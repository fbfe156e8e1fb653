//! stdin: kactus's own config, or the installer's one-plugin conflist that holds it.

use super::checks;
use kactus::attachment::device_name_for;
use kactus::cni::{code, NetworkConfig, Version};
use kactus::plugin::{self, KactusConfig};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

pub fn run(data: &[u8]) {
    match &KactusConfig::from_bytes(data) {
        Err(e) => {
            checks::own_error(e, &[code::INCOMPATIBLE_VERSION, code::DECODING_FAILURE, code::INVALID_NETWORK_CONFIG]);
            // What the process prints: the error in the config's version if it names one.
            let out = plugin::outcome(data, Err(e.clone()));
            assert!(!out.success);
            checks::cni_error_json(&out.stdout, None);
        }
        Ok(cfg) => {
            valid(cfg);
            if let Some(Value::Object(obj)) =
                serde_json::from_slice::<Value>(data).ok().filter(|v| v.get("plugins").is_none())
            {
                for key in ["namespaceIsolation", "disableCheck", "disableGC"] {
                    assert!(
                        obj.get(key).is_none_or(checks::boolean_setting),
                        "{key}: {:?} read as a boolean",
                        obj[key]
                    );
                }
            }
            // What a config says survives being written out and read back.
            let text = reserialised(cfg).to_string();
            let again = KactusConfig::from_bytes(text.as_bytes())
                .unwrap_or_else(|e| panic!("re-serialised config does not parse: {e}\n{text}"));
            assert_eq!(format!("{again:?}"), format!("{cfg:?}"), "re-serialised config parses differently");
        }
    }
}

/// What a config that parsed guarantees the verbs.
fn valid(cfg: &KactusConfig) {
    Version::supported(&cfg.cni_version).expect("supported version");
    assert!(!cfg.name.is_empty());
    assert!(!cfg.cache_dir.as_os_str().is_empty(), "empty cacheDir");
    assert!(!cfg.conf_dir.as_os_str().is_empty(), "empty confDir");
    for secs in [cfg.api_timeout, cfg.delegate_timeout] {
        assert!(!secs.is_zero() && secs.as_secs() <= 3600, "{secs:?}");
    }
    let mut devices = HashSet::new();
    for net in std::iter::once(&cfg.master).chain(&cfg.delegates) {
        Version::supported(&net.cni_version).expect("supported delegate version");
        assert!(!net.plugins.is_empty());
        for i in 0..net.plugins.len() {
            kactus::cni::conf::validate_plugin_type(net.plugin_type(i)).expect("plugin type checked");
        }
    }
    assert!(!cfg.master.name.is_empty(), "the master is named after the config");
    for net in &cfg.delegates {
        assert!(!net.name.is_empty(), "a config delegate without a name");
        let device = device_name_for(&net.name);
        assert!(checks::kernel_device_name(&device));
        assert!(devices.insert(device), "two config delegates would both be device {:?}", net.name);
    }
}

/// The config written back as JSON, each field in the form the parser documents.
fn reserialised(cfg: &KactusConfig) -> Value {
    let delegate = |net: &NetworkConfig, master: bool| {
        let mut v = net.to_json();
        if master {
            v["masterPlugin"] = true.into();
        }
        v
    };
    let mut delegates = vec![delegate(&cfg.master, true)];
    delegates.extend(cfg.delegates.iter().map(|d| delegate(d, false)));
    let mut out = Map::new();
    out.insert("cniVersion".into(), cfg.cni_version.clone().into());
    out.insert("name".into(), cfg.name.clone().into());
    out.insert("type".into(), "kactus".into());
    out.insert("delegates".into(), delegates.into());
    if let Some(k) = &cfg.kubeconfig {
        out.insert("kubeconfig".into(), k.to_string_lossy().into_owned().into());
    }
    out.insert("cacheDir".into(), cfg.cache_dir.to_string_lossy().into_owned().into());
    out.insert("confDir".into(), cfg.conf_dir.to_string_lossy().into_owned().into());
    if let Some(f) = &cfg.log_file {
        out.insert("logFile".into(), f.path.to_string_lossy().into_owned().into());
        let o = &f.options;
        let max_age = o.max_age.map_or(0, |a| a.as_secs() / 86_400);
        let options = serde_json::json!({"maxSize": o.max_size >> 20, "maxBackups": o.max_backups, "maxAge": max_age, "compress": o.compress});
        out.insert("logOptions".into(), options);
    }
    out.insert("logLevel".into(), cfg.log_level.to_string().to_lowercase().into());
    out.insert("apiTimeoutSeconds".into(), cfg.api_timeout.as_secs_f64().into());
    out.insert("delegateTimeoutSeconds".into(), cfg.delegate_timeout.as_secs_f64().into());
    out.insert("namespaceIsolation".into(), cfg.namespace_isolation.into());
    out.insert("globalNamespaces".into(), cfg.global_namespaces.clone().into());
    out.insert("runtimeConfig".into(), Value::Object(cfg.runtime_config.clone()));
    if let Some(prev) = &cfg.prev_result {
        out.insert("prevResult".into(), prev.clone());
    }
    out.insert("disableCheck".into(), cfg.disable_check.into());
    out.insert("disableGC".into(), cfg.disable_gc.into());
    if let Some(valid) = &cfg.valid_attachments {
        out.insert(plugin::config::VALID_ATTACHMENTS.into(), json!(valid));
    }
    Value::Object(out)
}
