//! The in-pod Service proxy's desired side: from the Services kactus proxies and kactus's
//! EndpointSlices, the ports one pod's proxy table serves ([`crate::nft::service_proxy`] gives
//! the table its shape). Pure functions, no I/O: podagent will apply what they compute.
//!
//! A Service is proxied here when it carries `service.kubernetes.io/service-proxy-name: kactus`
//! (so kube-proxy, OVN-Kubernetes and Cilium leave it alone) and names its network in
//! `k8s.v1.cni.cncf.io/service-network` (multus-service's annotation) or
//! `k8s.v1.cni.cncf.io/networks`, or is a multus-service Service (`multus-proxy` and
//! `service-network`). A pod gets the Service only if the pod itself is on that
//! network: its traffic to the ClusterIP leaves over that attachment. Endpoints come only from
//! slices kactus's controller wrote (`managed-by=endpoints-controller.kactus.io`): the ones
//! kube-controller-manager writes for the same Service hold primary-network addresses.

use crate::endpoints::desired::{addresses_on, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use crate::endpoints::shape::{parse_network, NetworkRef, NETWORKS_ANNOTATION};
use crate::netlink::ServiceRoute;
use crate::nft::service_proxy::{self, Protocol, ServicePort};
use crate::nft::Table;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The `service-proxy-name` value that hands a Service to kactus.
pub const PROXY_NAME: &str = "kactus";
/// multus-service's proxy name: its Services (with [`SERVICE_NETWORK_ANNOTATION`]) are served too.
pub const MULTUS_PROXY_NAME: &str = "multus-proxy";
/// multus-service's name for a Service's network; `networks` is accepted too.
pub const SERVICE_NETWORK_ANNOTATION: &str = "k8s.v1.cni.cncf.io/service-network";

/// The proxy table `pod` should have.
pub fn desired_table(pod: &Pod, services: &[Service], slices: &[EndpointSlice]) -> Table {
    service_proxy::table(&service_ports(pod, services, slices))
}

/// The network a Service hands to kactus's proxy: `None` when it is not labelled for kactus
/// or names no network; an error (for an Event) when it names one unreadably.
pub fn proxied_network(service: &Service) -> Option<Result<NetworkRef, String>> {
    let labels = service.metadata.labels.as_ref()?;
    let annotations = service.metadata.annotations.as_ref()?;
    let value = match labels.get(PROXY_NAME_LABEL).map(String::as_str) {
        Some(PROXY_NAME) => {
            annotations.get(SERVICE_NETWORK_ANNOTATION).or_else(|| annotations.get(NETWORKS_ANNOTATION))?
        }
        // multus-service's Services, as written for it: its annotation names the network.
        Some(MULTUS_PROXY_NAME) => annotations.get(SERVICE_NETWORK_ANNOTATION)?,
        _ => return None,
    };
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    Some(parse_network(value, namespace))
}

/// Every (ClusterIP, port) of the proxied Services on one of `pod`'s networks, with the ready
/// endpoints of the ClusterIP's family; sorted, so the same inputs give the same table.
pub fn service_ports(pod: &Pod, services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for service in services {
        let Some(Ok(network)) = proxied_network(service) else { continue };
        if addresses_on(pod, &network).is_empty() {
            continue;
        }
        let (Some(namespace), Some(name), Some(spec)) =
            (service.metadata.namespace.as_deref(), service.metadata.name.as_deref(), service.spec.as_ref())
        else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ips: BTreeSet<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok()) // "None" (headless) and "" parse as nothing
            .collect();
        let mine: Vec<&EndpointSlice> = slices.iter().filter(|s| is_ours_for(s, namespace, name)).collect();
        for sp in spec.ports.iter().flatten() {
            let Some(protocol) = protocol_of(sp.protocol.as_deref()) else { continue };
            let Ok(port) = u16::try_from(sp.port) else { continue };
            let port_name = sp.name.as_deref().unwrap_or_default();
            for ip in &ips {
                let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
                let shown = if port_name.is_empty() { port.to_string() } else { port_name.to_string() };
                let proto = format!("{protocol:?}").to_lowercase();
                out.push(ServicePort {
                    id: format!("{namespace}/{name}/{proto}/{shown}/{family}"),
                    cluster_ip: *ip,
                    protocol,
                    port,
                    endpoints: endpoints(&mine, ip.is_ipv6(), port_name, protocol),
                });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// The host routes `pod` needs for the proxied Services on its networks: each ClusterIP via
/// the pod's device on the Service's network, from its address of the ClusterIP's family
/// there (a ClusterIP with no address of its family on that device gets none). Only the
/// attested record (`kactus.io/attachments`) names devices and addresses.
pub fn routes(pod: &Pod, services: &[Service]) -> Vec<ServiceRoute> {
    let view = crate::policy::PodView::from_pod(pod);
    let mut out = BTreeSet::new();
    for service in services {
        let Some(Ok(network)) = proxied_network(service) else { continue };
        let Some(spec) = service.spec.as_ref() else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let on = |a: &&crate::policy::pod::Attachment| {
            a.network.namespace == network.namespace && a.network.name == network.name
        };
        let Some(attachment) = view.attachments.iter().find(on) else { continue };
        let ips = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()).filter_map(|ip| ip.parse().ok());
        for cluster_ip in ips {
            let src = attachment.ips.iter().find(|a: &&IpAddr| a.is_ipv6() == IpAddr::is_ipv6(&cluster_ip));
            if let Some(src) = src {
                out.insert(ServiceRoute { cluster_ip, dev: attachment.interface.clone(), src: *src });
            }
        }
    }
    out.into_iter().collect()
}

/// One of kactus's slices of Service `namespace/name`.
fn is_ours_for(slice: &EndpointSlice, namespace: &str, name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    slice.metadata.namespace.as_deref() == Some(namespace)
        && label(SERVICE_NAME_LABEL) == Some(name)
        && label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
}

fn protocol_of(protocol: Option<&str>) -> Option<Protocol> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The ready endpoints of one family for the Service port named `port_name` (slices name
/// their ports as the Service does); a missing `ready` counts as ready, as Kubernetes says.
fn endpoints(slices: &[&EndpointSlice], ipv6: bool, port_name: &str, protocol: Protocol) -> Vec<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name && protocol_of(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(port) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let addresses = endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok());
            out.extend(addresses.filter(|a| a.is_ipv6() == ipv6).map(|a| SocketAddr::new(a, port)));
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::status::NETWORK_STATUS;
    use k8s_openapi::api::core::v1::{ServicePort as KubePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// A pod of namespace `mep` on network `mep/mp1` (200.1.1.9), as kactus attested it.
    fn client() -> Pod {
        let status =
            r#"[{"name":"cluster","ips":["10.244.0.9"]},{"name":"mep/mp1","interface":"net1","ips":["200.1.1.9"]}]"#;
        let attested = r#"[{"name":"mep/mp1","interface":"net1","ips":["200.1.1.9"]}]"#;
        Pod {
            metadata: ObjectMeta {
                name: Some("client".into()),
                namespace: Some("mep".into()),
                annotations: map(&[(NETWORK_STATUS, status)]),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: crate::attachment::attested::CONDITION.into(),
                    status: "True".into(),
                    message: Some(attested.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)], cluster_ips: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("mep".into()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: cluster_ips.first().map(|s| s.to_string()),
                cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
                ports: Some(vec![KubePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn proxied(name: &str, network: &str, cluster_ips: &[&str]) -> Service {
        service(name, &[(PROXY_NAME_LABEL, PROXY_NAME)], &[(SERVICE_NETWORK_ANNOTATION, network)], cluster_ips)
    }

    fn slice(service: &str, managed_by: &str, address_type: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                namespace: Some("mep".into()),
                labels: map(&[(SERVICE_NAME_LABEL, service), (MANAGED_BY_LABEL, managed_by)]),
                ..Default::default()
            },
            address_type: address_type.into(),
            endpoints: endpoints
                .iter()
                .map(|(a, ready)| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn eps(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| SocketAddr::new(a.parse().unwrap(), 8080)).collect()
    }

    #[test]
    fn a_proxied_service_on_the_pods_network_gets_its_ready_secondary_endpoints() {
        let services = [proxied("hello1", "mp1", &["10.96.0.10"])];
        let slices = [
            slice(
                "hello1",
                MANAGED_BY,
                "IPv4",
                &[("200.1.1.2", Some(true)), ("200.1.1.3", None), ("200.1.1.4", Some(false))],
            ),
            // kube-controller-manager's slice of the same Service: eth0 addresses, not ours.
            slice("hello1", "endpointslice-controller.k8s.io", "IPv4", &[("10.244.1.2", Some(true))]),
        ];
        let ports = service_ports(&client(), &services, &slices);
        assert_eq!(
            ports,
            vec![ServicePort {
                id: "mep/hello1/tcp/http/ipv4".into(),
                cluster_ip: "10.96.0.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80,
                endpoints: eps(&["200.1.1.2", "200.1.1.3"]),
            }]
        );
    }

    #[test]
    fn dual_stack_cluster_ips_each_get_the_endpoints_of_their_family() {
        let services = [proxied("hello1", "mep/mp1", &["10.96.0.10", "fd96::10"])];
        let slices = [
            slice("hello1", MANAGED_BY, "IPv4", &[("200.1.1.2", None)]),
            slice("hello1", MANAGED_BY, "IPv6", &[("fd01::2", None)]),
        ];
        let ports = service_ports(&client(), &services, &slices);
        let got: Vec<(&str, Vec<SocketAddr>)> = ports.iter().map(|p| (p.id.as_str(), p.endpoints.clone())).collect();
        assert_eq!(
            got,
            vec![("mep/hello1/tcp/http/ipv4", eps(&["200.1.1.2"])), ("mep/hello1/tcp/http/ipv6", eps(&["fd01::2"]))]
        );
    }

    #[test]
    fn services_not_for_kactus_or_not_on_the_pods_networks_are_left_out() {
        let services = [
            // No proxy-name label: kube-proxy's.
            service("plain", &[], &[(SERVICE_NETWORK_ANNOTATION, "mp1")], &["10.96.0.11"]),
            // Another proxy's.
            service("other", &[(PROXY_NAME_LABEL, "cilium")], &[(SERVICE_NETWORK_ANNOTATION, "mp1")], &["10.96.0.12"]),
            // multus-service's without its own annotation.
            service(
                "multus",
                &[(PROXY_NAME_LABEL, MULTUS_PROXY_NAME)],
                &[(NETWORKS_ANNOTATION, "mp1")],
                &["10.96.0.15"],
            ),
            // A network the pod is not on.
            proxied("elsewhere", "mp2", &["10.96.0.13"]),
            // Headless.
            proxied("headless", "mp1", &["None"]),
            // An unreadable network.
            proxied("bad", "a,b", &["10.96.0.14"]),
        ];
        assert_eq!(service_ports(&client(), &services, &[]), vec![]);
        assert!(matches!(proxied_network(&services[5]), Some(Err(_))));
    }

    #[test]
    fn multus_services_are_served_on_their_service_network() {
        let services = [service(
            "hello1",
            &[(PROXY_NAME_LABEL, MULTUS_PROXY_NAME)],
            &[(SERVICE_NETWORK_ANNOTATION, "mp1")],
            &["10.96.0.10"],
        )];
        let slices = [slice("hello1", MANAGED_BY, "IPv4", &[("200.1.1.2", None)])];
        let ports = service_ports(&client(), &services, &slices);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].endpoints, eps(&["200.1.1.2"]));
    }

    #[test]
    fn the_networks_annotation_names_the_network_too_and_no_endpoints_means_reject() {
        let services = [service(
            "hello1",
            &[(PROXY_NAME_LABEL, PROXY_NAME)],
            &[(NETWORKS_ANNOTATION, "mep/mp1")],
            &["10.96.0.10"],
        )];
        let ports =
            service_ports(&client(), &services, &[slice("hello1", MANAGED_BY, "IPv4", &[("200.1.1.2", Some(false))])]);
        assert_eq!(ports.len(), 1);
        assert!(ports[0].endpoints.is_empty());
        assert_eq!(
            routes(&client(), &services),
            vec![ServiceRoute {
                cluster_ip: "10.96.0.10".parse().unwrap(),
                dev: "net1".into(),
                src: "200.1.1.9".parse().unwrap()
            }]
        );
        let table = desired_table(&client(), &services, &[]);
        let no_endpoints = table.sets.iter().find(|s| s.name == "no-endpoints-4").unwrap();
        assert_eq!(no_endpoints.elements.len(), 1);
    }
}
