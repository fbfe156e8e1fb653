//! A work queue of Service keys (`namespace/name`): a key queued twice is worked once, and
//! a failed key comes back after a delay instead of spinning.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashSet<String>,
    later: Vec<(Instant, String)>,
}

impl WorkQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: &str) {
        let mut state = self.lock();
        if state.queued.insert(key.to_string()) {
            state.order.push_back(key.to_string());
            self.wake.notify_one();
        }
    }

    /// Queues `key` once `delay` has passed.
    pub fn add_after(&self, key: &str, delay: Duration) {
        self.lock().later.push((Instant::now() + delay, key.to_string()));
        self.wake.notify_one();
    }

    /// The next key, waiting for one as long as it takes.
    pub fn next(&self) -> String {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut state.later).into_iter().partition(|(at, _)| *at <= now);
            state.later = waiting;
            for (_, key) in due {
                if state.queued.insert(key.clone()) {
                    state.order.push_back(key);
                }
            }
            if let Some(key) = state.order.pop_front() {
                state.queued.remove(&key);
                return key;
            }
            let wait = state.later.iter().map(|(at, _)| at.saturating_duration_since(now)).min();
            state = match wait {
                Some(wait) => self.wake.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0,
                None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_collapse_and_order_is_kept() {
        let q = WorkQueue::default();
        for key in ["a/x", "b/y", "a/x"] {
            q.add(key);
        }
        assert_eq!(q.next(), "a/x");
        q.add("a/x");
        assert_eq!(q.next(), "b/y");
        assert_eq!(q.next(), "a/x");
    }

    #[test]
    fn delayed_keys_come_back_after_their_delay() {
        let q = WorkQueue::default();
        let start = Instant::now();
        q.add_after("a/x", Duration::from_millis(50));
        assert_eq!(q.next(), "a/x");
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
