//! The plugin's own token, from the TokenRequest API.
//!
//! The plugin runs on the host and needs a credential of its own in its kubeconfig. The
//! installer pod's token will not do: kubelet binds it to the pod, so it dies when the
//! DaemonSet rolls and every ADD would fail "Unauthorized" until the new pod rewrote it.
//! Instead the installer asks the apiserver for a token of the plugin's service account that
//! is bound to nothing (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`), as Calico's
//! `calico-node` does for its CNI plugin. The installer's own service account may do nothing
//! but that (RBAC `create` on `serviceaccounts/token`, `resourceNames` the plugin's account).
//!
//! Lifetimes, on Calico's example: 24 hours asked for (the apiserver may shorten it), replaced
//! once half of it has passed, so an apiserver outage of up to half a lifetime (12 h) costs no
//! pod its network. A failed request is retried with backoff (1 s doubling to 5 min) and never
//! takes the old token away: the kubeconfig is only ever replaced, atomically, by one with a
//! newer token. An installer that restarts reuses the token in the kubeconfig while it is not
//! yet due, so restarts and upgrades neither cost the node its credential nor flood the
//! apiserver with TokenRequests. A token the apiserver stops accepting before it expires (the
//! service account was deleted and recreated, the signing key rotated) is noticed by a cheap
//! check (`GET /version` with it: an invalid token is a 401 on any path) at start-up and every
//! `--token-check-seconds`, and replaced at once.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{InstallArgs, InstallError};
use crate::kube::{self, KubeError};

/// First wait after a failed TokenRequest; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Bound on each installer request: the loop must stay responsive to SIGTERM.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A token of the plugin's service account and the span it is valid for.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginToken {
    pub token: String,
    /// Seconds since the epoch.
    pub issued: u64,
    pub expires: u64,
}

impl std::fmt::Debug for PluginToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginToken").field("issued", &self.issued).field("expires", &self.expires).finish()
    }
}

/// The claims of a service-account JWT that matter here.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iat: Option<u64>,
    exp: u64,
    #[serde(default)]
    sub: String,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Value,
}

impl PluginToken {
    /// Reads `iat`/`exp` out of a service-account token (a JWT; the signature is the
    /// apiserver's business), if it is one of `account` (`system:serviceaccount:<ns>:<name>`)
    /// bound to no pod: a pod-bound token (an older installer wrote its own) dies with its pod.
    pub fn of_account(token: &str, account: &str) -> Option<PluginToken> {
        let claims = claims(token)?;
        let bound_to_pod = !claims.kubernetes["pod"].is_null();
        (claims.sub == account && !bound_to_pod).then(|| PluginToken {
            token: token.to_string(),
            issued: claims.iat.unwrap_or(claims.exp),
            expires: claims.exp,
        })
    }

    /// Due for replacement: half of its lifetime has passed.
    pub fn due(&self, now: u64) -> bool {
        now >= self.issued + self.expires.saturating_sub(self.issued) / 2
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires
    }
}

fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The plugin's token across passes: the one in use, when to try again after a failure,
/// when it was last checked.
#[derive(Debug, Default)]
pub struct TokenKeeper {
    current: Option<PluginToken>,
    /// Why the last TokenRequest failed, while no token is at hand.
    last_error: Option<String>,
    failures: u32,
    next_attempt: Option<Instant>,
    checked: Option<Instant>,
}

/// `system:serviceaccount:<ns>:<name>`.
fn account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl TokenKeeper {
    /// The token the plugin's kubeconfig should hold now: the current one while it is good,
    /// else (and once it is due) a new one. `on_disk` is the token in the kubeconfig as it is
    /// (reused after a restart), `kubeconfig` the file to check it with.
    pub fn token(
        &mut self,
        args: &InstallArgs,
        server: &str,
        on_disk: Option<&str>,
        kubeconfig: &Path,
    ) -> Result<PluginToken, InstallError> {
        let (namespace, name) = (args.plugin_namespace(), &args.plugin_service_account);
        let now = unix_now();
        if self.current.is_none() {
            self.current = on_disk
                .and_then(|token| PluginToken::of_account(token, &account_user(&namespace, name)))
                .filter(|token| !token.expired(now));
            if self.current.is_some() {
                log::info!("reusing the plugin's token in {} (not yet due)", kubeconfig.display());
            }
        }
        if self.current.as_ref().is_some_and(|t| t.token.as_str() == on_disk.unwrap_or_default()) {
            self.check(args, kubeconfig);
        }
        let wanted = self.current.as_ref().is_none_or(|t| t.due(now));
        let may_try = self.next_attempt.is_none_or(|at| Instant::now() >= at);
        if wanted && may_try {
            match request(args, server, &namespace, name) {
                Ok(token) => {
                    log::info!(
                        "got a token for service account {namespace}/{name}, valid for {}s",
                        token.expires.saturating_sub(token.issued)
                    );
                    self.current = Some(token);
                    self.last_error = None;
                    self.failures = 0;
                    self.next_attempt = None;
                    self.checked = None;
                }
                Err(reason) => {
                    let e =
                        InstallError::PluginToken { account: format!("{namespace}/{name}"), reason: reason.clone() };
                    let wait = FIRST_BACKOFF.saturating_mul(1 << self.failures.min(16)).min(MAX_BACKOFF);
                    self.failures += 1;
                    self.next_attempt = Some(Instant::now() + wait);
                    match &self.current {
                        Some(token) if !token.expired(now) => log::warn!(
                            "{e}; keeping the current token (valid for {}s more), retrying in {}s",
                            token.expires - now,
                            wait.as_secs()
                        ),
                        _ => {
                            self.last_error = Some(reason);
                            return Err(e);
                        }
                    }
                }
            }
        }
        // Between retries with no token: the last failure is still the news.
        self.current.clone().ok_or_else(|| InstallError::PluginToken {
            account: format!("{namespace}/{name}"),
            reason: self.last_error.clone().unwrap_or_else(|| "no token yet".into()),
        })
    }

    /// Checks the kubeconfig's token with the apiserver (at start-up, then every
    /// `--token-check-seconds`); a 401 drops it so a new one is requested now.
    fn check(&mut self, args: &InstallArgs, kubeconfig: &Path) {
        if self.checked.is_some_and(|at| at.elapsed() < args.token_check_interval()) {
            return;
        }
        self.checked = Some(Instant::now());
        let outcome = kube::Client::new(Some(kubeconfig), options())
            .and_then(|client| client.get::<Value>("/version").map(|_| ()));
        match outcome {
            Ok(()) => log::debug!("the plugin's token in {} is accepted", kubeconfig.display()),
            Err(KubeError::Unauthorized { message }) => {
                log::warn!("the apiserver no longer accepts the plugin's token ({message}); requesting a new one");
                self.current = None;
                self.next_attempt = None;
            }
            // Unreachable or overloaded: nothing is known about the token; keep it.
            Err(e) => log::debug!("checking the plugin's token: {e}"),
        }
    }
}

fn options() -> kube::ClientOptions {
    kube::ClientOptions { timeout: REQUEST_TIMEOUT, retries: 1, ..Default::default() }
}

/// One TokenRequest for `namespace/name`, as the installer's own service account; the error
/// says why it failed.
fn request(args: &InstallArgs, server: &str, namespace: &str, name: &str) -> Result<PluginToken, String> {
    let client =
        kube::Client::for_service_account(server, &args.service_account_dir, options()).map_err(|e| e.to_string())?;
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": args.token_expiration_seconds},
    });
    let asked_at = unix_now();
    let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
    let answer: Value = client.create(&path, &body).map_err(|e| {
        let hint = match e {
            KubeError::Forbidden { .. } => {
                " (the installer's service account needs create on serviceaccounts/token for this account: \
                 see manifests/kactus-serviceaccount-and-rbac.yaml)"
            }
            KubeError::NotFound { .. } => " (apply manifests/kactus-serviceaccount-and-rbac.yaml)",
            _ => "",
        };
        format!("{e}{hint}")
    })?;
    let token = answer["status"]["token"].as_str().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err("the TokenRequest answer has no status.token".into());
    }
    let expires = answer["status"]["expirationTimestamp"].as_str().and_then(kube::time::parse);
    // The claims are the token's own word; the answer's expirationTimestamp otherwise.
    match (PluginToken::of_account(&token, &account_user(namespace, name)), expires) {
        (Some(parsed), _) => Ok(parsed),
        (None, Some(expires)) => Ok(PluginToken { token, issued: asked_at, expires }),
        (None, None) => Err("the TokenRequest answer has no status.expirationTimestamp".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&claims))
    }

    const ACCOUNT: &str = "system:serviceaccount:kube-system:kactus";

    #[test]
    fn a_token_is_due_at_half_its_lifetime_and_expired_at_its_end() {
        let token = jwt(json!({"iat": 1000, "exp": 1000 + 86_400, "sub": ACCOUNT}));
        let t = PluginToken::of_account(&token, ACCOUNT).unwrap();
        assert_eq!((t.issued, t.expires), (1000, 87_400));
        assert!(!t.due(1000 + 43_199) && t.due(1000 + 43_200));
        assert!(!t.expired(87_399) && t.expired(87_400));
        assert!(!format!("{t:?}").contains(&token), "the token stays out of logs");
    }

    #[test]
    fn pod_bound_foreign_and_opaque_tokens_are_not_reused() {
        let bound =
            jwt(json!({"iat": 1, "exp": 9, "sub": ACCOUNT, "kubernetes.io": {"pod": {"name": "p", "uid": "u"}}}));
        assert!(PluginToken::of_account(&bound, ACCOUNT).is_none());
        let other = jwt(json!({"iat": 1, "exp": 9, "sub": "system:serviceaccount:kube-system:other"}));
        assert!(PluginToken::of_account(&other, ACCOUNT).is_none());
        for opaque in ["", "token-one", "a.b.c", "a.%%%.c"] {
            assert!(PluginToken::of_account(opaque, ACCOUNT).is_none(), "{opaque}");
        }
    }
}
