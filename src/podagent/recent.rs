//! What podagent remembers between its watch and its reconciles, so it acts on the pod its
//! watch delivered without reading it again: when each pod's latest change arrived (for the
//! react time it logs), and the changes it just made that the pod's `network-status` does
//! not show yet.
//!
//! kactus writes `network-status` before its call returns, and the watch delivers that write
//! a moment later. A reconcile in between (another change of the same pod, queued while the
//! call ran) sees the copy from before the write and would plan the same change again: kactus
//! would answer it harmlessly (a repeated dynamic ADD returns its cached result, a DEL of an
//! attachment that is gone deletes nothing), but it is a wasted call. So a change made on a
//! copy whose `network-status` is still the one it was planned on is left out, for
//! [`STATUS_GRACE`] at most: a status write that never comes (kactus could not PATCH the pod)
//! must not stop the retry that repairs it.

use super::diff::Change;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a change made is trusted to show in `network-status`.
pub const STATUS_GRACE: Duration = Duration::from_secs(5);
/// Arrival stamps kept at most (those of pods never reconciled are dropped past this).
const MAX_ARRIVALS: usize = 100_000;

#[derive(Default)]
pub struct Recent {
    arrivals: Mutex<HashMap<String, Instant>>,
    made: Mutex<HashMap<String, Made>>,
}

/// Changes made on a pod whose `network-status` was `status`.
struct Made {
    status: Option<String>,
    changes: Vec<Change>,
    at: Instant,
}

impl Recent {
    /// The watch delivered a change of pod `key` (the first since its last reconcile counts).
    pub fn arrived(&self, key: &str) {
        let mut arrivals = lock(&self.arrivals);
        if arrivals.len() >= MAX_ARRIVALS {
            arrivals.clear();
        }
        arrivals.entry(key.to_string()).or_insert_with(Instant::now);
    }

    /// When the change being reconciled arrived, if the watch delivered it.
    pub fn take_arrival(&self, key: &str) -> Option<Instant> {
        lock(&self.arrivals).remove(key)
    }

    /// `planned` less the changes just made on a copy of pod `key` with the same `status`;
    /// and, when some were left out, how long until they may be planned again.
    pub fn not_yet_shown(
        &self,
        key: &str,
        status: Option<&str>,
        planned: Vec<Change>,
    ) -> (Vec<Change>, Option<Duration>) {
        let mut made = lock(&self.made);
        let Some(m) = made.get(key) else { return (planned, None) };
        let age = m.at.elapsed();
        if m.status.as_deref() != status || age >= STATUS_GRACE {
            // The write arrived (or will not): plan from what the pod says.
            made.remove(key);
            return (planned, None);
        }
        let before = planned.len();
        let left: Vec<Change> = planned.into_iter().filter(|c| !m.changes.contains(c)).collect();
        let wait = (left.len() < before).then(|| STATUS_GRACE - age);
        (left, wait)
    }

    /// `changes` were made on pod `key` while its `network-status` was `status`.
    pub fn made(&self, key: &str, status: Option<&str>, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let entry = Made { status: status.map(str::to_string), changes, at: Instant::now() };
        let mut made = lock(&self.made);
        // What is past its grace is of no use (a pod deleted since leaves its entry behind).
        made.retain(|_, m| m.at.elapsed() < STATUS_GRACE);
        made.insert(key.to_string(), entry);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(network: &str) -> Change {
        Change { add: true, network: network.into(), ifname: format!("net-{network}") }
    }

    #[test]
    fn a_change_made_is_left_out_until_the_status_it_was_planned_on_changes() {
        let recent = Recent::default();
        recent.made("ns/app1", Some("[eth0]"), vec![add("data")]);
        // The copy from before kactus's write: data is not planned again, blue is.
        let (left, wait) = recent.not_yet_shown("ns/app1", Some("[eth0]"), vec![add("data"), add("blue")]);
        assert_eq!(left, vec![add("blue")]);
        assert!(wait.is_some_and(|w| w <= STATUS_GRACE));
        // Another pod is not concerned.
        assert_eq!(recent.not_yet_shown("ns/app2", Some("[eth0]"), vec![add("data")]).0, vec![add("data")]);
        // The write arrived: whatever the pod now asks for is planned, and the memory goes.
        let (left, wait) = recent.not_yet_shown("ns/app1", Some("[eth0,data]"), vec![add("data")]);
        assert_eq!((left, wait), (vec![add("data")], None));
        assert_eq!(recent.not_yet_shown("ns/app1", Some("[eth0]"), vec![add("data")]).0, vec![add("data")]);
    }

    #[test]
    fn the_first_arrival_since_the_last_reconcile_counts() {
        let recent = Recent::default();
        recent.arrived("ns/app1");
        let first = lock(&recent.arrivals)["ns/app1"];
        recent.arrived("ns/app1");
        assert_eq!(recent.take_arrival("ns/app1"), Some(first));
        assert_eq!(recent.take_arrival("ns/app1"), None);
    }
}
