//! From a request to a reply: authentication, injected faults, URL routing and the
//! Kubernetes verbs. Nothing here touches the socket; [`super::server`] writes the reply.

use std::time::Duration;

use serde_json::{json, Value};

use super::admission;
use super::discovery::Emulation;
use super::events;
use super::faults::{Faults, Injected};
use super::http::Request;
use super::list;
use super::patch::Patch;
use super::rbac::{self, Access};
use super::resources::{self, ResourceKind};
use super::selector::Selector;
use super::stats::StatsCounter;
use super::status::ApiError;
use super::store::{Part, Preconditions, Store};
use super::tokens::{ServiceAccountRef, Tokens};
use super::watch::WatchRequest;

/// A watch with no `timeoutSeconds` ends after this long, like the real server's
/// `--min-request-timeout` default.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What to send back.
pub enum Reply {
    Json {
        code: u16,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    Text(u16, String),
    /// A JSON content type over bytes that may not be JSON (injected faults).
    Raw(u16, Vec<u8>),
    Watch(Box<WatchRequest>),
    /// Close the connection without answering (injected fault).
    Reset,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::Json { code: 200, body, headers: Vec::new() }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let headers = match e.code {
            429 => vec![("Retry-After", "1".to_string())],
            _ => Vec::new(),
        };
        Reply::Json { code: e.code, body: e.body, headers }
    }
}

/// Everything a request may touch.
pub struct Context<'a> {
    pub store: &'a Store,
    pub faults: &'a Faults,
    pub stats: &'a StatsCounter,
    pub token: &'a str,
    pub emulation: &'a Emulation,
    pub tokens: &'a Tokens,
}

/// Who sent a request.
enum Caller {
    /// The server's own bearer token: allowed everything, like a cluster admin.
    Admin,
    /// A token from TokenRequest: as far as RBAC allows.
    Account(ServiceAccountRef),
}

/// A request's target, once the URL is understood.
enum Target {
    Collection {
        kind: &'static ResourceKind,
        namespace: Option<String>,
    },
    Object {
        kind: &'static ResourceKind,
        namespace: String,
        name: String,
        part: Part,
    },
    /// `serviceaccounts/<name>/token`: TokenRequest.
    Token {
        kind: &'static ResourceKind,
        namespace: String,
        name: String,
    },
}

/// Handles one request; the second value says whether the latency fault applies.
pub fn handle(ctx: &Context, req: &Request) -> (Reply, bool) {
    if let Some(control) = req.path.strip_prefix("/_testapi/") {
        ctx.stats.request("other");
        if !matches!(caller(ctx, req), Some(Caller::Admin)) {
            return (ApiError::unauthorized().into(), false);
        }
        return (handle_control(ctx, control, req), false);
    }
    let injected = ctx.faults.take_injected(&req.path);
    match injected {
        Some(Injected::Reset) => return (Reply::Reset, true),
        Some(Injected::Fail(code)) => {
            ctx.stats.request(verb_guess(req));
            return (ApiError::injected(code).into(), true);
        }
        Some(Injected::Garbage) => {
            ctx.stats.request(verb_guess(req));
            return (Reply::Raw(200, b"<html><body>502 Bad Gateway</body></html>".to_vec()), true);
        }
        Some(Injected::Foreign) => {
            ctx.stats.request(verb_guess(req));
            return (Reply::ok(success_status()), true);
        }
        Some(Injected::Truncated) | None => {}
    }
    let Some(caller) = caller(ctx, req) else {
        ctx.stats.request(verb_guess(req));
        return (ApiError::unauthorized().into(), true);
    };
    let reply = handle_api(ctx, req, &caller);
    match (injected, reply) {
        (Some(Injected::Truncated), Reply::Json { code, body, .. }) => {
            let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
            bytes.truncate(bytes.len() / 2);
            (Reply::Raw(code, bytes), true)
        }
        (_, reply) => (reply, true),
    }
}

/// The caller a bearer token authenticates, if it does. The admin token is the server's
/// first one until a test rotates it (see [`Faults::rotate_token`]).
fn caller(ctx: &Context, req: &Request) -> Option<Caller> {
    let token = req.header("authorization")?.strip_prefix("Bearer ")?.trim();
    let admin = ctx.faults.rotated_token();
    if token == admin.as_deref().unwrap_or(ctx.token) {
        return Some(Caller::Admin);
    }
    ctx.tokens.authenticate(ctx.store, token).map(Caller::Account)
}

fn handle_control(ctx: &Context, control: &str, req: &Request) -> Reply {
    match (req.method.as_str(), control) {
        ("POST", "faults") => {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(body) => body,
                Err(e) => return ApiError::bad_request(format!("faults body: {e}")).into(),
            };
            match ctx.faults.apply_control(&body) {
                Ok(()) => Reply::ok(success_status()),
                Err(e) => e.into(),
            }
        }
        ("GET", "stats") => Reply::ok(json!(ctx.stats.snapshot())),
        _ => ApiError::no_route().into(),
    }
}

fn handle_api(ctx: &Context, req: &Request, caller: &Caller) -> Reply {
    match req.path.as_str() {
        "/healthz" | "/readyz" | "/livez" => {
            ctx.stats.request("other");
            return Reply::Text(200, "ok".to_string());
        }
        "/version" => {
            ctx.stats.request("other");
            return Reply::ok(ctx.emulation.version());
        }
        _ => {}
    }
    if let Some(document) = ctx.emulation.document(&req.path) {
        ctx.stats.request("other");
        return Reply::ok(document);
    }
    let Some(target) = route(&req.path).filter(|t| ctx.emulation.serves_kind(t.kind())) else {
        ctx.stats.request(verb_guess(req));
        return ApiError::no_route().into();
    };
    let verb = match verb_for(&target, req) {
        Ok(verb) => verb,
        Err(e) => {
            ctx.stats.request("other");
            return e.into();
        }
    };
    ctx.stats.request(verb);
    if let Some(denied) = forbidden(ctx, caller, &target, verb) {
        return denied.into();
    }
    match serve(ctx, target, verb, req) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

impl Target {
    fn kind(&self) -> &'static ResourceKind {
        match self {
            Target::Collection { kind, .. } | Target::Object { kind, .. } | Target::Token { kind, .. } => kind,
        }
    }
}

/// `/api/v1/...` and `/apis/{group}/{version}/...` to a collection or an object.
fn route(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let kind_at = |resource: &str| resources::by_path(group, version, resource);
    // Namespaced kinds live under `namespaces/{ns}/` (and list across namespaces without it);
    // cluster-scoped ones only at the top, as the real server routes them.
    let namespaced_kind = |resource: &str| kind_at(resource).filter(|k| k.namespaced());
    let cluster_kind = |resource: &str| kind_at(resource).filter(|k| !k.namespaced());
    let object = |kind: &'static ResourceKind, ns: &str, name: &str, part: Part| {
        (part == Part::Main || kind.has_status).then(|| Target::Object {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            part,
        })
    };
    match rest {
        [resource] => Some(Target::Collection { kind: kind_at(resource)?, namespace: None }),
        [resource, name] => object(cluster_kind(resource)?, "", name, Part::Main),
        [resource, name, "status"] => object(cluster_kind(resource)?, "", name, Part::Status),
        ["namespaces", ns, resource] => {
            Some(Target::Collection { kind: namespaced_kind(resource)?, namespace: Some(ns.to_string()) })
        }
        ["namespaces", ns, "serviceaccounts", name, "token"] if group.is_empty() => {
            Some(Target::Token { kind: kind_at("serviceaccounts")?, namespace: ns.to_string(), name: name.to_string() })
        }
        ["namespaces", ns, resource, name] => object(namespaced_kind(resource)?, ns, name, Part::Main),
        ["namespaces", ns, resource, name, "status"] => object(namespaced_kind(resource)?, ns, name, Part::Status),
        _ => None,
    }
}

fn verb_for(target: &Target, req: &Request) -> Result<&'static str, ApiError> {
    let watch = matches!(req.query("watch"), Some("1" | "true"));
    let verb = match (target, req.method.as_str()) {
        (Target::Collection { .. }, "GET") if watch => "watch",
        (Target::Collection { .. }, "GET") => "list",
        (Target::Collection { namespace: Some(_), .. }, "POST") => "create",
        (Target::Collection { kind, namespace: None }, "POST") if !kind.namespaced() => "create",
        (Target::Object { .. }, "GET") => "get",
        (Target::Object { .. }, "PUT") => "update",
        (Target::Object { .. }, "PATCH") => "patch",
        (Target::Object { part: Part::Main, .. }, "DELETE") => "delete",
        (Target::Token { .. }, "POST") => "create",
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(verb)
}

/// The verb for stats when the request never reached routing.
fn verb_guess(req: &Request) -> &'static str {
    match req.method.as_str() {
        "GET" if matches!(req.query("watch"), Some("1" | "true")) => "watch",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "other",
    }
}

/// A 403 for what an injected fault or, for a service account, RBAC does not allow.
fn forbidden(ctx: &Context, caller: &Caller, target: &Target, verb: &str) -> Option<ApiError> {
    let (kind, namespace, name, subresource) = match target {
        Target::Collection { kind, namespace } => (*kind, namespace.as_deref(), None, None),
        Target::Object { kind, namespace, name, part } => {
            let namespace = Some(namespace.as_str()).filter(|_| kind.namespaced());
            (*kind, namespace, Some(name.as_str()), (*part == Part::Status).then_some("status"))
        }
        Target::Token { kind, namespace, name } => {
            (*kind, Some(namespace.as_str()), Some(name.as_str()), Some("token"))
        }
    };
    let with_subresource = |resource: String| match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    // A rule names a resource as `leases` or, qualified, `leases.coordination.k8s.io`; a plain
    // name shared by two groups (`events`) means the core group's, as kubectl reads it.
    let mut names = vec![with_subresource(kind.qualified())];
    if resources::by_resource(kind.resource) == Some(kind) {
        names.push(with_subresource(kind.resource.to_string()));
    }
    if names.iter().any(|resource| ctx.faults.is_forbidden(verb, resource)) {
        return Some(ApiError::forbidden(kind, subresource, verb, namespace, name));
    }
    let resource = with_subresource(kind.resource.to_string());
    let Caller::Account(account) = caller else { return None };
    let access = Access { verb, group: kind.group, resource: &resource, namespace, name };
    (!rbac::allows(ctx.store, account, &access))
        .then(|| ApiError::forbidden_for(&account.user(), kind, subresource, verb, namespace, name))
}

fn serve(ctx: &Context, target: Target, verb: &str, req: &Request) -> Result<Reply, ApiError> {
    // events.k8s.io/v1 Events are the core Events in another shape (see events.rs).
    let events_v1 = events::is_events_v1(target.kind());
    let stored = |kind: &'static ResourceKind| match events_v1 {
        true => resources::by_path("", "v1", "events").unwrap_or(kind),
        false => kind,
    };
    let shown = |object: Value| if events_v1 { events::from_core(&object) } else { object };
    let body = || json_body(req).map(|body| if events_v1 { events::to_core(&body) } else { body });
    match target {
        Target::Token { namespace, name, .. } => {
            let answer = ctx.tokens.request(ctx.store, &namespace, &name, &json_body(req)?)?;
            Ok(Reply::Json { code: 201, body: answer, headers: Vec::new() })
        }
        Target::Collection { kind, namespace } => {
            let selector = Selector::parse(
                kind,
                req.query("labelSelector").unwrap_or(""),
                req.query("fieldSelector").unwrap_or(""),
            )?;
            match verb {
                "watch" => {
                    let mut watch = watch_request(stored(kind), namespace, selector, req)?;
                    watch.events_v1 = events_v1;
                    Ok(Reply::Watch(Box::new(watch)))
                }
                "list" => {
                    let mut list = list::list(ctx.store, stored(kind), namespace.as_deref(), &selector, req)?;
                    if events_v1 {
                        list["apiVersion"] = json!(kind.api_version());
                        if let Some(items) = list["items"].as_array_mut() {
                            items.iter_mut().for_each(|item| *item = events::from_core(item));
                        }
                    }
                    Ok(Reply::ok(list))
                }
                _ => {
                    let namespace = namespace.unwrap_or_default();
                    let mut object = body()?;
                    if kind.resource == "pods" && object.is_object() {
                        // As the real podStrategy: a created pod's status is the server's, so
                        // nothing a pod's author writes there is believed.
                        object["status"] = json!({"phase": "Pending"});
                    }
                    let object = admitted(ctx, kind, "CREATE", &namespace, None, object)?;
                    let created = ctx.store.create(stored(kind), &namespace, object)?;
                    Ok(Reply::Json { code: 201, body: shown(created), headers: Vec::new() })
                }
            }
        }
        Target::Object { kind, namespace, name, part } => {
            let kind = stored(kind);
            let object = match verb {
                "get" => ctx.store.get_kind(kind, &namespace, &name)?,
                "update" if part == Part::Main && admission::wanted(ctx.store, kind, "UPDATE") => {
                    let old = ctx.store.get_kind(kind, &namespace, &name)?;
                    let object = admitted(ctx, kind, "UPDATE", &namespace, Some(&old), body()?)?;
                    ctx.store.replace(kind, &namespace, &name, object, part)?
                }
                "update" => ctx.store.replace(kind, &namespace, &name, body()?, part)?,
                "patch" if part == Part::Main && admission::wanted(ctx.store, kind, "UPDATE") => {
                    // As the real server: patch, then admit the result, then store it (a write
                    // in between makes this a 409 Conflict rather than a lost update).
                    let content_type = req.header("content-type").unwrap_or("");
                    let old = ctx.store.get_kind(kind, &namespace, &name)?;
                    let patched = Patch::parse(content_type, &req.body)?.apply_to(&old)?;
                    let mut object = admitted(ctx, kind, "UPDATE", &namespace, Some(&old), patched)?;
                    object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    ctx.store.replace(kind, &namespace, &name, object, part)?
                }
                "patch" => {
                    let content_type = req.header("content-type").unwrap_or("");
                    let patch = match Patch::parse(content_type, &req.body)? {
                        Patch::Merge(merge) if events_v1 => Patch::Merge(events::to_core(&merge)),
                        Patch::Strategic(merge) if events_v1 => Patch::Strategic(events::to_core(&merge)),
                        Patch::Json(ops) if events_v1 => Patch::Json(
                            ops.into_iter()
                                .map(|mut op| {
                                    if let Some(path) = op["path"].as_str() {
                                        op["path"] = json!(events::path_to_core(path));
                                    }
                                    op
                                })
                                .collect(),
                        ),
                        patch => patch,
                    };
                    ctx.store.patch(kind, &namespace, &name, &patch, part)?
                }
                _ => ctx.store.delete_if(kind, &namespace, &name, &Preconditions::from_delete_body(&req.body)?)?,
            };
            Ok(Reply::ok(shown(object)))
        }
    }
}

/// `object` after the mutating admission webhooks that ask for this write (see admission.rs).
fn admitted(
    ctx: &Context,
    kind: &'static ResourceKind,
    operation: &'static str,
    namespace: &str,
    old: Option<&Value>,
    object: Value,
) -> Result<Value, ApiError> {
    if !admission::wanted(ctx.store, kind, operation) {
        return Ok(object);
    }
    let minor = ctx.emulation.minor();
    admission::admit(ctx.store, &admission::Incoming { kind, operation, namespace, old, minor }, object)
}

fn watch_request(
    kind: &'static ResourceKind,
    namespace: Option<String>,
    selector: Selector,
    req: &Request,
) -> Result<WatchRequest, ApiError> {
    let resource_version = match req.query("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        rv => Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?),
    };
    let timeout = match req.query("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {s:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    Ok(WatchRequest {
        kind,
        namespace,
        selector,
        resource_version,
        timeout,
        bookmarks: matches!(req.query("allowWatchBookmarks"), Some("1" | "true")),
        events_v1: false,
    })
}

fn json_body(req: &Request) -> Result<Value, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(body)
}

fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200})
}
