//! The apiserver, as the crate reaches it: the one loader of kubeconfig and in-cluster
//! credentials ([`config`]), which every binary uses, and the plugin's lean blocking client
//! (rustls, HTTP/2, per-request timeouts, bounded retries, the few API types the plugins read,
//! core/v1 Events; node-local's slice claims use it too). The daemons talk to the apiserver
//! through kube-rs (see `crate::daemon`).

mod access;
mod backoff;
mod client;
pub mod config;
mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
mod redact;
pub mod time;
mod tls;
mod types;

pub use client::{segment as path_segment, Client, ClientOptions, LIST_PAGE_SIZE, MAX_LIST_PAGES};
pub use error::{error_chain, KubeError};
pub use types::{
    ContainerExtendedResourceRequest, List, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, Node,
    ObjectMeta, Pod, PodExtendedResourceClaimStatus, PodResourceClaim, PodResourceClaimStatus, PodSpec, PodStatus,
    Status,
};

#[cfg(test)]
mod live_tests;
