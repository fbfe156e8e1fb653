//! The meta-plugin's verbs. `add.rs`, `del.rs` and `check.rs` tell each story, `gc.rs` and
//! `readiness.rs` (STATUS) the CNI 1.1 ones; `plan.rs` turns inputs into validated delegate
//! calls (`networks.rs` reads their configs), `cache/` remembers them (before they run and
//! after), `repair.rs` rebuilds what a damaged cache lost; `apiserver_side.rs` is what an
//! ADD does with the apiserver beside its delegates, `status.rs` and `events.rs` tell the
//! apiserver what the pod has.

pub mod add;
mod apiserver_side;
pub mod cache;
pub mod check;
pub mod config;
pub mod del;
pub mod events;
pub mod gc;
pub mod networks;
pub mod plan;
pub mod readiness;
pub mod repair;
pub mod status;

pub use config::KactusConfig;

use crate::cni::{version, CniEnv, CniError, Command};
use std::io::Read;

/// What the process prints and its exit status.
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// Runs one CNI call from the process's stdin and environment.
pub fn run_from_process() -> Outcome {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let result = match read {
        Ok(_) => run(&stdin, CniEnv::from_process()),
        Err(e) => Err(CniError::io("read stdin", e)),
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
fn stdin_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// One CNI call: VERSION needs no valid config; the rest parse it fully first.
pub fn run(stdin: &[u8], env: Result<CniEnv, CniError>) -> Result<String, CniError> {
    let env = env?;
    if env.command == Command::Version {
        let asked = stdin_version(stdin).unwrap_or_else(|| version::LATEST.to_string());
        return Ok(version::version_info(&asked).to_string());
    }
    let cfg = KactusConfig::from_bytes(stdin)?;
    crate::logging::init(cfg.log_file.as_deref(), cfg.log_level);
    log::debug!("{} container={} ifname={} args={}", env.command.as_str(), env.container_id, env.ifname, redact(&env));
    let answer = match env.command {
        Command::Add => add::add(&cfg, &env).map(|v| v.to_string()),
        Command::Del => del::del(&cfg, &env).map(|_| String::new()),
        Command::Check => check::check(&cfg, &env).map(|_| String::new()),
        Command::Status => readiness::status(&cfg, &env).map(|_| String::new()),
        Command::Gc => gc::gc(&cfg, &env).map(|_| String::new()),
        Command::Version => Ok(String::new()),
    };
    let (calls, waited) = crate::cni::exec::delegate_time();
    log::info!(
        "{} {} answered ({}): {calls} delegate call(s) taking {:.2} ms",
        env.command.as_str(),
        env.container_id,
        if answer.is_ok() { "ok" } else { "error" },
        waited.as_secs_f64() * 1e3
    );
    log::debug!("{} {}: {}", env.command.as_str(), env.container_id, own_usage());
    answer
}

/// This process's own page faults and context switches so far (its threads, not its
/// delegates), for the debug log: the benchmark's profile reads them to see what kactus's
/// own cost is made of. (CPU time is left out: on tick-based accounting it is noise at this
/// scale.)
fn own_usage() -> String {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => format!(
            "minor faults {}, context switches {} voluntary + {} involuntary",
            u.minor_page_faults(),
            u.voluntary_context_switches(),
            u.involuntary_context_switches()
        ),
        Err(e) => format!("getrusage: {e}"),
    }
}

/// CNI_ARGS as logged: pod identity is fine to log, but nothing else is assumed safe.
fn redact(env: &CniEnv) -> String {
    env.args.for_delegate().render()
}
