//! The node-local IPAM config, validated before anything is touched: host-local's keys
//! (`ranges`, `subnet`/`rangeStart`/`rangeEnd`/`gateway`, `routes`, `dataDir`, `resolvConf`,
//! requested `ips`) plus the node-local ones, each error naming its field:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `ranges[i][j].nodeSliceSize` | | native mode: each node claims its own slice of this prefix length |
//! | `ranges[i][j].sharedSubnet` | `false` | pods keep the cluster range's prefix and its one gateway (flat L2 across nodes) |
//! | `nodeFile` | `/etc/cni/net.d/kactus.d/node.json` | who this node is (see [`super::node`]) |
//! | `revalidateSeconds` | 300 | how old the node's recorded slices may get before an ADD checks them with the apiserver (0: every ADD) |
//! | `apiTimeoutSeconds` | 5 | bound on each apiserver request (slice assignment only) |
//! | `cfg`, `templateDir`, `nodeIndex` | `/etc/cni/node-local` | seed-compatible mode (see [`super::template`]) |

use super::fields::{invalid, opt_str};
use super::leases::DEFAULT_DATA_DIR;
use super::node::DEFAULT_NODE_FILE;
use super::pools::Pools;
use super::template::Template;
use crate::cni::chain::{valid_attachments, ValidAttachment};
use crate::cni::{code, CniArgs, CniError, Version};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_REVALIDATE_SECS: u64 = 300;
const DEFAULT_API_TIMEOUT_SECS: u64 = 5;

/// Everything a call needs, from stdin and `CNI_ARGS`.
#[derive(Debug, Clone)]
pub struct Config {
    pub cni_version: String,
    /// The network whose leases these are (`<dataDir>/<network>`): the config's `name`, or
    /// the template's in seed mode.
    pub network: String,
    pub data_dir: PathBuf,
    pub addressing: Addressing,
    pub node_file: PathBuf,
    pub revalidate: Duration,
    pub api_timeout: Duration,
    /// Addresses asked for (`runtimeConfig.ips`, `args.cni.ips`, `IP=` in `CNI_ARGS`).
    pub requested: Vec<IpAddr>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    pub prev_result: Option<Value>,
}

/// Where the node's ranges come from.
#[derive(Debug, Clone)]
pub enum Addressing {
    /// The config's own `ranges` (some maybe sliced per node) with its routes and DNS.
    Inline(Pools),
    /// Seed mode: a template whose `.x` becomes this node's index.
    Template(Template),
}

impl Config {
    /// Parses stdin (code 6 if it is not JSON, 7 for anything invalid) and `CNI_ARGS`.
    pub fn parse(stdin: &[u8], args: &CniArgs) -> Result<Config, CniError> {
        let conf: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("network config is not JSON: {e}")))?;
        let conf = conf.as_object().ok_or_else(|| invalid("the network config must be a JSON object"))?;
        let cni_version = opt_str(conf, "cniVersion", "cniVersion")?.unwrap_or_default().to_string();
        Version::supported(&cni_version)?;
        let name = opt_str(conf, "name", "name")?.unwrap_or_default().to_string();
        let ipam = match conf.get("ipam") {
            Some(Value::Object(ipam)) => ipam,
            _ => return Err(invalid("\"ipam\" must be an object")),
        };
        let (network, data_dir, addressing) = match opt_str(ipam, "cfg", "ipam.cfg")? {
            Some(cfg) => {
                if ipam.contains_key("ranges") || ipam.contains_key("subnet") {
                    return Err(invalid("ipam.cfg takes the ranges from its template: drop ipam.ranges/subnet"));
                }
                let template = Template::load(ipam, cfg)?;
                let network = template.network.clone().unwrap_or(name);
                let data_dir = template.data_dir.clone();
                (network, data_dir, Addressing::Template(template))
            }
            None => (name, data_dir(ipam)?, Addressing::Inline(Pools::parse(ipam, "ipam")?)),
        };
        check_network_name(&network)?;
        Ok(Config {
            cni_version,
            network,
            data_dir,
            addressing,
            node_file: opt_str(ipam, "nodeFile", "ipam.nodeFile")?.unwrap_or(DEFAULT_NODE_FILE).into(),
            revalidate: Duration::from_secs(seconds(ipam, "revalidateSeconds", DEFAULT_REVALIDATE_SECS)?),
            api_timeout: Duration::from_secs(seconds(ipam, "apiTimeoutSeconds", DEFAULT_API_TIMEOUT_SECS)?.max(1)),
            requested: requested_ips(conf, args)?,
            valid_attachments: valid_attachments(conf)?,
            prev_result: conf.get("prevResult").filter(|v| !v.is_null()).cloned(),
        })
    }
}

fn data_dir(ipam: &Map<String, Value>) -> Result<PathBuf, CniError> {
    Ok(opt_str(ipam, "dataDir", "ipam.dataDir")?.filter(|s| !s.is_empty()).unwrap_or(DEFAULT_DATA_DIR).into())
}

/// The network name becomes a directory: it must be one path component (the spec's rule
/// for network names is stricter still).
fn check_network_name(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {name:?} must be letters, digits, '_', '.' and '-' (it names the lease directory)"
        )))
    }
}

/// Requested addresses: `runtimeConfig.ips` (the `ips` capability), `args.cni.ips` and
/// `IP=` in `CNI_ARGS` (comma-separated), each an address or address/prefix.
fn requested_ips(conf: &Map<String, Value>, args: &CniArgs) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    for (at, list) in [
        ("runtimeConfig.ips", conf.get("runtimeConfig").and_then(|r| r.get("ips"))),
        ("args.cni.ips", conf.get("args").and_then(|a| a.get("cni")).and_then(|c| c.get("ips"))),
    ] {
        let Some(list) = list.filter(|l| !l.is_null()) else { continue };
        let items = list.as_array().ok_or_else(|| invalid(format!("{at} must be a list of addresses")))?;
        for item in items {
            let text = item.as_str().ok_or_else(|| invalid(format!("{at} must be a list of addresses")))?;
            out.push(parse_ip(text).ok_or_else(|| invalid(format!("{at}: {text:?} is not an address")))?);
        }
    }
    if let Some(ips) = args.get("IP") {
        for text in ips.split(',').filter(|s| !s.is_empty()) {
            out.push(
                parse_ip(text)
                    .ok_or_else(|| CniError::invalid_env(format!("CNI_ARGS IP: {text:?} is not an address")))?,
            );
        }
    }
    out.dedup();
    Ok(out)
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.split('/').next()?.trim().parse().ok()
}

fn seconds(obj: &Map<String, Value>, key: &str, default: u64) -> Result<u64, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| invalid(format!("ipam.{key} must be a whole number of seconds"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::range::RangeSpec;
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn parse(ipam: Value) -> Result<Config, CniError> {
        let conf = json!({"cniVersion": "1.0.0", "name": "green", "type": "bridge", "ipam": ipam});
        Config::parse(conf.to_string().as_bytes(), &CniArgs::default())
    }

    fn msg(ipam: Value) -> String {
        let e = parse(ipam).unwrap_err();
        assert_eq!(e.code, 7, "{}", e.msg);
        e.msg
    }

    #[test]
    fn dual_stack_native_ranges() {
        let c = parse(json!({"type": "node-local", "ranges": [
            [{"subnet": "11.0.0.0/16", "nodeSliceSize": 24}],
            [{"subnet": "fd11::/48", "nodeSliceSize": "/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}))
        .unwrap();
        let Addressing::Inline(pools) = &c.addressing else { panic!("inline") };
        assert_eq!(pools.sliced().len(), 2);
        assert_eq!(pools.sliced()[1].slice_len, 64);
        assert_eq!((c.network.as_str(), c.data_dir.as_path()), ("green", Path::new(DEFAULT_DATA_DIR)));
        assert_eq!(pools.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn host_local_single_range_form_goes_first() {
        let c = parse(json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.2.0.0/24"}]]})).unwrap();
        let Addressing::Inline(pools) = &c.addressing else { panic!("inline") };
        let RangeSpec::Fixed(first) = &pools.range_sets[0][0] else { panic!("fixed") };
        assert_eq!(first.subnet.to_string(), "10.1.0.0/24");
    }

    #[test]
    fn bad_input_names_the_field() {
        assert!(msg(
            json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 24}], [{"subnet": "11.0.4.0/24"}]]})
        )
        .contains("ipam.ranges[0][0] 11.0.0.0/16 (slices of /24) overlaps ipam.ranges[1][0] 11.0.4.0/24"));
        assert!(msg(json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 8}]]}))
            .contains("ipam.ranges[0][0]: nodeSliceSize /8 is larger than the range 11.0.0.0/16"));
        assert!(msg(json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": "x"}]]}))
            .contains("ipam.ranges[0][0].nodeSliceSize must be a prefix length"));
        assert!(msg(json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]})).contains("mixes IPv4"));
        assert!(msg(json!({"ranges": []})).contains("has no ranges"));
        assert!(msg(json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 24, "rangeStart": "11.0.0.9"}]]}))
            .contains("rangeStart cannot be combined with nodeSliceSize"));
        assert!(msg(json!({"ranges": [[{"subnet": "300.0.0.0/16"}]]})).contains("is not a CIDR"));
        assert!(msg(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"dst": "x"}]}))
            .contains("ipam.routes[0].dst"));
        let e = Config::parse(b"{\"ipam\": ", &CniArgs::default()).unwrap_err();
        assert_eq!(e.code, 6);
    }

    #[test]
    fn requested_addresses_from_every_source() {
        let conf = json!({"cniVersion": "0.4.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]]},
            "runtimeConfig": {"ips": ["10.0.0.5/24"]}, "args": {"cni": {"ips": ["10.0.0.6"]}}});
        let args = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.7,10.0.0.8").unwrap();
        let c = Config::parse(conf.to_string().as_bytes(), &args).unwrap();
        let want: Vec<IpAddr> =
            ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.requested, want);
        let bad = CniArgs::parse("IP=nope").unwrap();
        assert_eq!(Config::parse(conf.to_string().as_bytes(), &bad).unwrap_err().code, 4);
    }

    #[test]
    fn resolv_conf_becomes_dns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# c\nnameserver 10.96.0.10\nsearch a.svc b.svc\noptions ndots:5\ndomain cluster.local\n",
        )
        .unwrap();
        let c = parse(json!({"subnet": "10.0.0.0/24", "resolvConf": path})).unwrap();
        let Addressing::Inline(pools) = &c.addressing else { panic!("inline") };
        assert_eq!(pools.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(pools.dns.search, vec!["a.svc", "b.svc"]);
        assert_eq!(pools.dns.domain.as_deref(), Some("cluster.local"));
    }
}
