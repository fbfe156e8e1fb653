//! kactus: a Kubernetes multi-network CNI meta-plugin and its companions.
//!
//! One library shared by every binary. The modules are named for what they hold:
//! the CNI protocol ([`cni`]), the apiserver client ([`kube`]), annotations to
//! attachments ([`attachment`]), the ADD/DEL/CHECK story ([`plugin`]), allocated devices
//! (SR-IOV and the like) and their device-info ([`devices`]), network namespace and route
//! helpers ([`netns`], [`netlink`]), size-bounded reads of the files inputs name
//! ([`bounded`]), unary gRPC to node daemons ([`grpc`]), the node daemon
//! ([`podagent`]), the Service endpoints controller ([`endpoints`]), what those two daemons
//! share on kube-rs ([`daemon`]), the DaemonSet installer ([`install`]) and the node-local
//! IPAM plugin ([`ipam`]), MultiNetworkPolicy to per-pod nftables ([`policy`]).
//! The project's test apiserver is test infrastructure: the workspace crate `kactus-testapi`.

pub mod attachment;
pub mod bounded;
pub mod cni;
pub mod daemon;
pub mod devices;
pub mod endpoints;
pub mod fastpath;
pub mod grpc;
pub mod install;
pub mod ipam;
pub mod kube;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod plugin;
pub mod podagent;
pub mod policy;
