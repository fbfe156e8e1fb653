//! The `CNI_*` environment and `CNI_ARGS`. The input is `KEY=VALUE` fields separated by NUL,
//! as a process environment holds them (no value can contain NUL).

use super::checks;
use kactus::cni::env::{K8S_POD_INFRA_CONTAINER_ID, K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID};
use kactus::cni::{code, CniArgs, CniEnv, Command};
use std::collections::HashMap;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars: HashMap<&str, &str> = text.split('\0').filter_map(|f| f.split_once('=')).collect();
    match CniEnv::from_lookup(|k| vars.get(k).map(|v| v.to_string())) {
        Err(e) => checks::own_error(&e, &[code::INVALID_ENVIRONMENT]),
        Ok(env) => valid(&env),
    }
    if let Some(args) = vars.get("CNI_ARGS") {
        match CniArgs::parse(args) {
            Err(e) => checks::own_error(&e, &[code::INVALID_ENVIRONMENT]),
            Ok(args) => valid_args(&args),
        }
    }
}

/// What the verbs may rely on once the environment is accepted.
fn valid(env: &CniEnv) {
    assert_eq!(Command::parse(env.command.as_str()).ok(), Some(env.command));
    if matches!(env.command, Command::Add | Command::Del | Command::Check) {
        // The container ID names files in the cache directory.
        let id = &env.container_id;
        assert!(!id.is_empty() && !id.starts_with('.'), "{id:?}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')), "{id:?}");
        assert!(checks::kernel_device_name(&env.ifname), "CNI_IFNAME {:?} accepted", env.ifname);
        assert!(!env.path.is_empty());
    }
    if matches!(env.command, Command::Add | Command::Check) {
        assert!(env.netns.is_some());
    }
    valid_args(&env.args);
}

fn valid_args(args: &CniArgs) {
    for (k, v) in &args.0 {
        assert!(!k.is_empty() && !k.contains(['=', ';']) && !v.contains(';'), "{k:?}={v:?}");
    }
    // Rendered for a delegate and read back, the list is the same.
    assert_eq!(CniArgs::parse(&args.render()).as_ref(), Ok(args));
    let delegate = args.for_delegate();
    assert_eq!(delegate.0.first().map(|(k, v)| (k.as_str(), v.as_str())), Some(("IgnoreUnknown", "1")));
    let known = ["IgnoreUnknown", K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID];
    assert!(delegate.0.iter().all(|(k, _)| known.contains(&k.as_str())), "{delegate:?}");
    assert_eq!(CniArgs::parse(&delegate.render()).as_ref(), Ok(&delegate));
    if let Some(pod) = args.pod() {
        assert!(!pod.name.is_empty() && !pod.namespace.is_empty(), "{pod:?}");
    }
}
