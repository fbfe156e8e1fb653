//! `node-local`: a CNI IPAM plugin that hands out node-unique addresses on multi-node
//! clusters, where host-local would give every node the same ones (seed 003's problem).
//!
//! It speaks host-local's protocol and keeps host-local's files (`<dataDir>/<network>/<ip>`),
//! so it drops into any NAD in host-local's place. What differs is where a node's ranges come
//! from:
//! - **native mode** (`"nodeSliceSize"` on a range): each node claims its own slice of the
//!   cluster range once, through a `SliceClaim` object in the apiserver ([`claims`]), and
//!   records it beside its leases ([`assignment`]); every pod after that is served from local
//!   files with no apiserver call;
//! - **seed-compatible mode** (`"cfg"`): the seeds' template under `/etc/cni/node-local` with
//!   `.x` replaced by the node's index ([`template`]).
//!
//! Each verb is a file telling its story: [`add`], [`del`], [`check`], [`gc`]; [`config`]
//! parses and validates (the address [`pools`] of an `ipam` section, inline or from a
//! [`template`]), [`range`] does the address arithmetic, [`leases`] is the on-disk store,
//! [`allocator`] picks addresses, [`node`] says which node this is. Each reads only the ones
//! below it: `config` -> `template` -> `pools` -> `range`, with `leases` and `node` at the
//! bottom.

pub mod add;
pub mod allocator;
pub mod assignment;
pub mod check;
pub mod claims;
pub mod config;
pub mod del;
mod fields;
pub mod gc;
pub mod leases;
pub mod node;
pub mod pools;
pub mod range;
pub mod template;

pub use config::Config;

use crate::cni::skel::{self, Outcome};
use crate::cni::{CniEnv, CniError, Command};

/// Runs one CNI call from the process's stdin and environment.
pub fn run_from_process() -> Outcome {
    skel::run_from_process(run)
}

/// One CNI call (VERSION is answered by [`skel`]): the config is parsed fully first.
pub fn run(stdin: &[u8], env: CniEnv) -> Result<String, CniError> {
    crate::logging::init(None, log_level());
    let cfg = Config::parse(stdin, &env.args)?;
    let answer = match env.command {
        Command::Add => add::add(&cfg, &env).map(|v| v.to_string()),
        Command::Del => del::del(&cfg, &env).map(|()| String::new()),
        Command::Check => check::check(&cfg, &env).map(|()| String::new()),
        Command::Gc => gc::gc(&cfg).map(|()| String::new()),
        // Nothing to be ready for beyond a valid config: the store is local.
        Command::Status | Command::Version => Ok(String::new()),
    };
    answer.map_err(|e| e.context(format!("node-local {} on network {}", env.command.as_str(), cfg.network)))
}

/// Logs go to stderr, which the calling plugin passes on (kactus logs a delegate's stderr);
/// `NODE_LOCAL_LOG_LEVEL` raises or lowers the default, warnings.
fn log_level() -> log::LevelFilter {
    std::env::var("NODE_LOCAL_LOG_LEVEL")
        .ok()
        .and_then(|l| crate::logging::parse_level(&l))
        .unwrap_or(log::LevelFilter::Warn)
}
