//! The benchmark's null delegate: a CNI plugin that makes nothing and answers at once, so a
//! benchmark row measures kactus alone, free of a real plugin's own time and noise.
//!
//! Built by `scripts/bench.sh` (`cargo build --release --example null-delegate`); never
//! shipped (the image holds only the product's binaries). ADD answers a valid result in the
//! config's `cniVersion` (0.3.0 or later): one interface named `CNI_IFNAME` in `CNI_NETNS`
//! with the config's `address` (default `192.0.2.1/24`); every other command succeeds
//! silently, VERSION says what it speaks.

use serde_json::{json, Value};
use std::io::{Read, Write};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let conf: Value = serde_json::from_slice(&stdin).unwrap_or(Value::Null);
    let version = conf["cniVersion"].as_str().unwrap_or("1.0.0");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let answer = match env("CNI_COMMAND").as_str() {
        "ADD" if version.starts_with("0.1") || version.starts_with("0.2") => {
            fail(version, 1, "the null delegate speaks 0.3.0 and later")
        }
        "ADD" => json!({
            "cniVersion": version,
            "interfaces": [{"name": env("CNI_IFNAME"), "mac": "02:00:00:00:00:01", "sandbox": env("CNI_NETNS")}],
            "ips": [{"address": conf["address"].as_str().unwrap_or("192.0.2.1/24"), "interface": 0}],
        }),
        "VERSION" => json!({"cniVersion": version, "supportedVersions": VERSIONS}),
        _ => return,
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(answer.to_string().as_bytes());
    if answer.get("code").is_some() {
        let _ = out.flush();
        std::process::exit(1);
    }
}

fn fail(version: &str, code: u32, msg: &str) -> Value {
    json!({"cniVersion": version, "code": code, "msg": msg})
}
