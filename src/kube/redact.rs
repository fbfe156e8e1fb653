//! What is wrong with a kubeconfig, a token file, a CA bundle or a client key, said without
//! quoting the file. These messages become CNI errors, and from there kubelet's Events and
//! logs, where a token or a key must never appear; the parsers' own messages quote what they
//! could not parse (the YAML parser the lines around the error, a PEM reader the line it
//! choked on, a base64 decoder the byte). So each error is told here from its kind and
//! position only, and every file is named by its path.

use kube::config::{InClusterError, KubeconfigError, LoadDataError};

/// A kubeconfig that kube-rs could not read or use.
pub(super) fn kubeconfig(e: &KubeconfigError) -> String {
    match e {
        KubeconfigError::Parse(e) => yaml(e),
        KubeconfigError::LoadCertificateAuthority(e) => format!("certificate-authority: {}", data(e)),
        KubeconfigError::LoadClientCertificate(e) => format!("client-certificate: {}", data(e)),
        KubeconfigError::LoadClientKey(e) => format!("client-key: {}", data(e)),
        KubeconfigError::ParseCertificates(_) => "the certificate authority is not valid PEM".into(),
        // Nothing of the file's but names (of a context, a cluster) and paths, and fixed text.
        KubeconfigError::CurrentContextNotSet
        | KubeconfigError::KindMismatch
        | KubeconfigError::ApiVersionMismatch
        | KubeconfigError::LoadContext(_)
        | KubeconfigError::LoadClusterOfContext(_)
        | KubeconfigError::FindPath
        | KubeconfigError::ReadConfig(..)
        | KubeconfigError::MissingClusterUrl
        | KubeconfigError::ParseClusterUrl(_)
        | KubeconfigError::ParseProxyUrl(_) => e.to_string(),
    }
}

/// The pod's service account that kube-rs could not read or use.
pub(super) fn in_cluster(e: &InClusterError) -> String {
    match e {
        InClusterError::ParseCertificates(_) => "the service account's ca.crt is not valid PEM".into(),
        InClusterError::ReadDefaultNamespace(_)
        | InClusterError::ReadEnvironmentVariable(_)
        | InClusterError::ReadCertificateBundle(_)
        | InClusterError::ParseClusterPort(_)
        | InClusterError::ParseClusterUrl(_) => super::error_chain(e),
    }
}

/// A YAML document that does not parse, or does not fit the kubeconfig's types (whose
/// message would quote the value of the wrong type): where, never what.
pub(super) fn yaml(e: &serde_saphyr::Error) -> String {
    match e.location() {
        Some(at) => format!(
            "not a valid kubeconfig (YAML syntax, or a field of the wrong type) at line {}, column {}",
            at.line(),
            at.column()
        ),
        None => "not a valid kubeconfig (YAML syntax, or a field of the wrong type)".into(),
    }
}

/// A `*-data` field or the file that stands for it.
fn data(e: &LoadDataError) -> String {
    match e {
        // kube-rs's own base64 (another version than the crate's): its message names the byte.
        LoadDataError::DecodeBase64(_) => "the -data field is not valid base64".into(),
        LoadDataError::ReadFile(e, path) => format!("reading {}: {e}", path.display()),
        LoadDataError::NoBase64DataOrFile => e.to_string(),
    }
}

/// A `*-data` field that is not base64: where, not the byte found there.
pub(super) fn base64(e: &base64::DecodeError) -> String {
    use base64::DecodeError;
    match e {
        DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _) => {
            format!("the -data field is not valid base64 (at offset {at})")
        }
        DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => {
            "the -data field is not valid base64 (its length or padding)".into()
        }
    }
}

/// PEM that does not parse (a certificate, a key): what kind of fault, not the line.
pub(super) fn pem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "not valid PEM (a section has no END line)".into(),
        Error::IllegalSectionStart { .. } => "not valid PEM (a malformed BEGIN line)".into(),
        Error::Base64Decode(_) => "not valid PEM (a section is not valid base64)".into(),
        Error::Io(e) => format!("not readable: {e}"),
        Error::NoItemsFound => "not valid PEM (nothing of the kind expected)".into(),
        _ => "not valid PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_and_base64_faults_are_told_without_the_bytes_that_caused_them() {
        use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
        const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbA";
        let broken = format!("-----BEGIN PRIVATE KEY {SECRET}-----\n{SECRET}\n");
        let said = pem(&PrivateKeyDer::from_pem_slice(broken.as_bytes()).unwrap_err());
        assert!(said.starts_with("not valid PEM") && !said.contains("c2Vj"), "{said}");
        let broken = format!("-----BEGIN PRIVATE KEY-----\n{SECRET}!\n-----END PRIVATE KEY-----\n");
        let said = pem(&PrivateKeyDer::from_pem_slice(broken.as_bytes()).unwrap_err());
        assert!(said.starts_with("not valid PEM") && !said.contains("c2Vj"), "{said}");
        use base64::Engine;
        let e = base64::engine::general_purpose::STANDARD.decode("c2Vj%").unwrap_err();
        assert_eq!(base64(&e), "the -data field is not valid base64 (at offset 4)");
    }
}
