//! Failing fast, with the fix, when the apiserver does not serve an API a daemon needs
//! (kactus-endpoints on Kubernetes 1.20 has no `discovery.k8s.io/v1`): one clear message and
//! exit 1, instead of retrying a 404 forever and never getting ready.

/// One resource a daemon cannot work without.
#[derive(Debug, Clone, Copy)]
pub struct Needed {
    /// `v1` for the core group, else `group/version`.
    pub group_version: &'static str,
    /// The plural resource name, e.g. `endpointslices`.
    pub resource: &'static str,
    /// The first Kubernetes release that serves it, e.g. `1.21`.
    pub since: &'static str,
    /// What the daemon does with it, for the message.
    pub for_what: &'static str,
}

/// Asks discovery whether every API in `needed` is served; the error names what is missing,
/// the apiserver's version and the release that has it.
pub async fn require(client: &kube::Client, daemon: &str, needed: &[Needed]) -> Result<(), String> {
    for api in needed {
        let missing = !served(client, api.group_version, api.resource).await.map_err(|e| format!("{daemon}: {e}"))?;
        if missing {
            let version = match client.apiserver_version().await {
                Ok(info) => info.git_version,
                Err(_) => "of unknown version".into(),
            };
            return Err(format!(
                "{daemon} needs {} {} ({for_what}), served from Kubernetes {since} on; this apiserver \
                 ({version}) does not serve it. Run {daemon} on Kubernetes {since} or newer (see README, \
                 \"Supported Kubernetes versions\")",
                api.group_version,
                api.resource,
                for_what = api.for_what,
                since = api.since
            ));
        }
    }
    Ok(())
}

/// Whether the apiserver serves `resource` in `group_version` (`v1`: core): what a daemon asks
/// about an API it can do without (a CRD that may not be installed, an API of newer releases).
pub async fn served(client: &kube::Client, group_version: &str, resource: &str) -> Result<bool, String> {
    let list = match group_version {
        "v1" => client.list_core_api_resources("v1").await,
        group_version => client.list_api_group_resources(group_version).await,
    };
    match list {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => {
            Err(format!("asking the apiserver whether it serves {group_version}: {}", crate::kube::error_chain(&e)))
        }
    }
}
