//! The kernel's rules for a network device name, in one place for every name kactus takes:
//! `CNI_IFNAME`, the NPWG `interface` and `name@ifname` forms, and `K8S_POD_NETWORK`.
//!
//! A name the kernel would not take literally must be refused before any delegate runs: a
//! delegate handed one fails halfway (or, for `%d`, makes a device under another name) and
//! leaves what it made behind.

/// Linux's `IFNAMSIZ` minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// `dev_valid_name` (1-15 bytes, not `.` or `..`, no `/`, `:`, white space or NUL), and no
/// `%`: the kernel reads a name with `%` as a template (`eth%d` becomes `eth0`, `eth1`, ...)
/// and never makes a device by that name.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!("interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not a valid Linux device name"));
    }
    if let Some(c) = name.chars().find(|&c| matches!(c, '/' | ':' | '%' | '\0') || c.is_whitespace()) {
        return Err(format!("interface name {name:?} is not a valid Linux device name (it has {c:?})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_name_rules() {
        for good in ["eth0", "net9f27410725ab", "a", "eth-0.1_x"] {
            assert!(validate_ifname(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a/b", "a b", "a\tb", "toolongname12345", ".", "..", "eth0:1", "eth%d", "%", "a\0b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
