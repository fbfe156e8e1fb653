//! `kactus-endpoints`: EndpointSlices with secondary-network addresses for Services that
//! ask for a network (see `kactus::endpoints`).

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "EndpointSlices (or Endpoints) on secondary networks for Services that ask for a network")]
struct Args {
    /// kubeconfig to use; without it, the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Where /healthz and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:9649")]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease (for more than one replica).
    #[arg(long)]
    leader_elect: bool,
    #[arg(long, default_value = "kactus-endpoints")]
    lease_name: String,
    /// Namespace of the Lease (default: the service account's or kubeconfig context's).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Seconds a Lease holder may go without renewing before a standby takes over.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Also write core/v1 Endpoints (labelled endpointslice.kubernetes.io/skip-mirror) on
    /// clusters with discovery.k8s.io/v1 (deprecated there since 1.33; written anyway, without
    /// that label, where discovery.k8s.io/v1 is not served).
    #[arg(long)]
    write_endpoints: bool,
    /// Serve the admission webhook that moves a seed-shaped Service's spec.selector into
    /// kactus.io/selector on this address (HTTPS); off without it.
    #[arg(long)]
    webhook_addr: Option<SocketAddr>,
    /// Names the webhook's certificate carries: the webhook Service's DNS name, or addresses.
    #[arg(long, value_delimiter = ',', default_value = "kactus-endpoints-webhook.kube-system.svc")]
    webhook_cert_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose caBundle this replica keeps its CA in.
    #[arg(long, default_value = "kactus-endpoints")]
    webhook_configuration: String,
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
    let leader_election = args.leader_elect.then(|| kactus::endpoints::LeaderOptions {
        namespace: args.lease_namespace,
        name: args.lease_name,
        lease_duration: std::time::Duration::from_secs(args.lease_duration.max(1)),
    });
    let webhook = args.webhook_addr.map(|addr| kactus::endpoints::WebhookOptions {
        addr,
        names: args.webhook_cert_names,
        configuration: args.webhook_configuration,
    });
    let options = kactus::endpoints::Options {
        namespace: args.namespace,
        metrics_addr: args.metrics_addr,
        leader_election,
        write_endpoints: args.write_endpoints,
        webhook,
    };
    kactus::endpoints::run(args.kubeconfig.as_deref(), options)
}
