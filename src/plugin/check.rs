//! CHECK: every cached delegate call checked with its cached result, in ADD order.

use super::cache::{CacheEntry, ContainerCache};
use super::config::KactusConfig;
use crate::attachment::DynamicTarget;
use crate::cni::env::K8S_POD_NETWORK;
use crate::cni::{chain, code, CniEnv, CniError, Command, Invocation, Version};

pub fn check(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    if Version::parse(&cfg.cni_version)? < Version::V0_4_0 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config cniVersion {} does not allow CHECK (0.4.0 or later)", cfg.cni_version),
        ));
    }
    if cfg.disable_check {
        log::info!("CHECK {}: disableCheck is set, nothing checked", env.container_id);
        return Ok(());
    }
    let unknown =
        || CniError::new(code::UNKNOWN_CONTAINER, format!("nothing was added for container {}", env.container_id));
    let cache = ContainerCache::open(&cfg.cache_dir, &env.container_id, cfg.lock_wait())?.ok_or_else(unknown)?;
    let record = cache.read()?;
    if let Some(damaged) = record.damaged.first() {
        return Err(CniError::new(code::IO_FAILURE, format!("cannot check: {}", damaged.describe())));
    }
    let entries: Vec<CacheEntry> = match env.args.get(K8S_POD_NETWORK) {
        Some(name) => {
            let pod_namespace = env.args.pod().map(|p| p.namespace).unwrap_or_else(|| "default".into());
            record.find_dynamic(&DynamicTarget::parse(&pod_namespace, name)).into_iter().cloned().collect()
        }
        None => record.calls,
    };
    if entries.is_empty() {
        return Err(unknown());
    }
    if let Some(half) = entries.iter().find(|e| !e.is_complete()) {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("the ADD of {} ({}) never completed", half.if_name, half.network_name),
        ));
    }
    for entry in &entries {
        let net = entry.network()?;
        let args = entry.args();
        let inv = Invocation {
            command: Command::Check,
            container_id: &env.container_id,
            netns: env.netns.as_deref(),
            ifname: &entry.if_name,
            args: &args,
            cni_path: &env.path,
            timeout: cfg.delegate_timeout,
        };
        chain::check(&net, &inv, &entry.capability_args, &entry.result)
            .map_err(|e| e.context(format!("check {} ({})", entry.if_name, entry.network_name)))?;
    }
    Ok(())
}
