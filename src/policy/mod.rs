//! MultiNetworkPolicy: NetworkPolicy's meaning on pods' secondary networks, enforced in each
//! pod's network namespace by an nftables table of kactus's own.
//!
//! Pure functions, no I/O: `model.rs` the CRD's object, `policy_for.rs` which networks a
//! policy governs, `selection.rs` label selectors, `pod.rs` what a pod contributes (labels,
//! container ports, and its addresses per network from kactus's own pod condition),
//! `compile.rs` from (policies, pods, namespaces, this pod) to the pod's table, `update.rs`
//! the cheapest change from the table applied to the one wanted, `report.rs` the Events and
//! numbers an operator needs. The caller (podagent) owns the watching, the applying
//! (`crate::nft::Nft`) and the publishing.

pub mod compile;
pub mod model;
pub mod pod;
pub mod policy_for;
pub mod report;
pub mod selection;
pub mod update;

pub use compile::{compile, Cluster, Compiled, Governed, Problem, TABLE};
pub use model::MultiNetworkPolicy;
pub use pod::PodView;
pub use policy_for::NetworkRef;
pub use update::{plan, Update};
