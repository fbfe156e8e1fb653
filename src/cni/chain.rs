//! Running a network configuration (one plugin or a chain) the way libcni does:
//! ADD in order threading `prevResult`, DEL in reverse, CHECK in order with the cached result.

use super::conf::NetworkConfig;
use super::env::Command;
use super::error::{join_errors, CniError};
use super::exec::{exec_plugin, Invocation};
use super::version::Version;
use serde_json::{Map, Value};

fn stdin_bytes(net: &NetworkConfig, i: usize, rc: &Map<String, Value>, prev: Option<&Value>) -> Vec<u8> {
    net.plugin_stdin(i, rc, prev).to_string().into_bytes()
}

/// ADD: every plugin in order; each gets the previous one's result. Returns the last result,
/// in the network's own `cniVersion`.
pub fn add(net: &NetworkConfig, inv: &Invocation, runtime_config: &Map<String, Value>) -> Result<Value, CniError> {
    debug_assert_eq!(inv.command, Command::Add);
    net.check_delegable()?;
    let mut prev: Option<Value> = None;
    for i in 0..net.plugins.len() {
        let t = net.plugin_type(i);
        let out = exec_plugin(inv, t, &stdin_bytes(net, i, runtime_config, prev.as_ref()))?;
        match out {
            Some(result) => prev = Some(result),
            None if prev.is_some() => {}
            None => {
                return Err(CniError::new(super::error::code::DECODING_FAILURE, format!("{t} ADD printed no result")))
            }
        }
    }
    prev.ok_or_else(|| CniError::invalid_config(format!("network {:?} has no plugins", net.name)))
}

/// DEL: every plugin in reverse order, each with the cached result (from 0.4.0 on, as the spec
/// says). Goes on past a failure so as much as possible is torn down, then reports them all.
pub fn del(
    net: &NetworkConfig,
    inv: &Invocation,
    runtime_config: &Map<String, Value>,
    cached: Option<&Value>,
) -> Result<(), CniError> {
    debug_assert_eq!(inv.command, Command::Del);
    if let Err(e) = net.check_delegable() {
        // Only a cache written before meta-plugins were refused can hold one. Running it would
        // hand root to its config's author; leaving it fails no teardown that could succeed
        // (the pod's netns takes its devices), and an error that never clears would hold the
        // pod's deletion forever. Said loudly instead.
        log::error!("DEL: not run: {e}");
        return Ok(());
    }
    let prev = if net.version() >= Version::V0_4_0 { cached } else { None };
    let mut errors = Vec::new();
    for i in (0..net.plugins.len()).rev() {
        if let Err(e) = exec_plugin(inv, net.plugin_type(i), &stdin_bytes(net, i, runtime_config, prev)) {
            errors.push(e);
        }
    }
    join_errors(errors).map_or(Ok(()), Err)
}

/// CHECK: every plugin in order with the cached result. Refused below 0.4.0 (code 1), skipped
/// when the conflist says `disableCheck`.
pub fn check(
    net: &NetworkConfig,
    inv: &Invocation,
    runtime_config: &Map<String, Value>,
    cached: &Value,
) -> Result<(), CniError> {
    debug_assert_eq!(inv.command, Command::Check);
    if net.version() < Version::V0_4_0 {
        return Err(CniError::new(
            super::error::code::INCOMPATIBLE_VERSION,
            format!("network {:?} is cniVersion {}; CHECK needs 0.4.0 or later", net.name, net.cni_version),
        ));
    }
    if net.disable_check {
        return Ok(());
    }
    net.check_delegable()?;
    for i in 0..net.plugins.len() {
        exec_plugin(inv, net.plugin_type(i), &stdin_bytes(net, i, runtime_config, Some(cached)))?;
    }
    Ok(())
}

/// The runtime's list of live attachments in a GC call (CNI 1.1).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// One element of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `cni.dev/valid-attachments` of a config, if it has one (code 7 when malformed).
pub fn valid_attachments(config: &Map<String, Value>) -> Result<Option<Vec<ValidAttachment>>, CniError> {
    match config.get(VALID_ATTACHMENTS) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            CniError::invalid_config(format!(
                "config field \"{VALID_ATTACHMENTS}\" must be a list of {{\"containerID\", \"ifname\"}}: {e}"
            ))
        }),
    }
}

/// An invocation about a whole network rather than one container (GC, STATUS).
fn network_wide(command: Command, cni_path: &str, timeout: std::time::Duration) -> Invocation<'_> {
    static NO_ARGS: super::env::CniArgs = super::env::CniArgs(Vec::new());
    Invocation { command, container_id: "", netns: None, ifname: "", args: &NO_ARGS, cni_path, timeout }
}

/// GC (CNI 1.1): every plugin of the network with the live attachments, as libcni runs it.
/// Goes on past a failure and returns every error.
pub fn gc(net: &NetworkConfig, cni_path: &str, timeout: std::time::Duration, valid: &Value) -> Vec<CniError> {
    let inv = network_wide(Command::Gc, cni_path, timeout);
    if let Err(e) = net.check_delegable() {
        return vec![e];
    }
    let mut errors = Vec::new();
    for i in 0..net.plugins.len() {
        let mut stdin = net.plugin_stdin(i, &Map::new(), None);
        stdin[VALID_ATTACHMENTS] = valid.clone();
        if let Err(e) = exec_plugin(&inv, net.plugin_type(i), stdin.to_string().as_bytes()) {
            errors.push(e.context(format!("GC of network {:?} ({})", net.name, net.plugin_type(i))));
        }
    }
    errors
}

/// STATUS (CNI 1.1): every plugin of the network in order; the first failure is the answer.
pub fn status(net: &NetworkConfig, cni_path: &str, timeout: std::time::Duration) -> Result<(), CniError> {
    let inv = network_wide(Command::Status, cni_path, timeout);
    net.check_delegable()?;
    for i in 0..net.plugins.len() {
        exec_plugin(&inv, net.plugin_type(i), net.plugin_stdin(i, &Map::new(), None).to_string().as_bytes())?;
    }
    Ok(())
}
