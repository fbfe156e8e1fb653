//! What a dynamic call's `K8S_POD_NETWORK` names, in every form an ADD accepts, so whatever
//! podagent (or an operator) added one way can be found again to delete: an attachment key
//! (`green`, `green#1`, `mep/mp1`), a network (`namespace/name`, or a bare name), or a
//! selection as the NPWG annotation writes it (`n0@eth7`, `ns/n0@eth7`, a JSON element with
//! `interface`).

use super::naming::{attachment_key, device_name_for};
use super::selection::{parse_npwg_networks, NetworkSelection};

#[derive(Debug, Clone, PartialEq)]
pub struct DynamicTarget {
    raw: String,
    /// `raw` read as an NPWG selection, when it is one.
    selection: Option<NetworkSelection>,
    pod_namespace: String,
}

impl DynamicTarget {
    pub fn parse(pod_namespace: &str, raw: &str) -> DynamicTarget {
        let selection = parse_npwg_networks(raw).ok().and_then(|s| s.into_iter().next());
        DynamicTarget { raw: raw.to_string(), selection, pod_namespace: pod_namespace.to_string() }
    }

    /// As written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// `raw` read as an NPWG selection (what a dynamic ADD makes when the pod's annotation
    /// does not list it).
    pub fn selection(&self) -> Option<&NetworkSelection> {
        self.selection.as_ref()
    }

    /// `namespace/name` of the network it names, when it is a selection.
    pub fn network(&self) -> Option<String> {
        let sel = self.selection.as_ref()?;
        Some(format!("{}/{}", sel.namespace.as_deref().unwrap_or(&self.pod_namespace), sel.name))
    }

    /// The device its ADD makes: the selection's explicit one, else the name its key hashes to.
    pub fn device(&self) -> String {
        match &self.selection {
            Some(sel) => sel.interface.clone().unwrap_or_else(|| {
                let namespace = sel.namespace.as_deref().unwrap_or(&self.pod_namespace);
                device_name_for(&attachment_key(&self.pod_namespace, namespace, &sel.name, 0))
            }),
            None => device_name_for(&self.raw),
        }
    }

    /// Which of `candidates` (attachment key, `namespace/name`, device) it names, as a DEL or
    /// CHECK matches: the first with that key, else with that network, else whose network has
    /// that bare name, else the first on the selection's network (and device, when it names
    /// one). The bare-name rule lets an operator delete `mep/mp1` as `mp1`.
    pub fn position<'a>(&self, candidates: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Option<usize> {
        self.find(candidates.collect(), true)
    }

    /// Which of `candidates` it names, as an ADD matches: only that key or that network
    /// (and device). A bare name is a network of the pod's namespace, as in the annotation:
    /// `mp1` is `default/mp1`, never the pod's `mep/mp1`.
    pub fn exact_position<'a>(&self, candidates: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Option<usize> {
        self.find(candidates.collect(), false)
    }

    fn find(&self, all: Vec<(&str, &str, &str)>, bare_name: bool) -> Option<usize> {
        let raw = self.raw.as_str();
        let suffix = format!("/{raw}");
        let network = self.network();
        let ifname = self.selection.as_ref().and_then(|s| s.interface.as_deref());
        let find = |matches: &dyn Fn(&(&str, &str, &str)) -> bool| all.iter().position(matches);
        find(&|(key, _, _)| *key == raw)
            .or_else(|| find(&|(_, net, _)| *net == raw))
            .or_else(|| find(&|(_, net, _)| bare_name && net.ends_with(&suffix)))
            .or_else(|| {
                let network = network.as_deref()?;
                find(&|(_, net, dev)| *net == network && ifname.is_none_or(|i| i == *dev))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARSED: [(&str, &str, &str); 4] = [
        ("green", "default/green", "net9f27410725ab"),
        ("green#1", "default/green", "net898f8541f0ab"),
        ("mep/mp1", "mep/mp1", "netc890d403fb27"),
        ("n0", "default/n0", "eth7"),
    ];

    fn find(raw: &str) -> Option<usize> {
        DynamicTarget::parse("default", raw).position(PARSED.iter().copied())
    }

    #[test]
    fn every_form_an_add_accepts_finds_its_attachment() {
        assert_eq!(find("green"), Some(0));
        assert_eq!(find("green#1"), Some(1));
        assert_eq!(find("default/green"), Some(0));
        assert_eq!(find("mep/mp1"), Some(2));
        assert_eq!(find("mp1"), Some(2));
        assert_eq!(find("n0@eth7"), Some(3));
        assert_eq!(find("default/n0@eth7"), Some(3));
        assert_eq!(find(r#"[{"name":"n0","interface":"eth7"}]"#), Some(3));
        assert_eq!(find("green@net898f8541f0ab"), Some(1), "the device picks among repeats");
    }

    #[test]
    fn an_add_matches_only_a_key_or_a_network_never_a_bare_name_of_another_namespace() {
        let exact = |raw: &str| DynamicTarget::parse("default", raw).exact_position(PARSED.iter().copied());
        assert_eq!(exact("mp1"), None, "mp1 is default/mp1, not mep/mp1");
        assert_eq!(exact("mep/mp1"), Some(2));
        assert_eq!(exact("green"), Some(0));
        assert_eq!(exact("green#1"), Some(1));
        assert_eq!(exact("default/green"), Some(0));
        assert_eq!(exact("n0@eth7"), Some(3));
        assert_eq!(exact("default/n0@eth7"), Some(3));
        let with_own = [("mep/mp1", "mep/mp1", "netc890d403fb27"), ("mp1", "default/mp1", "net1")];
        let target = DynamicTarget::parse("default", "mp1");
        assert_eq!(target.exact_position(with_own.iter().copied()), Some(1));
        assert_eq!(target.position(with_own.iter().copied()), Some(1), "the pod's own mp1 before mep's");
    }

    #[test]
    fn the_device_is_the_explicit_one_or_the_keys_hash() {
        let device = |raw: &str| DynamicTarget::parse("default", raw).device();
        assert_eq!(device("green"), "net9f27410725ab");
        assert_eq!(device("default/green"), "net9f27410725ab");
        assert_eq!(device("green#1"), "net898f8541f0ab");
        assert_eq!(device("mep/mp1"), "netc890d403fb27");
        assert_eq!(device("n0@eth7"), "eth7");
    }

    #[test]
    fn a_name_or_device_that_is_not_there_finds_nothing() {
        assert_eq!(find("n0@eth8"), None);
        assert_eq!(find("other/n0@eth7"), None);
        assert_eq!(find("blue"), None);
        assert_eq!(find("not a network!"), None);
    }
}
