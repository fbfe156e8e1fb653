//! The plugin side of a CNI call, as libcni's `skel` package is for Go plugins: read stdin and
//! the environment, run the verb, and turn the outcome into what the runtime reads: the
//! result on stdout and exit 0, or the error JSON on stdout and exit 1. Shared by the plugin
//! binaries (`kactus`, `node-local`), so every one of them answers errors the same way.

use super::env::{CniEnv, Command};
use super::error::CniError;
use super::version;
use std::io::{Read, Write};
use std::process::ExitCode;

/// What the process prints and its exit status.
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

impl Outcome {
    /// Prints the outcome on stdout (the only thing a plugin ever writes there) and gives the
    /// exit status that goes with it.
    pub fn print(self) -> ExitCode {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.stdout.as_bytes());
        let _ = stdout.flush();
        if self.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Runs one call with the process's stdin and environment: VERSION is answered here (it
/// needs no valid config), every other command by `run`, which gets the raw config and the
/// validated environment and returns what to print on success.
pub fn run_from_process(run: impl FnOnce(&[u8], CniEnv) -> Result<String, CniError>) -> Outcome {
    let (stdin, read) = match read_stdin(std::io::stdin()) {
        Ok(stdin) => (stdin, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    };
    let result = match (read, CniEnv::from_process()) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(env)) if env.command == Command::Version => Ok(version_answer(&stdin)),
        (Ok(_), Ok(env)) => run(&stdin, env),
    };
    outcome(&stdin, result)
}

/// The most a config on stdin may hold: kactus's own config, the runtime's `prevResult` and
/// `runtimeConfig` (the pod's annotations among it, which the apiserver keeps under 256 KiB),
/// or a network's config for node-local, are far smaller; a runtime gone wrong must not
/// make the plugin read without end.
pub const MAX_STDIN: u64 = 16 << 20;

/// The config on stdin, within [`MAX_STDIN`].
fn read_stdin(stdin: impl Read) -> Result<Vec<u8>, CniError> {
    crate::bounded::read_from(stdin, MAX_STDIN).map_err(|e| CniError::io("read stdin", e))
}

/// What the process prints for a call's result: the answer, or the error as CNI error JSON
/// in the version of the config on `stdin` (if it parses that far).
pub fn outcome(stdin: &[u8], result: Result<String, CniError>) -> Outcome {
    let answer_version = stdin_version(stdin)
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_string());
    match result {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(e) => Outcome { stdout: e.to_json(&answer_version), success: false },
    }
}

/// The `cniVersion` of whatever JSON is on stdin, valid config or not.
pub fn stdin_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// The VERSION answer for a call whose stdin asked in some version (the latest without one).
fn version_answer(stdin: &[u8]) -> String {
    let asked = stdin_version(stdin).unwrap_or_else(|| version::LATEST.to_string());
    version::version_info(&asked).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_beyond_the_bound_is_an_io_error_and_up_to_it_is_read() {
        let config = br#"{"cniVersion": "1.0.0"}"#;
        assert_eq!(read_stdin(&config[..]).unwrap(), config);
        let endless = std::io::repeat(b' ');
        let e = read_stdin(endless).unwrap_err();
        assert_eq!(e.code, crate::cni::code::IO_FAILURE);
        assert_eq!(e.msg, format!("read stdin: larger than {MAX_STDIN} bytes"));
    }
}
