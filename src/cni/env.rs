//! The `CNI_*` environment a runtime hands a plugin, and the `CNI_ARGS` key/value list.

use super::error::CniError;
use std::ffi::OsString;
use std::path::PathBuf;

/// The CNI verbs kactus answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND is not set (want ADD, DEL, CHECK, VERSION, STATUS or GC)",
                ))
            }
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND {other:?} is unknown (want ADD, DEL, CHECK, VERSION, STATUS or GC)"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`, order kept (runtimes send them in any order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// Parses `CNI_ARGS`. A pair without `=` is an error, as in libcni's loader.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|p| !p.is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => return Err(CniError::invalid_env(format!("CNI_ARGS item {item:?} is not KEY=VALUE"))),
            }
        }
        Ok(CniArgs(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// Sets a key, replacing an earlier value so a key never appears twice.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    pub fn render(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

/// The pod a call is for, from the `K8S_POD_*` keys kubelet puts in `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub infra_container_id: Option<String>,
}

pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
pub const K8S_POD_UID: &str = "K8S_POD_UID";
pub const K8S_POD_INFRA_CONTAINER_ID: &str = "K8S_POD_INFRA_CONTAINER_ID";
/// Kaloom's dynamic key: act on this one network of a running pod.
pub const K8S_POD_NETWORK: &str = "K8S_POD_NETWORK";
/// Kaloom podagent's MAC for the dynamic network.
pub const K8S_POD_IFMAC: &str = "K8S_POD_IFMAC";

impl CniArgs {
    /// The pod identity, if kubelet sent one. A name without a namespace means `default`.
    pub fn pod(&self) -> Option<PodRef> {
        let name = self.get(K8S_POD_NAME)?;
        Some(PodRef {
            namespace: self.get(K8S_POD_NAMESPACE).unwrap_or("default").to_string(),
            name: name.to_string(),
            uid: self.get(K8S_POD_UID).map(str::to_string),
            infra_container_id: self.get(K8S_POD_INFRA_CONTAINER_ID).map(str::to_string),
        })
    }

    /// What every delegate gets: `IgnoreUnknown=1` plus the pod keys (IPAMs such as
    /// whereabouts key their leases on them, so DEL must send the same ones).
    pub fn for_delegate(&self) -> CniArgs {
        let mut out = CniArgs(vec![("IgnoreUnknown".into(), "1".into())]);
        for key in [K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID] {
            if let Some(v) = self.get(key) {
                out.set(key, v);
            }
        }
        out
    }
}

/// Everything the runtime put in the environment, validated for the command at hand.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty on a DEL after the sandbox is gone (containerd sends that), which is fine.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: String,
}

impl CniEnv {
    /// Reads the process environment.
    pub fn from_process() -> Result<CniEnv, CniError> {
        Self::from_os(|k| std::env::var_os(k))
    }

    /// Reads from any lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        Self::from_os(|k| get(k).map(OsString::from))
    }

    /// Reads the variables as the runtime set them: bytes, which must be UTF-8 text (a
    /// variable that is not is named, code 4: taken for unset, it was reported as missing),
    /// but for `CNI_NETNS`, a path. VERSION reads nothing but `CNI_COMMAND`, as libcni's skel.
    pub fn from_os(get: impl Fn(&str) -> Option<OsString>) -> Result<CniEnv, CniError> {
        let text = |key: &str| -> Result<String, CniError> {
            match get(key).map(OsString::into_string) {
                None => Ok(String::new()),
                Some(Ok(value)) => Ok(value),
                Some(Err(raw)) => Err(CniError::invalid_env(format!(
                    "{key} is not UTF-8 text: {:?} (the runtime passed bytes kactus cannot use)",
                    raw.to_string_lossy()
                ))),
            }
        };
        let command = Command::parse(&text("CNI_COMMAND")?)?;
        if command == Command::Version {
            return Ok(CniEnv {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: CniArgs::default(),
                path: String::new(),
            });
        }
        let container_id = text("CNI_CONTAINERID")?;
        let netns = get("CNI_NETNS").filter(|s| !s.is_empty()).map(PathBuf::from);
        let ifname = text("CNI_IFNAME")?;
        let args = CniArgs::parse(&text("CNI_ARGS")?)?;
        let path = text("CNI_PATH")?;
        let env = CniEnv { command, container_id, netns, ifname, args, path };
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<(), CniError> {
        let needs_container = matches!(self.command, Command::Add | Command::Del | Command::Check);
        if !needs_container {
            return Ok(());
        }
        if self.container_id.is_empty() {
            return Err(CniError::invalid_env("CNI_CONTAINERID is not set"));
        }
        if !valid_container_id(&self.container_id) {
            return Err(CniError::invalid_env(format!(
                "CNI_CONTAINERID {:?} may only hold letters, digits, '_', '.' and '-'",
                self.container_id
            )));
        }
        if self.ifname.is_empty() {
            return Err(CniError::invalid_env("CNI_IFNAME is not set"));
        }
        super::ifname::validate_ifname(&self.ifname).map_err(|e| CniError::invalid_env(format!("CNI_IFNAME: {e}")))?;
        if self.path.is_empty() {
            return Err(CniError::invalid_env("CNI_PATH is not set (where are the delegate plugins?)"));
        }
        if matches!(self.command, Command::Add | Command::Check) && self.netns.is_none() {
            return Err(CniError::invalid_env(format!(
                "CNI_NETNS is not set; {} needs the pod's network namespace",
                self.command.as_str()
            )));
        }
        Ok(())
    }
}

/// The spec's rule for container IDs (letters, digits, `_`, `.`, `-`, not starting with `.`);
/// they become file names in the cache, so it matters.
pub fn valid_container_id(id: &str) -> bool {
    id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) && !id.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn containerd_args_in_any_order() {
        let a = CniArgs::parse("K8S_POD_NAME=app1;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_UID=u1").unwrap();
        let pod = a.pod().unwrap();
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("default", "app1"));
        assert_eq!(
            a.for_delegate().render(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app1;K8S_POD_UID=u1"
        );
    }

    #[test]
    fn malformed_args_are_code_4() {
        assert_eq!(CniArgs::parse("K8S_POD_NAME").unwrap_err().code, 4);
    }

    #[test]
    fn add_without_netns_is_code_4_naming_the_variable() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")])
            .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
    }

    #[test]
    fn del_without_netns_is_fine() {
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")]);
        assert!(e.unwrap().netns.is_none());
    }

    #[test]
    fn container_id_cannot_escape_the_cache() {
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "../x"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")]);
        assert_eq!(e.unwrap_err().code, 4);
    }

    /// Issue 26: a CNI_IFNAME that is not UTF-8 was read as unset, and the call failed
    /// "CNI_IFNAME is not set", which sends an operator looking for the wrong fault.
    #[test]
    fn an_ifname_that_is_not_utf8_is_code_4_naming_cni_ifname() {
        use std::os::unix::ffi::OsStringExt;
        let get = |k: &str| match k {
            "CNI_COMMAND" => Some(OsString::from("ADD")),
            "CNI_CONTAINERID" => Some(OsString::from("c1")),
            "CNI_NETNS" => Some(OsString::from("/var/run/netns/p")),
            "CNI_IFNAME" => Some(OsString::from_vec(b"eth\xff0".to_vec())),
            "CNI_PATH" => Some(OsString::from("/opt/cni/bin")),
            _ => None,
        };
        let e = CniEnv::from_os(get).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.starts_with("CNI_IFNAME is not UTF-8 text: \"eth\u{fffd}0\""), "{}", e.msg);
        // VERSION reads nothing else.
        let version = |k: &str| if k == "CNI_COMMAND" { Some(OsString::from("VERSION")) } else { get(k) };
        assert_eq!(CniEnv::from_os(version).unwrap().command, Command::Version);
    }
}
