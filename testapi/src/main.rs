//! `kactus-test-apiserver`: the project's test apiserver as a process, for demos, benchmarks
//! and scripts. Prints `listening on https://...` on stdout once ready to serve; logs go to
//! stderr; SIGTERM or SIGINT stop it cleanly.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use kactus_testapi::{random_token, TestApiServer};

#[derive(Parser, Debug)]
#[command(name = "kactus-test-apiserver", version, about = "Kubernetes REST over HTTPS for kactus tests")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Bearer token clients must send (default: random hex, see --kubeconfig-out).
    #[arg(long)]
    token: Option<String>,
    /// YAML manifest file, or directory of *.yaml/*.yml, to load at start (repeatable).
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Write a kubeconfig for this server here once listening.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Delay added before every API response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = simplelog::WriteLogger::init(args.log_level, simplelog::Config::default(), std::io::stderr());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("kactus-test-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // Block the stop signals before any thread starts so every thread inherits the mask and
    // the main thread alone receives them through sigwait.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(|e| format!("block signals: {e}"))?;

    let listener = TcpListener::bind(&args.listen).map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let token = args.token.unwrap_or_else(random_token);
    let server = TestApiServer::start(listener, &token).map_err(|e| format!("start server: {e}"))?;
    for path in &args.load {
        let count = server.store().apply_file_or_dir(path).map_err(|e| format!("load {}: {e}", path.display()))?;
        log::info!("loaded {count} objects from {}", path.display());
    }
    server.faults().set_latency(Duration::from_millis(args.latency_ms));
    if let Some(path) = &args.kubeconfig_out {
        server.write_kubeconfig(path).map_err(|e| format!("write kubeconfig {}: {e}", path.display()))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", server.url())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("write to stdout: {e}"))?;

    let signal = signals.wait().map_err(|e| format!("wait for signal: {e}"))?;
    log::info!("{signal}: shutting down");
    server.shutdown();
    Ok(())
}
