//! The meta-plugin's verbs. `add.rs`, `del.rs` and `check.rs` tell each story, `gc.rs` and
//! `readiness.rs` (STATUS) the CNI 1.1 ones; `plan.rs` turns inputs into validated delegate
//! calls (`networks.rs` reads their configs), `cache/` remembers them (before they run and
//! after), `repair.rs` rebuilds what a damaged or lost cache lost, `abandon.rs` is what DEL
//! does with a call nothing can tear down; `apiserver.rs` is the plugin's client and the
//! mapping of apiserver failures to CNI codes, `apiserver_side.rs` what an ADD does with the
//! apiserver beside its delegates, `status.rs` and `events.rs` tell the apiserver what the
//! pod has; `node_answers.rs` is the fast path: the same answers from podagent's caches.

mod abandon;
pub mod add;
pub mod apiserver;
mod apiserver_side;
pub mod cache;
pub mod check;
pub mod config;
pub mod del;
pub mod events;
pub mod gc;
pub mod networks;
mod node_answers;
pub mod plan;
pub mod readiness;
pub mod repair;
pub mod status;

pub use config::KactusConfig;

use crate::cni::skel;
use crate::cni::{CniEnv, CniError, Command};

pub use crate::cni::skel::{outcome, Outcome};

/// Runs one CNI call from the process's stdin and environment.
pub fn run_from_process() -> Outcome {
    skel::run_from_process(run)
}

/// One CNI call (VERSION is answered by [`skel`]): the config is parsed fully first.
pub fn run(stdin: &[u8], env: CniEnv) -> Result<String, CniError> {
    let cfg = KactusConfig::from_bytes(stdin)?;
    crate::logging::init(cfg.log_file.as_ref(), cfg.log_level);
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
