//! podagent's counters, registered with `prometheus-client` and served on `/metrics` (see
//! `crate::daemon::health`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub adds: Counter,
    pub dels: Counter,
    pub failures: Counter,
    pub watch_restarts: Counter,
    /// Pods compared (desired vs had), whether or not anything was done.
    pub reconciles: Counter,
}

impl Metrics {
    /// The counters, registered as `podagent_<name>_total`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        for (name, help, counter) in [
            ("podagent_adds", "Networks added to running pods", &metrics.adds),
            ("podagent_dels", "Networks removed from running pods", &metrics.dels),
            ("podagent_failures", "Failed pod reconciliations", &metrics.failures),
            (
                "podagent_watch_restarts",
                "Pod watches that failed or expired and were reopened or relisted",
                &metrics.watch_restarts,
            ),
            ("podagent_reconciles", "Pods compared with their annotations", &metrics.reconciles),
        ] {
            registry.register(name, help, counter.clone());
        }
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_rendered_with_their_total_suffix() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.adds.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.lines().any(|l| l == "podagent_adds_total 1"), "{text}");
        assert!(text.lines().any(|l| l == "podagent_reconciles_total 0"), "{text}");
    }
}
