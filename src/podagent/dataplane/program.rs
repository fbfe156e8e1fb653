//! The kernel side of one pod: its two nftables tables and its ClusterIP host routes, brought
//! from what was last applied to what is wanted, each table change one transaction. Blocking
//! (netlink in the pod's namespace): run on the blocking pool.

use crate::netlink::{self, ServiceRoute};
use crate::nft::{conntrack, service_proxy, Family, Nft, Stmt, Table, POLICY_TABLE};
use crate::policy::{plan, Update};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What podagent last made in one pod. `None` tables after a restart mean "unknown": the
/// first pass replaces the table (or deletes it when it finds one nobody wants).
#[derive(Debug, Clone)]
pub struct Programmed {
    pub netns: PathBuf,
    pub proxy: Known,
    pub policy: Known,
    pub routes: Option<Vec<ServiceRoute>>,
    /// Devices under policy already looked for in the pod: each is looked for once.
    pub looked_for: BTreeSet<String>,
}

/// A table as podagent knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// Not looked at since podagent started.
    Unknown,
    Absent,
    Applied(Table),
}

/// What a pod should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub proxy: Option<Table>,
    pub policy: Option<Table>,
    pub routes: Vec<ServiceRoute>,
}

impl Desired {
    pub fn nothing() -> Desired {
        Desired { proxy: None, policy: None, routes: Vec::new() }
    }
}

/// What one pass did, for /metrics.
#[derive(Debug, Default, Clone)]
pub struct Done {
    pub applied: u64,
    pub refills: u64,
    pub deleted: u64,
    /// UDP conntrack entries to gone endpoints deleted.
    pub conntrack_flushed: u64,
    /// Devices under policy found to be no network device in the pod (DPDK, vhost-user):
    /// nftables cannot filter them. Each is told once.
    pub unfiltered: Vec<String>,
}

impl Programmed {
    pub fn new(netns: PathBuf) -> Programmed {
        Programmed { netns, proxy: Known::Unknown, policy: Known::Unknown, routes: None, looked_for: BTreeSet::new() }
    }

    /// Whether both tables and the routes are known (applied or absent).
    pub fn knows_tables(&self) -> bool {
        self.proxy != Known::Unknown && self.policy != Known::Unknown && self.routes.is_some()
    }

    /// Whether `desired` is what was last applied (no netlink needed).
    pub fn matches(&self, desired: &Desired) -> bool {
        let same = |known: &Known, want: &Option<Table>| match (known, want) {
            (Known::Absent, None) => true,
            (Known::Applied(t), Some(w)) => t == w,
            _ => false,
        };
        same(&self.proxy, &desired.proxy)
            && same(&self.policy, &desired.policy)
            && self.routes.as_ref() == Some(&desired.routes)
    }

    /// Brings the pod to `desired`, and looks for the `governed` devices not looked for yet.
    /// What succeeded is remembered even when a later step fails; the error says which step.
    pub fn bring_to(&mut self, desired: &Desired, governed: &[String]) -> Result<Done, String> {
        let mut done = Done::default();
        let new: Vec<String> = governed.iter().filter(|d| !self.looked_for.contains(*d)).cloned().collect();
        if !new.is_empty() {
            // Best effort: not looked for now, looked for the next time.
            match netlink::absent_devices(&self.netns, &new) {
                Ok(absent) => {
                    self.looked_for.extend(new);
                    done.unfiltered = absent;
                }
                Err(e) => log::warn!("devices {new:?} in {}: {e}", self.netns.display()),
            }
        }
        let mut nft = None;
        // Policy first: a new Service's backend is filtered from the moment it is reachable.
        step(&self.netns, &mut nft, &mut self.policy, desired.policy.as_ref(), POLICY_TABLE, &mut done)?;
        let before = match &self.proxy {
            Known::Applied(t) => dnat_targets(t),
            _ => BTreeSet::new(),
        };
        step(&self.netns, &mut nft, &mut self.proxy, desired.proxy.as_ref(), service_proxy::TABLE, &mut done)?;
        let after = desired.proxy.as_ref().map(dnat_targets).unwrap_or_default();
        let gone: Vec<IpAddr> = before.difference(&after).copied().collect();
        if !gone.is_empty() {
            // Best effort: a UDP flow to a gone endpoint is otherwise stuck until it times out.
            match conntrack::flush_udp_to(&self.netns, &gone) {
                Ok(n) => done.conntrack_flushed += n as u64,
                Err(e) => log::warn!("UDP conntrack entries to {gone:?} in {}: {e}", self.netns.display()),
            }
        }
        if self.routes.as_ref() != Some(&desired.routes) {
            netlink::sync_service_routes(&self.netns, &desired.routes)
                .map_err(|e| format!("ClusterIP routes in {}: {e}", self.netns.display()))?;
            self.routes = Some(desired.routes.clone());
        }
        Ok(done)
    }
}

fn step(
    netns: &Path,
    nft: &mut Option<Nft>,
    known: &mut Known,
    desired: Option<&Table>,
    name: &str,
    done: &mut Done,
) -> Result<(), String> {
    let current = match known {
        Known::Applied(t) => Some(&*t),
        Known::Absent => None,
        Known::Unknown if desired.is_some() => None, // replaced whole: safe whatever is there
        Known::Unknown => {
            // After a restart: a table nobody wants any more may still be there.
            let exists = open(netns, nft)?.exists(Family::Inet, name).map_err(|e| format!("table {name}: {e}"))?;
            if exists {
                open(netns, nft)?.delete(Family::Inet, name).map_err(|e| format!("delete table {name}: {e}"))?;
                done.deleted += 1;
            }
            *known = Known::Absent;
            return Ok(());
        }
    };
    let update = plan(current, desired);
    match update {
        Update::Unchanged => {}
        Update::Refill(sets) => {
            open(netns, nft)?
                .refill_sets(Family::Inet, name, &sets)
                .map_err(|e| format!("refill table {name}: {e}"))?;
            done.refills += 1;
        }
        Update::Replace(table) => {
            open(netns, nft)?.apply(&table).map_err(|e| format!("apply table {name}: {e}"))?;
            done.applied += 1;
        }
        Update::Delete => {
            open(netns, nft)?.delete(Family::Inet, name).map_err(|e| format!("delete table {name}: {e}"))?;
            done.deleted += 1;
        }
    }
    *known = desired.map_or(Known::Absent, |t| Known::Applied(t.clone()));
    Ok(())
}

/// The endpoint addresses a proxy table DNATs to.
fn dnat_targets(table: &Table) -> BTreeSet<IpAddr> {
    let stmts = table.chains.iter().flat_map(|c| &c.rules).flat_map(|r| &r.0);
    stmts
        .filter_map(|s| match s {
            Stmt::Dnat(ip, _) => Some(*ip),
            _ => None,
        })
        .collect()
}

fn open<'a>(netns: &Path, nft: &'a mut Option<Nft>) -> Result<&'a mut Nft, String> {
    if nft.is_none() {
        *nft = Some(Nft::open_in(netns).map_err(|e| format!("nftables in {}: {e}", netns.display()))?);
    }
    nft.as_mut().ok_or_else(|| "no nftables socket".to_string())
}

/// Removes kactus's tables and ClusterIP routes from the pod whose namespace is at `netns`
/// (`kactus uninstall`); what is not there is no error.
pub fn remove_all(netns: &Path) -> Result<(), String> {
    let mut nft = Nft::open_in(netns).map_err(|e| format!("nftables in {}: {e}", netns.display()))?;
    for name in [service_proxy::TABLE, POLICY_TABLE] {
        nft.delete(Family::Inet, name).map_err(|e| format!("delete table {name} in {}: {e}", netns.display()))?;
    }
    netlink::sync_service_routes(netns, &[]).map_err(|e| format!("ClusterIP routes in {}: {e}", netns.display()))
}
