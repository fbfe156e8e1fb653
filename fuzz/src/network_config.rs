//! A network's config (a NAD's `spec.config`, a `confDir` file, a config delegate): a conf
//! or a conflist, with the NAD's name and the kactus config's version as defaults.

use super::checks;
use kactus::cni::{code, NetworkConfig, Version};
use serde_json::{json, Map, Value};

pub fn run(data: &[u8]) {
    // As for a NAD (its name, kactus's version), and as for a config delegate without a name.
    for (name, version) in [("green", "1.0.0"), ("", "")] {
        match NetworkConfig::from_bytes(data, name, version) {
            Err(e) => checks::own_error(
                &e,
                &[code::INCOMPATIBLE_VERSION, code::DECODING_FAILURE, code::INVALID_NETWORK_CONFIG],
            ),
            Ok(net) => {
                valid(&net, name, version);
                if net.is_list {
                    let raw: Value = serde_json::from_slice(data).expect("it parsed");
                    for key in ["disableCheck", "disableGC"] {
                        assert!(
                            raw.get(key).is_none_or(checks::boolean_setting),
                            "{key}: {:?} read as a boolean",
                            raw[key]
                        );
                    }
                }
            }
        }
    }
}

fn valid(net: &NetworkConfig, name: &str, version: &str) {
    Version::supported(&net.cni_version).expect("supported version");
    assert!(name.is_empty() || !net.name.is_empty(), "the NAD's name was not filled in");
    assert!(!net.plugins.is_empty());
    // Written back (the cache holds it so) and read again, it is the same network.
    let again = NetworkConfig::parse(&net.to_json(), name, version)
        .unwrap_or_else(|e| panic!("written back, the config does not parse: {e}\n{}", net.to_json()));
    assert_eq!(&again, net, "written back, the config parses differently");
    // What each plugin of the chain gets on stdin.
    let every_option: Map<String, Value> =
        net.capabilities().into_iter().map(|cap| (cap.clone(), json!({ "asked": cap }))).collect();
    let prev = json!({"cniVersion": net.cni_version});
    // A network that names a meta-plugin anywhere in its chain never runs as a delegate (it
    // would run as root with a config its author wrote); every other one may.
    let meta = (0..net.plugins.len()).any(|i| kactus::cni::conf::META_PLUGINS.contains(&net.plugin_type(i)));
    match net.check_delegable() {
        Ok(()) => assert!(!meta, "a meta-plugin in {} was let through", net.types()),
        Err(e) => {
            checks::own_error(&e, &[code::INVALID_NETWORK_CONFIG]);
            assert!(e.msg.contains("meta-plugin"), "{}", e.msg);
        }
    }
    for i in 0..net.plugins.len() {
        let t = net.plugin_type(i);
        kactus::cni::conf::validate_plugin_type(t).expect("plugin type checked");
        let stdin = net.plugin_stdin(i, &every_option, (i > 0).then_some(&prev));
        assert_eq!(stdin["type"], t);
        assert_eq!(stdin["name"], net.name.as_str());
        assert_eq!(stdin["cniVersion"], net.cni_version.as_str());
        if let Some(rc) = stdin.get("runtimeConfig").and_then(Value::as_object) {
            // Options go only to the plugins that declare them.
            let declared = net.plugins[i].get("capabilities").and_then(Value::as_object);
            for (k, v) in rc.iter().filter(|(k, v)| every_option.get(*k) == Some(v)) {
                assert!(declared.and_then(|d| d.get(k)) == Some(&Value::Bool(true)), "{k}={v} sent undeclared");
            }
        }
    }
}
