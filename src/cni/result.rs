//! CNI results for every spec version, and conversion between them.
//!
//! Internally a result is held in the 1.x shape ([`CniResult`]); [`CniResult::parse`] reads
//! any version and [`CniResult::to_version`] writes any version, refusing (code 1) where the
//! older shape cannot hold what the result says.

use super::error::{code, CniError};
use super::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 fields: `mtu`, `socketPath`, `pciID`; dropped for older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR: address with prefix length.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`. 0.3.x plugins may say `-1` for "no interface" (the spec's
    /// upgrade notes ask runtimes to accept it); any negative index reads as none.
    #[serde(default, deserialize_with = "interface_index", skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

fn interface_index<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<i64>::deserialize(de)?.and_then(|i| usize::try_from(i).ok()))
}

impl IpConfig {
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }

    pub fn is_v4(&self) -> bool {
        matches!(self.ip(), Some(IpAddr::V4(_)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// 1.1.0 route attributes; dropped for older versions.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub attrs_1_1: Map<String, Value>,
}

impl Route {
    fn is_v4(&self) -> bool {
        !self.dst.contains(':')
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_none() && self.search.is_empty() && self.options.is_empty()
    }
}

/// A result in the 1.x shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// 0.1.0/0.2.0 per-family block.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LegacyIp {
    ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

#[derive(Debug, Default, Deserialize)]
struct AnyResult {
    #[serde(default, rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
}

fn decode_error(e: serde_json::Error) -> CniError {
    CniError::new(code::DECODING_FAILURE, format!("result does not decode: {e}"))
}

impl CniResult {
    /// Reads a result of any supported version (the `cniVersion` inside it decides the shape).
    pub fn parse(value: &Value) -> Result<CniResult, CniError> {
        let any: AnyResult = serde_json::from_value(value.clone()).map_err(decode_error)?;
        let version = Version::supported(&any.cni_version)?;
        if version < Version::V0_3_0 {
            let mut out = CniResult { dns: any.dns, ..Default::default() };
            for block in [any.ip4, any.ip6].into_iter().flatten() {
                out.ips.push(IpConfig { address: block.ip, gateway: block.gateway, interface: None });
                out.routes.extend(block.routes);
            }
            return Ok(out);
        }
        Ok(CniResult { interfaces: any.interfaces, ips: any.ips, routes: any.routes, dns: any.dns })
    }

    /// Writes the result in the shape of `version`.
    pub fn to_version(&self, version: &str) -> Result<Value, CniError> {
        let v = Version::supported(version)?;
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.into());
        if v < Version::V0_3_0 {
            for (key, want_v4) in [("ip4", true), ("ip6", false)] {
                let ips: Vec<&IpConfig> = self.ips.iter().filter(|ip| ip.is_v4() == want_v4).collect();
                if ips.len() > 1 {
                    return Err(CniError::new(
                        code::INCOMPATIBLE_VERSION,
                        format!("a {version} result holds one address per family; this result has {}", ips.len()),
                    ));
                }
                if let Some(ip) = ips.first() {
                    let routes = self.routes.iter().filter(|r| r.is_v4() == want_v4).map(strip_route_1_1).collect();
                    let block = LegacyIp { ip: ip.address.clone(), gateway: ip.gateway.clone(), routes };
                    out.insert(key.into(), serde_json::to_value(block).map_err(decode_error)?);
                }
            }
        } else {
            let pre_1_1 = v < Version::V1_1_0;
            let interfaces: Vec<Interface> = self
                .interfaces
                .iter()
                .map(|i| {
                    if pre_1_1 {
                        Interface { mtu: None, socket_path: None, pci_id: None, ..i.clone() }
                    } else {
                        i.clone()
                    }
                })
                .collect();
            if !interfaces.is_empty() {
                out.insert("interfaces".into(), serde_json::to_value(interfaces).map_err(decode_error)?);
            }
            let mut ips = Vec::new();
            for ip in &self.ips {
                let mut obj = serde_json::to_value(ip).map_err(decode_error)?;
                if v < Version::V1_0_0 {
                    obj["version"] = if ip.is_v4() { "4" } else { "6" }.into();
                }
                ips.push(obj);
            }
            if !ips.is_empty() {
                out.insert("ips".into(), Value::Array(ips));
            }
            let routes: Vec<Route> =
                self.routes.iter().map(|r| if pre_1_1 { strip_route_1_1(r) } else { r.clone() }).collect();
            if !routes.is_empty() {
                out.insert("routes".into(), serde_json::to_value(routes).map_err(decode_error)?);
            }
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), serde_json::to_value(&self.dns).map_err(decode_error)?);
        }
        Ok(Value::Object(out))
    }

    /// Converts a result JSON from whatever version it is in to `version`.
    pub fn convert(value: &Value, version: &str) -> Result<Value, CniError> {
        Self::parse(value)?.to_version(version)
    }

    /// The index of the interface with this name inside the sandbox `netns`, if any.
    pub fn sandbox_interface(&self, ifname: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }
}

fn strip_route_1_1(r: &Route) -> Route {
    Route { dst: r.dst.clone(), gw: r.gw.clone(), attrs_1_1: Map::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r100() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net9f27410725ab", "mac": "52:54:00:ac:3c:ca", "sandbox": "/var/run/netns/p1"}],
            "ips": [{"address": "192.168.42.10/24", "gateway": "192.168.42.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.42.1"}],
            "dns": {"nameservers": ["10.96.0.10"]}
        })
    }

    #[test]
    fn one_oh_to_0_3_1_adds_ip_version_and_back() {
        let old = CniResult::convert(&r100(), "0.3.1").unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.3.1");
        let back = CniResult::convert(&old, "1.0.0").unwrap();
        assert_eq!(back, r100());
    }

    #[test]
    fn round_trip_through_every_version_with_one_ip_per_family() {
        for v in ["0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let there = CniResult::convert(&r100(), v).unwrap();
            let back = CniResult::parse(&there).unwrap();
            assert_eq!(back.ips[0].address, "192.168.42.10/24", "via {v}");
            assert_eq!(back.routes[0].gw.as_deref(), Some("192.168.42.1"), "via {v}");
        }
    }

    #[test]
    fn legacy_0_2_0_reads_into_ips_and_routes() {
        let legacy = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]}, "ip6": {"ip": "fd00::5/64"}});
        let r = CniResult::parse(&legacy).unwrap();
        assert_eq!(r.ips.len(), 2);
        let out = r.to_version("1.0.0").unwrap();
        assert_eq!(out["ips"][1]["address"], "fd00::5/64");
        assert!(out.get("interfaces").is_none());
    }

    #[test]
    fn two_v4_addresses_cannot_become_0_2_0() {
        let mut v = r100();
        v["ips"].as_array_mut().unwrap().push(json!({"address": "192.168.42.11/24", "interface": 0}));
        assert_eq!(CniResult::convert(&v, "0.2.0").unwrap_err().code, 1);
    }

    #[test]
    fn one_one_fields_dropped_for_older_versions() {
        let mut v = r100();
        v["cniVersion"] = "1.1.0".into();
        v["interfaces"][0]["mtu"] = 9000.into();
        v["routes"][0]["priority"] = 10.into();
        let same = CniResult::convert(&v, "1.1.0").unwrap();
        assert_eq!(same["interfaces"][0]["mtu"], 9000);
        assert_eq!(same["routes"][0]["priority"], 10);
        let older = CniResult::convert(&v, "1.0.0").unwrap();
        assert!(older["interfaces"][0].get("mtu").is_none());
        assert!(older["routes"][0].get("priority").is_none());
    }

    #[test]
    fn a_0_3_plugins_interface_minus_one_means_no_interface() {
        // Found seeding the fuzz corpus from the spec's upgrade notes: it was code 6, so such a
        // plugin failed every ADD behind kactus.
        let r = json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.5/16", "interface": -1}]});
        let parsed = CniResult::parse(&r).unwrap();
        assert_eq!(parsed.ips[0].interface, None);
        assert!(CniResult::convert(&r, "1.0.0").unwrap()["ips"][0].get("interface").is_none());
    }

    #[test]
    fn unknown_result_version_is_code_1() {
        assert_eq!(CniResult::convert(&json!({"cniVersion": "9.9.9"}), "1.0.0").unwrap_err().code, 1);
    }
}
