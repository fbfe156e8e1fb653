//! The pod's network annotations: kactus `networks` and NPWG `k8s.v1.cni.cncf.io/networks`,
//! resolved to attachments (keys, device names), and the dynamic `K8S_POD_NETWORK` form.
//!
//! Input: one mode byte, then UTF-8 fields separated by NUL: `a`, `b`, the pod's namespace.
//! Mode 0: NPWG annotation `a`; 1: kactus annotation `a`; 2: both (NPWG `a`, kactus `b`). In
//! every mode `b` is also read as a dynamic call's `K8S_POD_NETWORK`.

use super::checks;
use kactus::attachment::{
    self, device_name_for, parse_kactus_networks, parse_npwg_networks, NetworkSelection, KACTUS_NETWORKS, NPWG_NETWORKS,
};
use kactus::cni::{code, CniError};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut fields = text.splitn(3, '\0');
    let (a, b) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
    let namespace = fields.next().filter(|ns| checks::dns1123(ns, 63)).unwrap_or("default");

    let mut annotations = BTreeMap::new();
    match mode % 3 {
        0 => annotations.insert(NPWG_NETWORKS.to_string(), a.to_string()),
        1 => annotations.insert(KACTUS_NETWORKS.to_string(), a.to_string()),
        _ => {
            annotations.insert(NPWG_NETWORKS.to_string(), a.to_string());
            annotations.insert(KACTUS_NETWORKS.to_string(), b.to_string())
        }
    };
    match attachment::selections_from_annotations(&annotations) {
        Err(e) => annotation_error(&e.to_string()),
        Ok(sels) => {
            selections(&sels);
            let again = match annotations.contains_key(NPWG_NETWORKS) {
                true => parse_npwg_networks(&npwg_json(&sels).to_string()),
                false => parse_kactus_networks(&kactus_json(&sels).to_string()),
            };
            assert_eq!(again.as_ref(), Ok(&sels), "the selections written back parse differently");
            resolved(namespace, sels, "eth0");
        }
    }
    // A dynamic call's network that the annotation does not hold is read in the comma form.
    match parse_npwg_networks(b) {
        Err(e) => annotation_error(&e.to_string()),
        Ok(sels) => {
            selections(&sels);
            resolved(namespace, sels, "");
        }
    }
}

/// The plugin answers a bad annotation with code 102 and this message.
fn annotation_error(msg: &str) {
    checks::own_error(&CniError::new(code::INVALID_ANNOTATION, format!("pod default/p: {msg}")), &[102]);
}

/// Every value a delegate or the kernel will see was checked.
fn selections(sels: &[NetworkSelection]) {
    for s in sels {
        assert!(checks::dns1123(&s.name, 253), "name {:?}", s.name);
        assert!(s.namespace.as_deref().is_none_or(|ns| checks::dns1123(ns, 63)), "namespace {:?}", s.namespace);
        assert!(s.interface.as_deref().is_none_or(checks::kernel_device_name), "interface {:?}", s.interface);
        if let Some(mac) = &s.mac {
            let pairs: Vec<&str> = mac.split(':').collect();
            assert!(pairs.len() == 6 && pairs.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok()));
        }
        for ip in &s.ips {
            let (addr, len) = ip.split_once('/').expect("ips have a prefix length");
            let addr: std::net::IpAddr = addr.parse().expect("ips hold addresses");
            assert!(len.parse::<u8>().is_ok_and(|l| l <= if addr.is_ipv4() { 32 } else { 128 }), "{ip}");
        }
        for gw in &s.default_route {
            gw.parse::<std::net::IpAddr>().expect("default-route holds addresses");
        }
    }
    assert!(sels.iter().filter(|s| s.is_primary).count() <= 1);
    assert!(sels.iter().filter(|s| !s.default_route.is_empty()).count() <= 1);
}

/// Attachments have distinct keys and device names, each a name the kernel takes as is.
fn resolved(namespace: &str, sels: Vec<NetworkSelection>, primary_ifname: &str) {
    let Ok(atts) = attachment::resolve(namespace, sels, primary_ifname) else { return };
    let (mut keys, mut devices) = (HashSet::new(), HashSet::new());
    for att in &atts {
        assert!(keys.insert(att.key.clone()), "key {:?} twice", att.key);
        assert!(devices.insert(att.ifname.clone()), "device {:?} twice", att.ifname);
        if att.selection.is_primary {
            assert_eq!(att.ifname, primary_ifname);
        } else {
            assert!(checks::kernel_device_name(&att.ifname), "device {:?}", att.ifname);
        }
        if att.selection.interface.is_none() && !att.selection.is_primary {
            assert_eq!(att.ifname, device_name_for(&att.key));
        }
        assert_eq!(att.namespace, att.selection.namespace.as_deref().unwrap_or(namespace));
    }
}

/// NPWG selection elements as an annotation would hold them.
fn npwg_json(sels: &[NetworkSelection]) -> Value {
    let option_keys = [
        ("portMappings", "portMappings"),
        ("bandwidth", "bandwidth"),
        ("infinibandGUID", "infiniband-guid"),
        ("ipamClaimReference", "ipam-claim-reference"),
    ];
    let elements: Vec<Value> = sels
        .iter()
        .map(|s| {
            let mut e = Map::new();
            e.insert("name".into(), s.name.clone().into());
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    e.insert(k.into(), v);
                }
            };
            put("namespace", s.namespace.clone().map(Value::from));
            put("interface", s.interface.clone().map(Value::from));
            put("mac", s.mac.clone().map(Value::from));
            put("ips", (!s.ips.is_empty()).then(|| s.ips.clone().into()));
            put("default-route", (!s.default_route.is_empty()).then(|| s.default_route.clone().into()));
            put("cni-args", (!s.cni_args.is_empty()).then(|| Value::Object(s.cni_args.clone())));
            for (cap, v) in &s.runtime_options {
                let key = option_keys.iter().find(|(c, _)| c == cap).map(|(_, k)| *k);
                put(key.unwrap_or_else(|| panic!("unknown runtime option {cap:?}")), Some(v.clone()));
            }
            Value::Object(e)
        })
        .collect();
    Value::Array(elements)
}

/// kactus elements as an annotation would hold them.
fn kactus_json(sels: &[NetworkSelection]) -> Value {
    let elements: Vec<Value> = sels
        .iter()
        .map(|s| {
            let mut e = json!({"name": s.name, "isPrimary": s.is_primary});
            if let Some(ns) = &s.namespace {
                e["namespace"] = ns.clone().into();
            }
            if let Some(mac) = &s.mac {
                e["ifMac"] = mac.clone().into();
            }
            e
        })
        .collect();
    Value::Array(elements)
}
