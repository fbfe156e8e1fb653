//! Per-object retry delays: exponential from a base, capped, restarted when the object
//! changes (a new version may fix what failed) or after a success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub struct Retries {
    base: Duration,
    max: Duration,
    /// Per object key: the version that failed and how many times in a row.
    failures: Mutex<HashMap<String, (String, u32)>>,
}

impl Retries {
    pub fn new(base: Duration, max: Duration) -> Retries {
        Retries { base, max, failures: Mutex::default() }
    }

    /// Records a failure of `key` at `version` and says how long to wait before the next try:
    /// `base`, `2 base`, `4 base`, ... up to `max`; from `base` again for a new version.
    pub fn failed(&self, key: &str, version: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(key.to_string()).or_insert_with(|| (version.to_string(), 0));
        if entry.0 != version {
            *entry = (version.to_string(), 0);
        }
        let delay = self.base.saturating_mul(1 << entry.1.min(16)).min(self.max);
        entry.1 += 1;
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_restart_for_a_new_version_or_after_success() {
        let r = Retries::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| r.failed("ns/a", "1").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(r.failed("ns/b", "1"), Duration::from_secs(1), "per object");
        assert_eq!(r.failed("ns/a", "2"), Duration::from_secs(1), "a new version starts again");
        r.succeeded("ns/a");
        assert_eq!(r.failed("ns/a", "2"), Duration::from_secs(1));
    }
}
