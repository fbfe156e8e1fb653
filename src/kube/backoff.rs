//! How long to wait before retrying an apiserver request.
//!
//! Exponential (50ms, 100ms, 200ms, ...) so a brief blip costs little and a struggling
//! apiserver is not hammered, with jitter so the CNI calls of many pods started together
//! do not retry in lockstep, and capped so a CNI ADD never sleeps for long.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const BASE: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// A `Retry-After` longer than this is shortened: the caller has its own deadline.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Delay before retry number `attempt` (0 for the first retry): `BASE * 2^attempt`, capped,
/// plus up to half of that again as jitter.
pub(crate) fn delay(attempt: u32) -> Duration {
    let exponential = BASE.saturating_mul(1u32 << attempt.min(16)).min(MAX_DELAY);
    let jitter_ms = random() % (exponential.as_millis() as u64 / 2 + 1);
    exponential + Duration::from_millis(jitter_ms)
}

/// The delay a 429/503 answer asks for (`Retry-After: <seconds>`), capped.
pub(crate) fn retry_after(header: Option<&str>) -> Option<Duration> {
    let seconds: u64 = header?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// A random number without a dependency: std seeds every `RandomState` randomly.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_bounds() {
        for attempt in 0..40 {
            let expected = (BASE * 2u32.pow(attempt.min(16))).min(MAX_DELAY);
            for _ in 0..20 {
                let d = delay(attempt);
                assert!(d >= expected && d <= expected + expected / 2, "{attempt}: {d:?}");
            }
        }
        assert!(delay(0) <= Duration::from_millis(75));
        assert!(delay(2) >= Duration::from_millis(200));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        assert_eq!(retry_after(Some("1")), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(Some("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
