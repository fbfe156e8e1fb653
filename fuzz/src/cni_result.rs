//! A delegate's result, of any spec version, and its conversion to every version (what the
//! runtime gets back, what the cache and network-status read).

use super::checks;
use kactus::cni::version::SUPPORTED;
use kactus::cni::{code, CniResult, Version};
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let result = match CniResult::parse(&value) {
        Err(e) => return checks::own_error(&e, &[code::INCOMPATIBLE_VERSION, code::DECODING_FAILURE]),
        Ok(r) => r,
    };
    for v in SUPPORTED {
        let out = match result.to_version(v) {
            Err(e) => {
                checks::own_error(&e, &[code::INCOMPATIBLE_VERSION]);
                assert!(Version::parse(v).is_ok_and(|v| v < Version::V0_3_0), "{v} refused: {e}");
                continue;
            }
            Ok(out) => out,
        };
        assert_eq!(out["cniVersion"], *v);
        // The converted result reads back, and converts to itself again.
        let back = CniResult::parse(&out).unwrap_or_else(|e| panic!("converted to {v}, it does not parse: {e}\n{out}"));
        assert_eq!(back.to_version(v).as_ref(), Ok(&out), "converting to {v} is not stable");
        if *v == "1.1.0" {
            assert_eq!(back, result, "1.1.0 holds everything, yet something was lost");
        }
    }
}
