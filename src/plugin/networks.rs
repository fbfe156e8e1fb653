//! The attachments' network configs, read from the apiserver: a NAD's `spec.config` (or,
//! when it is empty, a file in `confDir`), else Kaloom's `kaloom.com/v1` `Network`.
//!
//! In one request per namespace and source, whatever the number of attachments: a namespace
//! the pod names one network of is a GET of that NAD; one it names several of is one LIST of
//! the namespace's NADs, bounded to a page ([`list_page`]). A LIST's answer grows with the
//! namespace where GETs grow with the pod (a whole namespace of 1,000 NADs of ~1.4 KiB each
//! is 1.4 MB per ADD, see BENCHMARK.md), so the page caps what one ADD can cost: up to a
//! page of NADs in the namespace, one request; beyond, the page plus a GET for each network
//! the page did not hold. A LIST that RBAC forbids (a ClusterRole from before kactus listed
//! NADs) falls back to one GET per network. The networks without a NAD (a LIST shorter than
//! its page holds them all; a 404 for it means the cluster serves no NADs at all) are read
//! from Kaloom's `Network`s in the same way: a GET for one, one LIST for several.

use super::apiserver::kube_error;
use super::config::KactusConfig;
use crate::attachment::Attachment;
use crate::cni::{code, CniError, NetworkConfig};
use crate::devices::{self, AllocatedDevice};
use crate::kube::{self, KubeError, NetworkAttachmentDefinition};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A network to attach: its config and, when it names a resource, the device backing it.
#[derive(Debug, Clone)]
pub struct Network {
    pub config: NetworkConfig,
    pub resource_name: Option<String>,
    pub device: Option<AllocatedDevice>,
    /// The resourceVersion of the object the config came from, recorded with the attachment
    /// so a NAD changed around the ADD shows which version the pod got.
    pub resource_version: String,
}

impl Network {
    fn new(config: NetworkConfig, meta: &kube::ObjectMeta) -> Network {
        let resource_name = meta.annotations.get(devices::RESOURCE_NAME_ANNOTATION).filter(|r| !r.is_empty()).cloned();
        Network { config, resource_name, device: None, resource_version: meta.resource_version.clone() }
    }
}

/// A network as podagent answered it (the fast path): its object parsed and checked exactly
/// as one read from the apiserver here is.
pub fn from_answer(cfg: &KactusConfig, answered: &crate::fastpath::NetworkObject) -> Result<Network, CniError> {
    use crate::fastpath::NetworkSource;
    let (ns, name) = (answered.namespace.as_str(), answered.name.as_str());
    let decode = |what: &str, e: serde_json::Error| kube_error(KubeError::Decode { message: e.to_string() }, what);
    match answered.source {
        NetworkSource::Nad => {
            let what = format!("NetworkAttachmentDefinition {ns}/{name}");
            let nad: NetworkAttachmentDefinition =
                serde_json::from_value(answered.object.clone()).map_err(|e| decode(&what, e))?;
            if nad.metadata.name != name {
                return Err(not_the_object(&what, &nad.metadata));
            }
            from_nad(cfg, ns, name, &nad)
        }
        NetworkSource::Kaloom => {
            let what = format!("kaloom.com/v1 Network {ns}/{name}");
            let net: KaloomNetwork = serde_json::from_value(answered.object.clone()).map_err(|e| decode(&what, e))?;
            if net.metadata.name != name {
                return Err(not_the_object(&what, &net.metadata));
            }
            from_kaloom(cfg, ns, name, &net)
        }
        NetworkSource::Absent => Err(not_found(ns, name, &"absent (podagent read both live)")),
    }
}

/// The NADs one LIST may bring when the pod names `wanted` networks of a namespace: eight
/// times those, and at least [`MIN_LIST_PAGE`]. A namespace that size or smaller (nearly all:
/// a namespace holds a handful to tens of networks) costs one request per ADD, which is the
/// point: per-request work (authentication, authorization, audit) is what an apiserver pays
/// most for reads of small objects. The page bounds the other cost, bytes: whatever a
/// namespace holds, an ADD reads at most eight NADs per network it needs (a whole namespace of
/// 1,000 NADs of ~1.4 KiB is 1.4 MB, see BENCHMARK.md), plus a GET for each network beyond
/// the page.
pub fn list_page(wanted: usize) -> usize {
    (wanted * 8).max(MIN_LIST_PAGE)
}

/// The smallest LIST page: the namespaces of BENCHMARK.md's rows (64 NADs) are one request.
pub const MIN_LIST_PAGE: usize = 64;

/// A network by namespace and name.
type NetworkRef<'a> = (&'a str, &'a str);

/// The networks of `atts`, in their order (an attachment repeated shares its network's
/// answer): one request per namespace, the namespaces read concurrently.
pub fn read(cfg: &KactusConfig, client: &kube::Client, atts: &[Attachment]) -> Vec<Result<Network, CniError>> {
    let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for att in atts {
        wanted.entry(att.namespace.as_str()).or_default().insert(att.selection.name.as_str());
    }
    let namespaces: Vec<(&str, BTreeSet<&str>)> = wanted.into_iter().collect();
    let found: BTreeMap<NetworkRef, Result<Network, CniError>> =
        concurrently(&namespaces, |(ns, names)| read_namespace(cfg, client, ns, names)).into_iter().flatten().collect();
    let missing = || Err(CniError::new(code::IO_FAILURE, "network read thread panicked"));
    atts.iter()
        .map(|att| found.get(&(att.namespace.as_str(), att.selection.name.as_str())).cloned().unwrap_or_else(missing))
        .collect()
}

/// The networks `names` of namespace `ns`: a GET for one, a LIST for several. What the
/// NADs do not hold is looked for among Kaloom's `Network`s the same way, so a cluster gives
/// the same answers whichever source it serves: NADs only, Kaloom `Network`s only (seed 001's
/// own install, where the apiserver answers 404 to every NAD path: the CRD is not there),
/// both, or some networks in each.
fn read_namespace<'a>(
    cfg: &KactusConfig,
    client: &kube::Client,
    ns: &'a str,
    names: &BTreeSet<&'a str>,
) -> Vec<(NetworkRef<'a>, Result<Network, CniError>)> {
    let names: Vec<&'a str> = names.iter().copied().collect();
    let one_by_one = |names: &[&'a str]| concurrently(names, |name| ((ns, *name), by_get(cfg, client, ns, name)));
    if names.len() < 2 {
        return one_by_one(&names);
    }
    let page = list_page(names.len());
    let listed = match client.list_network_attachment_definitions(ns, page) {
        Ok(listed) => listed,
        Err(KubeError::Forbidden { message }) => {
            log::info!("NetworkAttachmentDefinitions of {ns} may not be listed ({message}): reading them one by one");
            return one_by_one(&names);
        }
        Err(KubeError::NotFound { .. }) => {
            log::debug!(
                "no NetworkAttachmentDefinitions are served (404 for their LIST): reading kaloom.com/v1 Networks"
            );
            return kaloom_networks(cfg, client, ns, &names);
        }
        Err(e) => {
            let e = kube_error(e, &format!("list NetworkAttachmentDefinitions in {ns}"));
            return names.iter().map(|name| ((ns, *name), Err(e.clone()))).collect();
        }
    };
    log::debug!("{} NetworkAttachmentDefinition(s) listed in {ns}", listed.len());
    let page = Page::of(&listed, |nad| &nad.metadata.name, &names, page);
    let mut found: Vec<_> = page.held.iter().map(|(name, nad)| ((ns, *name), from_nad(cfg, ns, name, nad))).collect();
    found.extend(one_by_one(&page.beyond));
    found.extend(kaloom_networks(cfg, client, ns, &page.absent));
    found
}

/// The networks `names` of namespace `ns` that have no NAD, from Kaloom's `Network`s: a GET
/// for one, one LIST (bounded like the NADs') for several. A LIST that is not served (404:
/// no such CRD either) means none of them exists; one RBAC forbids falls back to a GET each.
fn kaloom_networks<'a>(
    cfg: &KactusConfig,
    client: &kube::Client,
    ns: &'a str,
    names: &[&'a str],
) -> Vec<(NetworkRef<'a>, Result<Network, CniError>)> {
    let one_by_one =
        |names: &[&'a str]| concurrently(names, |name| ((ns, *name), kaloom_network_config(cfg, client, ns, name)));
    if names.len() < 2 {
        return one_by_one(names);
    }
    let page = list_page(names.len());
    let path = format!("/apis/kaloom.com/v1/namespaces/{}/networks", kube::path_segment(ns));
    let listed = match client.list::<KaloomNetwork>(&path, &[("limit", &page.to_string())]) {
        Ok(list) => list.items,
        Err(KubeError::Forbidden { message }) => {
            log::info!("kaloom.com/v1 Networks of {ns} may not be listed ({message}): reading them one by one");
            return one_by_one(names);
        }
        Err(e @ KubeError::NotFound { .. }) => {
            return names.iter().map(|name| ((ns, *name), Err(not_found(ns, name, &e)))).collect();
        }
        Err(e) => {
            let e = kube_error(e, &format!("list kaloom.com/v1 Networks in {ns}"));
            return names.iter().map(|name| ((ns, *name), Err(e.clone()))).collect();
        }
    };
    log::debug!("{} kaloom.com/v1 Network(s) listed in {ns}", listed.len());
    let page = Page::of(&listed, |net| &net.metadata.name, names, page);
    let mut found: Vec<_> =
        page.held.iter().map(|(name, net)| ((ns, *name), from_kaloom(cfg, ns, name, net))).collect();
    let why = format!("not among the {} listed", listed.len());
    found.extend(page.absent.iter().map(|name| ((ns, *name), Err(not_found(ns, name, &why)))));
    found.extend(one_by_one(&page.beyond));
    found
}

/// What one LIST page of a source says about `names`: the objects it holds, the names it
/// shows absent (a page shorter than its limit held every object: the LIST is a consistent
/// read), and those that may be beyond a full page, to be read one by one.
struct Page<'l, 'a, T> {
    held: Vec<(&'a str, &'l T)>,
    absent: Vec<&'a str>,
    beyond: Vec<&'a str>,
}

impl<'l, 'a, T> Page<'l, 'a, T> {
    fn of(listed: &'l [T], name_of: fn(&T) -> &String, names: &[&'a str], limit: usize) -> Page<'l, 'a, T> {
        let mut page = Page { held: Vec::new(), absent: Vec::new(), beyond: Vec::new() };
        for name in names {
            match listed.iter().find(|o| name_of(o) == name) {
                Some(o) => page.held.push((name, o)),
                None if listed.len() < limit => page.absent.push(name),
                None => page.beyond.push(name),
            }
        }
        page
    }
}

/// `f` of each item, each on its own thread when there are several (the apiserver's client
/// multiplexes their requests on one connection).
fn concurrently<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(move || f(item))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// A network's config: the NAD's `spec.config`, else a `.conflist`/`.conf` in `confDir`
/// whose `name` is the NAD's name. Without a NAD, Kaloom's `kaloom.com/v1` `Network` of
/// that name is the second source, so clusters coming from the original kactus keep working
/// (the shipped ClusterRole lets the plugin read them).
fn by_get(cfg: &KactusConfig, client: &kube::Client, ns: &str, name: &str) -> Result<Network, CniError> {
    let nad = match client.get_network_attachment_definition(ns, name) {
        Ok(nad) if nad.metadata.name == name => nad,
        Ok(nad) => return Err(not_the_object(&format!("NetworkAttachmentDefinition {ns}/{name}"), &nad.metadata)),
        Err(KubeError::NotFound { .. }) => return kaloom_network_config(cfg, client, ns, name),
        Err(e) => return Err(kube_error(e, &format!("get NetworkAttachmentDefinition {ns}/{name}"))),
    };
    from_nad(cfg, ns, name, &nad)
}

fn from_nad(cfg: &KactusConfig, ns: &str, name: &str, nad: &NetworkAttachmentDefinition) -> Result<Network, CniError> {
    let config = if !nad.spec.config.trim().is_empty() {
        NetworkConfig::from_bytes(nad.spec.config.as_bytes(), name, &cfg.cni_version)
            .map_err(|e| e.context(format!("NetworkAttachmentDefinition {ns}/{name} spec.config")))?
    } else {
        config_from_dir(cfg, ns, name)?
    };
    Ok(Network::new(config, &nad.metadata))
}

/// Kaloom's `Network`: `spec.config` is the CNI config, `spec.plugin` its plugin type (used
/// when the config leaves `type` out); its metadata may name a resource as a NAD's does.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct KaloomNetwork {
    metadata: kube::ObjectMeta,
    spec: KaloomNetworkSpec,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct KaloomNetworkSpec {
    plugin: String,
    config: String,
}

/// Kaloom's `Network` `name` of `ns`, read with a GET.
fn kaloom_network_config(cfg: &KactusConfig, client: &kube::Client, ns: &str, name: &str) -> Result<Network, CniError> {
    let path =
        format!("/apis/kaloom.com/v1/namespaces/{}/networks/{}", kube::path_segment(ns), kube::path_segment(name));
    // The NAD is missing: that is the answer, unless the fallback source has the network. A
    // fallback that is not there (404: no such object, or the CRD is not installed) or not
    // readable (403: RBAC without the rule) must not hide it behind its own error.
    let net: KaloomNetwork = client.get(&path).map_err(|e| match e {
        KubeError::NotFound { .. } | KubeError::Forbidden { .. } => not_found(ns, name, &e),
        e => kube_error(e, &format!("get kaloom.com/v1 Network {ns}/{name}")),
    })?;
    if net.metadata.name != name {
        return Err(not_the_object(&format!("kaloom.com/v1 Network {ns}/{name}"), &net.metadata));
    }
    from_kaloom(cfg, ns, name, &net)
}

/// A 200 whose JSON is not the object asked for (every field of ours has a default, so any
/// JSON object decodes): no answer about the network, so not a missing config either.
fn not_the_object(what: &str, got: &kube::ObjectMeta) -> CniError {
    let message = format!("the answer is not {what} (its metadata.name is {:?})", got.name);
    kube_error(KubeError::Decode { message }, &format!("get {what}"))
}

/// A network that neither source has: NetworkNotFound, `why` the Kaloom source's answer.
fn not_found(ns: &str, name: &str, why: &dyn std::fmt::Display) -> CniError {
    log::info!("network {ns}/{name}: no NetworkAttachmentDefinition; kaloom.com/v1 Network: {why}");
    CniError::new(
        code::NETWORK_NOT_FOUND,
        format!("network {ns}/{name}: no NetworkAttachmentDefinition {ns}/{name} (nor kaloom.com/v1 Network)"),
    )
}

fn from_kaloom(cfg: &KactusConfig, ns: &str, name: &str, net: &KaloomNetwork) -> Result<Network, CniError> {
    if net.spec.config.trim().is_empty() {
        return Ok(Network::new(config_from_dir(cfg, ns, name)?, &net.metadata));
    }
    let what = format!("kaloom.com/v1 Network {ns}/{name} spec.config");
    let mut value: Value = serde_json::from_str(&net.spec.config)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("{what} is not JSON: {e}")))?;
    if let Some(obj) = value.as_object_mut() {
        if !obj.contains_key("type") && !obj.contains_key("plugins") && !net.spec.plugin.is_empty() {
            obj.insert("type".into(), net.spec.plugin.clone().into());
        }
    }
    let config = NetworkConfig::parse(&value, name, &cfg.cni_version).map_err(|e| e.context(what))?;
    Ok(Network::new(config, &net.metadata))
}

/// The config of a network whose object leaves it empty: a `.conflist`/`.conf` named `name`
/// in `confDir/<namespace>/` (the operator's networks for that namespace), else in `confDir`
/// itself (the operator's cluster-wide networks). An empty NAD is something anyone who may
/// write NADs can make, so with `namespaceIsolation` the cluster-wide files serve only NADs of
/// the `globalNamespaces`: a tenant's empty NAD cannot pick up a network the operator kept for
/// someone else.
fn config_from_dir(cfg: &KactusConfig, ns: &str, name: &str) -> Result<NetworkConfig, CniError> {
    let cluster_wide = !cfg.namespace_isolation || cfg.global_namespaces.iter().any(|g| g == ns);
    // Namespaces are DNS-1123 labels (checked where the annotation is parsed); a path must
    // never come of one that is not.
    let mut dirs = Vec::new();
    if !ns.is_empty() && !ns.contains('/') && !ns.starts_with('.') {
        dirs.push(cfg.conf_dir.join(ns));
    }
    if cluster_wide {
        dirs.push(cfg.conf_dir.clone());
    }
    for dir in &dirs {
        if let Some(config) = config_in_dir(dir, name, &cfg.cni_version)? {
            return Ok(config);
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(CniError::new(
        code::NETWORK_NOT_FOUND,
        format!(
            "network {ns}/{name}: its NetworkAttachmentDefinition has an empty spec.config and no .conflist/.conf named {name:?} is in {}",
            searched.join(" or ")
        ),
    ))
}

fn config_in_dir(dir: &Path, name: &str, version: &str) -> Result<Option<NetworkConfig>, CniError> {
    let mut files: Vec<_> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for ext in ["conflist", "conf"] {
        for path in files.iter().filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext)) {
            let Ok(bytes) = std::fs::read(path) else { continue };
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else { continue };
            if value.get("name").and_then(Value::as_str) == Some(name) {
                return NetworkConfig::parse(&value, name, version).map(Some).map_err(|e| e.context(path.display()));
            }
        }
    }
    Ok(None)
}
