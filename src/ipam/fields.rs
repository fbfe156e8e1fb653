//! Reading the fields of a JSON config, each error naming the field (code 7).

use crate::cni::CniError;
use serde_json::{Map, Value};

/// `key` of `obj` as a string, `None` when absent or null; `at` names it in the error.
pub(super) fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{at} must be a string"))),
    }
}

/// An invalid network config (code 7): `msg` names the field and what is wrong with it.
pub(super) fn invalid(msg: impl Into<String>) -> CniError {
    CniError::invalid_config(msg)
}
