//! The EndpointSlices a Service should have, computed from its pods alone (no I/O), so the
//! rules are tested directly and every reconcile arrives at the same answer.

use super::shape::NetworkRef;
use crate::attachment::attested;
use crate::plugin::status::NETWORK_STATUS;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our `managed-by` value: Kubernetes' endpointslice controller leaves slices with another
/// value alone, and we only ever touch slices with this one.
pub const MANAGED_BY: &str = "endpoints-controller.kactus.io";
/// Kubernetes' own default cap (`--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Address families as `addressType` names them, in slice-name order.
const FAMILIES: [(&str, &str); 2] = [("IPv4", "ipv4"), ("IPv6", "ipv6")];

/// A resolved port as a sortable key: (name, protocol, port, appProtocol).
type PortKey = (Option<String>, Option<String>, Option<i32>, Option<String>);

/// The label selector that finds our slices of one Service.
pub fn slices_selector(service_name: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service_name},{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The label on the core/v1 Endpoints we write (`managed-by` on Endpoints means nothing to
/// Kubernetes; this is the recommended label for "who writes this object").
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const ENDPOINTS_MANAGED_BY: &str = "kactus-endpoints";
/// Tells kube-controller-manager's EndpointSlice mirroring controller (1.19+) not to copy an
/// Endpoints object into slices: set where we publish our own slices too.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// kube-controller-manager's `managed-by` value: its slices of a Service we serve are leftovers.
pub const KUBERNETES_MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The label selector that finds kube-controller-manager's slices of one Service.
pub fn kubernetes_slices_selector(service_name: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service_name},{MANAGED_BY_LABEL}={KUBERNETES_MANAGED_BY}")
}

/// The label selector that finds all our Endpoints objects.
pub fn our_endpoints_selector() -> String {
    format!("{ENDPOINTS_MANAGED_BY_LABEL}={ENDPOINTS_MANAGED_BY}")
}

/// Whether an Endpoints object is one we wrote.
pub fn is_our_endpoints(endpoints: &Endpoints) -> bool {
    endpoints.metadata.labels.as_ref().and_then(|l| l.get(ENDPOINTS_MANAGED_BY_LABEL)).map(String::as_str)
        == Some(ENDPOINTS_MANAGED_BY)
}

/// The core/v1 Endpoints object saying what `slices` say, for clusters (and clients) that read
/// Endpoints: one subset per port set, ready endpoints in `addresses`, the others in
/// `notReadyAddresses`, as kube-controller-manager writes it. `skip_mirror` where our own
/// slices exist (else, on 1.19-1.20, the mirroring controller's slices are what kube-proxy reads).
pub fn desired_endpoints(service: &Service, slices: &[EndpointSlice], skip_mirror: bool) -> Endpoints {
    let mut subsets: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for slice in slices {
        let ports: Vec<PortKey> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.protocol.clone(), p.port, p.app_protocol.clone()))
            .collect();
        let (ready, not_ready) = subsets.entry(ports).or_default();
        for endpoint in &slice.endpoints {
            for ip in &endpoint.addresses {
                let address = EndpointAddress {
                    ip: ip.clone(),
                    node_name: endpoint.node_name.clone(),
                    target_ref: endpoint.target_ref.clone(),
                    hostname: None,
                };
                match endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false) {
                    true => ready.push(address),
                    false => not_ready.push(address),
                }
            }
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .filter(|(ports, _)| !ports.is_empty())
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, protocol, port, app_protocol)| CorePort {
                        name: name.filter(|n| !n.is_empty()),
                        protocol,
                        port: port.unwrap_or_default(),
                        app_protocol,
                    })
                    .collect(),
            ),
        })
        .collect();
    let mut ours = vec![(ENDPOINTS_MANAGED_BY_LABEL, ENDPOINTS_MANAGED_BY)];
    if skip_mirror {
        ours.push((SKIP_MIRROR_LABEL, "true"));
    }
    let labels = labels_for(service, &ours);
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// Whether an existing Endpoints object already says what `desired` says (its labels are
/// ours to set: exactly those).
pub fn endpoints_up_to_date(existing: &Endpoints, desired: &Endpoints) -> bool {
    existing.subsets.as_deref().unwrap_or_default() == desired.subsets.as_deref().unwrap_or_default()
        && existing.metadata.owner_references == desired.metadata.owner_references
        && existing.metadata.labels.clone().unwrap_or_default() == desired.metadata.labels.clone().unwrap_or_default()
}

/// The label selector that finds all our slices.
pub fn ours_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Desired slices of `service`, from the pods its selector picked. Endpoints are grouped
/// by family and by resolved port set (pods may name the same `targetPort` differently, as
/// Kubernetes allows), at most [`MAX_ENDPOINTS_PER_SLICE`] per slice, sorted by pod, with
/// names `<service>-kactus-<ipv4|ipv6>-<n>` so a restarted controller finds its own.
pub fn desired_slices(service: &Service, network: &NetworkRef, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let service_ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut groups: BTreeMap<(&str, Vec<PortKey>), Vec<Endpoint>> = BTreeMap::new();
    let mut sorted: Vec<&Pod> = pods.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let addresses = addresses_on(pod, network);
        let ports = resolved_ports(service_ports, pod);
        if !service_ports.is_empty() && ports.is_empty() {
            // An endpoint without a port serves nothing: left out (see `unresolved_pods`).
            continue;
        }
        for (family, _) in FAMILIES {
            let first = addresses.iter().find(|a| family_of(a) == family);
            if let Some(address) = first {
                let endpoint = endpoint_for(pod, address, publish_not_ready);
                groups.entry((family, ports.clone())).or_default().push(endpoint);
            }
        }
    }
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut slices = Vec::new();
    for (family, short) in FAMILIES {
        let mut n = 0;
        for ((_, ports), endpoints) in groups.iter().filter(|((f, _), _)| *f == family) {
            for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
                slices.push(slice(service, format!("{name}-kactus-{short}-{n}"), family, chunk, ports));
                n += 1;
            }
        }
    }
    slices
}

/// Set on the slices and Endpoints of a headless Service, as kube-controller-manager does.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The labels our objects carry: the Service's own (as kube-controller-manager copies them,
/// so a `service.kubernetes.io/service-proxy-name` that makes kube-proxy skip the Service
/// makes it skip its endpoints too), the headless mark, then `ours` over all of them.
fn labels_for(service: &Service, ours: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    for reserved in
        [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, ENDPOINTS_MANAGED_BY_LABEL, SKIP_MIRROR_LABEL, HEADLESS_LABEL]
    {
        labels.remove(reserved);
    }
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.extend(ours.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    labels
}

fn slice(service: &Service, name: String, family: &str, endpoints: &[Endpoint], ports: &[PortKey]) -> EndpointSlice {
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let labels = labels_for(service, &[(SERVICE_NAME_LABEL, &service_name), (MANAGED_BY_LABEL, MANAGED_BY)]);
    let ports = ports
        .iter()
        .map(|(name, protocol, port, app_protocol)| EndpointPort {
            name: name.clone(),
            protocol: protocol.clone(),
            port: *port,
            app_protocol: app_protocol.clone(),
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        address_type: family.to_string(),
        endpoints: endpoints.to_vec(),
        ports: Some(ports),
    }
}

/// The Service owns its slices: garbage collection removes them with it.
pub fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn endpoint_for(pod: &Pod, address: &IpAddr, publish_not_ready: bool) -> Endpoint {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let pod_ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Endpoint {
        addresses: vec![address.to_string()],
        conditions: Some(EndpointConditions {
            // As Kubernetes: a terminating pod is never ready, but may still be serving.
            ready: Some(publish_not_ready || (pod_ready && !terminating)),
            serving: Some(publish_not_ready || pod_ready),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's addresses on `network` as kactus recorded them in the pod's
/// [`attested::CONDITION`] (status, which the pod's authors cannot write), never from the
/// `network-status` annotation, which anyone who may patch the pod can make claim any address
/// (the class of CVE-2021-25740: endpoints pointing at the apiserver, other tenants' pods).
pub fn addresses_on(pod: &Pod, network: &NetworkRef) -> Vec<IpAddr> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    attested_entries(pod)
        .map(|entries| attested::addresses_on(&entries, namespace, &network.namespace, &network.name))
        .unwrap_or_default()
}

fn attested_entries(pod: &Pod) -> Option<Vec<attested::Attested>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let condition = conditions.iter().find(|c| c.type_ == attested::CONDITION)?;
    attested::decode(condition.message.as_deref()?)
}

/// Addresses the pod's `network-status` annotation claims on `network` that kactus did not
/// record for it: ignored, and worth telling the pod's owner why.
pub fn unattested_claims(pod: &Pod, network: &NetworkRef) -> Vec<IpAddr> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        name: String,
        #[serde(default)]
        interface: String,
        #[serde(default)]
        ips: Vec<String>,
    }
    let Some(raw) = pod.metadata.annotations.as_ref().and_then(|a| a.get(NETWORK_STATUS)) else { return Vec::new() };
    let Ok(entries) = serde_json::from_str::<Vec<Entry>>(raw) else { return Vec::new() };
    let claimed: Vec<attested::Attested> =
        entries.into_iter().map(|e| attested::Attested { name: e.name, interface: e.interface, ips: e.ips }).collect();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let attested = addresses_on(pod, network);
    let mut claims = attested::addresses_on(&claimed, namespace, &network.namespace, &network.name);
    claims.retain(|a| !attested.contains(a));
    claims.dedup();
    claims
}

/// The pods with an address on `network` for which none of the Service's ports resolves (a
/// named `targetPort` none of their containers declares): left out, worth an Event.
pub fn unresolved_pods(service: &Service, network: &NetworkRef, pods: &[&Pod]) -> Vec<String> {
    let service_ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    if service_ports.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<String> = pods
        .iter()
        .filter(|pod| !addresses_on(pod, network).is_empty() && resolved_ports(service_ports, pod).is_empty())
        .map(|pod| pod.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

fn family_of(address: &IpAddr) -> &'static str {
    if address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The Service's ports as this pod serves them. A named `targetPort` the pod does not
/// declare leaves that port out for this pod, as Kubernetes does.
fn resolved_ports(ports: &[ServicePort], pod: &Pod) -> Vec<PortKey> {
    let mut out: Vec<PortKey> = ports
        .iter()
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".to_string());
            let port = target_port(sp, &protocol, pod)?;
            Some((Some(sp.name.clone().unwrap_or_default()), Some(protocol), Some(port), sp.app_protocol.clone()))
        })
        .collect();
    out.sort();
    out
}

fn target_port(sp: &ServicePort, protocol: &str, pod: &Pod) -> Option<i32> {
    let named = match &sp.target_port {
        None => return Some(sp.port),
        Some(IntOrString::Int(n)) => return Some(if *n > 0 { *n } else { sp.port }),
        Some(IntOrString::String(s)) if s.parse::<i32>().is_ok() => return s.parse().ok(),
        Some(IntOrString::String(s)) => s,
    };
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(named.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| p.container_port)
}

/// Whether an existing slice already says what `desired` says. Its labels are ours to set
/// (the Service's and ours: a label the Service dropped must go from its slices too);
/// annotations others add do not count.
pub fn up_to_date(existing: &EndpointSlice, desired: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    existing.address_type == desired.address_type
        && existing.endpoints == desired.endpoints
        && existing.ports.as_deref().unwrap_or_default() == desired.ports.as_deref().unwrap_or_default()
        && existing.metadata.owner_references == desired.metadata.owner_references
        && labels(existing) == labels(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A pod whose network-status annotation is `status` and whose attested condition (what
    /// kactus wrote to its status) says the same of its attachments.
    fn pod(name: &str, status: &str, ready: bool, http_port: i32) -> Pod {
        pod_claiming(name, status, status, ready, http_port)
    }

    /// A pod whose annotation says `claimed` while kactus attested `attested`.
    fn pod_claiming(name: &str, claimed: &str, attested: &str, ready: bool, http_port: i32) -> Pod {
        let entries: Vec<Value> = serde_json::from_str::<Vec<Value>>(attested)
            .unwrap()
            .into_iter()
            .filter(|e| e["default"] != json!(true))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "annotations": {NETWORK_STATUS: claimed}},
            "spec": {"nodeName": "node1", "containers": [
                {"name": "hello", "ports": [{"name": "http", "containerPort": http_port}]}]},
            "status": {"conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }},
                {"type": attested::CONDITION, "status": "True", "message": Value::Array(entries).to_string()}]}
        }))
        .unwrap()
    }

    #[test]
    fn addresses_come_from_what_kactus_attested_never_from_the_annotation() {
        // A tenant patched the annotation to point the Service at the apiserver's ClusterIP.
        let forged = pod_claiming("a", &status(&["10.96.0.1"]), &status(&["200.1.1.2"]), true, 80);
        let slices = desired_slices(&service(json!("http")), &mp1(), &[&forged]);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].endpoints[0].addresses, vec!["200.1.1.2".to_string()]);
        assert_eq!(unattested_claims(&forged, &mp1()), vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        // An annotation with no attested condition at all (a pod kactus never attached).
        let mut bare = pod("b", &status(&["200.1.1.3"]), true, 80);
        bare.status.as_mut().unwrap().conditions.as_mut().unwrap().retain(|c| c.type_ == "Ready");
        assert!(desired_slices(&service(json!("http")), &mp1(), &[&bare]).is_empty());
        assert_eq!(unattested_claims(&bare, &mp1()).len(), 1);
        // Agreement is not a claim.
        assert!(unattested_claims(&pod("c", &status(&["200.1.1.4"]), true, 80), &mp1()).is_empty());
    }

    fn service(target: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "hello1", "namespace": "default", "uid": "svc-uid"},
            "spec": {"ports": [{"name": "web", "port": 8080, "targetPort": target}]}
        }))
        .unwrap()
    }

    fn mp1() -> NetworkRef {
        NetworkRef { namespace: "mep".into(), name: "mp1".into() }
    }

    fn status(ips: &[&str]) -> String {
        json!([
            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.5"], "default": true},
            {"name": "mep/mp1", "interface": "net1", "ips": ips},
        ])
        .to_string()
    }

    fn ready(e: &Endpoint) -> Option<bool> {
        e.conditions.as_ref().and_then(|c| c.ready)
    }

    fn first_port(s: &EndpointSlice) -> Option<i32> {
        s.ports.as_ref().and_then(|p| p[0].port)
    }

    #[test]
    fn secondary_addresses_with_named_ports_resolved() {
        let a = pod("a", &status(&["200.1.1.2", "fd00::2"]), true, 80);
        let b = pod("b", &status(&["200.1.1.3/24"]), false, 80);
        let slices = desired_slices(&service(json!("http")), &mp1(), &[&b, &a]);
        assert_eq!(slices.len(), 2);
        let v4 = &slices[0];
        assert_eq!(v4.metadata.name.as_deref(), Some("hello1-kactus-ipv4-0"));
        assert_eq!(v4.address_type, "IPv4");
        let addrs: Vec<_> = v4.endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
        assert_eq!(addrs, ["200.1.1.2", "200.1.1.3"]);
        assert_eq!(ready(&v4.endpoints[0]), Some(true));
        assert_eq!(ready(&v4.endpoints[1]), Some(false));
        assert_eq!(v4.endpoints[0].target_ref.as_ref().unwrap().uid.as_deref(), Some("uid-a"));
        assert_eq!(first_port(v4), Some(80));
        assert_eq!(v4.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(slices[1].metadata.name.as_deref(), Some("hello1-kactus-ipv6-0"));
        assert_eq!(slices[1].endpoints[0].addresses, ["fd00::2"]);
    }

    #[test]
    fn pods_disagreeing_on_a_named_port_get_separate_slices() {
        let a = pod("a", &status(&["200.1.1.2"]), true, 80);
        let b = pod("b", &status(&["200.1.1.3"]), true, 8000);
        let slices = desired_slices(&service(json!("http")), &mp1(), &[&a, &b]);
        let ports: Vec<_> = slices.iter().map(|s| (s.metadata.name.clone().unwrap(), first_port(s))).collect();
        assert_eq!(ports, [("hello1-kactus-ipv4-0".into(), Some(80)), ("hello1-kactus-ipv4-1".into(), Some(8000))]);
        let numeric = desired_slices(&service(json!(9090)), &mp1(), &[&a, &b]);
        assert_eq!(numeric.len(), 1);
        assert_eq!(first_port(&numeric[0]), Some(9090));
    }

    #[test]
    fn pods_without_the_network_or_finished_are_left_out_and_slices_hold_100() {
        let other = pod("x", &json!([{"name": "mep/other", "ips": ["1.2.3.4"]}]).to_string(), true, 80);
        let mut done = pod("y", &status(&["200.1.1.9"]), true, 80);
        done.status.get_or_insert_default().phase = Some("Succeeded".into());
        assert!(desired_slices(&service(json!("http")), &mp1(), &[&other, &done]).is_empty());
        let many: Vec<Pod> = (0..250)
            .map(|i| pod(&format!("p{i:03}"), &status(&[&format!("10.9.{}.{}", i / 200, i % 200)]), true, 80))
            .collect();
        let refs: Vec<&Pod> = many.iter().collect();
        let slices = desired_slices(&service(json!("http")), &mp1(), &refs);
        let sizes: Vec<_> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn pods_serving_none_of_the_ports_are_left_out_and_named() {
        let a = pod("a", &status(&["200.1.1.2"]), true, 80);
        let named_grpc = service(json!("grpc"));
        assert!(desired_slices(&named_grpc, &mp1(), &[&a]).is_empty());
        assert_eq!(unresolved_pods(&named_grpc, &mp1(), &[&a]), ["a"]);
        assert!(unresolved_pods(&service(json!("http")), &mp1(), &[&a]).is_empty());
        let other = pod("x", &json!([{"name": "mep/other", "ips": ["1.2.3.4"]}]).to_string(), true, 80);
        assert!(unresolved_pods(&named_grpc, &mp1(), &[&other]).is_empty(), "not on the network: not this problem");
    }

    #[test]
    fn slices_and_endpoints_carry_the_services_labels_and_follow_them() {
        let a = pod("a", &status(&["200.1.1.2"]), true, 80);
        let mut svc = service(json!("http"));
        svc.metadata.labels = Some(BTreeMap::from([
            ("service.kubernetes.io/service-proxy-name".to_string(), "kactus".to_string()),
            (MANAGED_BY_LABEL.to_string(), "someone-else".to_string()),
        ]));
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let slices = desired_slices(&svc, &mp1(), &[&a]);
        let labels = slices[0].metadata.labels.clone().unwrap();
        assert_eq!(labels["service.kubernetes.io/service-proxy-name"], "kactus");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY, "ours win");
        assert_eq!(labels[HEADLESS_LABEL], "");
        let endpoints = desired_endpoints(&svc, &slices, false);
        assert_eq!(endpoints.metadata.labels.as_ref().unwrap()["service.kubernetes.io/service-proxy-name"], "kactus");
        // The Service drops the label: the slices are out of date until it goes from them too.
        svc.metadata.labels = None;
        let without = desired_slices(&svc, &mp1(), &[&a]);
        assert!(!up_to_date(&slices[0], &without[0]));
        assert!(!endpoints_up_to_date(&endpoints, &desired_endpoints(&svc, &without, false)));
    }

    #[test]
    fn endpoints_say_what_the_slices_say() {
        let a = pod("a", &status(&["200.1.1.2", "fd00::2"]), true, 80);
        let b = pod("b", &status(&["200.1.1.3"]), false, 80);
        let c = pod("c", &status(&["200.1.1.4"]), true, 8000);
        let slices = desired_slices(&service(json!("http")), &mp1(), &[&a, &b, &c]);
        let endpoints = desired_endpoints(&service(json!("http")), &slices, false);
        assert_eq!(endpoints.metadata.name.as_deref(), Some("hello1"));
        let labels = endpoints.metadata.labels.clone().unwrap();
        assert_eq!(labels[ENDPOINTS_MANAGED_BY_LABEL], ENDPOINTS_MANAGED_BY);
        assert!(!labels.contains_key(SKIP_MIRROR_LABEL), "on 1.19-1.20 the mirror is what kube-proxy reads");
        let subsets = endpoints.subsets.clone().unwrap();
        let ips = |a: &Option<Vec<EndpointAddress>>| a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        assert_eq!(ips(&subsets[0].addresses), ["200.1.1.2", "fd00::2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["200.1.1.3"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 80);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].name.as_deref(), Some("web"));
        assert_eq!(ips(&subsets[1].addresses), ["200.1.1.4"]);
        assert!(endpoints_up_to_date(&endpoints, &endpoints));
        let skipping = desired_endpoints(&service(json!("http")), &slices, true);
        assert_eq!(skipping.metadata.labels.as_ref().unwrap()[SKIP_MIRROR_LABEL], "true");
        assert!(!endpoints_up_to_date(&skipping, &endpoints) && !endpoints_up_to_date(&endpoints, &skipping));
        assert_eq!(desired_endpoints(&service(json!("http")), &[], false).subsets, None);
    }

    #[test]
    fn terminating_pods_are_not_ready_but_serving() {
        let mut a = pod("a", &status(&["200.1.1.2"]), true, 80);
        a.metadata.deletion_timestamp = serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        let slices = desired_slices(&service(json!("http")), &mp1(), &[&a]);
        let c = slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
    }
}
