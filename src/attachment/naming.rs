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

#[cfg(test)]
mod tests {
    use super::*;

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
