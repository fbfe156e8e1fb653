//! The crate's one loader of apiserver credentials: a kubeconfig file's current context, or
//! the pod's in-cluster service account, read by kube-rs's own `Kubeconfig` and `Config`.
//!
//! Every binary goes through [`load`]: the daemons hand the result to `kube::Client`, the CNI
//! plugin turns it into its lean blocking client (see [`super::access`]). One parser, one set
//! of rules (relative paths resolved against the kubeconfig's directory, `*-data` fields before
//! files, the context's namespace), whatever reads the file.

use super::error::KubeError;
use super::redact;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};

/// The most a kubeconfig, a token file, a CA bundle or a client certificate or key may hold.
/// Real ones are a few KiB (a kubeconfig with every certificate inline, some tens); the bound
/// is for a path that names something else (`/dev/zero`, a log file), which must not make the
/// plugin read without end on every pod start.
pub(crate) const MAX_CREDENTIAL_FILE: u64 = 1 << 20;

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
/// Errors name the file and, for one that does not parse, the line and column: never what it
/// holds (see [`redact`]).
pub fn load(kubeconfig: Option<&Path>) -> Result<(kube::Config, Source), KubeError> {
    match kubeconfig {
        Some(path) => {
            let source = Source::Kubeconfig(path.to_path_buf());
            let fail = |what: String| KubeError::config(format!("{source}: {what}"));
            let bytes =
                crate::bounded::read(path, MAX_CREDENTIAL_FILE).map_err(|e| fail(format!("reading it: {e}")))?;
            let mut file =
                Kubeconfig::from_yaml(&text_of(bytes).map_err(fail)?).map_err(|e| fail(redact::kubeconfig(&e)))?;
            if let Some(dir) = path.parent() {
                resolve_relative(&mut file, dir);
            }
            inline_current_files(&mut file).map_err(fail)?;
            let config = kube::Config::try_from(file).map_err(|e| fail(redact::kubeconfig(&e)))?;
            Ok((config, source))
        }
        None => kube::Config::incluster().map(|config| (config, Source::InCluster)).map_err(|e| {
            KubeError::config(format!(
                "no kubeconfig given and no in-cluster service account (KUBERNETES_SERVICE_HOST, \
                 KUBERNETES_SERVICE_PORT and /var/run/secrets/kubernetes.io/serviceaccount): {}",
                redact::in_cluster(&e)
            ))
        }),
    }
}

/// A kubeconfig's text, read as the file `path` would be (for the fuzz targets; relative file
/// names in it are left as they are).
pub(crate) fn from_text(text: &str, path: &Path) -> Result<(kube::Config, Source), KubeError> {
    let source = Source::Kubeconfig(path.to_path_buf());
    let fail = |what: String| KubeError::config(format!("{source}: {what}"));
    let file = Kubeconfig::from_yaml(text).map_err(|e| fail(redact::kubeconfig(&e)))?;
    let config = kube::Config::try_from(file).map_err(|e| fail(redact::kubeconfig(&e)))?;
    Ok((config, source))
}

/// A kubeconfig's bytes as text, in the encodings kube-rs (and kubectl) accept: UTF-8 with or
/// without a byte-order mark, UTF-16 with one (PowerShell writes that).
fn text_of(bytes: Vec<u8>) -> Result<String, String> {
    let utf16 = |rest: &[u8], word: fn([u8; 2]) -> u16| {
        let words: Vec<u16> = rest.chunks(2).map(|c| word([c[0], c.get(1).copied().unwrap_or(0)])).collect();
        String::from_utf16(&words).map_err(|_| "reading it: not valid UTF-16".to_string())
    };
    match bytes.as_slice() {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).map_err(|_| "reading it: not UTF-8".into()),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        _ => String::from_utf8(bytes).map_err(|_| "reading it: not UTF-8".into()),
    }
}

/// Reads the files the current context names (its cluster's CA, its user's client
/// certificate and key) within [`MAX_CREDENTIAL_FILE`] into the matching `*-data` fields,
/// which kube-rs and the plugin's client prefer to files: kube-rs would read them without a
/// bound. Only the current context's: another context's missing file is no concern of this
/// process. The token file stays a file, reread on every request (see `Auth::TokenFile`).
fn inline_current_files(file: &mut Kubeconfig) -> Result<(), String> {
    use base64::Engine;
    let Some(context) = file
        .current_context
        .as_deref()
        .and_then(|name| file.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
    else {
        return Ok(()); // kube-rs names what is missing.
    };
    let (cluster, user) = (context.cluster.clone(), context.user.clone());
    let read = |field: &str, path: &str| {
        crate::bounded::read(Path::new(path), MAX_CREDENTIAL_FILE)
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
            .map_err(|e| format!("{field}: reading {path}: {e}"))
    };
    let unset = |data: Option<&str>| data.is_none_or(|d| d.trim().is_empty());
    for named in file.clusters.iter_mut().filter(|c| c.name == cluster) {
        let Some(c) = named.cluster.as_mut() else { continue };
        if unset(c.certificate_authority_data.as_deref()) {
            if let Some(path) = c.certificate_authority.take() {
                c.certificate_authority_data = Some(read("certificate-authority", &path)?);
            }
        }
    }
    for named in file.auth_infos.iter_mut().filter(|u| Some(&u.name) == user.as_ref()) {
        let Some(u) = named.auth_info.as_mut() else { continue };
        if unset(u.client_certificate_data.as_deref()) {
            if let Some(path) = u.client_certificate.take() {
                u.client_certificate_data = Some(read("client-certificate", &path)?);
            }
        }
        if unset(u.client_key_data.as_ref().map(|k| k.expose_secret())) {
            if let Some(path) = u.client_key.take() {
                u.client_key_data = Some(read("client-key", &path)?.into());
            }
        }
    }
    Ok(())
}

/// Makes the files a kubeconfig names relative to its own directory, as kubectl (and kube-rs's
/// `Kubeconfig::read_from`, which reads without a bound) do: certificate authorities, client
/// certificates and keys, token files, and exec commands that are paths.
fn resolve_relative(file: &mut Kubeconfig, dir: &Path) {
    let absolute = |name: &mut String| {
        if Path::new(name.as_str()).is_relative() {
            if let Some(joined) = dir.join(name.as_str()).to_str() {
                *name = joined.to_string();
            }
        }
    };
    for cluster in file.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        cluster.certificate_authority.as_mut().map(absolute);
    }
    for user in file.auth_infos.iter_mut().filter_map(|u| u.auth_info.as_mut()) {
        user.client_certificate.as_mut().map(absolute);
        user.client_key.as_mut().map(absolute);
        user.token_file.as_mut().map(absolute);
        if let Some(command) = user.exec.as_mut().and_then(|e| e.command.as_mut()) {
            // A bare name is looked up in PATH, as client-go does.
            if command.contains('/') {
                absolute(command);
            }
        }
    }
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
    let ca = crate::bounded::read(&ca_path, MAX_CREDENTIAL_FILE)
        .map_err(|e| fail(format!("reading {}: {e}", ca_path.display())))?;
    let roots = CertificateDer::pem_slice_iter(&ca)
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{}: {}", ca_path.display(), redact::pem(&e))))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(roots);
    config.auth_info.token_file = Some(dir.join("token").to_string_lossy().into_owned());
    if let Ok(namespace) = crate::bounded::read_text(&dir.join("namespace"), MAX_CREDENTIAL_FILE) {
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

    /// Issue 22: the YAML parser's message quoted the lines around the error, and with them
    /// the token, into the CNI error (and so into kubelet's Events and logs).
    #[test]
    fn a_malformed_kubeconfig_is_reported_by_path_and_position_never_by_its_contents() {
        const TOKEN: &str = "kactus-secret-token-5f2a9c";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc.yaml");
        let head = "apiVersion: v1\nkind: Config\ncurrent-context: a\nusers:\n- name: u\n  user:\n";
        for broken in [
            format!("{head}    token: {TOKEN}\n   client-key: [unclosed\n"),
            format!("{head}    token: [{TOKEN}\n"),
            format!("{head}    token:\n      nested: {TOKEN}\n"),
            format!("{head}    token: {TOKEN}\n  - {TOKEN}\n"),
        ] {
            std::fs::write(&path, &broken).unwrap();
            let err = load(Some(&path)).unwrap_err().to_string();
            assert!(!err.contains(TOKEN) && !err.contains("5f2a"), "{err}");
            assert!(err.contains(&path.display().to_string()) && err.contains("line "), "{err}");
        }
    }

    /// Issue 22: a kubeconfig path naming something without end was read without end.
    #[test]
    fn a_kubeconfig_larger_than_the_bound_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc.yaml");
        let padding = format!("# {}\n", "x".repeat(MAX_CREDENTIAL_FILE as usize));
        std::fs::write(&path, format!("apiVersion: v1\nkind: Config\n{padding}")).unwrap();
        for path in [path.as_path(), Path::new("/dev/zero")] {
            let err = load(Some(path)).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()) && err.contains("larger than 1048576 bytes"), "{err}");
        }
    }

    /// The CA and client key files a kubeconfig names were read by kube-rs without a bound.
    #[test]
    fn the_current_contexts_ca_and_key_files_are_read_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc.yaml");
        let text = |ca: &str, key: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n- name: a\n  context:\n    cluster: c\n    user: u\n\
                 clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: {ca}\n\
                 - name: other\n  cluster:\n    server: https://127.0.0.2:6443\n    certificate-authority: missing.crt\n\
                 users:\n- name: u\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key: {key}\n"
            )
        };
        std::fs::write(dir.path().join("ca.crt"), "x".repeat(MAX_CREDENTIAL_FILE as usize + 1)).unwrap();
        std::fs::write(dir.path().join("u.key"), "KEY").unwrap();
        std::fs::write(&path, text("ca.crt", "u.key")).unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("certificate-authority: reading") && err.contains("larger than 1048576 bytes"), "{err}");
        std::fs::write(&path, text("/dev/zero", "u.key")).unwrap();
        assert!(load(Some(&path)).unwrap_err().to_string().contains("larger than"));
        let (ok_ca, key) = (dir.path().join("ok.crt"), dir.path().join("u.key"));
        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap().cert.pem();
        std::fs::write(&ok_ca, ca).unwrap();
        std::fs::write(&path, text("ok.crt", "/dev/zero")).unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("client-key: reading /dev/zero") && err.contains("larger than"), "{err}");
        // Within the bound, as before: the other context's missing CA is no concern.
        std::fs::write(&path, text("ok.crt", &key.display().to_string())).unwrap();
        let (config, _) = load(Some(&path)).unwrap();
        assert_eq!(config.root_cert.map(|r| r.len()), Some(1));
        assert_eq!(config.auth_info.client_key_data.map(|k| k.expose_secret().to_string()), Some("S0VZ".into()));
    }
}
