//! The one error type of the apiserver client.
//!
//! Callers branch on the variant (CNI maps `Transient` to "try again later", a missing
//! NAD is `NotFound`), so each HTTP outcome that needs different handling has its own
//! variant, and every message says what was asked and what the apiserver answered.

use super::types::Status;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeError {
    /// The object does not exist; `what` is e.g. `network-attachment-definitions default/green`.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// The apiserver was unreachable or overloaded and retries were exhausted.
    #[error("apiserver unavailable: {message}")]
    Transient { message: String },
    #[error("apiserver answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// kubeconfig, credentials or TLS could not be set up.
    #[error("kube config: {message}")]
    Config { message: String },
    #[error("decoding apiserver answer: {message}")]
    Decode { message: String },
    /// An answer beyond what the client reads (a LIST of more pages than its bound).
    #[error("apiserver answer too large: {message}")]
    TooLarge { message: String },
}

impl KubeError {
    /// Worth trying again later (CNI error 11), as opposed to a definite answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, KubeError::Transient { .. })
    }

    pub(crate) fn config(message: impl Into<String>) -> KubeError {
        KubeError::Config { message: message.into() }
    }

    /// Maps a final (non-retried) failure answer to an error.
    ///
    /// `path` is the request's URL path, used to name the object for 404s;
    /// `credentials` names where the credentials came from for 401s;
    /// `body` is the raw answer, normally a `Status` object whose message is the best
    /// explanation the apiserver offers (403s name the verb and resource).
    pub(crate) fn from_response(status: u16, path: &str, credentials: &str, body: &str) -> KubeError {
        let message = body_message(body).unwrap_or_else(|| {
            let trimmed = body.trim();
            if trimmed.is_empty() {
                format!("HTTP {status} for {path}")
            } else {
                format!("{path}: {}", truncate(trimmed, 300))
            }
        });
        match status {
            401 => KubeError::Unauthorized {
                message: format!("the apiserver rejected the credentials from {credentials} ({message})"),
            },
            403 => KubeError::Forbidden { message },
            404 => KubeError::NotFound { what: object_from_path(path) },
            409 => KubeError::Conflict { message },
            _ => KubeError::Http { status, message },
        }
    }
}

/// The `message` of a `Status` answer body, if it is one.
pub(crate) fn body_message(body: &str) -> Option<String> {
    let status: Status = serde_json::from_str(body).ok()?;
    (!status.message.is_empty()).then_some(status.message)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `/api/v1/namespaces/default/pods/app1` -> `pods default/app1`;
/// `/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/green` ->
/// `network-attachment-definitions ns/green`. Anything else is named by its path.
pub(crate) fn object_from_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(i) = parts.iter().position(|p| *p == "namespaces") {
        match &parts[i + 1..] {
            [ns, resource, name, ..] => return format!("{resource} {ns}/{name}"),
            [ns, resource] => return format!("{resource} in namespace {ns}"),
            [ns] => return format!("namespace {ns}"),
            _ => {}
        }
    }
    path.to_string()
}

/// The error and its causes, each said once: the HTTP stacks' own messages alone ("error
/// sending request", "transport error") hide whether the connection was refused, reset or
/// timed out. Shared with the daemons and podagent's CRI client.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message":"network-attachment-definitions.k8s.cni.cncf.io \"green\" not found",
        "reason":"NotFound","details":{"name":"green"},"code":404}"#;

    #[test]
    fn not_found_names_resource_namespace_and_name() {
        let err = KubeError::from_response(
            404,
            "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/green",
            "token file /t",
            NOT_FOUND,
        );
        assert_eq!(err, KubeError::NotFound { what: "network-attachment-definitions default/green".into() });
        assert_eq!(err.to_string(), "network-attachment-definitions default/green not found");
    }

    #[test]
    fn forbidden_keeps_the_status_message_naming_verb_and_resource() {
        let body = r#"{"kind":"Status","status":"Failure","reason":"Forbidden","code":403,
            "message":"pods \"app1\" is forbidden: User \"system:serviceaccount:kube-system:kactus\" cannot patch resource \"pods\" in API group \"\" in the namespace \"default\""}"#;
        let err = KubeError::from_response(403, "/api/v1/namespaces/default/pods/app1", "x", body);
        match err {
            KubeError::Forbidden { message } => {
                assert!(message.contains("cannot patch resource \"pods\""), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unauthorized_names_the_credential_source() {
        let body =
            r#"{"kind":"Status","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
        let err = KubeError::from_response(401, "/api/v1/pods", "token file /var/run/t", body);
        assert_eq!(
            err.to_string(),
            "unauthorized: the apiserver rejected the credentials from token file /var/run/t (Unauthorized)"
        );
    }

    #[test]
    fn conflict_and_other_codes() {
        let conflict = r#"{"kind":"Status","message":"the object has been modified","code":409}"#;
        assert!(matches!(
            KubeError::from_response(409, "/p", "x", conflict),
            KubeError::Conflict { message } if message == "the object has been modified"
        ));
        assert!(matches!(
            KubeError::from_response(422, "/p", "x", "not json at all"),
            KubeError::Http { status: 422, message } if message == "/p: not json at all"
        ));
        assert!(!KubeError::Conflict { message: String::new() }.is_transient());
        assert!(KubeError::Transient { message: String::new() }.is_transient());
    }

    #[test]
    fn object_names_from_paths() {
        assert_eq!(object_from_path("/api/v1/namespaces/default/pods/app1?x=1"), "pods default/app1");
        assert_eq!(object_from_path("/api/v1/namespaces/kube-system/pods"), "pods in namespace kube-system");
        assert_eq!(object_from_path("/api/v1/nodes/n1"), "/api/v1/nodes/n1");
    }
}
