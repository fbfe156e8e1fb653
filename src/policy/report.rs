//! What podagent can tell operators about one pod's policies, as plain data it publishes as
//! Events once it programs the tables: nothing here talks to the apiserver (which policies
//! govern which device is on /metrics: `podagent::dataplane::applied`).
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

/// The Events a pod's compiled policies call for (the parts ignored). A governed device that
/// is no kernel network device is told by [`not_enforced`], once the pod's namespace was looked
/// in.
pub fn events(compiled: &Compiled) -> Vec<PolicyEvent> {
    compiled
        .problems
        .iter()
        .map(|p| PolicyEvent {
            reason: "PolicyIgnored",
            message: format!("MultiNetworkPolicy {}: {}", p.policy, p.what),
            policy: Some(p.policy.clone()),
        })
        .collect()
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
        let ignored = events(&compiled);
        assert_eq!(ignored.len(), 1);
        assert_eq!(ignored[0].policy.as_deref(), Some("mep/b"));
        let unreachable = not_enforced(&compiled.devices[0]);
        assert_eq!(unreachable.reason, "PolicyNotEnforced");
        assert!(
            unreachable.message.contains("net1 on network mep/mp1") && unreachable.message.contains("mep/a, mep/b"),
            "{}",
            unreachable.message
        );
    }
}
