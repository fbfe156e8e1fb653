//! The controller's counters and its leader gauge, registered with `prometheus-client` and
//! served on `/metrics` (see `crate::daemon::health`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Reconciles of one Service finished without error.
    pub syncs: Counter,
    /// EndpointSlice creates, updates and deletes that succeeded.
    pub slice_writes: Counter,
    /// Reconciles that failed (and were requeued) and Events that could not be written.
    pub failures: Counter,
    /// Watches that failed or expired and were reopened or relisted.
    pub watch_restarts: Counter,
    /// Core/v1 Endpoints creates, updates and deletes that succeeded.
    pub endpoints_writes: Counter,
    /// Seed-shaped Services whose selector the admission webhook moved.
    pub webhook_moves: Counter,
    /// Seed-shaped Services the controller moved afterwards (they got past the webhook).
    pub conversions: Counter,
    /// Endpoints and EndpointSlices kube-controller-manager had left, removed.
    pub leftovers_removed: Counter,
    /// 1 while this replica reconciles (always, without leader election).
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        for (name, help, counter) in [
            ("endpoints_syncs", "Service reconciles completed", &metrics.syncs),
            ("endpoints_slice_writes", "EndpointSlice creates, updates and deletes", &metrics.slice_writes),
            ("endpoints_failures", "Failed reconciles and event writes", &metrics.failures),
            ("endpoints_watch_restarts", "Watches that failed or expired and were reopened", &metrics.watch_restarts),
            ("endpoints_endpoints_writes", "Core Endpoints creates, updates and deletes", &metrics.endpoints_writes),
            ("endpoints_webhook_moves", "Service selectors moved by the admission webhook", &metrics.webhook_moves),
            ("endpoints_conversions", "Service selectors moved by the controller after the fact", &metrics.conversions),
            (
                "endpoints_leftovers_removed",
                "kube-controller-manager's leftover endpoints removed",
                &metrics.leftovers_removed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register("endpoints_leader", "Whether this replica reconciles", metrics.leader.clone());
        metrics
    }
}
