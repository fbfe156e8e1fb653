//! The table of resource kinds the test apiserver serves.
//!
//! One line per kind, so supporting another resource is a one-line change. Everything the
//! server knows about a kind (URL segment, group, list kind, status subresource, which
//! field selectors the real apiserver accepts for it) lives here.

/// One servable resource kind.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// Plural name used in URLs, e.g. `pods`.
    pub resource: &'static str,
    /// API group; empty for the core group served under `/api/v1`.
    pub group: &'static str,
    pub version: &'static str,
    /// `kind` of single objects, e.g. `Pod`; the list kind is this plus `List`.
    pub kind: &'static str,
    /// Whether `/status` is a separate subresource: writes to the main resource then keep
    /// the stored status, and writes to `/status` change only the status, as the real server does.
    pub has_status: bool,
    /// Field selector labels accepted besides `metadata.name` and `metadata.namespace`;
    /// the real apiserver rejects others with 400, so clients must not rely on them.
    pub extra_fields: &'static [&'static str],
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// Every kind the server knows.
#[rustfmt::skip]
pub const KINDS: &[ResourceKind] = &[
    ResourceKind { resource: "pods", group: "", version: "v1", kind: "Pod", has_status: true, extra_fields: POD_FIELDS },
    ResourceKind { resource: "services", group: "", version: "v1", kind: "Service", has_status: true, extra_fields: &[] },
    ResourceKind { resource: "events", group: "", version: "v1", kind: "Event", has_status: false, extra_fields: &["involvedObject.name", "involvedObject.kind", "reason", "type"] },
    // The same Events in the events.k8s.io/v1 shape (kube-rs's Recorder writes these): see events.rs.
    ResourceKind { resource: "events", group: "events.k8s.io", version: "v1", kind: "Event", has_status: false, extra_fields: &["regarding.name", "regarding.kind", "reason", "type"] },
    ResourceKind { resource: "network-attachment-definitions", group: "k8s.cni.cncf.io", version: "v1", kind: "NetworkAttachmentDefinition", has_status: false, extra_fields: &[] },
    // Core Endpoints: what kactus-endpoints writes where discovery.k8s.io/v1 is not served.
    ResourceKind { resource: "endpoints", group: "", version: "v1", kind: "Endpoints", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "namespaces", group: "", version: "v1", kind: "Namespace", has_status: true, extra_fields: &[] },
    ResourceKind { resource: "multi-networkpolicies", group: "k8s.cni.cncf.io", version: "v1beta1", kind: "MultiNetworkPolicy", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "endpointslices", group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", has_status: false, extra_fields: &[] },
    // The same slices as Kubernetes 1.17-1.24 also served them (one store: names are shared).
    ResourceKind { resource: "endpointslices", group: "discovery.k8s.io", version: "v1beta1", kind: "EndpointSlice", has_status: false, extra_fields: &[] },
    // Admission webhooks the server calls on writes (see admission.rs).
    ResourceKind { resource: "mutatingwebhookconfigurations", group: "admissionregistration.k8s.io", version: "v1", kind: "MutatingWebhookConfiguration", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "leases", group: "coordination.k8s.io", version: "v1", kind: "Lease", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "networks", group: "kaloom.com", version: "v1", kind: "Network", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "resourceclaims", group: "resource.k8s.io", version: "v1", kind: "ResourceClaim", has_status: true, extra_fields: &[] },
    ResourceKind { resource: "resourceslices", group: "resource.k8s.io", version: "v1", kind: "ResourceSlice", has_status: false, extra_fields: &["spec.nodeName", "spec.driver"] },
    ResourceKind { resource: "serviceaccounts", group: "", version: "v1", kind: "ServiceAccount", has_status: false, extra_fields: &[] },
    // RBAC, for service-account callers (see rbac.rs).
    ResourceKind { resource: "roles", group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "rolebindings", group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "clusterroles", group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "clusterrolebindings", group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", has_status: false, extra_fields: &[] },
    ResourceKind { resource: "nodes", group: "", version: "v1", kind: "Node", has_status: true, extra_fields: &[] },
    ResourceKind { resource: "sliceclaims", group: "kactus.io", version: "v1alpha1", kind: "SliceClaim", has_status: false, extra_fields: &[] },
];

/// Kinds whose objects belong to no namespace: served at `/apis/{group}/{version}/{resource}/{name}`,
/// never under `/namespaces/`, and stored without `metadata.namespace`.
const CLUSTER_SCOPED: &[&str] = &[
    "mutatingwebhookconfigurations",
    "namespaces",
    "nodes",
    "sliceclaims",
    "resourceslices",
    "clusterroles",
    "clusterrolebindings",
];

impl ResourceKind {
    /// `apiVersion` of objects of this kind: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as error messages name it: `pods`, `leases.coordination.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn namespaced(&self) -> bool {
        !CLUSTER_SCOPED.contains(&self.resource)
    }

    pub fn allows_field(&self, field: &str) -> bool {
        field == "metadata.name" || field == "metadata.namespace" || self.extra_fields.contains(&field)
    }
}

/// The kind served at `group/version/resource` (group empty for core).
pub fn by_path(group: &str, version: &str, resource: &str) -> Option<&'static ResourceKind> {
    KINDS.iter().find(|k| k.group == group && k.version == version && k.resource == resource)
}

/// The kind of a manifest, from its `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
    KINDS.iter().find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind for a plural resource name; where two groups share a name (`events`), the core
/// group's, as kubectl resolves it.
pub fn by_resource(resource: &str) -> Option<&'static ResourceKind> {
    KINDS.iter().find(|k| k.resource == resource)
}
