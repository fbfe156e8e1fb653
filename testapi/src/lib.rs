//! The project's own test apiserver: Kubernetes REST over HTTPS for what kactus uses, with
//! fault injection, so the client code under test is the code that runs against a real cluster.
//!
//! Served: GET, LIST (paginated with `limit`/`continue`, `resourceVersion` and
//! `resourceVersionMatch`) and WATCH (label/field selectors, resourceVersion, bookmarks,
//! timeouts), POST, PUT, PATCH (merge, strategic-merge as merge, JSON patch), DELETE and the
//! pods `/status` subresource, for the kinds in [`resources::KINDS`]; core/v1 Events also in
//! the events.k8s.io/v1 shape; discovery and `/version`, as a chosen Kubernetes 1.x
//! ([`TestApiServer::emulate_kubernetes_minor`]); mutating admission webhooks called as the real server calls them (`admission.rs`); bearer-token auth; `Status` bodies for
//! every error; TokenRequest on `serviceaccounts/<name>/token`, whose tokens are then
//! accepted (until they expire or their account or pod goes) as far as the RBAC objects in the
//! store allow. Tests drive it through [`TestApiServer`]: [`Store`] to set state like kubectl
//! would, [`Faults`] to misbehave and [`Tokens`] to issue a pod's own token; scripts use
//! `POST /_testapi/faults` and `GET /_testapi/stats`.
//!
//! Simplifications a client can notice: deletion is immediate (no graceful deletion or
//! finalizers), the garbage collector (off unless a test turns it on) deletes dependents in
//! the same step as their owner, later LIST pages show objects as they are now (see
//! `list.rs`), list items keep their `kind`/`apiVersion`, and strategic merge patch merges
//! lists as merge patch does.

mod admission;
mod discovery;
mod events;
mod faults;
mod h2;
mod http;
mod ids;
mod list;
mod patch;
mod rbac;
pub mod resources;
mod router;
mod selector;
mod server;
mod stats;
mod status;
mod store;
mod tls;
mod tokens;
mod watch;

#[cfg(test)]
mod tests;

pub use faults::Faults;
pub use server::TestApiServer;
pub use stats::Stats;
pub use status::ApiError;
pub use store::{Store, StoreError};
pub use tokens::{ServiceAccountRef, Tokens};

/// A fresh random bearer token (32 hex digits) for a server started without one.
pub fn random_token() -> String {
    hex::encode(ids::random_bytes(16))
}
