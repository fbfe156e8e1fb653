//! The crate's one loader of apiserver credentials: a kubeconfig file's current context, or
//! the pod's in-cluster service account, read by kube-rs's own `Kubeconfig` and `Config`.
//!
//! Every binary goes through [`load`]: the daemons hand the result to `kube::Client`, the CNI
//! plugin turns it into its lean blocking client (see [`super::access`]). One parser, one set
//! of rules (relative paths resolved against the kubeconfig's directory, `*-data` fields before
//! files, the context's namespace), whatever reads the file.

use super::error::{error_chain, KubeError};
use std::path::{Path, PathBuf};

/// Where the settings came from, for messages that must tell an operator which file to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
    /// A service account's files at a path, with the apiserver's address given.
    ServiceAccount(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
            Source::InCluster => f.write_str("in-cluster service account"),
            Source::ServiceAccount(dir) => write!(f, "service account {}", dir.display()),
        }
    }
}

/// With a path, that kubeconfig's current context; without one, the in-cluster service account
/// (`KUBERNETES_SERVICE_HOST`/`PORT` and `/var/run/secrets/kubernetes.io/serviceaccount`).
pub fn load(kubeconfig: Option<&Path>) -> Result<(kube::Config, Source), KubeError> {
    match kubeconfig {
        Some(path) => {
            let source = Source::Kubeconfig(path.to_path_buf());
            let fail = |e: &dyn std::error::Error| KubeError::config(format!("{source}: {}", error_chain(e)));
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(&e))?;
            let config = kube::Config::try_from(file).map_err(|e| fail(&e))?;
            Ok((config, source))
        }
        None => kube::Config::incluster().map(|config| (config, Source::InCluster)).map_err(|e| {
            KubeError::config(format!(
                "no kubeconfig given and no in-cluster service account (KUBERNETES_SERVICE_HOST, \
                 KUBERNETES_SERVICE_PORT and /var/run/secrets/kubernetes.io/serviceaccount): {}",
                error_chain(&e)
            ))
        }),
    }
}

/// A kubeconfig's text, read as the file `path` would be (for the fuzz targets; relative file
/// names in it are left as they are).
pub(crate) fn from_text(text: &str, path: &Path) -> Result<(kube::Config, Source), KubeError> {
    let source = Source::Kubeconfig(path.to_path_buf());
    let fail = |e: &dyn std::error::Error| KubeError::config(format!("{source}: {}", error_chain(e)));
    let file = kube::config::Kubeconfig::from_yaml(text).map_err(|e| fail(&e))?;
    let config = kube::Config::try_from(file).map_err(|e| fail(&e))?;
    Ok((config, source))
}

/// The service account mounted at `dir` (`ca.crt`, `token`, `namespace`, as in a pod) talking
/// to `server`: for a pod that knows the apiserver's address better than its environment. Its
/// token is read from the file on every request.
pub fn service_account(server: &str, dir: &Path) -> Result<(kube::Config, Source), KubeError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let source = Source::ServiceAccount(dir.to_path_buf());
    let fail = |what: String| KubeError::config(format!("{source}: {what}"));
    let url = server.parse().map_err(|e| fail(format!("apiserver address {server:?}: {e}")))?;
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| fail(format!("reading {}: {e}", ca_path.display())))?;
    let roots = CertificateDer::pem_slice_iter(&ca)
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{} is not PEM: {e}", ca_path.display())))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(roots);
    config.auth_info.token_file = Some(dir.join("token").to_string_lossy().into_owned());
    if let Ok(namespace) = std::fs::read_to_string(dir.join("namespace")) {
        config.default_namespace = namespace.trim().to_string();
    }
    Ok((config, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let err = load(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("nope.yaml"), "{err}");

        let path = dir.path().join("kc.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("kc.yaml") && err.contains("current context"), "{err}");

        std::fs::write(&path, "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context:\n    cluster: c\n    user: u\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("cluster"), "{err}");
    }

    #[test]
    fn the_context_namespace_and_relative_files_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let path = dir.path().join("kc.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context:\n    cluster: c\n    user: u\n    namespace: kube-system\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    tokenFile: token\n",
        )
        .unwrap();
        let (config, source) = load(Some(&path)).unwrap();
        assert_eq!(source, Source::Kubeconfig(path.clone()));
        assert_eq!(config.default_namespace, "kube-system");
        assert!(config.accept_invalid_certs);
        assert_eq!(config.auth_info.token_file.as_deref(), Some(dir.path().join("token").to_str().unwrap()));
    }
}
