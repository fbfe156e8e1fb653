//! Kubernetes `Status` failure bodies, shaped exactly as the real apiserver sends them, so
//! client code that reads `reason`/`code` behaves the same against a real cluster.

use serde_json::{json, Value};

use super::resources::ResourceKind;

/// A failed API call: the HTTP code and the `Status` body that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(details) = details {
            body["details"] = details;
        }
        ApiError { code, body }
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }

    pub fn not_found(kind: &ResourceKind, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", kind.qualified());
        ApiError::new(404, "NotFound", message, Some(details(kind, name)))
    }

    /// A path that names no resource at all.
    pub fn no_route() -> ApiError {
        let message = "the server could not find the requested resource".to_string();
        ApiError::new(404, "NotFound", message, Some(json!({})))
    }

    pub fn already_exists(kind: &ResourceKind, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" already exists", kind.qualified());
        ApiError::new(409, "AlreadyExists", message, Some(details(kind, name)))
    }

    /// Optimistic concurrency failure: the writer's `resourceVersion` is stale.
    pub fn conflict(kind: &ResourceKind, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.qualified()
        );
        ApiError::new(409, "Conflict", message, Some(details(kind, name)))
    }

    /// A DELETE whose `preconditions` no longer hold (the real server's wording).
    pub fn precondition_failed(kind: &ResourceKind, name: &str, field: &str, want: &str, have: &str) -> ApiError {
        let message = format!("Precondition failed: {field} in precondition: {want}, {field} in object meta: {have}");
        ApiError::new(409, "Conflict", message, Some(details(kind, name)))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message.into(), None)
    }

    /// A failure of the server itself, e.g. a webhook with `failurePolicy: Fail` that
    /// could not be called (the real server's 500 `InternalError`).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {}", message.into()), None)
    }

    /// An admission webhook's refusal, with the code and message it chose (400 by default).
    pub fn denied(code: u16, message: impl Into<String>) -> ApiError {
        let code = if (400..600).contains(&code) { code } else { 400 };
        ApiError::new(code, "", message.into(), None)
    }

    pub fn invalid(kind: &ResourceKind, name: &str, message: impl Into<String>) -> ApiError {
        let message = format!("{} \"{name}\" is invalid: {}", kind.kind, message.into());
        ApiError::new(422, "Invalid", message, Some(details(kind, name)))
    }

    /// A JSON patch that cannot be applied to the object (the real server answers 422).
    pub fn invalid_patch(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message.into(), None)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized".to_string(), None)
    }

    /// RBAC denial with the real message shape, naming the service account kactus runs as.
    pub fn forbidden(
        kind: &ResourceKind,
        subresource: Option<&str>,
        verb: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> ApiError {
        ApiError::forbidden_for("system:serviceaccount:kube-system:kactus", kind, subresource, verb, namespace, name)
    }

    /// RBAC denial of `user`, with the real message shape.
    pub fn forbidden_for(
        user: &str,
        kind: &ResourceKind,
        subresource: Option<&str>,
        verb: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> ApiError {
        let subject = match name {
            Some(name) => format!("{} \"{name}\"", kind.qualified()),
            None => kind.qualified(),
        };
        let resource = match subresource {
            Some(sub) => format!("{}/{sub}", kind.resource),
            None => kind.resource.to_string(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let message = format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API \
             group \"{}\" {scope}",
            kind.group
        );
        ApiError::new(403, "Forbidden", message, Some(details(kind, name.unwrap_or(""))))
    }

    pub fn method_not_allowed() -> ApiError {
        let message = "the server does not allow this method on the requested resource";
        ApiError::new(405, "MethodNotAllowed", message.to_string(), Some(json!({})))
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        let message = format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})");
        ApiError::new(415, "UnsupportedMediaType", message, None)
    }

    /// The watch event body for a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        let message = format!("too old resource version: {requested} ({oldest})");
        ApiError::new(410, "Expired", message, None)
    }

    /// A LIST or GET at a resourceVersion the server has not reached yet.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let message = format!("Too large resource version: {requested}, current: {current}");
        ApiError::new(
            504,
            "Timeout",
            message,
            Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
            ),
        )
    }

    /// A LIST `continue` token from before the retained history: the client must list again.
    pub fn continue_expired() -> ApiError {
        let message = "The provided continue parameter is too old to display a consistent list result. \
                       You can start a new list without the continue parameter.";
        ApiError::new(410, "Expired", message.to_string(), None)
    }

    /// An injected failure: the reasons the real server uses for these codes.
    pub fn injected(code: u16) -> ApiError {
        let (reason, message) = match code {
            429 => ("TooManyRequests", "Too many requests, please try again later."),
            500 => ("InternalError", "Internal error occurred: injected fault"),
            503 => ("ServiceUnavailable", "The server is currently unable to handle the request"),
            504 => ("Timeout", "The server was unable to return a response in the time allotted, but may still be processing the request"),
            404 => ("NotFound", "the server could not find the requested resource"),
            409 => ("Conflict", "Operation cannot be fulfilled: injected conflict"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden: injected fault"),
            _ => ("", "injected fault"),
        };
        let details = (code == 429).then(|| json!({"retryAfterSeconds": 1}));
        ApiError::new(code, reason, message.to_string(), details)
    }
}

fn details(kind: &ResourceKind, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind.resource});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    details
}
