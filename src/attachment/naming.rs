//! Stable device names: `net` + the first 12 hex digits of md5(attachment key).
//!
//! The name must be derivable from the network alone (not from its position in a list) so a
//! network added or removed while the pod runs always maps to the same device.

use md5::{Digest, Md5};

/// Linux's IFNAMSIZ minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

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

/// The kernel's rules for a device name (`dev_valid_name`): 1-15 bytes, not `.`/`..`,
/// no `/`, `:` or white space; and no `%` (the kernel takes it as a template and names the
/// device something else) or NUL (netlink's name would end there).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!("interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"));
    }
    if name == "." || name == ".." || name.chars().any(|c| matches!(c, '/' | ':' | '%' | '\0') || c.is_whitespace()) {
        return Err(format!("interface name {name:?} is not a valid Linux device name"));
    }
    Ok(())
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
        assert_eq!(device_name_for("green").len(), MAX_IFNAME_LEN);
    }

    #[test]
    fn kernel_name_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("net9f27410725ab").is_ok());
        for bad in ["", "a/b", "a b", "toolongname12345", "..", "eth0:1", "net%d", "a\0b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
