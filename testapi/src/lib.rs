//! The project's own test apiserver: Kubernetes REST over HTTPS for what kactus uses, with
//! fault injection, so the client code under test is the code that runs against a real cluster.
//!
//! Served: GET, LIST and WATCH (label/field selectors, resourceVersion, bookmarks, timeouts),
//! POST, PUT, PATCH (merge, strategic-merge as merge, JSON patch), DELETE and the pods
//! `/status` subresource, for the kinds in [`resources::KINDS`]; bearer-token auth; `Status`
//! bodies for every error. Tests drive it through [`TestApiServer`]: [`Store`] to set state
//! like kubectl would and [`Faults`] to misbehave; scripts use `POST /_testapi/faults` and
//! `GET /_testapi/stats`.
//!
//! Simplifications a client can notice: deletion is immediate (no graceful deletion or
//! finalizers), the garbage collector (off unless a test turns it on) deletes dependents in
//! the same step as their owner, LIST ignores `limit`/`continue` and returns everything, list items keep their
//! `kind`/`apiVersion`, and strategic merge patch merges lists as merge patch does.

mod faults;
mod h2;
mod http;
mod ids;
mod patch;
pub mod resources;
mod router;
mod selector;
mod server;
mod stats;
mod status;
mod store;
mod tls;
mod watch;

#[cfg(test)]
mod tests;

pub use faults::Faults;
pub use server::TestApiServer;
pub use stats::Stats;
pub use status::ApiError;
pub use store::{Store, StoreError};

/// A fresh random bearer token (32 hex digits) for a server started without one.
pub fn random_token() -> String {
    hex::encode(ids::random_bytes(16))
}
