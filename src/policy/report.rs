//! What podagent can tell operators about one pod's policies, as plain data it publishes
//! (Events, /metrics) once it programs the tables: nothing here talks to the apiserver.
//!
//! Two things an operator cannot see from the table itself: parts of a policy that were
//! ignored (so they allow nothing), and devices a policy governs that nftables cannot reach
//! because they are no kernel network device in the pod (a DPDK or vhost-user attachment):
//! traffic there is not filtered, and the policy's author must be told.

use super::compile::{Compiled, Governed};

/// One Event to publish. All are Warnings: enforcing as written is not news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    /// `PolicyIgnored` or `PolicyNotEnforced`.
    pub reason: &'static str,
    pub message: String,
    /// The MultiNetworkPolicy (`namespace/name`) the Event is about; `None`: the pod.
    pub policy: Option<String>,
}

/// Numbers for /metrics, per pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Devices under policy.
    pub devices: usize,
    /// Policies selecting the pod.
    pub policies: usize,
    pub rules: usize,
    /// Addresses, ranges and `address . protocol . port` entries in the table's sets.
    pub set_elements: usize,
}

/// The Events a pod's compiled policies call for. `missing` are the governed devices that are
/// not kernel network devices in the pod's namespace (the caller looked).
pub fn events(compiled: &Compiled, missing: &[&str]) -> Vec<PolicyEvent> {
    let mut out: Vec<PolicyEvent> = compiled
        .problems
        .iter()
        .map(|p| PolicyEvent {
            reason: "PolicyIgnored",
            message: format!("MultiNetworkPolicy {}: {}", p.policy, p.what),
            policy: Some(p.policy.clone()),
        })
        .collect();
    out.extend(compiled.devices.iter().filter(|d| missing.contains(&d.device.as_str())).map(not_enforced));
    out
}

/// The Event for a governed device that is no kernel network device in the pod.
pub fn not_enforced(governed: &Governed) -> PolicyEvent {
    let mut policies: Vec<&str> = governed.ingress.iter().chain(&governed.egress).map(String::as_str).collect();
    policies.sort_unstable();
    policies.dedup();
    PolicyEvent {
        reason: "PolicyNotEnforced",
        message: format!(
            "device {} on network {} is not a kernel network device in the pod (a DPDK or vhost-user \
             attachment?): MultiNetworkPolicy {} cannot filter its traffic",
            governed.device,
            governed.network,
            policies.join(", ")
        ),
        policy: None,
    }
}

pub fn stats(compiled: &Compiled) -> Stats {
    let table = compiled.table.as_ref();
    Stats {
        devices: compiled.devices.len(),
        policies: compiled.policies.len(),
        rules: table.map_or(0, |t| t.chains.iter().map(|c| c.rules.len()).sum()),
        set_elements: table.map_or(0, |t| t.sets.iter().map(|s| s.elements.len()).sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::Problem;
    use crate::policy::NetworkRef;

    #[test]
    fn ignored_parts_and_unreachable_devices_become_warnings() {
        let compiled = Compiled {
            table: None,
            devices: vec![Governed {
                device: "net1".into(),
                network: NetworkRef { namespace: "mep".into(), name: "mp1".into() },
                ingress: vec!["mep/a".into(), "mep/b".into()],
                egress: vec!["mep/a".into()],
            }],
            policies: vec!["mep/a".into(), "mep/b".into()],
            problems: vec![Problem {
                policy: "mep/b".into(),
                what: "ingress peer: ipBlock \"x\" is not a CIDR".into(),
            }],
        };
        assert_eq!(events(&compiled, &[]).len(), 1);
        let all = events(&compiled, &["net1"]);
        assert_eq!(all[0].policy.as_deref(), Some("mep/b"));
        assert_eq!(all[1].reason, "PolicyNotEnforced");
        assert!(
            all[1].message.contains("net1 on network mep/mp1") && all[1].message.contains("mep/a, mep/b"),
            "{}",
            all[1].message
        );
        assert_eq!(stats(&compiled), Stats { devices: 1, policies: 2, rules: 0, set_elements: 0 });
    }
}
