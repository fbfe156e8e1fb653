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
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let result = match (read, CniEnv::from_process()) {
        (Err(e), _) => Err(CniError::io("read stdin", e)),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(env)) if env.command == Command::Version => Ok(version_answer(&stdin)),
        (Ok(_), Ok(env)) => run(&stdin, env),
    };
    outcome(&stdin, result)
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
