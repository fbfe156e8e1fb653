//! What this node holds of a network: its slice of each sliced cluster range (native mode),
//! or its index (seed mode, when the index comes from the Node object). Assigned once per
//! node and network through the apiserver, then recorded beside the network's leases in
//! `<dataDir>/<network>/node-local.json`, so that pod starts make no apiserver call at all.
//!
//! The record is checked with the apiserver again (reads only: the Node, the node's own
//! claims) when the node file changes (a new installer pod: upgrades, and a Node that was
//! deleted and registered again gets one) and once it is older than `revalidateSeconds`. That
//! is how a stale record is found: the Node's uid is not the one the claims are owned by, or
//! a claim is gone (the garbage collector removed it with the old Node). The node then takes
//! its claims over or claims its recorded slices again, so its running pods keep their
//! addresses; only if another node took a slice meanwhile does it move to a new one, and says
//! so loudly. A check that cannot reach the apiserver keeps the record (and tries again within
//! 30 s): pods keep starting while the apiserver is down.

use super::claims::{spread, ClaimApi, SliceClaim};
use super::config::{Addressing, Config};
use super::leases::LeaseStore;
use super::node::NodeIdentity;
use super::pools::Pools;
use super::range::{Range, RangeSpec, SlicedRange};
use super::template::{self, IndexSource, NodeField, Template};
use crate::cni::result::{Dns, Route};
use crate::cni::{code, CniError};
use crate::kube::Node;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The record's file name in the network's lease directory.
pub const RECORD_FILE: &str = "node-local.json";
/// How soon a check that could not reach the apiserver is tried again.
const RETRY_CHECK: Duration = Duration::from_secs(30);

/// The node's pools for one network: concrete ranges, as host-local would be configured.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePools {
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// What the node holds, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Record {
    pub node: String,
    pub node_uid: String,
    /// The node file this was last checked against (see [`NodeIdentity::fingerprint`]).
    pub node_file: String,
    /// Unix time of the last check with the apiserver.
    pub checked_at: u64,
    /// Unix time of the next try after a check that could not reach the apiserver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    pub slices: Vec<HeldSlice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_index: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldSlice {
    pub range: String,
    pub slice: String,
    pub claim: String,
}

/// The node's pools for the network the config names: fixed ranges as they are, sliced ones
/// narrowed to the node's slices, a template filled in with the node's index.
pub fn node_pools(cfg: &Config, store: &LeaseStore) -> Result<NodePools, CniError> {
    match &cfg.addressing {
        Addressing::Inline(pools) => {
            let sliced = pools.sliced();
            let slices = if sliced.is_empty() { Vec::new() } else { Holder::new(cfg, store)?.slices(&sliced)? };
            Ok(concrete(pools, &slices))
        }
        Addressing::Template(t) => {
            let index = match &t.index {
                IndexSource::Hostname => template::index_from_hostname(&template::hostname()?)
                    .map_err(|e| CniError::invalid_config(format!("template {}: {e}", t.path.display())))?,
                IndexSource::Node(field) => Holder::new(cfg, store)?.index(t, field)?,
            };
            Ok(concrete(&t.pools(index)?, &[]))
        }
    }
}

/// Ranges as the node hands them out; `slices` in the order of [`Pools::sliced`].
fn concrete(pools: &Pools, slices: &[IpNet]) -> NodePools {
    let mut slices = slices.iter();
    let range_sets = pools
        .range_sets
        .iter()
        .map(|set| {
            set.iter()
                .filter_map(|spec| match spec {
                    RangeSpec::Fixed(r) => Some(r.clone()),
                    RangeSpec::Sliced(s) => slices.next().map(|slice| s.node_range(*slice)),
                })
                .collect()
        })
        .collect();
    NodePools { range_sets, routes: pools.routes.clone(), dns: pools.dns.clone() }
}

/// The node's side of one network's assignment, under the network's lock.
struct Holder<'a> {
    cfg: &'a Config,
    store: &'a LeaseStore,
    node: NodeIdentity,
    record: Option<Record>,
    /// Why the record on disk could not be used as one, for messages.
    unreadable: Option<String>,
    now: u64,
}

impl<'a> Holder<'a> {
    fn new(cfg: &'a Config, store: &'a LeaseStore) -> Result<Holder<'a>, CniError> {
        let node = NodeIdentity::read(&cfg.node_file)?;
        let (record, unreadable) = match store.read_file(RECORD_FILE)? {
            None => (None, None),
            Some(text) => match serde_json::from_str::<Record>(&text) {
                Ok(record) => (Some(record), None),
                Err(e) => {
                    let why = format!("{} is corrupt ({e})", store.dir().join(RECORD_FILE).display());
                    log::warn!("{why}; asking the apiserver what this node holds");
                    (None, Some(why))
                }
            },
        };
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Holder { cfg, store, node, record, unreadable, now })
    }

    /// The recorded state, if it is this node's and fresh: nothing to ask the apiserver.
    fn fresh(&self) -> Option<&Record> {
        let due = |r: &Record| match r.retry_at {
            Some(at) => at,
            None => r.checked_at.saturating_add(self.cfg.revalidate.as_secs()),
        };
        self.record
            .as_ref()
            .filter(|r| r.node == self.node.name && r.node_file == self.node.fingerprint && self.now < due(r))
    }

    /// Records what the apiserver just confirmed.
    fn save(&self, mut record: Record) -> Result<(), CniError> {
        record.checked_at = self.now;
        record.retry_at = None;
        self.write(record)
    }

    /// Keeps the record after a check that failed, and tries again soon.
    fn keep(&self, mut record: Record) -> Result<(), CniError> {
        record.retry_at = Some(self.now + self.cfg.revalidate.min(RETRY_CHECK).as_secs());
        self.write(record)
    }

    fn write(&self, mut record: Record) -> Result<(), CniError> {
        record.node = self.node.name.clone();
        record.node_file = self.node.fingerprint.clone();
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        self.store.replace(RECORD_FILE, &bytes, true)
    }

    fn network(&self) -> &str {
        &self.cfg.network
    }

    /// The node's slice of each of `ranges`.
    fn slices(&self, ranges: &[&SlicedRange]) -> Result<Vec<IpNet>, CniError> {
        let recorded = self.record.as_ref().filter(|r| r.node == self.node.name).and_then(|r| held(r, ranges));
        if let (Some(slices), Some(_)) = (&recorded, self.fresh()) {
            return Ok(slices.clone());
        }
        if let (Some(slices), Some(record)) = (&recorded, &self.record) {
            // Due for a check; one that cannot reach the apiserver keeps what is recorded.
            match self.check(record, ranges) {
                Ok(record) => {
                    let slices = held(&record, ranges).unwrap_or_else(|| slices.clone());
                    self.save(record)?;
                    return Ok(slices);
                }
                Err(e) if e.code == code::TRY_AGAIN_LATER => {
                    log::warn!("network {}: keeping the recorded slices, the check failed: {}", self.network(), e.msg);
                    self.keep(record.clone())?;
                    return Ok(slices.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let record = ClaimApi::connect(&self.node.kubeconfig, self.cfg.api_timeout)
            .and_then(|api| self.assign(&api, &self.node_object(&api)?, ranges))
            .map_err(|e| match &self.unreadable {
                Some(why) => e.context(why),
                None => e,
            })?;
        let slices = held(&record, ranges).unwrap_or_default();
        self.save(record)?;
        Ok(slices)
    }

    /// A due check: is the Node the one the claims belong to, and are the claims there?
    /// Reads only; anything amiss is put right by [`Holder::assign`].
    fn check(&self, record: &Record, ranges: &[&SlicedRange]) -> Result<Record, CniError> {
        let api = ClaimApi::connect_once(&self.node.kubeconfig, self.cfg.api_timeout)?;
        // A Node being registered again is there again within seconds: until then the node
        // goes on with what it recorded.
        let node = self.node_object(&api).map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e.msg))?;
        let mine = api.list(self.network(), Some(&self.node.name))?;
        let intact = node.metadata.uid == record.node_uid
            && record
                .slices
                .iter()
                .all(|h| mine.iter().any(|c| c.metadata.name == h.claim && c.owner_uid() == Some(&node.metadata.uid)));
        if intact {
            return Ok(record.clone());
        }
        log::warn!(
            "network {}: the apiserver no longer shows this node's claims as recorded (Node uid {} now, {} recorded); \
             claiming them again",
            self.network(),
            node.metadata.uid,
            record.node_uid
        );
        self.assign(&api, &node, ranges)
    }

    fn node_object(&self, api: &ClaimApi) -> Result<Node, CniError> {
        api.node(&self.node.name)?.ok_or_else(|| {
            CniError::new(
                code::APISERVER,
                format!(
                    "node {} (from {}) has no Node object in the apiserver: slices are claimed for a registered node",
                    self.node.name,
                    self.cfg.node_file.display()
                ),
            )
        })
    }

    /// Gives the node a claim for every range: its own claims (taken over if owned by an
    /// earlier Node of its name), else the slice it recorded, else a free one. Claims made
    /// here are deleted again if a later range fails, so a node holds all or none.
    fn assign(&self, api: &ClaimApi, node: &Node, ranges: &[&SlicedRange]) -> Result<Record, CniError> {
        let all = api.list(self.network(), None)?;
        let mut held = Vec::new();
        let mut created: Vec<SliceClaim> = Vec::new();
        for range in ranges {
            let claimed = self.claim_for(api, node, range, &all);
            match claimed {
                Ok((claim, new)) => {
                    if new {
                        created.push(claim.clone());
                    }
                    held.push(HeldSlice {
                        range: range.subnet.to_string(),
                        slice: claim.spec.slice.clone(),
                        claim: claim.metadata.name.clone(),
                    });
                }
                Err(e) => {
                    for claim in &created {
                        if let Err(undo) = api.delete(claim) {
                            log::warn!("could not release slice claim {}: {}", claim.metadata.name, undo.msg);
                        }
                    }
                    return Err(e);
                }
            }
        }
        log::info!(
            "network {}: node {} holds {}",
            self.network(),
            self.node.name,
            held.iter().map(|h| h.slice.as_str()).collect::<Vec<_>>().join(", ")
        );
        Ok(Record { node_uid: node.metadata.uid.clone(), slices: held, ..Record::default() })
    }

    /// The node's claim of a slice of `range`, and whether it was made just now.
    fn claim_for(
        &self,
        api: &ClaimApi,
        node: &Node,
        range: &SlicedRange,
        all: &[SliceClaim],
    ) -> Result<(SliceClaim, bool), CniError> {
        if let Some(mine) = all.iter().find(|c| c.spec.node == self.node.name && c.is_slice_of(range)) {
            if mine.owner_uid() == Some(&node.metadata.uid) {
                return Ok((mine.clone(), false));
            }
            if let Some(adopted) = api.adopt(mine, node)? {
                log::info!("network {}: took over slice claim {} for the new Node", self.network(), mine.metadata.name);
                return Ok((adopted, false));
            }
        }
        let recorded = self.recorded_slice(range);
        if let Some(slice) = recorded {
            if let Some(other) = all.iter().find(|c| c.spec.node != self.node.name && c.slice() == Some(slice)) {
                log::warn!(
                    "network {}: slice {slice}, which this node handed addresses from, is now claimed by node {}; \
                     pods here still holding addresses from it may clash with that node's, and new pods get a new slice",
                    self.network(),
                    other.spec.node
                );
            }
        }
        let free = FreeSlices::new(range, all, recorded.and_then(|s| range.index_of(&s)), &self.node.name);
        for index in free {
            if let Some(claim) = api.create(&SliceClaim::new(self.network(), range, range.slice(index), node))? {
                return Ok((claim, true));
            }
        }
        if let Some(claim) = self.reclaim(api, node, range, all)? {
            return Ok((claim, true));
        }
        Err(CniError::new(
            code::ADDRESSES_EXHAUSTED,
            format!(
                "network {}: no free /{} slice left in {} for node {}: all {} are claimed by registered nodes \
                 (kubectl get sliceclaims -l kactus.io/network={})",
                self.network(),
                range.slice_len,
                range.subnet,
                self.node.name,
                range.count(),
                super::claims::label_value(self.network())
            ),
        ))
    }

    /// With the range full, takes a slice whose Node is gone (the garbage collector frees
    /// those, but not at once). Deleting only the claim as read, and then creating it anew,
    /// are each atomic, so two nodes doing this for the same slice never both get it.
    fn reclaim(
        &self,
        api: &ClaimApi,
        node: &Node,
        range: &SlicedRange,
        all: &[SliceClaim],
    ) -> Result<Option<SliceClaim>, CniError> {
        let mut registered: BTreeMap<String, bool> = BTreeMap::new();
        for claim in all.iter().filter(|c| c.is_slice_of(range)) {
            let exists = match registered.get(&claim.spec.node) {
                Some(exists) => *exists,
                None => {
                    let exists = api.node(&claim.spec.node)?.is_some();
                    registered.insert(claim.spec.node.clone(), exists);
                    exists
                }
            };
            let Some(slice) = claim.slice().filter(|_| !exists) else { continue };
            if api.delete(claim)? {
                log::info!(
                    "network {}: reclaimed slice {slice} from node {}, which no longer exists",
                    self.network(),
                    claim.spec.node
                );
            }
            if let Some(mine) = api.create(&SliceClaim::new(self.network(), range, slice, node))? {
                return Ok(Some(mine));
            }
        }
        Ok(None)
    }

    /// The slice the record says the node had in `range`, even if the record is stale.
    fn recorded_slice(&self, range: &SlicedRange) -> Option<IpNet> {
        let record = self.record.as_ref().filter(|r| r.node == self.node.name)?;
        let held = record.slices.iter().find(|h| h.range == range.subnet.to_string())?;
        held.slice.parse().ok().filter(|s| range.index_of(s).is_some())
    }

    /// Seed mode: the node's index from its Node's label or annotation.
    fn index(&self, template: &Template, field: &NodeField) -> Result<u32, CniError> {
        let recorded = self.record.as_ref().filter(|r| r.node == self.node.name).and_then(|r| r.node_index);
        if let (Some(index), Some(_)) = (recorded, self.fresh()) {
            return Ok(index);
        }
        let api = match recorded {
            Some(_) => ClaimApi::connect_once(&self.node.kubeconfig, self.cfg.api_timeout),
            None => ClaimApi::connect(&self.node.kubeconfig, self.cfg.api_timeout),
        };
        let read = api.and_then(|api| self.node_object(&api)).and_then(|node| {
            let (what, value) = field.read(&node.metadata);
            let at = format!("template {}: node {} {what}", template.path.display(), self.node.name);
            let value = value.ok_or_else(|| CniError::invalid_config(format!("{at} is not set")))?;
            let index = template::index_from_text(&at, value).map_err(CniError::invalid_config)?;
            Ok((node, index))
        });
        match (read, recorded) {
            (Ok((node, index)), _) => {
                if recorded.is_some_and(|r| r != index) {
                    log::warn!("network {}: node index changed from {recorded:?} to {index}", self.network());
                }
                let record = Record { node_uid: node.metadata.uid, node_index: Some(index), ..Record::default() };
                self.save(record)?;
                Ok(index)
            }
            (Err(e), Some(index)) if e.code == code::TRY_AGAIN_LATER => {
                log::warn!("network {}: keeping node index {index}, the check failed: {}", self.network(), e.msg);
                self.keep(self.record.clone().unwrap_or_default())?;
                Ok(index)
            }
            (Err(e), _) => Err(e),
        }
    }
}

/// The recorded slice of each range, if the record has one for every range.
fn held(record: &Record, ranges: &[&SlicedRange]) -> Option<Vec<IpNet>> {
    ranges
        .iter()
        .map(|range| {
            let h = record.slices.iter().find(|h| h.range == range.subnet.to_string())?;
            h.slice.parse().ok().filter(|s| range.index_of(s).is_some())
        })
        .collect()
}

/// The free slices of a range, in the order a node tries them: the one it had, then from a
/// point of its own (so racing nodes rarely try the same one), wrapping around. Claims of
/// another layout (a changed `nodeSliceSize`) block every slice they overlap.
struct FreeSlices {
    count: u128,
    /// Taken index intervals, sorted and merged.
    taken: Vec<(u128, u128)>,
    preferred: Option<u128>,
    /// The preferred slice, once offered: not offered again by the scan.
    offered: Option<u128>,
    next: Option<u128>,
    /// How many positions after `start` are left to look at.
    left: u128,
}

impl FreeSlices {
    fn new(range: &SlicedRange, claims: &[SliceClaim], preferred: Option<u128>, node: &str) -> FreeSlices {
        let mut taken: Vec<(u128, u128)> = claims
            .iter()
            .filter_map(|c| c.slice())
            .map(|s| range.indexes_overlapping(&s))
            .filter(|r| !r.is_empty())
            .map(|r| (*r.start(), *r.end()))
            .collect();
        taken.sort();
        let mut merged: Vec<(u128, u128)> = Vec::new();
        for (lo, hi) in taken {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let count = range.count();
        let start = spread(node, count);
        FreeSlices { count, taken: merged, preferred, offered: None, next: Some(start), left: count }
    }

    fn taken_until(&self, index: u128) -> Option<u128> {
        self.taken.iter().find(|(lo, hi)| (*lo..=*hi).contains(&index)).map(|(_, hi)| *hi)
    }
}

impl Iterator for FreeSlices {
    type Item = u128;

    fn next(&mut self) -> Option<u128> {
        if let Some(p) = self.preferred.take() {
            if self.taken_until(p).is_none() {
                self.offered = Some(p);
                return Some(p);
            }
        }
        while self.left > 0 {
            let index = self.next?;
            match self.taken_until(index) {
                None => {
                    self.left -= 1;
                    self.next = Some((index + 1) % self.count);
                    if self.offered != Some(index) {
                        return Some(index);
                    }
                }
                Some(hi) => {
                    // Jump over the taken interval (wrapping at the end of the range).
                    let skipped = if hi >= index { hi - index + 1 } else { 1 };
                    self.left = self.left.saturating_sub(skipped);
                    self.next = Some((hi + 1) % self.count);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::ObjectMeta;

    fn range(s: &str, len: u8) -> SlicedRange {
        SlicedRange::new(s.parse().unwrap(), len, false, None).unwrap()
    }

    fn claim(r: &SlicedRange, slice: &str, node: &str) -> SliceClaim {
        let node =
            Node { metadata: ObjectMeta { name: node.into(), uid: format!("uid-{node}"), ..Default::default() } };
        SliceClaim::new("green", r, slice.parse().unwrap(), &node)
    }

    #[test]
    fn free_slices_skip_claims_and_wrap() {
        let r = range("11.0.0.0/22", 24);
        let claims = vec![claim(&r, "11.0.1.0/24", "a"), claim(&r, "11.0.2.0/24", "b")];
        let mut free = FreeSlices::new(&r, &claims, Some(2), "n");
        free.next = Some(2);
        assert_eq!(free.collect::<Vec<_>>(), vec![3, 0], "the taken preferred slice is skipped");
        let mut preferred = FreeSlices::new(&r, &claims, Some(3), "n");
        assert_eq!(preferred.next(), Some(3));
        let all: Vec<SliceClaim> = (0..4).map(|i| claim(&r, &format!("11.0.{i}.0/24"), "x")).collect();
        assert_eq!(FreeSlices::new(&r, &all, None, "n").count(), 0);
    }

    #[test]
    fn a_claim_of_another_layout_blocks_what_it_overlaps() {
        let r = range("11.0.0.0/16", 24);
        let wide = range("11.0.0.0/16", 20);
        let claims = vec![claim(&wide, "11.0.16.0/20", "old")];
        let free: Vec<u128> = FreeSlices::new(&r, &claims, None, "n").take(300).collect();
        assert_eq!(free.len(), 240);
        assert!(free.iter().all(|i| !(16..32).contains(i)));
    }

    #[test]
    fn huge_ranges_do_not_enumerate() {
        let r = range("fd00::/32", 96);
        let claims = vec![claim(&r, "fd00::/96", "a")];
        let mut free = FreeSlices::new(&r, &claims, None, "n");
        free.next = Some(0);
        assert_eq!(free.next(), Some(1));
    }

    #[test]
    fn concrete_pools_put_slices_in_their_sets() {
        let pools = Pools {
            range_sets: vec![
                vec![RangeSpec::Sliced(range("11.0.0.0/16", 24))],
                vec![RangeSpec::Sliced(range("fd11::/48", 64))],
            ],
            routes: Vec::new(),
            dns: Dns::default(),
        };
        let node = concrete(&pools, &["11.0.4.0/24".parse().unwrap(), "fd11:0:0:4::/64".parse().unwrap()]);
        assert_eq!(node.range_sets[0][0].subnet.to_string(), "11.0.4.0/24");
        assert_eq!(node.range_sets[1][0].start.to_string(), "fd11:0:0:4::1");
    }
}
