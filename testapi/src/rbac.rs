//! RBAC for service-account callers: the verbs a token issued by TokenRequest may use are the
//! ones the stored Roles and ClusterRoles grant its account through RoleBindings and
//! ClusterRoleBindings, as the real authorizer decides. Load a project's RBAC manifests into
//! the store and its service accounts get exactly what those grant. (The server's own bearer
//! token stays all-powerful, so tests that do not care about RBAC are unaffected.)
//!
//! Supported: `apiGroups`, `resources` (with `resource/subresource` and `*`), `verbs`,
//! `resourceNames`; a RoleBinding grants in its own namespace only. Not modelled:
//! aggregation, `nonResourceURLs`, group subjects.

use serde_json::Value;

use super::store::Store;
use super::tokens::ServiceAccountRef;

/// One request, as the authorizer sees it.
pub struct Access<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// `pods`, `pods/status`, `serviceaccounts/token`.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Whether any binding of `account` grants `access`.
pub fn allows(store: &Store, account: &ServiceAccountRef, access: &Access) -> bool {
    let bound = |binding: &Value| {
        binding["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == account.name.as_str()
                && s["namespace"] == account.namespace.as_str()
        })
    };
    let cluster_wide = store.list("clusterrolebindings", None).into_iter().filter(|b| bound(b));
    let granted_cluster_wide =
        cluster_wide.into_iter().any(|b| role_of(store, &b, None).is_some_and(|r| grants(&r, access)));
    if granted_cluster_wide {
        return true;
    }
    let Some(namespace) = access.namespace else { return false };
    store
        .list("rolebindings", Some(namespace))
        .into_iter()
        .filter(|b| bound(b))
        .any(|b| role_of(store, &b, Some(namespace)).is_some_and(|r| grants(&r, access)))
}

/// The Role (in the binding's namespace) or ClusterRole a binding refers to.
fn role_of(store: &Store, binding: &Value, namespace: Option<&str>) -> Option<Value> {
    let name = binding["roleRef"]["name"].as_str()?;
    match (binding["roleRef"]["kind"].as_str()?, namespace) {
        ("Role", Some(namespace)) => store.get("roles", namespace, name),
        // Cluster-scoped objects are kept under whatever namespace the manifest had (none).
        ("ClusterRole", _) => store.list("clusterroles", None).into_iter().find(|r| r["metadata"]["name"] == name),
        _ => None,
    }
}

fn grants(role: &Value, access: &Access) -> bool {
    let has = |rule: &Value, field: &str, wanted: &str| {
        rule[field].as_array().into_iter().flatten().any(|v| v == "*" || v == wanted)
    };
    role["rules"].as_array().into_iter().flatten().any(|rule| {
        let names = rule["resourceNames"].as_array().filter(|n| !n.is_empty());
        has(rule, "apiGroups", access.group)
            && has(rule, "resources", access.resource)
            && has(rule, "verbs", access.verb)
            && names.is_none_or(|names| access.name.is_some_and(|name| names.iter().any(|n| n == name)))
    })
}
