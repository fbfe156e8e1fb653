//! `kactus-endpoints`: EndpointSlices with secondary-network addresses for Services that
//! ask for a network (see `kactus::endpoints`).

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "EndpointSlices on secondary networks for annotated, selector-less Services")]
struct Args {
    /// kubeconfig to use; without it, the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Where /healthz and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:9649")]
    metrics_addr: String,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    let Some(level) = kactus::logging::parse_level(&args.log_level) else {
        eprintln!("kactus-endpoints: --log-level {:?}: expected error, warn, info, debug or trace", args.log_level);
        std::process::exit(2);
    };
    kactus::logging::init(None, level);
    if let Err(e) = run(args) {
        log::error!("{e}");
        eprintln!("kactus-endpoints: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let client = kactus::kube::Client::new(args.kubeconfig.as_deref(), kactus::kube::ClientOptions::default())
        .map_err(|e| e.to_string())?;
    let metrics = std::net::TcpListener::bind(&args.metrics_addr)
        .map_err(|e| format!("--metrics-addr {}: {e}", args.metrics_addr))?;
    let options = kactus::endpoints::Options { namespace: args.namespace, metrics };
    kactus::endpoints::run(client, options).map_err(|e| format!("starting threads: {e}"))
}
