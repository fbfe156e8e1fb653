//! What must hold of any answer, whichever parser gave it.

use kactus::cni::{version, CniError};
use serde_json::Value;

/// An error kactus raised itself: one of the codes that parser may give, a message an
/// operator can act on, and valid CNI error JSON in every version the runtime may ask for.
pub fn own_error(e: &CniError, codes: &[u32]) {
    assert!(codes.contains(&e.code), "code {} is not one of {codes:?}: {e}", e.code);
    error_json(e);
}

/// The error as the runtime reads it from stdout, in the oldest and newest versions (the
/// version is only a string in it).
pub fn error_json(e: &CniError) {
    assert!(!e.msg.trim().is_empty(), "an error without a message: {e:?}");
    for v in [version::SUPPORTED[0], version::LATEST] {
        cni_error_json(&e.to_json(v), Some(v));
    }
}

/// `{"cniVersion","code","msg"[,"details"]}`, nothing else: a supported version (`want` if
/// given), a code of at least 1 that fits the spec's unsigned int, a message.
pub fn cni_error_json(text: &str, want: Option<&str>) {
    let json: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("error output is not JSON ({e}): {text}"));
    let obj = json.as_object().unwrap_or_else(|| panic!("error output is not an object: {text}"));
    let v = obj.get("cniVersion").and_then(Value::as_str).unwrap_or_else(|| panic!("no cniVersion: {text}"));
    assert!(version::SUPPORTED.contains(&v), "unsupported cniVersion in {text}");
    if let Some(want) = want {
        assert_eq!(v, want, "{text}");
    }
    let code = obj.get("code").and_then(Value::as_u64).unwrap_or_else(|| panic!("no numeric code: {text}"));
    assert!(code >= 1 && code <= u64::from(u32::MAX), "code {code} is no CNI error code: {text}");
    assert!(obj.get("msg").and_then(Value::as_str).is_some_and(|m| !m.trim().is_empty()), "no msg: {text}");
    assert!(obj.get("details").is_none_or(Value::is_string), "details is not a string: {text}");
    assert!(obj.keys().all(|k| ["cniVersion", "code", "msg", "details"].contains(&k.as_str())), "{text}");
}

/// A boolean setting as the parsers must take it: a boolean, libcni's `"true"`/`"false"`
/// (any case) or null; anything else must be refused, never read as false.
pub fn boolean_setting(v: &Value) -> bool {
    v.is_boolean() || v.is_null() || v.as_str().is_some_and(|s| ["true", "false"].contains(&s.to_lowercase().as_str()))
}

/// What the kernel takes as a device name as given: `dev_valid_name` (1-15 bytes, not `.` or
/// `..`, no `/`, `:` or white space), and no `%` (the kernel fills it in as a template) or
/// NUL (netlink's string would end there).
pub fn kernel_device_name(name: &str) -> bool {
    let forbidden = |b: u8| matches!(b, b'/' | b':' | b'%' | 0 | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    !name.is_empty() && name.len() <= 15 && name != "." && name != ".." && !name.bytes().any(forbidden)
}

/// A Kubernetes DNS-1123 subdomain (object names) of at most `max` bytes.
pub fn dns1123(s: &str, max: usize) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}
