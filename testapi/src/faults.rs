//! Fault injection: what a flaky or strict real apiserver does to clients, on demand.
//!
//! Tests hold [`Faults`] directly; scripts reach the same switches through
//! `POST /_testapi/faults` (see [`Faults::apply_control`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::status::ApiError;
use super::store::Store;

/// What to do to one request instead of answering it normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Close the connection without a response.
    Reset,
    /// Answer with a `Status` of this HTTP code.
    Fail(u16),
    /// Answer 200 with a body that is not JSON (a proxy's error page, say).
    Garbage,
    /// Answer with the first half of the real body (a response cut short).
    Truncated,
    /// Answer 200 with JSON that is not the object asked for (a `Status` of success, as a
    /// misbehaving proxy or aggregated server might send).
    Foreign,
}

#[derive(Debug)]
struct FailRule {
    remaining: u32,
    answer: Injected,
    path_contains: Option<String>,
}

#[derive(Debug, Default)]
struct FaultState {
    latency: Duration,
    fail: Vec<FailRule>,
    reset_next: u32,
    /// (verb, resource) pairs that get 403; "*" matches any.
    forbidden: HashSet<(String, String)>,
    /// (path part, file): answers to matching requests wait until the file exists.
    holds: Vec<(String, PathBuf)>,
    /// Path parts whose requests are never answered (until the faults are cleared).
    hangs: Vec<String>,
    /// The only bearer token accepted once the token was rotated.
    rotated_token: Option<String>,
}

/// How long a held (or hung) answer waits at most, so a test whose file never appears fails
/// instead of hanging.
const HOLD_BOUND: Duration = Duration::from_secs(30);

pub struct Faults {
    state: Mutex<FaultState>,
    store: Arc<Store>,
}

impl Faults {
    pub(crate) fn new(store: Arc<Store>) -> Faults {
        Faults { state: Mutex::new(FaultState::default()), store }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delay added before every API response.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// The next `n` API requests whose path contains `path_contains` (any path if None) get a
    /// `Status` with this code; 429 also carries `Retry-After`.
    pub fn fail_next(&self, n: u32, status: u16, path_contains: Option<&str>) {
        self.inject_next(n, Injected::Fail(status), path_contains);
    }

    /// The next `n` API requests whose path contains `path_contains` (any path if None) get
    /// a 200 whose body is not JSON.
    pub fn garbage_next(&self, n: u32, path_contains: Option<&str>) {
        self.inject_next(n, Injected::Garbage, path_contains);
    }

    /// The next `n` API requests whose path contains `path_contains` (any path if None) get
    /// the first half of their real answer's body.
    pub fn truncate_next(&self, n: u32, path_contains: Option<&str>) {
        self.inject_next(n, Injected::Truncated, path_contains);
    }

    /// The next `n` API requests whose path contains `path_contains` (any path if None) get
    /// a 200 whose JSON body is not the object asked for.
    pub fn foreign_next(&self, n: u32, path_contains: Option<&str>) {
        self.inject_next(n, Injected::Foreign, path_contains);
    }

    fn inject_next(&self, n: u32, answer: Injected, path_contains: Option<&str>) {
        self.lock().fail.push(FailRule { remaining: n, answer, path_contains: path_contains.map(str::to_string) });
    }

    /// The next `n` API requests are read and then the connection is closed unanswered.
    pub fn reset_next(&self, n: u32) {
        self.lock().reset_next = n;
    }

    /// Compacts the history: open watches get ERROR 410 Expired and end, and watches from an
    /// older resourceVersion are refused the same way, so clients must relist.
    pub fn expire_watches(&self) {
        self.store.compact();
    }

    /// Denies `verb` (get, list, watch, create, update, patch, delete; "*" for all) on
    /// `resource` (e.g. "pods", "pods/status"; "*" for all) with a 403 as RBAC would.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.lock().forbidden.insert((verb.to_string(), resource.to_string()));
    }

    /// Answers to requests whose path contains `path_contains` wait until `until` exists
    /// (at most 30 s): lets a test prove that a client does something else (a process the
    /// test controls creates the file) while its request is outstanding, with no clock.
    pub fn hold(&self, path_contains: &str, until: &Path) {
        self.lock().holds.push((path_contains.to_string(), until.to_path_buf()));
    }

    /// Requests whose path contains `path_contains` ("" for all) are read after the TLS
    /// handshake and never answered, until [`Faults::clear`] or the server stops (at most
    /// 30 s): an apiserver that hangs.
    pub fn hang(&self, path_contains: &str) {
        self.lock().hangs.push(path_contains.to_string());
    }

    /// From now on only `token` is accepted: clients still sending the server's first token
    /// get 401, as after a service-account token rotation.
    pub fn rotate_token(&self, token: &str) {
        self.lock().rotated_token = Some(token.to_string());
    }

    /// Back to a well-behaved server (a rotated token stays rotated).
    pub fn clear(&self) {
        let mut state = self.lock();
        let rotated = state.rotated_token.take();
        *state = FaultState { rotated_token: rotated, ..FaultState::default() };
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    /// Whether an answer may wait (latency, a hold or a hang is set).
    pub(crate) fn delays(&self) -> bool {
        let state = self.lock();
        !state.latency.is_zero() || !state.holds.is_empty() || !state.hangs.is_empty()
    }

    /// The token a client must present, once it was rotated (see [`Faults::rotate_token`]).
    pub(crate) fn rotated_token(&self) -> Option<String> {
        self.lock().rotated_token.clone()
    }

    /// Waits out the holds and hangs that match `path` (see [`Faults::hold`], [`Faults::hang`]).
    pub(crate) fn wait_for_holds(&self, path: &str) {
        let files: Vec<PathBuf> =
            self.lock().holds.iter().filter(|(part, _)| path.contains(part.as_str())).map(|(_, f)| f.clone()).collect();
        let deadline = Instant::now() + HOLD_BOUND;
        for file in files {
            while !file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let hung = |state: &FaultState| state.hangs.iter().any(|part| path.contains(part.as_str()));
        while hung(&self.lock()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Consumes and returns the fault for a request to `path`, if any is pending.
    pub(crate) fn take_injected(&self, path: &str) -> Option<Injected> {
        let mut state = self.lock();
        if state.reset_next > 0 {
            state.reset_next -= 1;
            return Some(Injected::Reset);
        }
        let rule = state
            .fail
            .iter_mut()
            .find(|r| r.remaining > 0 && r.path_contains.as_deref().is_none_or(|p| path.contains(p)))?;
        rule.remaining -= 1;
        let answer = rule.answer;
        state.fail.retain(|r| r.remaining > 0);
        Some(answer)
    }

    pub(crate) fn is_forbidden(&self, verb: &str, resource: &str) -> bool {
        self.lock().forbidden.iter().any(|(v, r)| (v == "*" || v == verb) && (r == "*" || r == resource))
    }

    /// The control endpoint's body: `{"latencyMs":5,"failNext":{"count":2,"status":503,
    /// "pathContains":"..."},"garbageNext":{"count":1,"pathContains":"..."},"truncateNext":{...},
    /// "foreignNext":{...},
    /// "resetNext":1,"expireWatches":true,"forbid":{"verb":"get","resource":"pods"},
    /// "hold":{"pathContains":"...","untilFile":"/path"},"hang":{"pathContains":"..."},
    /// "rotateToken":"new-token","clear":true}`; `clear` is applied first.
    pub fn apply_control(&self, body: &Value) -> Result<(), ApiError> {
        let Some(map) = body.as_object() else {
            return Err(ApiError::bad_request("faults body must be a JSON object"));
        };
        let bad = |key: &str| ApiError::bad_request(format!("faults: invalid {key}"));
        if body["clear"].as_bool() == Some(true) {
            self.clear();
        }
        for (key, value) in map {
            match key.as_str() {
                "clear" => {}
                "latencyMs" => self.set_latency(Duration::from_millis(value.as_u64().ok_or_else(|| bad(key))?)),
                "failNext" => {
                    let count = value["count"].as_u64().unwrap_or(1);
                    let status = value["status"].as_u64().filter(|s| (400..600).contains(s));
                    let status = status.ok_or_else(|| bad("failNext.status"))?;
                    let count = u32::try_from(count).map_err(|_| bad("failNext.count"))?;
                    self.fail_next(count, status as u16, value["pathContains"].as_str());
                }
                "garbageNext" | "truncateNext" | "foreignNext" => {
                    let count = u32::try_from(value["count"].as_u64().unwrap_or(1)).map_err(|_| bad(key))?;
                    let answer = match key.as_str() {
                        "garbageNext" => Injected::Garbage,
                        "truncateNext" => Injected::Truncated,
                        _ => Injected::Foreign,
                    };
                    self.inject_next(count, answer, value["pathContains"].as_str());
                }
                "hang" => self.hang(value["pathContains"].as_str().unwrap_or_default()),
                "rotateToken" => self.rotate_token(value.as_str().filter(|t| !t.is_empty()).ok_or_else(|| bad(key))?),
                "resetNext" => {
                    let n = value.as_u64().and_then(|n| u32::try_from(n).ok());
                    self.reset_next(n.ok_or_else(|| bad(key))?)
                }
                "expireWatches" if value.as_bool() == Some(true) => self.expire_watches(),
                "expireWatches" => {}
                "forbid" => match (value["verb"].as_str(), value["resource"].as_str()) {
                    (Some(verb), Some(resource)) => self.forbid(verb, resource),
                    _ => return Err(bad(key)),
                },
                "hold" => match (value["pathContains"].as_str(), value["untilFile"].as_str()) {
                    (Some(part), Some(file)) => self.hold(part, Path::new(file)),
                    _ => return Err(bad(key)),
                },
                _ => return Err(ApiError::bad_request(format!("faults: unknown key {key:?}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fail_next_counts_down_per_matching_path() {
        let faults = Faults::new(Arc::new(Store::new()));
        faults.fail_next(2, 503, Some("/pods"));
        assert_eq!(faults.take_injected("/api/v1/services"), None);
        assert_eq!(faults.take_injected("/api/v1/namespaces/a/pods"), Some(Injected::Fail(503)));
        assert_eq!(faults.take_injected("/api/v1/pods"), Some(Injected::Fail(503)));
        assert_eq!(faults.take_injected("/api/v1/pods"), None);
    }

    #[test]
    fn garbage_and_truncation_count_down_like_failures() {
        let faults = Faults::new(Arc::new(Store::new()));
        faults.apply_control(&json!({"garbageNext": {"count": 1, "pathContains": "/nads/"}})).unwrap();
        faults.truncate_next(1, None);
        assert_eq!(faults.take_injected("/nads/green"), Some(Injected::Garbage));
        assert_eq!(faults.take_injected("/nads/green"), Some(Injected::Truncated));
        faults.apply_control(&json!({"foreignNext": {"count": 1}})).unwrap();
        assert_eq!(faults.take_injected("/nads/green"), Some(Injected::Foreign));
        assert_eq!(faults.take_injected("/nads/green"), None);
    }

    #[test]
    fn a_hang_lasts_until_cleared_and_a_rotated_token_survives_clear() {
        let faults = Arc::new(Faults::new(Arc::new(Store::new())));
        faults.apply_control(&json!({"hang": {"pathContains": "/pods/"}, "rotateToken": "t2"})).unwrap();
        assert!(faults.delays());
        faults.wait_for_holds("/api/v1/services"); // not hung: returns at once
        let hung = faults.clone();
        let waiting = std::thread::spawn(move || hung.wait_for_holds("/api/v1/pods/x"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiting.is_finished(), "the hung request was answered");
        faults.clear();
        waiting.join().unwrap();
        assert_eq!(faults.rotated_token().as_deref(), Some("t2"));
    }

    #[test]
    fn control_body_sets_and_clears() {
        let faults = Faults::new(Arc::new(Store::new()));
        faults.apply_control(&json!({"latencyMs": 5, "resetNext": 1})).unwrap();
        assert_eq!(faults.latency(), Duration::from_millis(5));
        faults.apply_control(&json!({"clear": true})).unwrap();
        assert_eq!(faults.take_injected("/x"), None);
        assert_eq!(faults.apply_control(&json!({"bogus": 1})).unwrap_err().code, 400);
    }

    #[test]
    fn a_hold_delays_matching_answers_until_its_file_exists() {
        let faults = Arc::new(Faults::new(Arc::new(Store::new())));
        assert!(!faults.delays());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("go");
        faults.apply_control(&json!({"hold": {"pathContains": "/nads/", "untilFile": file}})).unwrap();
        assert!(faults.delays());
        faults.wait_for_holds("/api/v1/pods/x"); // not held: returns at once
        let held = faults.clone();
        let waiting = std::thread::spawn(move || held.wait_for_holds("/nads/green"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiting.is_finished(), "the held answer went out before its file existed");
        std::fs::write(&file, "").unwrap();
        waiting.join().unwrap();
    }
}
