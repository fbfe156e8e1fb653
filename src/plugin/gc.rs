//! GC (CNI 1.1): the runtime names the attachments that are alive (`cni.dev/valid-attachments`);
//! every other container in the kactus cache is stale. Its delegates get a DEL with what
//! their ADD had (best effort, as libcni synthesises for cached attachments) and its cache
//! goes; then each network that speaks 1.1 gets a GC of its own with the attachments still
//! alive on it. Goes on past failures and reports them all, as the spec asks.

use super::cache::{cached_containers, legacy_locks, remove_legacy_lock, ContainerCache};
use super::config::{KactusConfig, ValidAttachment};
use super::del::teardown;
use crate::cni::chain::{self, VALID_ATTACHMENTS};
use crate::cni::error::join_errors;
use crate::cni::{CniEnv, CniError, Command, NetworkConfig, Version};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub fn gc(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    if cfg.disable_gc {
        log::info!("GC: disableGC is set, nothing collected");
        return Ok(());
    }
    // Without the list every container would look stale: refuse rather than delete all.
    let valid = cfg
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config(format!("GC needs \"{VALID_ATTACHMENTS}\" in the config")))?;
    let alive: BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut errors = Vec::new();
    for container in cached_containers(&cfg.cache_dir).into_iter().filter(|c| !alive.contains(c.as_str())) {
        log::info!("GC: container {container} is not among the valid attachments; deleting what kactus made for it");
        errors.extend(delete_stale(cfg, env, &container));
    }
    for container in legacy_locks(&cfg.cache_dir).iter().filter(|c| !alive.contains(c.as_str())) {
        remove_legacy_lock(&cfg.cache_dir, container);
    }
    for (configs, attachments) in networks_alive(cfg, valid).into_values() {
        for net in configs.iter().filter(|net| net.version() >= Version::V1_1_0 && !net.disable_gc) {
            errors.extend(forward_gc(cfg, env, net, &attachments));
        }
    }
    join_errors(errors).map_or(Ok(()), Err)
}

/// DELs every call recorded for a stale container (those whose ADD never completed
/// included), newest first, and drops its cache whatever the delegates said: a failure is
/// reported, and a later GC would only fail the same way. Damaged files are reported as
/// leases that could not be released: the runtime says the container is gone for good.
fn delete_stale(cfg: &KactusConfig, env: &CniEnv, container: &str) -> Vec<CniError> {
    let context = |e: CniError| e.context(format!("GC of container {container}"));
    let cache = match ContainerCache::open(&cfg.cache_dir, container, cfg.lock_wait()) {
        Ok(Some(c)) => c,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![context(e)],
    };
    let record = match cache.read() {
        Ok(r) => r,
        Err(e) => return vec![context(e)],
    };
    for damaged in &record.damaged {
        log::warn!(
            "GC of container {container}: {}; the IPAM lease it may hold could not be released",
            damaged.describe()
        );
    }
    let Some(first) = record.calls.first() else {
        return cache.remove().err().map(context).into_iter().collect();
    };
    let stale_env = CniEnv {
        command: Command::Del,
        container_id: container.to_string(),
        netns: (!first.netns.is_empty()).then(|| PathBuf::from(&first.netns)),
        ifname: first.if_name.clone(),
        args: first.args(),
        path: env.path.clone(),
    };
    let (_, mut errors) = teardown(cfg, &stale_env, &record.calls, &|call| cache.remove_entry(call));
    errors.extend(cache.remove().err());
    errors.into_iter().map(context).collect()
}

/// Each network kactus drives, by name (GC is per network), with every config it has been run
/// with and its live attachments: the master gets the runtime's own list plus its cached ones;
/// every other network the cached attachments of the containers still alive. One name can come
/// with several configs (NADs of one name in two namespaces): each gets a GC, and each with
/// the attachments of the whole name, since a plugin keeps its state by network name (host-local's
/// directory) and would otherwise release the other config's live leases.
fn networks_alive(
    cfg: &KactusConfig,
    valid: &[ValidAttachment],
) -> BTreeMap<String, (Vec<NetworkConfig>, Vec<ValidAttachment>)> {
    let mut nets: BTreeMap<String, (Vec<NetworkConfig>, Vec<ValidAttachment>)> = BTreeMap::new();
    let add_config = |nets: &mut BTreeMap<String, (Vec<NetworkConfig>, Vec<ValidAttachment>)>, net: NetworkConfig| {
        let configs = &mut nets.entry(net.name.clone()).or_default().0;
        if !configs.contains(&net) {
            configs.push(net);
        }
    };
    add_config(&mut nets, cfg.master.clone());
    nets.entry(cfg.master.name.clone()).or_default().1.extend(valid.iter().cloned());
    for d in &cfg.delegates {
        add_config(&mut nets, d.clone());
    }
    for container in cached_containers(&cfg.cache_dir) {
        let Ok(Some(cache)) = ContainerCache::open(&cfg.cache_dir, &container, cfg.lock_wait()) else { continue };
        let Ok(record) = cache.read() else { continue };
        for entry in &record.calls {
            let Ok(net) = entry.network() else { continue };
            let name = net.name.clone();
            add_config(&mut nets, net);
            let list = &mut nets.entry(name).or_default().1;
            let att = ValidAttachment { container_id: container.clone(), ifname: entry.if_name.clone() };
            if !list.contains(&att) {
                list.push(att);
            }
        }
    }
    nets
}

/// GC to every plugin of one network, with the attachments that are still alive.
fn forward_gc(cfg: &KactusConfig, env: &CniEnv, net: &NetworkConfig, alive: &[ValidAttachment]) -> Vec<CniError> {
    let list = serde_json::to_value(alive).unwrap_or(Value::Array(Vec::new()));
    chain::gc(net, &env.path, cfg.delegate_timeout, &list)
}

#[cfg(test)]
mod tests {
    use super::super::cache::{CacheEntry, KactusMeta, Role};
    use super::*;
    use crate::cni::test_plugin::FakePlugin;
    use serde_json::{json, Map};

    fn entry(container: &str, ifname: &str, net: &NetworkConfig, seq: u64) -> CacheEntry {
        CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: container.into(),
            config: CacheEntry::encode_config(net),
            if_name: ifname.into(),
            network_name: net.name.clone(),
            netns: String::new(),
            cni_args: vec![["K8S_POD_NAME".into(), container.into()]],
            capability_args: Map::new(),
            result: Value::Null,
            kactus: KactusMeta {
                seq,
                role: if ifname == "eth0" { Role::Master } else { Role::Attachment },
                network: String::new(),
                key: String::new(),
                is_default: ifname == "eth0",
                gateways: Vec::new(),
                replaced_routes: Vec::new(),
                device: None,
                network_version: String::new(),
            },
        }
    }

    #[test]
    fn stale_containers_are_deleted_and_each_1_1_network_gets_its_live_attachments() {
        let fake = FakePlugin::new("fakenet");
        let cache_dir = fake.dir().join("cache");
        let master = json!({"cniVersion": "1.1.0", "type": "fakenet", "masterPlugin": true});
        let conf = json!({"cniVersion": "1.1.0", "name": "kactus-net", "cacheDir": cache_dir, "delegates": [master],
            "cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]});
        let cfg = KactusConfig::from_bytes(conf.to_string().as_bytes()).unwrap();
        let att =
            NetworkConfig::parse(&json!({"cniVersion": "1.1.0", "name": "green", "type": "fakenet"}), "", "").unwrap();
        let old =
            NetworkConfig::parse(&json!({"cniVersion": "1.0.0", "name": "blue", "type": "fakenet"}), "", "").unwrap();
        for container in ["live", "stale"] {
            let cache = ContainerCache::create(&cache_dir, container, cfg.lock_wait()).unwrap();
            cache.write(&entry(container, "eth0", &cfg.master, 0)).unwrap();
            cache.write(&entry(container, "net9f27410725ab", &att, 1)).unwrap();
            cache.write(&entry(container, "net48d6215903df", &old, 2)).unwrap();
        }
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("GC".into()),
            "CNI_PATH" => Some(fake.path()),
            _ => None,
        })
        .unwrap();
        gc(&cfg, &env).unwrap();

        assert_eq!(cached_containers(&cache_dir), vec!["live"]);
        let calls = fake.calls();
        let dels: Vec<(String, String)> =
            calls.iter().filter(|c| c.command == "DEL").map(|c| (c.container_id.clone(), c.ifname.clone())).collect();
        let stale = |i: &str| ("stale".to_string(), i.to_string());
        assert_eq!(dels, vec![stale("net48d6215903df"), stale("net9f27410725ab"), stale("eth0")], "newest first");
        let gcs: BTreeMap<String, Value> = calls
            .iter()
            .filter(|c| c.command == "GC")
            .map(|c| (c.stdin["name"].as_str().unwrap().to_string(), c.stdin[VALID_ATTACHMENTS].clone()))
            .collect();
        assert_eq!(gcs.len(), 2, "blue is 1.0.0 and gets no GC: {gcs:?}");
        assert_eq!(gcs["kactus-net"], json!([{"containerID": "live", "ifname": "eth0"}]));
        assert_eq!(gcs["green"], json!([{"containerID": "live", "ifname": "net9f27410725ab"}]));
    }

    fn gc_env(fake: &FakePlugin) -> CniEnv {
        CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("GC".into()),
            "CNI_PATH" => Some(fake.path()),
            _ => None,
        })
        .unwrap()
    }

    /// Issue 26: two NADs named n1 in two namespaces, with different configs: both configs
    /// get a GC (the second's leases were never collected), each with the live attachments
    /// of the whole name (a plugin keeps state by network name and must not free the other's).
    #[test]
    fn every_config_of_a_network_name_gets_gc_with_all_of_its_attachments() {
        let fake = FakePlugin::new("fakenet");
        let cache_dir = fake.dir().join("cache");
        let master = json!({"cniVersion": "1.1.0", "type": "fakenet", "masterPlugin": true});
        let conf = json!({"cniVersion": "1.1.0", "name": "kactus-net", "cacheDir": cache_dir, "delegates": [master],
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]});
        let cfg = KactusConfig::from_bytes(conf.to_string().as_bytes()).unwrap();
        let n1 = |subnet: &str| {
            NetworkConfig::parse(
                &json!({"cniVersion": "1.1.0", "name": "n1", "type": "fakenet", "subnet": subnet}),
                "",
                "",
            )
            .unwrap()
        };
        for (container, net) in [("a", n1("10.1.0.0/24")), ("b", n1("10.2.0.0/24"))] {
            let cache = ContainerCache::create(&cache_dir, container, cfg.lock_wait()).unwrap();
            cache.write(&entry(container, "eth0", &cfg.master, 0)).unwrap();
            cache.write(&entry(container, "net1", &net, 1)).unwrap();
        }
        gc(&cfg, &gc_env(&fake)).unwrap();
        let both = json!([{"containerID": "a", "ifname": "net1"}, {"containerID": "b", "ifname": "net1"}]);
        let mut n1_gcs: Vec<(String, Value)> = fake
            .calls()
            .iter()
            .filter(|c| c.command == "GC" && c.stdin["name"] == "n1")
            .map(|c| (c.stdin["subnet"].as_str().unwrap_or_default().to_string(), c.stdin[VALID_ATTACHMENTS].clone()))
            .collect();
        n1_gcs.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(n1_gcs, vec![("10.1.0.0/24".to_string(), both.clone()), ("10.2.0.0/24".to_string(), both)]);
    }

    /// Issue 26: GC deletes only what kactus wrote. A directory in cacheDir that is not a
    /// container's cache (another program's, files kactus never writes, a subdirectory) is
    /// left whole.
    #[test]
    fn gc_leaves_directories_and_files_kactus_did_not_write() {
        let fake = FakePlugin::new("fakenet");
        let cache_dir = fake.dir().join("cache");
        let master = json!({"cniVersion": "1.1.0", "type": "fakenet", "masterPlugin": true});
        let conf = json!({"cniVersion": "1.1.0", "name": "kactus-net", "cacheDir": cache_dir, "delegates": [master],
            "cni.dev/valid-attachments": []});
        let cfg = KactusConfig::from_bytes(conf.to_string().as_bytes()).unwrap();
        let foreign = cache_dir.join("precious");
        std::fs::create_dir_all(foreign.join("sub")).unwrap();
        std::fs::write(foreign.join("data.db"), b"keep me").unwrap();
        std::fs::write(foreign.join("sub").join("x.json"), b"{}").unwrap();
        let stale = ContainerCache::create(&cache_dir, "stale", cfg.lock_wait()).unwrap();
        stale.write(&entry("stale", "eth0", &cfg.master, 0)).unwrap();
        drop(stale);
        std::fs::write(cache_dir.join("stale").join("notes.txt"), b"operator's").unwrap();
        let gone = ContainerCache::create(&cache_dir, "gone", cfg.lock_wait()).unwrap();
        gone.write(&entry("gone", "eth0", &cfg.master, 0)).unwrap();
        drop(gone);

        assert_eq!(cached_containers(&cache_dir), vec!["gone"], "only caches that hold kactus's own records");
        gc(&cfg, &gc_env(&fake)).unwrap();
        assert_eq!(std::fs::read(foreign.join("data.db")).unwrap(), b"keep me");
        assert!(foreign.join("sub").join("x.json").exists());
        assert!(!cache_dir.join("gone").exists(), "a stale cache of kactus's own goes");
        // A container directory someone else wrote into is not taken for a cache at all (its
        // runtime's DEL still finds it by container ID).
        assert!(cache_dir.join("stale").join("notes.txt").exists(), "not kactus's to delete");
        assert!(fake.calls().iter().all(|c| c.container_id != "stale"));
    }

    #[test]
    fn gc_without_the_valid_list_is_refused_and_disable_gc_does_nothing() {
        let fake = FakePlugin::new("fakenet");
        let base = json!({"cniVersion": "1.1.0", "name": "k", "cacheDir": fake.dir().join("cache"),
            "delegates": [{"type": "fakenet", "masterPlugin": true}]});
        let env = CniEnv::from_lookup(|k| (k == "CNI_COMMAND").then(|| "GC".to_string())).unwrap();
        let cfg = KactusConfig::from_bytes(base.to_string().as_bytes()).unwrap();
        let e = gc(&cfg, &env).unwrap_err();
        assert!(e.code == 7 && e.msg.contains(VALID_ATTACHMENTS), "{}", e.msg);
        let mut off = base.clone();
        off["disableGC"] = true.into();
        gc(&KactusConfig::from_bytes(off.to_string().as_bytes()).unwrap(), &env).unwrap();
        assert!(fake.calls().is_empty());
    }
}
