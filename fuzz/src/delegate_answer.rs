//! What a delegate printed and how it exited: its result, or its error passed on to the
//! runtime. Input: one byte choosing the exit status, then stdout, then (after a NUL) stderr.

use super::checks;
use kactus::cni::exec::decode_answer;
use kactus::cni::{code, CniResult};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A wait status for a process killed by SIGKILL.
const SIGKILL: i32 = 9;

pub fn run(data: &[u8]) {
    let Some((&how, rest)) = data.split_first() else { return };
    let (stdout, stderr) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], String::from_utf8_lossy(&rest[i + 1..]).into_owned()),
        None => (rest, String::new()),
    };
    // Exit 0, exit 1, killed by SIGKILL, or exit with the byte itself.
    let status = ExitStatus::from_raw(match how % 4 {
        0 => 0,
        1 => 1 << 8,
        2 => SIGKILL,
        _ => i32::from(how) << 8,
    });
    match decode_answer("macvlan", stdout, &stderr, status) {
        Ok(None) => assert!(status.success() && stdout.iter().all(u8::is_ascii_whitespace)),
        Ok(Some(result)) => {
            assert!(status.success());
            // ADD converts it for the runtime next.
            if let Err(e) = CniResult::convert(&result, "1.1.0") {
                checks::own_error(&e, &[code::INCOMPATIBLE_VERSION, code::DECODING_FAILURE]);
            }
        }
        Err(e) if status.success() => checks::own_error(&e, &[code::DECODING_FAILURE]),
        Err(e) => {
            // Passed on to the runtime: the delegate's own code when it gave a usable one.
            checks::error_json(&e);
            assert!(e.msg.starts_with("macvlan"), "the error does not name the delegate: {}", e.msg);
            let said = serde_json::from_slice::<Value>(stdout).ok();
            let own = said.as_ref().filter(|v| v["msg"].is_string()).and_then(|v| v["code"].as_u64());
            match own.filter(|&c| c >= 1 && c <= u64::from(u32::MAX)) {
                Some(c) => assert_eq!(u64::from(e.code), c),
                None => assert_eq!(e.code, code::DELEGATE_EXEC, "{e}"),
            }
        }
    }
}
