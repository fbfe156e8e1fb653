//! Slice claims in the apiserver: one small cluster-scoped `SliceClaim` (`kactus.io/v1alpha1`,
//! `manifests/sliceclaim-crd.yaml`) per (network, slice), named after both, so creating it
//! is the atomic step that gives a slice to one node: a second node's POST of the same name
//! gets 409 AlreadyExists. Each claim is labelled with its network and node (a restarted node
//! finds its own by label) and owned by its Node, so Kubernetes' garbage collector frees a
//! deleted Node's slices.
//!
//! ```yaml
//! apiVersion: kactus.io/v1alpha1
//! kind: SliceClaim
//! metadata:
//!   name: green.11.0.4.0-24
//!   labels: {kactus.io/network: green, kactus.io/node: node1}
//!   ownerReferences: [{apiVersion: v1, kind: Node, name: node1, uid: ...}]
//! spec: {network: green, range: 11.0.0.0/16, slice: 11.0.4.0/24, node: node1}
//! ```

use super::range::SlicedRange;
use crate::cni::CniError;
use crate::kube::{self, KubeError, Node, ObjectMeta};
use crate::plugin::apiserver::kube_error;
use ipnet::IpNet;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

pub const API_VERSION: &str = "kactus.io/v1alpha1";
pub const KIND: &str = "SliceClaim";
const CLAIMS_PATH: &str = "/apis/kactus.io/v1alpha1/sliceclaims";
pub const NETWORK_LABEL: &str = "kactus.io/network";
pub const NODE_LABEL: &str = "kactus.io/node";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SliceClaim {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: SliceClaimSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SliceClaimSpec {
    /// The CNI network name (the NAD config's `name`), exactly.
    pub network: String,
    /// The cluster range the slice is cut from.
    pub range: String,
    pub slice: String,
    pub node: String,
}

impl SliceClaim {
    /// The claim of `slice` of `range` for `node`, owned by it.
    pub fn new(network: &str, range: &SlicedRange, slice: IpNet, node: &Node) -> SliceClaim {
        SliceClaim {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: claim_name(network, slice),
                labels: [
                    (NETWORK_LABEL.to_string(), label_value(network)),
                    (NODE_LABEL.to_string(), label_value(&node.metadata.name)),
                ]
                .into(),
                owner_references: vec![owner_reference(node)],
                ..Default::default()
            },
            spec: SliceClaimSpec {
                network: network.into(),
                range: range.subnet.to_string(),
                slice: slice.to_string(),
                node: node.metadata.name.clone(),
            },
        }
    }

    pub fn slice(&self) -> Option<IpNet> {
        self.spec.slice.parse().ok()
    }

    /// The uid of the Node that owns the claim.
    pub fn owner_uid(&self) -> Option<&str> {
        self.metadata
            .owner_references
            .iter()
            .find(|r| r["kind"] == "Node" && r["apiVersion"] == "v1")
            .and_then(|r| r["uid"].as_str())
    }

    /// Whether it is the claim of a slice of `range` (of this very layout).
    pub fn is_slice_of(&self, range: &SlicedRange) -> bool {
        self.spec.range == range.subnet.to_string() && self.slice().is_some_and(|s| range.index_of(&s).is_some())
    }
}

/// `<network>.<slice>`, a DNS subdomain as object names must be: the network name lowercased
/// (with a hash of the original when that changed it), the slice with `.`/`-` for `:` and `/`
/// (`green.11.0.4.0-24`, `green.fd11-0-0-4---64`).
pub fn claim_name(network: &str, slice: IpNet) -> String {
    let mut net: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    if net != network {
        net = format!("{}-{}", net.trim_matches(|c| c == '-' || c == '.'), &hex_md5(network)[..8]);
    }
    net.truncate(200);
    let mut addr = slice.network().to_string().replace(':', "-");
    if addr.starts_with('-') {
        addr.insert(0, '0');
    }
    format!("{net}.{addr}-{}", slice.prefix_len())
}

/// A label value (at most 63 characters of a restricted set): the name itself when it is
/// one, else its hash. Claims are matched on their spec too; the label only narrows a LIST.
pub fn label_value(name: &str) -> String {
    let valid = name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        name.to_string()
    } else {
        hex_md5(name)
    }
}

fn hex_md5(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// A number from the node's name, so that nodes claiming at the same time start looking at
/// different slices (and a node registered again tends to get its old one back).
pub fn spread(node: &str, count: u128) -> u128 {
    let digest = Md5::digest(node.as_bytes());
    let mut n = [0u8; 16];
    n.copy_from_slice(&digest);
    u128::from_be_bytes(n) % count.max(1)
}

/// The apiserver calls slice assignment makes; errors are CNI errors saying what was asked.
pub struct ClaimApi {
    client: kube::Client,
}

impl ClaimApi {
    pub fn connect(kubeconfig: &Path, timeout: Duration) -> Result<ClaimApi, CniError> {
        let opts = kube::ClientOptions { timeout, ..Default::default() };
        let client =
            kube::Client::new(Some(kubeconfig), opts).map_err(|e| kube_error(e, "connect to the apiserver"))?;
        Ok(ClaimApi { client })
    }

    /// One attempt per request, for checks that may fall back on what the node recorded.
    pub fn connect_once(kubeconfig: &Path, timeout: Duration) -> Result<ClaimApi, CniError> {
        let opts = kube::ClientOptions { timeout, retries: 0, ..Default::default() };
        let client =
            kube::Client::new(Some(kubeconfig), opts).map_err(|e| kube_error(e, "connect to the apiserver"))?;
        Ok(ClaimApi { client })
    }

    pub fn requests(&self) -> u64 {
        self.client.request_count()
    }

    /// The node's Node, or `None` if there is none of that name.
    pub fn node(&self, name: &str) -> Result<Option<Node>, CniError> {
        match self.client.get_node(name) {
            Ok(node) => Ok(Some(node)),
            Err(KubeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(kube_error(e, &format!("get node {name}"))),
        }
    }

    /// Every claim of `network` (and, with `node`, of that node only).
    pub fn list(&self, network: &str, node: Option<&str>) -> Result<Vec<SliceClaim>, CniError> {
        let mut selector = format!("{NETWORK_LABEL}={}", label_value(network));
        if let Some(node) = node {
            selector.push_str(&format!(",{NODE_LABEL}={}", label_value(node)));
        }
        let list = self
            .client
            .list::<SliceClaim>(CLAIMS_PATH, &[("labelSelector", &selector)])
            .map_err(|e| api_error(e, &format!("list the slice claims of network {network}")))?;
        Ok(list
            .items
            .into_iter()
            .filter(|c| c.spec.network == network && node.is_none_or(|n| c.spec.node == n))
            .collect())
    }

    /// Creates the claim; `None` when another node holds that slice already.
    pub fn create(&self, claim: &SliceClaim) -> Result<Option<SliceClaim>, CniError> {
        let body = serde_json::to_value(claim).unwrap_or_default();
        match self.client.create::<SliceClaim>(CLAIMS_PATH, &body) {
            Ok(created) => Ok(Some(created)),
            Err(KubeError::Conflict { .. }) => Ok(None),
            Err(e) => Err(api_error(e, &format!("create slice claim {}", claim.metadata.name))),
        }
    }

    /// Makes `node` the owner of its own claim again (its Node was registered anew, with a
    /// new uid); `None` if the claim changed or went meanwhile.
    pub fn adopt(&self, claim: &SliceClaim, node: &Node) -> Result<Option<SliceClaim>, CniError> {
        let mut updated = claim.clone();
        updated.metadata.owner_references = vec![owner_reference(node)];
        let body = serde_json::to_value(&updated).unwrap_or_default();
        match self.client.replace::<SliceClaim>(&claim_path(&claim.metadata.name), &body) {
            Ok(c) => Ok(Some(c)),
            Err(KubeError::Conflict { .. } | KubeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(api_error(e, &format!("take over slice claim {}", claim.metadata.name))),
        }
    }

    /// Deletes the claim if it is still exactly as read (uid and resourceVersion), so a
    /// claim another node made in its place meanwhile is never deleted.
    pub fn delete(&self, claim: &SliceClaim) -> Result<bool, CniError> {
        let meta = &claim.metadata;
        match self.client.delete_if_unchanged(&claim_path(&meta.name), &meta.uid, &meta.resource_version) {
            Ok(()) => Ok(true),
            Err(KubeError::Conflict { .. } | KubeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(api_error(e, &format!("delete slice claim {}", meta.name))),
        }
    }
}

/// The Node as owner: without `blockOwnerDeletion`, which would need the right to set
/// finalizers on Nodes.
fn owner_reference(node: &Node) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "name": node.metadata.name, "uid": node.metadata.uid})
}

fn claim_path(name: &str) -> String {
    format!("{CLAIMS_PATH}/{}", kube::path_segment(name))
}

/// A missing SliceClaim API is an installation step left out; say which.
fn api_error(e: KubeError, what: &str) -> CniError {
    match &e {
        KubeError::NotFound { .. } => CniError::new(
            crate::cni::code::APISERVER,
            format!(
                "{what}: the apiserver does not serve sliceclaims.kactus.io (kubectl apply -f \
                 manifests/sliceclaim-crd.yaml)"
            ),
        ),
        _ => kube_error(e, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_subdomains_and_say_what_they_claim() {
        assert_eq!(claim_name("green", "11.0.4.0/24".parse().unwrap()), "green.11.0.4.0-24");
        assert_eq!(claim_name("green", "fd11:0:0:4::/64".parse().unwrap()), "green.fd11-0-0-4---64");
        assert_eq!(claim_name("green", "::/64".parse().unwrap()), "green.0---64");
        let odd = claim_name("Green_Net", "11.0.4.0/24".parse().unwrap());
        assert!(odd.starts_with("green-net-") && odd.ends_with(".11.0.4.0-24"), "{odd}");
        assert_ne!(odd, claim_name("green-net", "11.0.4.0/24".parse().unwrap()), "still unique");
    }

    #[test]
    fn labels_fall_back_to_a_hash() {
        assert_eq!(label_value("node1"), "node1");
        assert_eq!(label_value(&"n".repeat(80)).len(), 32);
        assert_eq!(label_value("-x"), hex_md5("-x"));
    }

    #[test]
    fn a_claim_is_owned_by_its_node() {
        let node = Node { metadata: ObjectMeta { name: "node1".into(), uid: "u1".into(), ..Default::default() } };
        let range = SlicedRange::new("11.0.0.0/16".parse().unwrap(), 24, false, None).unwrap();
        let c = SliceClaim::new("green", &range, range.slice(4), &node);
        assert_eq!(c.owner_uid(), Some("u1"));
        assert!(c.is_slice_of(&range));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["spec"],
            json!({"network": "green", "range": "11.0.0.0/16", "slice": "11.0.4.0/24", "node": "node1"})
        );
        assert_eq!(v["metadata"]["labels"], json!({"kactus.io/network": "green", "kactus.io/node": "node1"}));
        assert_eq!(v["kind"], "SliceClaim");
    }
}
