//! Label and field selectors, as LIST and WATCH take them in `labelSelector`/`fieldSelector`.
//!
//! Labels support the set-based grammar basics (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! `k in (a,b)`, `k notin (a,b)`); fields support `=`, `==`, `!=` on the labels the real
//! apiserver accepts for the kind (see [`super::resources`]), so a selector that works here
//! also works against a real cluster.

use serde_json::Value;

use super::resources::ResourceKind;
use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// The parsed `labelSelector` and `fieldSelector` of one request; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selector {
    pub fn parse(kind: &ResourceKind, labels: &str, fields: &str) -> Result<Selector, ApiError> {
        let labels = split_top_level(labels).map(parse_label_requirement).collect::<Result<Vec<_>, _>>()?;
        let fields =
            split_top_level(fields).map(|term| parse_field_requirement(kind, term)).collect::<Result<Vec<_>, _>>()?;
        Ok(Selector { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str).map(str::to_string);
        self.labels.iter().all(|r| r.holds(label))
            && self.fields.iter().all(|r| r.holds(|path| Some(field_value(obj, path))))
    }
}

impl Requirement {
    fn holds(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v),
            Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v),
            Requirement::Exists(k) => lookup(k).is_some(),
            Requirement::NotExists(k) => lookup(k).is_none(),
            Requirement::In(k, vs) => lookup(k).is_some_and(|v| vs.contains(&v)),
            Requirement::NotIn(k, vs) => !lookup(k).is_some_and(|v| vs.contains(&v)),
        }
    }
}

/// The string form of a dotted field path; absent fields read as "" as in the real server.
fn field_value(obj: &Value, path: &str) -> String {
    let value = path.split('.').fold(obj, |v, part| &v[part]);
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Splits on commas that are not inside `( )`, dropping empty terms.
fn split_top_level(s: &str) -> impl Iterator<Item = &str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty())
}

fn parse_label_requirement(term: &str) -> Result<Requirement, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {term:?}"));
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(valid_key(key.trim()).ok_or_else(bad)?));
    }
    let values = |rest: &str| set_values(rest).filter(|vs| vs.iter().all(|v| valid_label_value(v)));
    if let Some((key, rest)) = split_set_op(term, " notin ") {
        return Ok(Requirement::NotIn(valid_key(key).ok_or_else(bad)?, values(rest).ok_or_else(bad)?));
    }
    if let Some((key, rest)) = split_set_op(term, " in ") {
        return Ok(Requirement::In(valid_key(key).ok_or_else(bad)?, values(rest).ok_or_else(bad)?));
    }
    match parse_comparison(term) {
        // The real server refuses a value no label can have ("kactus.io/x": a slash), 400.
        Some(Ok(c)) if !valid_label_value(&c.value) => Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label value: {:?}: at key: {:?}",
            c.value, c.key
        ))),
        Some(Ok(c)) => Ok(c.into_requirement()),
        Some(Err(())) => Err(bad()),
        None => Ok(Requirement::Exists(valid_key(term).ok_or_else(bad)?)),
    }
}

fn parse_field_requirement(kind: &ResourceKind, term: &str) -> Result<Requirement, ApiError> {
    let Some(Ok(comparison)) = parse_comparison(term) else {
        return Err(ApiError::bad_request(format!("invalid selector: '{term}'; can't understand '{term}'")));
    };
    if !kind.allows_field(&comparison.key) {
        return Err(ApiError::bad_request(format!("field label not supported: {}", comparison.key)));
    }
    Ok(comparison.into_requirement())
}

/// `key=value` or `key!=value`, before it becomes a [`Requirement`].
struct Comparison {
    key: String,
    value: String,
    negated: bool,
}

impl Comparison {
    fn into_requirement(self) -> Requirement {
        if self.negated {
            Requirement::NotEquals(self.key, self.value)
        } else {
            Requirement::Equals(self.key, self.value)
        }
    }
}

/// `k!=v`, `k==v`, `k=v`; None when the term has no operator, Err when a side is malformed.
fn parse_comparison(term: &str) -> Option<Result<Comparison, ()>> {
    let (key, value, negated) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, false)
    } else {
        return None;
    };
    let (Some(key), value) = (valid_key(key), value.trim()) else {
        return Some(Err(()));
    };
    if value.contains(['=', '!', '(', ')', ' ']) {
        return Some(Err(()));
    }
    let value = value.to_string();
    Some(Ok(Comparison { key, value, negated }))
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    term.split_once(op).map(|(k, rest)| (k.trim(), rest.trim()))
}

fn set_values(rest: &str) -> Option<Vec<String>> {
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

/// A label value as Kubernetes validates it: empty, or at most 63 characters of
/// `[A-Za-z0-9._-]` beginning and ending with an alphanumeric.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn valid_key(key: &str) -> Option<String> {
    let key = key.trim();
    let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_resource;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "app1", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
               "spec": {"nodeName": "node1"}})
    }

    fn sel(labels: &str, fields: &str) -> Result<Selector, ApiError> {
        Selector::parse(by_resource("pods").unwrap(), labels, fields)
    }

    #[test]
    fn label_grammar_basics() {
        let p = pod();
        assert!(sel("app=web,tier", "").unwrap().matches(&p));
        assert!(sel("app in (db, web),!missing", "").unwrap().matches(&p));
        assert!(!sel("app notin (web)", "").unwrap().matches(&p));
        assert!(!sel("app!=web", "").unwrap().matches(&p));
        assert!(sel("app==web", "").unwrap().matches(&p));
        assert!(sel("app=(x", "").is_err());
    }

    #[test]
    fn field_selectors_only_for_supported_labels() {
        let p = pod();
        assert!(sel("", "spec.nodeName=node1,metadata.name=app1").unwrap().matches(&p));
        assert!(!sel("", "spec.nodeName!=node1").unwrap().matches(&p));
        assert_eq!(sel("", "spec.foo=x").unwrap_err().code, 400);
    }
}
