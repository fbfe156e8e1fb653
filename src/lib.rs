//! kactus: a Kubernetes multi-network CNI meta-plugin and its companions.
//!
//! One library shared by every binary. The modules are named for what they hold:
//! the CNI protocol ([`cni`]), the apiserver client ([`kube`]), annotations to
//! attachments ([`attachment`]), the ADD/DEL/CHECK story ([`plugin`]), network
//! namespace helpers ([`netns`]) and the project's own test apiserver ([`testapi`]).

pub mod attachment;
pub mod cni;
pub mod endpoints;
pub mod kube;
pub mod logging;
pub mod netns;
pub mod plugin;
pub mod testapi;
