//! The fuzz targets' bodies. Each feeds one input to one of kactus's parsers of outside input
//! and checks what must hold of the answer, not only that nothing panicked: an error is a
//! `CniError` whose JSON is valid CNI error JSON with the right code, a value that parses
//! survives being written back, a name that reaches the kernel is one it takes as is.
//!
//! `fuzz_targets/<name>.rs` hands libFuzzer's input to `<name>::run`; the stable test
//! `tests/fuzz_corpora.rs` (which includes this file) replays every input in
//! `corpus/<name>/` through the same function, so CI checks the corpora without fuzzing.

pub mod annotations;
pub mod apiserver_body;
mod checks;
pub mod cni_env;
pub mod cni_result;
pub mod delegate_answer;
pub mod kubeconfig;
pub mod network_config;
pub mod node_local;
pub mod stdin_config;

/// A target's body: one input, checked; a failed check panics.
pub type Target = fn(&[u8]);

/// Every target: its name (of its `fuzz_targets/` file and its corpus directory) and body.
pub const TARGETS: &[(&str, Target)] = &[
    ("annotations", annotations::run),
    ("apiserver_body", apiserver_body::run),
    ("cni_env", cni_env::run),
    ("cni_result", cni_result::run),
    ("delegate_answer", delegate_answer::run),
    ("kubeconfig", kubeconfig::run),
    ("network_config", network_config::run),
    ("node_local", node_local::run),
    ("stdin_config", stdin_config::run),
];
