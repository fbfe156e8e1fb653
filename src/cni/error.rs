//! The CNI error: what every failure turns into on stdout, with the spec's codes.

use serde::Serialize;

/// Error codes from the CNI spec (section "Error") and kactus's own (100+, listed in README).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CNI 1.1 STATUS: the plugin cannot take ADDs now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// CNI 1.1 STATUS: as 50, and existing containers may have limited connectivity.
    pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;
    /// The apiserver refused or failed a request for a reason retrying will not fix.
    pub const APISERVER: u32 = 100;
    /// A network named by the pod has no NetworkAttachmentDefinition (or config file).
    pub const NETWORK_NOT_FOUND: u32 = 101;
    /// The pod's network annotation cannot be parsed or is contradictory.
    pub const INVALID_ANNOTATION: u32 = 102;
    /// A delegate plugin could not be run (not found, killed, timed out, garbage output).
    pub const DELEGATE_EXEC: u32 = 103;
    /// A network names a resource (`k8s.v1.cni.cncf.io/resourceName`) of which the pod was
    /// allocated no device, or fewer devices than it has attachments of that resource.
    pub const DEVICE_NOT_ALLOCATED: u32 = 104;
    /// node-local IPAM: no free address in the node's ranges, or no free slice of a cluster
    /// range for a node that needs one.
    pub const ADDRESSES_EXHAUSTED: u32 = 105;
}

/// A CNI error as the spec prints it: `{"cniVersion","code","msg","details"}`.
///
/// `msg` carries the whole context chain ("add attachment green (net9f27410725ab): macvlan:
/// ...") so an operator reading kubelet's event sees where it failed without the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefixes the message with what was being done, keeping the code.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, msg)
    }

    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        Self::new(code::IO_FAILURE, format!("{what}: {err}"))
    }

    /// The JSON the runtime reads from stdout, tagged with the version it asked for.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut v = serde_json::json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v.to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Several teardown failures at once: DEL goes on after a failure and reports them all.
pub fn join_errors(errors: Vec<CniError>) -> Option<CniError> {
    let mut iter = errors.into_iter();
    let first = iter.next()?;
    let rest: Vec<String> = iter.map(|e| e.msg).collect();
    if rest.is_empty() {
        return Some(first);
    }
    let code = first.code;
    Some(CniError::new(code, format!("{}; also: {}", first.msg, rest.join("; "))))
}
