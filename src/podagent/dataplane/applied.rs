//! Which MultiNetworkPolicies govern which device of which local pod, on /metrics as
//! `podagent_policy_applied{namespace, pod, device, network, direction, policy} 1`: what an
//! operator asks first about a pod whose traffic stops ("which policies apply here?") without
//! entering its namespace to read nftables. One series per governed (device, direction,
//! policy), set when the pod's policies are computed and removed when they change or the pod
//! goes, so the family holds exactly the node's current state.

use crate::policy::Governed;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Default)]
pub struct AppliedPolicies {
    family: Family<Labels, Gauge>,
    /// By pod UID: the series set for it, to remove exactly those.
    by_pod: Arc<Mutex<HashMap<String, Vec<Labels>>>>,
}

impl AppliedPolicies {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "podagent_policy_applied",
            "MultiNetworkPolicies isolating a local pod's device in a direction (1 per device, direction and policy)",
            self.family.clone(),
        );
    }

    /// The pod's governed devices as just computed (empty: no policy governs it any more).
    pub fn set(&self, uid: &str, namespace: &str, pod: &str, governed: &[Governed]) {
        let series: Vec<Labels> = governed
            .iter()
            .flat_map(|g| {
                let directions = [("ingress", &g.ingress), ("egress", &g.egress)];
                directions.into_iter().flat_map(move |(direction, policies)| {
                    policies.iter().map(move |policy| {
                        vec![
                            ("namespace", namespace.to_string()),
                            ("pod", pod.to_string()),
                            ("device", g.device.clone()),
                            ("network", g.network.to_string()),
                            ("direction", direction.to_string()),
                            ("policy", policy.clone()),
                        ]
                    })
                })
            })
            .collect();
        let mut by_pod = self.by_pod.lock().unwrap_or_else(|e| e.into_inner());
        for old in by_pod.remove(uid).unwrap_or_default() {
            if !series.contains(&old) {
                self.family.remove(&old);
            }
        }
        for labels in &series {
            self.family.get_or_create(labels).set(1);
        }
        if !series.is_empty() {
            by_pod.insert(uid.to_string(), series);
        }
    }

    /// A pod gone from the node: its series go.
    pub fn forget(&self, uid: &str) {
        let mut by_pod = self.by_pod.lock().unwrap_or_else(|e| e.into_inner());
        for old in by_pod.remove(uid).unwrap_or_default() {
            self.family.remove(&old);
        }
    }

    /// Keeps only the pods `keep` says are still local.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = {
            let by_pod = self.by_pod.lock().unwrap_or_else(|e| e.into_inner());
            by_pod.keys().filter(|uid| !keep(uid)).cloned().collect()
        };
        for uid in gone {
            self.forget(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetworkRef;
    use prometheus_client::encoding::text::encode;

    fn governed(device: &str, ingress: &[&str], egress: &[&str]) -> Governed {
        Governed {
            device: device.into(),
            network: NetworkRef { namespace: "mep".into(), name: "mp1".into() },
            ingress: ingress.iter().map(|s| s.to_string()).collect(),
            egress: egress.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn exposition(applied: &AppliedPolicies) -> Vec<String> {
        let mut registry = Registry::default();
        applied.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with('#')).map(String::from).collect();
        lines.sort();
        lines
    }

    #[test]
    fn each_device_direction_and_policy_is_a_series_replaced_when_recomputed_and_removed_with_the_pod() {
        let applied = AppliedPolicies::default();
        applied.set("u1", "mep", "hello1", &[governed("net1", &["mep/deny", "mep/allow-web"], &["mep/deny"])]);
        applied.set("u2", "mep", "hello2", &[governed("net1", &["mep/deny"], &[])]);
        let lines = exposition(&applied);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines.contains(
            &"podagent_policy_applied{namespace=\"mep\",pod=\"hello1\",device=\"net1\",network=\"mep/mp1\",direction=\"ingress\",policy=\"mep/allow-web\"} 1"
                .to_string()
        ));

        // Recomputed: allow-web went; the egress isolation stays.
        applied.set("u1", "mep", "hello1", &[governed("net1", &["mep/deny"], &["mep/deny"])]);
        let lines = exposition(&applied);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(!lines.iter().any(|l| l.contains("allow-web")), "{lines:#?}");

        // No policy any more, and a pod gone.
        applied.set("u1", "mep", "hello1", &[]);
        applied.retain(|uid| uid != "u2");
        assert!(exposition(&applied).is_empty(), "{:#?}", exposition(&applied));
    }
}
