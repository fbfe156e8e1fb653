//! Stable device names: `net` + the first 12 hex digits of md5(attachment key).
//!
//! The name must be derivable from the network alone (not from its position in a list) so a
//! network added or removed while the pod runs always maps to the same device.

use md5::{Digest, Md5};

/// `green` -> `net9f27410725ab`, exactly as Kaloom's kactus names them.
pub fn device_name_for(key: &str) -> String {
    let digest = Md5::digest(key.as_bytes());
    format!("net{}", &hex::encode(digest)[..12])
}

/// The key hashed for a device name: the bare name for a network in the pod's own namespace,
/// `namespace/name` otherwise, with `#k` for the k-th repeat (k >= 1) of the same network.
pub fn attachment_key(pod_namespace: &str, namespace: &str, name: &str, repeat: usize) -> String {
    let base = if namespace == pod_namespace { name.to_string() } else { format!("{namespace}/{name}") };
    if repeat == 0 {
        base
    } else {
        format!("{base}#{repeat}")
    }
}

/// Longest object name (a NAD's, a pod's) and namespace name Kubernetes accepts.
pub const MAX_NAME: usize = 253;
pub const MAX_NAMESPACE: usize = 63;

/// That `key` is one [`attachment_key`] makes from valid names (`name`, `namespace/name`,
/// either with `#k`), and so safe to hand on as `K8S_POD_NETWORK`: a name from anywhere
/// else (a tenant writes its pod's `network-status` too) could add `CNI_ARGS` items.
pub fn check_attachment_key(key: &str) -> Result<(), String> {
    let base = match key.rsplit_once('#') {
        Some((base, repeat)) if !repeat.is_empty() && repeat.bytes().all(|b| b.is_ascii_digit()) => base,
        Some(_) => return Err(format!("network {key:?}: a repeat is #<number>")),
        None => key,
    };
    match base.split_once('/') {
        Some((namespace, name)) => {
            super::selection::check_dns1123("namespace", namespace, MAX_NAMESPACE)?;
            super::selection::check_dns1123("name", name, MAX_NAME)
        }
        None => super::selection::check_dns1123("name", base, MAX_NAME),
    }
    .map_err(|e| format!("network {key:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_names_with_a_namespace_and_a_repeat_at_most() {
        for key in ["green", "mep/mp1", "green#1", "mep/mp1#12", "a.b-c/d.e"] {
            assert_eq!(check_attachment_key(key), Ok(()), "{key}");
        }
        for key in ["a/b;X=1", "a/b/c", "green#", "green#x", "green#1#2", "Green", "", "/x", "x/", "a;b", "a=b", "a b"]
        {
            assert!(check_attachment_key(key).is_err(), "{key:?} passed");
        }
        assert!(check_attachment_key(&"a".repeat(254)).is_err());
        assert!(check_attachment_key(&format!("{}/x", "a".repeat(64))).is_err());
    }

    #[test]
    fn seed_names() {
        assert_eq!(device_name_for("green"), "net9f27410725ab");
        assert_eq!(device_name_for("blue"), "net48d6215903df");
        assert_eq!(device_name_for("data"), "net8d777f385d3d");
        assert_eq!(device_name_for("red"), "netbda9643ac660");
    }

    #[test]
    fn keys_for_other_namespaces_and_repeats() {
        assert_eq!(attachment_key("default", "default", "green", 0), "green");
        assert_eq!(attachment_key("default", "mep", "mp1", 0), "mep/mp1");
        assert_eq!(attachment_key("default", "default", "green", 1), "green#1");
        assert_eq!(device_name_for("mep/mp1"), "netc890d403fb27");
        assert_eq!(device_name_for("green#1"), "net898f8541f0ab");
        assert_ne!(device_name_for("mep/mp1"), device_name_for("mp1"));
        assert_eq!(device_name_for("green").len(), crate::cni::ifname::MAX_IFNAME_LEN);
    }
}
