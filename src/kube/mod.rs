//! The apiserver client: kubeconfig and in-cluster credentials, rustls TLS, GET / PATCH /
//! POST / LIST / WATCH with timeouts and bounded retries, and the few API types kactus uses.

mod backoff;
mod client;
mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
mod kubeconfig;
pub mod time;
mod tls;
mod types;
mod watch;

pub use client::{error_chain, Client, ClientOptions};
pub use error::KubeError;
pub use kubeconfig::SERVICE_ACCOUNT_DIR;
pub use types::{
    Container, ContainerPort, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Lease, LeaseSpec, List,
    ListMeta, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, Node, ObjectMeta, ObjectReference, Pod,
    PodCondition, PodSpec, PodStatus, Service, ServicePort, ServiceSpec, Status,
};
pub use watch::{WatchEvent, WatchStream};

#[cfg(test)]
mod live_tests;
