//! What changed -> which local pods must be recomputed, and which of their two parts.
//!
//! The watches say which objects changed (their `namespace/name`); [`Index`] remembers what
//! each object last meant to the data plane (a Service's network, a slice's Service, a
//! policy's networks, a pod's attachments), so a change — deletion included — is told by its
//! old and its new meaning:
//!
//! - a Service or its endpoints: the proxy part of the local pods on its network (old, new);
//! - a pod: the policy part of the local pods on its networks (old, new) that some policy
//!   governs (it may be their peer there), and everything of the pod itself when it is local;
//! - a policy: the policy part of the local pods of its namespace (the only ones it can
//!   select), and its networks become governed;
//! - a namespace's labels: the policy part of the local pods on every governed network.
//!
//! Anything else — a Service on a network no local pod is on, a pod with no attachments, a
//! peer on a network no policy governs — dirties nothing: it costs its own lookup.
//!
//! Pure data, no I/O: `mod.rs` reads the stores and feeds the index.

use crate::policy::{NetworkRef, PodView};
use std::collections::{BTreeMap, BTreeSet};

/// A pod as the index remembers it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub uid: String,
    /// On this node: the data plane programs it.
    pub local: bool,
    pub view: PodView,
}

impl PodEntry {
    fn networks(&self) -> BTreeSet<NetworkRef> {
        self.view.attachments.iter().map(|a| a.network.clone()).collect()
    }
}

/// What a batch of changes asks to recompute.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Every local pod, both parts (the first pass, a relist).
    pub all: bool,
    /// Local pods (`namespace/name`) recomputed whole: they changed themselves.
    pub pods: BTreeSet<String>,
    /// Networks whose local pods' proxy part is recomputed.
    pub proxy: BTreeSet<NetworkRef>,
    /// Networks whose local pods' policy part is recomputed.
    pub policy: BTreeSet<NetworkRef>,
    /// Namespaces whose local pods' policy part is recomputed (a policy there changed).
    pub policy_namespaces: BTreeSet<String>,
    /// UIDs of local pods that are gone (deleted, or re-made under their name).
    pub gone: BTreeSet<String>,
}

/// Which parts of one pod to recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub proxy: bool,
    pub policy: bool,
}

impl Parts {
    pub const BOTH: Parts = Parts { proxy: true, policy: true };
}

impl Dirty {
    pub fn everything() -> Dirty {
        Dirty { all: true, ..Dirty::default() }
    }

    /// The parts of the local pod `key` to recompute (both for one in [`Dirty::pods`]: it
    /// changed itself, or is tried again).
    pub fn parts(&self, key: &str, view: &PodView) -> Parts {
        if self.all || self.pods.contains(key) {
            return Parts::BOTH;
        }
        let on = |set: &BTreeSet<NetworkRef>| view.attachments.iter().any(|a| set.contains(&a.network));
        Parts { proxy: on(&self.proxy), policy: on(&self.policy) || self.policy_namespaces.contains(&view.namespace) }
    }
}

/// What the data plane last knew of each object, and the reverse maps that turn a change into
/// the local pods it concerns.
#[derive(Debug, Default)]
pub struct Index {
    /// Proxied Service (`namespace/name`) -> its network, and back.
    services: BTreeMap<String, NetworkRef>,
    services_on: BTreeMap<NetworkRef, BTreeSet<String>>,
    /// Slice (or 1.20 Endpoints) -> the Service it holds endpoints of.
    endpoints: BTreeMap<String, String>,
    /// Service -> its slices.
    slices_of: BTreeMap<String, BTreeSet<String>>,
    /// Policy -> the networks it governs.
    policies: BTreeMap<String, BTreeSet<NetworkRef>>,
    /// Network -> how many policies govern it.
    governed: BTreeMap<NetworkRef, usize>,
    /// Every stored pod.
    pods: BTreeMap<String, PodEntry>,
    /// Network -> the pods attached to it (peers), and the local ones among them.
    on: BTreeMap<NetworkRef, BTreeSet<String>>,
    local_on: BTreeMap<NetworkRef, BTreeSet<String>>,
}

impl Index {
    /// A Service's network now (`None`: gone, or not proxied by kactus).
    pub fn service(&mut self, key: &str, network: Option<NetworkRef>, dirty: &mut Dirty) {
        let old = match &network {
            Some(n) => self.services.insert(key.to_string(), n.clone()),
            None => self.services.remove(key),
        };
        if let Some(old) = &old {
            unlist(&mut self.services_on, old, key);
        }
        if let Some(new) = &network {
            self.services_on.entry(new.clone()).or_default().insert(key.to_string());
        }
        dirty.proxy.extend(old.into_iter().chain(network).filter(|n| self.local_on.contains_key(n)));
    }

    /// A slice's Service now (`None`: the slice is gone). Its Service's network is dirty;
    /// call it before the Service's own change, which dirties the Service's new network.
    pub fn endpoints(&mut self, key: &str, service: Option<String>, dirty: &mut Dirty) {
        let old = match &service {
            Some(s) => self.endpoints.insert(key.to_string(), s.clone()),
            None => self.endpoints.remove(key),
        };
        if let Some(old) = &old {
            unlist(&mut self.slices_of, old, key);
        }
        if let Some(new) = &service {
            self.slices_of.entry(new.clone()).or_default().insert(key.to_string());
        }
        for s in old.iter().chain(&service) {
            if let Some(n) = self.services.get(s).filter(|n| self.local_on.contains_key(n)) {
                dirty.proxy.insert(n.clone());
            }
        }
    }

    /// A policy's governed networks now (`None`: gone).
    pub fn policy(&mut self, key: &str, networks: Option<BTreeSet<NetworkRef>>, dirty: &mut Dirty) {
        let old = match &networks {
            Some(n) => self.policies.insert(key.to_string(), n.clone()),
            None => self.policies.remove(key),
        };
        for n in old.iter().flatten() {
            if let Some(count) = self.governed.get_mut(n) {
                *count -= 1;
                if *count == 0 {
                    self.governed.remove(n);
                }
            }
        }
        for n in networks.iter().flatten() {
            *self.governed.entry(n.clone()).or_default() += 1;
        }
        let namespace = key.split_once('/').map_or(key, |(ns, _)| ns);
        dirty.policy_namespaces.insert(namespace.to_string());
    }

    /// A namespace's labels changed (or it came or went): `namespaceSelector`s may select
    /// other pods on every governed network.
    pub fn namespace(&mut self, dirty: &mut Dirty) {
        let governed = self.governed.keys().filter(|n| self.local_on.contains_key(*n));
        dirty.policy.extend(governed.cloned());
    }

    /// A pod now (`None`: gone from the store).
    pub fn pod(&mut self, key: &str, now: Option<PodEntry>, dirty: &mut Dirty) {
        let old = self.pods.remove(key);
        let mut networks = BTreeSet::new();
        for (entry, adding) in [(&old, false), (&now, true)] {
            let Some(entry) = entry else { continue };
            for n in entry.networks() {
                let mut maps = vec![&mut self.on];
                if entry.local {
                    maps.push(&mut self.local_on);
                }
                for map in maps {
                    if adding {
                        map.entry(n.clone()).or_default().insert(key.to_string());
                    } else {
                        unlist(map, &n, key);
                    }
                }
                networks.insert(n);
            }
            if entry.local {
                dirty.pods.insert(key.to_string());
            }
        }
        if let Some(old) = old.filter(|o| o.local && now.as_ref().map(|n| &n.uid) != Some(&o.uid)) {
            dirty.gone.insert(old.uid);
        }
        let peers_matter = |n: &NetworkRef| self.governed.contains_key(n) && self.local_on.contains_key(n);
        dirty.policy.extend(networks.into_iter().filter(peers_matter));
        if let Some(now) = now {
            self.pods.insert(key.to_string(), now);
        }
    }

    /// The local pods (`namespace/name`) a batch of changes concerns.
    pub fn visit(&self, dirty: &Dirty) -> BTreeSet<String> {
        if dirty.all {
            return self.pods.iter().filter(|(_, p)| p.local).map(|(k, _)| k.clone()).collect();
        }
        let mut out: BTreeSet<String> = dirty.pods.iter().filter(|k| self.is_local(k)).cloned().collect();
        for n in dirty.proxy.iter().chain(&dirty.policy) {
            out.extend(self.local_on.get(n).into_iter().flatten().cloned());
        }
        for ns in &dirty.policy_namespaces {
            let prefix = format!("{ns}/");
            let in_ns = self.pods.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix));
            out.extend(in_ns.filter(|(_, p)| p.local).map(|(k, _)| k.clone()));
        }
        out
    }

    pub fn pod_entry(&self, key: &str) -> Option<&PodEntry> {
        self.pods.get(key)
    }

    /// The UIDs of the local pods.
    pub fn local_uids(&self) -> impl Iterator<Item = &str> {
        self.pods.values().filter(|p| p.local).map(|p| p.uid.as_str())
    }

    fn is_local(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.local)
    }

    /// The proxied Services on `network`.
    pub fn services_on(&self, network: &NetworkRef) -> impl Iterator<Item = &str> + '_ {
        self.services_on.get(network).into_iter().flatten().map(String::as_str)
    }

    /// The slices (or Endpoints) of `service`.
    pub fn slices_of(&self, service: &str) -> impl Iterator<Item = &str> + '_ {
        self.slices_of.get(service).into_iter().flatten().map(String::as_str)
    }

    /// The pods attached to any of `networks`, as policies see them: the only peers whose
    /// addresses a table on those networks can hold.
    pub fn peers_on(&self, networks: &BTreeSet<NetworkRef>) -> Vec<PodView> {
        let keys: BTreeSet<&String> = networks.iter().flat_map(|n| self.on.get(n).into_iter().flatten()).collect();
        keys.into_iter().filter_map(|k| self.pods.get(k)).map(|p| p.view.clone()).collect()
    }

    /// The policies of `namespace`.
    pub fn policies_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{namespace}/");
        self.policies.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.as_str())
    }
}

/// Takes `key` out of `map[at]`, and `at` out of `map` once it lists nothing.
fn unlist<K: Ord>(map: &mut BTreeMap<K, BTreeSet<String>>, at: &K, key: &str) {
    if let Some(keys) = map.get_mut(at) {
        keys.remove(key);
        if keys.is_empty() {
            map.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::pod::Attachment;

    fn net(name: &str) -> NetworkRef {
        NetworkRef { namespace: "mep".into(), name: name.into() }
    }

    fn pod(key: &str, local: bool, networks: &[&str]) -> PodEntry {
        let (namespace, name) = key.split_once('/').unwrap();
        let attachments = networks
            .iter()
            .map(|n| Attachment { network: net(n), interface: format!("net-{n}"), ips: vec![] })
            .collect();
        PodEntry {
            uid: format!("uid-{key}"),
            local,
            view: PodView { namespace: namespace.into(), name: name.into(), attachments, ..Default::default() },
        }
    }

    /// Two local pods on mp1, one on mp2, a remote peer on mp1 and mp3.
    fn index() -> Index {
        let mut index = Index::default();
        let mut dirty = Dirty::default();
        index.pod("mep/a", Some(pod("mep/a", true, &["mp1"])), &mut dirty);
        index.pod("mep/b", Some(pod("mep/b", true, &["mp1"])), &mut dirty);
        index.pod("other/c", Some(pod("other/c", true, &["mp2"])), &mut dirty);
        index.pod("mep/remote", Some(pod("mep/remote", false, &["mp1", "mp3"])), &mut dirty);
        index
    }

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_service_change_concerns_the_local_pods_on_its_old_and_new_network_for_the_proxy_only() {
        let mut index = index();
        let mut dirty = Dirty::default();
        index.service("mep/hello", Some(net("mp1")), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["mep/a", "mep/b"]));
        let a = index.pod_entry("mep/a").unwrap().view.clone();
        assert_eq!(dirty.parts("mep/a", &a), Parts { proxy: true, policy: false });
        // Moved to mp2: both networks' pods.
        let mut dirty = Dirty::default();
        index.service("mep/hello", Some(net("mp2")), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["mep/a", "mep/b", "other/c"]));
        // Its slice changes: mp2's pods; the slice deleted: the same.
        let mut dirty = Dirty::default();
        index.endpoints("mep/hello-x", Some("mep/hello".into()), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["other/c"]));
        assert_eq!(index.slices_of("mep/hello").collect::<Vec<_>>(), ["mep/hello-x"]);
        let mut dirty = Dirty::default();
        index.endpoints("mep/hello-x", None, &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["other/c"]));
        assert_eq!(index.slices_of("mep/hello").count(), 0);
        assert_eq!(index.services_on(&net("mp2")).collect::<Vec<_>>(), ["mep/hello"]);
        assert_eq!(index.services_on(&net("mp1")).count(), 0);
        // Deleted: its last network's pods lose it.
        let mut dirty = Dirty::default();
        index.service("mep/hello", None, &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["other/c"]));
    }

    #[test]
    fn unrelated_changes_concern_no_pod() {
        let mut index = index();
        let mut dirty = Dirty::default();
        index.service("mep/far", Some(net("mp3")), &mut dirty); // no local pod on mp3
        index.service("mep/plain", None, &mut dirty); // not kactus's
        index.endpoints("mep/far-x", Some("mep/far".into()), &mut dirty);
        index.endpoints("mep/nobody-x", Some("mep/nobody".into()), &mut dirty);
        index.pod("mep/bare", Some(pod("mep/bare", false, &[])), &mut dirty); // no attachments
        index.pod("mep/peer", Some(pod("mep/peer", false, &["mp1"])), &mut dirty); // no policy on mp1
        index.namespace(&mut dirty); // no policy at all
        assert_eq!(dirty, Dirty::default());
        assert!(index.visit(&dirty).is_empty());
    }

    #[test]
    fn a_peer_concerns_the_local_pods_on_its_governed_networks_and_a_policy_those_of_its_namespace() {
        let mut index = index();
        let mut dirty = Dirty::default();
        index.policy("other/deny", Some([net("mp1")].into()), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["other/c"]), "only other's pods can be selected");
        let c = index.pod_entry("other/c").unwrap().view.clone();
        assert_eq!(dirty.parts("other/c", &c), Parts { proxy: false, policy: true });
        // mp1 is governed now: a peer appearing there, changing or going concerns a and b.
        let peer = |networks: &[&str]| Some(pod("mep/peer", false, networks));
        for (now, expected) in [
            (peer(&["mp1"]), keys(&["mep/a", "mep/b"])),        // appears
            (peer(&["mp1", "mp2"]), keys(&["mep/a", "mep/b"])), // mp2 is not governed
            (peer(&["mp2"]), keys(&["mep/a", "mep/b"])),        // leaves mp1
            (None, keys(&[])),                                  // goes from mp2
        ] {
            let mut dirty = Dirty::default();
            index.pod("mep/peer", now, &mut dirty);
            assert_eq!(index.visit(&dirty), expected);
        }
        // A namespace's labels: every governed network's local pods.
        let mut dirty = Dirty::default();
        index.namespace(&mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["mep/a", "mep/b"]));
        assert_eq!(index.peers_on(&[net("mp1")].into()).len(), 3, "a, b and the remote pod");
        // The policy gone: mp1 is no longer governed.
        let mut dirty = Dirty::default();
        index.policy("other/deny", None, &mut dirty);
        index.pod("mep/peer", Some(pod("mep/peer", false, &["mp1"])), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["other/c"]));
    }

    #[test]
    fn a_local_pod_is_recomputed_whole_and_its_old_uid_is_gone_when_it_is_remade() {
        let mut index = index();
        let mut dirty = Dirty::default();
        let mut remade = pod("mep/a", true, &["mp2"]);
        remade.uid = "new".into();
        index.pod("mep/a", Some(remade.clone()), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["mep/a"]));
        assert_eq!(dirty.parts("mep/a", &remade.view), Parts::BOTH);
        assert_eq!(dirty.gone, keys(&["uid-mep/a"]));
        let mut dirty = Dirty::default();
        index.service("mep/hello", Some(net("mp1")), &mut dirty);
        assert_eq!(index.visit(&dirty), keys(&["mep/b"]), "a left mp1");
        let mut dirty = Dirty::default();
        index.pod("mep/a", None, &mut dirty);
        assert_eq!(dirty.gone, keys(&["new"]));
        assert!(index.visit(&dirty).is_empty(), "a deleted pod is not visited");
        assert_eq!(index.visit(&Dirty::everything()), keys(&["mep/b", "other/c"]));
    }
}
