//! Which Services this controller serves, read from their annotations.
//!
//! The served shape keeps Kubernetes' own endpoint controllers away: a Service without
//! `spec.selector` gets no Endpoints or EndpointSlices from kube-controller-manager, so the
//! pod selector lives in the `kactus.io/selector` annotation and the endpoints written here
//! are the only ones. A Service written as the seeds wrote it (`spec.selector` plus the
//! networks annotation) is moved into that shape: by the admission webhook before it is
//! stored ([`super::webhook`]), or, if it got past a webhook that was down, by the
//! controller afterwards ([`Shape::SeedShaped`]). Both move it with [`selector_move`].

use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;

/// The network a Service's endpoints are taken from (NPWG annotation, as on pods).
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The pod selector of a Service served here: `{"app":"hello"}` or `app=hello,tier=web`.
pub const SELECTOR_ANNOTATION: &str = "kactus.io/selector";

/// What the controller makes of one Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Does not ask for a secondary network: none of our business (beyond removing slices
    /// we wrote while it did).
    NotOurs,
    /// Asks for a network in a shape we serve.
    Supported { network: NetworkRef, selector: BTreeMap<String, String> },
    /// Asks for a network but still has `spec.selector` (the seeds' shape), so
    /// kube-controller-manager publishes primary-network endpoints for it: to be moved into
    /// the served shape (the selector into the annotation).
    SeedShaped { selector: BTreeMap<String, String> },
    /// Asks for a network in a shape we refuse; the message says exactly what to change.
    Unsupported { message: String },
}

/// The selector to move out of `spec.selector` into [`SELECTOR_ANNOTATION`]: `Some` for a
/// Service that asks for a network (any value: even a wrong one must not get
/// primary-network endpoints from Kubernetes meanwhile) and has a non-empty `spec.selector`.
pub fn selector_move(service: &Service) -> Option<BTreeMap<String, String>> {
    let networks = service.metadata.annotations.as_ref()?.get(NETWORKS_ANNOTATION)?;
    if networks.trim().is_empty() {
        return None;
    }
    service.spec.as_ref()?.selector.clone().filter(|s| !s.is_empty())
}

/// The annotation's value for a moved selector: JSON, keys sorted, so moving the same
/// selector again (a re-apply) writes the same bytes and changes nothing.
pub fn selector_json(selector: &BTreeMap<String, String>) -> String {
    serde_json::to_string(selector).unwrap_or_default()
}

/// A network as `network-status` names it: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

pub fn shape_of(service: &Service) -> Shape {
    let Some(annotations) = &service.metadata.annotations else { return Shape::NotOurs };
    let Some(networks) = annotations.get(NETWORKS_ANNOTATION) else { return Shape::NotOurs };
    if let Some(selector) = selector_move(service) {
        return Shape::SeedShaped { selector };
    }
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let network = match parse_network(networks, namespace) {
        Ok(network) => network,
        Err(message) => return Shape::Unsupported { message },
    };
    let annotated = annotations.get(SELECTOR_ANNOTATION).map(|s| parse_selector(s));
    match annotated {
        None => Shape::Unsupported {
            message: format!(
                "Service asks for network {network} but selects no pods: add the {SELECTOR_ANNOTATION} \
                 annotation with the pod labels, e.g. {SELECTOR_ANNOTATION}: '{{\"app\":\"hello\"}}'"
            ),
        },
        Some(Err(e)) => Shape::Unsupported {
            message: format!(
                "annotation {SELECTOR_ANNOTATION}: {e}; write a JSON map of labels such as \
                 '{{\"app\":\"hello\"}}' or the form app=hello,tier=web"
            ),
        },
        Some(Ok(selector)) => Shape::Supported { network, selector },
    }
}

/// One network, `ns/name` or a bare `name` in the Service's namespace; a JSON list with
/// one `{"name","namespace"}` element is accepted too, as on pods.
pub fn parse_network(value: &str, service_namespace: &str) -> Result<NetworkRef, String> {
    let value = value.trim();
    let refuse = |why: &str| {
        format!(
            "annotation {NETWORKS_ANNOTATION}: {value:?} {why}; name exactly one network as <namespace>/<name> \
             or <name>, e.g. {NETWORKS_ANNOTATION}: mep/mp1"
        )
    };
    let (namespace, name) = if value.starts_with('[') {
        #[derive(serde::Deserialize)]
        struct Element {
            name: String,
            #[serde(default)]
            namespace: String,
        }
        let list: Vec<Element> = serde_json::from_str(value).map_err(|e| refuse(&format!("is not valid JSON: {e}")))?;
        let [one]: [Element; 1] = list.try_into().map_err(|_| refuse("does not name exactly one network"))?;
        (one.namespace, one.name)
    } else {
        if value.contains(',') {
            return Err(refuse("names more than one network"));
        }
        match value.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), value.to_string()),
        }
    };
    let valid =
        |s: &str| !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    let namespace = if namespace.is_empty() { service_namespace.to_string() } else { namespace };
    if !valid(&name) || !valid(&namespace) {
        return Err(refuse("is not a valid network name"));
    }
    Ok(NetworkRef { namespace, name })
}

/// `{"app":"hello"}` or `app=hello,tier=web`; an empty selector is refused, since it
/// would select every pod of the namespace.
pub fn parse_selector(value: &str) -> Result<BTreeMap<String, String>, String> {
    let value = value.trim();
    let selector: BTreeMap<String, String> = if value.starts_with('{') {
        serde_json::from_str(value).map_err(|e| format!("{value:?} is not a JSON map of strings: {e}"))?
    } else {
        let mut map = BTreeMap::new();
        for term in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, val) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("{term:?} is not key=value (only equality is supported)"))?;
            if key.ends_with('!') {
                return Err(format!("{term:?}: only equality is supported"));
            }
            map.insert(key.trim().to_string(), val.trim().to_string());
        }
        map
    };
    if selector.is_empty() {
        return Err(format!("{value:?} selects every pod"));
    }
    Ok(selector)
}

/// Whether labels satisfy an equality selector.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(annotations: &[(&str, &str)], selector: &[(&str, &str)]) -> Service {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Service {
            metadata: ObjectMeta {
                name: Some("hello1".into()),
                namespace: Some("default".into()),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            spec: Some(ServiceSpec { selector: Some(map(selector)), ..Default::default() }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn supported_shape_in_both_selector_forms() {
        for sel in [r#"{"app":"hello"}"#, "app=hello", " app == hello "] {
            let s = service(&[(NETWORKS_ANNOTATION, "mep/mp1"), (SELECTOR_ANNOTATION, sel)], &[]);
            assert_eq!(
                shape_of(&s),
                Shape::Supported {
                    network: NetworkRef { namespace: "mep".into(), name: "mp1".into() },
                    selector: labels(&[("app", "hello")])
                },
                "{sel}"
            );
        }
        let bare = service(&[(NETWORKS_ANNOTATION, "mp1"), (SELECTOR_ANNOTATION, "app=x,tier=y")], &[]);
        let Shape::Supported { network, selector } = shape_of(&bare) else { panic!() };
        assert_eq!(network.to_string(), "default/mp1");
        assert_eq!(selector, labels(&[("app", "x"), ("tier", "y")]));
        let json = service(
            &[(NETWORKS_ANNOTATION, r#"[{"name":"mp1","namespace":"mep"}]"#), (SELECTOR_ANNOTATION, "a=b")],
            &[],
        );
        assert!(matches!(shape_of(&json), Shape::Supported { network, .. } if network.to_string() == "mep/mp1"));
    }

    #[test]
    fn seed_shape_is_to_be_moved_even_with_a_bad_network() {
        for net in ["mep/mp1", "a/b,c/d", "bad name"] {
            let s = service(&[(NETWORKS_ANNOTATION, net)], &[("app", "hello"), ("tier", "web")]);
            assert_eq!(shape_of(&s), Shape::SeedShaped { selector: labels(&[("app", "hello"), ("tier", "web")]) });
            assert_eq!(selector_json(&selector_move(&s).unwrap()), r#"{"app":"hello","tier":"web"}"#);
        }
        // No network asked for, or an empty one: Kubernetes' business.
        assert_eq!(selector_move(&service(&[], &[("app", "x")])), None);
        assert_eq!(selector_move(&service(&[(NETWORKS_ANNOTATION, " ")], &[("app", "x")])), None);
        assert_eq!(selector_move(&service(&[(NETWORKS_ANNOTATION, "a/b")], &[])), None);
    }

    #[test]
    fn other_refusals_and_non_services() {
        assert_eq!(shape_of(&service(&[], &[("app", "x")])), Shape::NotOurs);
        for (net, sel) in [("a/b,c/d", "a=b"), ("a/b", "{}"), ("a/b", "a!=b"), ("a/b", "nonsense"), ("bad name", "a=b")]
        {
            let s = service(&[(NETWORKS_ANNOTATION, net), (SELECTOR_ANNOTATION, sel)], &[]);
            assert!(matches!(shape_of(&s), Shape::Unsupported { .. }), "{net} {sel}");
        }
        let s = service(&[(NETWORKS_ANNOTATION, "a/b")], &[]);
        assert!(
            matches!(shape_of(&s), Shape::Unsupported { message } if message.contains("add the kactus.io/selector"))
        );
    }

    #[test]
    fn selection_is_equality_on_every_key() {
        let sel = labels(&[("app", "hello")]);
        assert!(selects(&sel, &labels(&[("app", "hello"), ("x", "y")])));
        assert!(!selects(&sel, &labels(&[("app", "other")])));
        assert!(!selects(&sel, &labels(&[])));
    }
}
