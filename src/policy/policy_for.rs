//! Which networks a policy governs: its `k8s.v1.cni.cncf.io/policy-for` annotation, a comma
//! separated list of `name` (a network in the policy's namespace) or `namespace/name`. The same
//! reference, relative to a pod's namespace, names a pod's attachment in kactus's record.

use std::fmt;

/// A network: a NetworkAttachmentDefinition's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkRef {
    pub namespace: String,
    pub name: String,
}

impl NetworkRef {
    /// `name` or `namespace/name`, a bare name being in `namespace`; `None` when it is neither.
    pub fn relative(text: &str, namespace: &str) -> Option<NetworkRef> {
        let text = text.trim();
        let (ns, name) = match text.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (namespace, text),
        };
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        (valid(ns) && valid(name)).then(|| NetworkRef { namespace: ns.to_string(), name: name.to_string() })
    }
}

impl fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The networks of a `policy-for` value, and the entries that name none (for a report).
pub fn parse(annotation: &str, policy_namespace: &str) -> (Vec<NetworkRef>, Vec<String>) {
    let mut networks = Vec::new();
    let mut invalid = Vec::new();
    for entry in annotation.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match NetworkRef::relative(entry, policy_namespace) {
            Some(n) if !networks.contains(&n) => networks.push(n),
            Some(_) => {}
            None => invalid.push(entry.to_string()),
        }
    }
    (networks, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ns: &str, name: &str) -> NetworkRef {
        NetworkRef { namespace: ns.into(), name: name.into() }
    }

    #[test]
    fn bare_names_are_in_the_policys_namespace() {
        let (nets, bad) = parse(" mp1, other/data ,, mp1, mep/mp1 ", "mep");
        assert_eq!(nets, vec![net("mep", "mp1"), net("other", "data")]);
        assert!(bad.is_empty());
    }

    #[test]
    fn malformed_entries_are_reported_not_guessed() {
        let (nets, bad) = parse("a/b/c, /x, y/, ok, sp ace, net_1", "ns");
        assert_eq!(nets, vec![net("ns", "ok")]);
        assert_eq!(bad, vec!["a/b/c", "/x", "y/", "sp ace", "net_1"]);
        assert_eq!(parse("", "ns"), (vec![], vec![]));
    }
}
