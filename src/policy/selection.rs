//! Label selectors as Kubernetes evaluates them: `matchLabels` and every `matchExpressions`
//! requirement must hold; an empty selector selects everything. A selector the apiserver
//! would have refused (an unknown operator, `In` without values, `Exists` with values) is an
//! error, so the caller can fail closed and say why, rather than guess.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector requirement {key:?} {operator:?}: {reason}")]
pub struct SelectorError {
    pub key: String,
    pub operator: String,
    pub reason: &'static str,
}

/// Whether `labels` are selected by `selector`.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> Result<bool, SelectorError> {
    let mut selected = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        selected &= labels.get(key) == Some(value);
    }
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.as_deref().unwrap_or_default();
        let error = |reason| SelectorError { key: r.key.clone(), operator: r.operator.clone(), reason };
        let holds = match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(error("needs values")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(error("takes no values")),
            "In" => labels.get(&r.key).is_some_and(|v| values.contains(v)),
            "NotIn" => !labels.get(&r.key).is_some_and(|v| values.contains(v)),
            "Exists" => labels.contains_key(&r.key),
            "DoesNotExist" => !labels.contains_key(&r.key),
            _ => return Err(error("unknown operator (In, NotIn, Exists, DoesNotExist)")),
        };
        selected &= holds;
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_selects_all_and_labels_and_expressions_are_anded() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert_eq!(matches(&sel(json!({})), &Labels::new()), Ok(true));
        assert_eq!(matches(&sel(json!({"matchLabels": {"app": "web"}})), &web), Ok(true));
        assert_eq!(matches(&sel(json!({"matchLabels": {"app": "db"}})), &web), Ok(false));
        let both = sel(
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}),
        );
        assert_eq!(matches(&both, &web), Ok(false));
    }

    #[test]
    fn every_operator_means_what_kubernetes_says() {
        let web = labels(&[("app", "web")]);
        let check = |op: &str, values: Option<Vec<&str>>, key: &str| {
            matches(&sel(json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})), &web)
        };
        assert_eq!(check("In", Some(vec!["web", "db"]), "app"), Ok(true));
        assert_eq!(check("In", Some(vec!["db"]), "app"), Ok(false));
        assert_eq!(check("NotIn", Some(vec!["db"]), "app"), Ok(true));
        assert_eq!(check("NotIn", Some(vec!["db"]), "missing"), Ok(true), "NotIn holds for a pod without the label");
        assert_eq!(check("NotIn", Some(vec!["web"]), "app"), Ok(false));
        assert_eq!(check("Exists", None, "app"), Ok(true));
        assert_eq!(check("Exists", None, "missing"), Ok(false));
        assert_eq!(check("DoesNotExist", None, "missing"), Ok(true));
        assert_eq!(check("DoesNotExist", Some(vec![]), "app"), Ok(false));
        assert!(check("In", None, "app").is_err());
        assert!(check("Exists", Some(vec!["x"]), "app").is_err());
        assert!(check("in", Some(vec!["web"]), "app").is_err(), "operators are case-sensitive");
    }
}
