//! CNI spec versions: which ones kactus speaks and how they compare.

use super::error::{code, CniError};

/// Every version kactus accepts from a runtime and from delegates, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version; what kactus answers when asked without a version.
pub const LATEST: &str = "1.1.0";

/// A parsed `major.minor.patch`, ordered so that feature gates read naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_2_0: Version = Version(0, 2, 0);
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parses a version string; an empty one means 0.1.0, as the spec says for old configs.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        if s.is_empty() {
            return Ok(Version(0, 1, 0));
        }
        let parts: Vec<&str> = s.split('.').collect();
        let num = |p: &str| p.parse::<u32>().ok();
        match parts.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(a), Some(b), Some(c)) => Ok(Version(a, b, c)),
                _ => Err(bad_version(s)),
            },
            _ => Err(bad_version(s)),
        }
    }

    /// Parses and insists the version is one kactus speaks (error code 1 otherwise).
    pub fn supported(s: &str) -> Result<Version, CniError> {
        let v = Version::parse(s)?;
        if SUPPORTED.contains(&s) || s.is_empty() {
            Ok(v)
        } else {
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {s:?} is not supported; supported versions: {}", SUPPORTED.join(", ")),
            ))
        }
    }
}

/// CNI 1.1 `cniVersions`: the highest listed version kactus speaks, as libcni picks it; a
/// list with none kactus speaks is code 1. `None` when the config has no such list.
pub fn negotiate(config: &serde_json::Map<String, serde_json::Value>) -> Result<Option<String>, CniError> {
    let list = match config.get("cniVersions") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => return Err(CniError::invalid_config("config field \"cniVersions\" must be a list of versions")),
    };
    let mut best: Option<(Version, &str)> = None;
    for v in list.iter().filter_map(serde_json::Value::as_str).filter(|v| SUPPORTED.contains(v)) {
        let parsed = Version::parse(v)?;
        if best.is_none_or(|(b, _)| parsed > b) {
            best = Some((parsed, v));
        }
    }
    match best {
        Some((_, v)) => Ok(Some(v.to_string())),
        None => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "none of cniVersions {} is supported; supported versions: {}",
                serde_json::Value::Array(list.clone()),
                SUPPORTED.join(", ")
            ),
        )),
    }
}

fn bad_version(s: &str) -> CniError {
    CniError::new(code::INCOMPATIBLE_VERSION, format!("cniVersion {s:?} is not a version (want major.minor.patch)"))
}

/// The VERSION command's answer.
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_follows_the_spec_history() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("0.3.1") < v("0.4.0"));
        assert!(v("0.4.0") < v("1.0.0"));
        assert!(v("1.1.0") >= Version::V1_1_0);
        assert_eq!(v(""), Version(0, 1, 0));
    }

    #[test]
    fn cni_versions_picks_the_highest_supported_one() {
        let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
        let pick = |v| negotiate(&obj(v));
        assert_eq!(pick(serde_json::json!({"cniVersion": "1.0.0"})).unwrap(), None);
        assert_eq!(
            pick(serde_json::json!({"cniVersions": ["0.4.0", "1.1.0", "1.0.0", "9.9.9"]})).unwrap().as_deref(),
            Some("1.1.0")
        );
        assert_eq!(pick(serde_json::json!({"cniVersions": ["0.3.1", "2.0.0"]})).unwrap().as_deref(), Some("0.3.1"));
        let none = pick(serde_json::json!({"cniVersions": ["2.0.0", "3.0.0"]})).unwrap_err();
        assert_eq!(none.code, 1);
        assert!(none.msg.contains("2.0.0"), "{}", none.msg);
        assert_eq!(pick(serde_json::json!({"cniVersions": "1.1.0"})).unwrap_err().code, 7);
    }

    #[test]
    fn unknown_versions_are_code_1() {
        assert_eq!(Version::supported("2.0.0").unwrap_err().code, 1);
        assert_eq!(Version::supported("banana").unwrap_err().code, 1);
        assert!(Version::supported("0.3.1").is_ok());
    }
}
