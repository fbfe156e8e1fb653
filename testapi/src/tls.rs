//! A throwaway CA and a server certificate it signs, and the rustls server configuration.
//!
//! Clients verify the server against the CA (from the kubeconfig's
//! `certificate-authority-data`), exactly as they verify a real cluster's apiserver, so the
//! TLS path under test is the production one.

use std::io;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The TLS identity of one server instance.
pub struct TlsIdentity {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl TlsIdentity {
    /// A fresh CA and a server certificate for 127.0.0.1, ::1 and localhost.
    pub fn generate() -> io::Result<TlsIdentity> {
        let ca_key = KeyPair::generate().map_err(|e| tls_error("generate CA key", e))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("CA parameters", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "kactus-test-apiserver-ca");
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls_error("self-sign CA", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names = vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(names).map_err(|e| tls_error("server parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, "kactus-test-apiserver");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| tls_error("generate server key", e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| tls_error("sign server certificate", e))?;

        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error("server certificate", e))?;
        // The server's order decides: HTTP/2 for clients that offer it (as a real apiserver).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsIdentity { ca_pem: ca_cert.pem(), config: Arc::new(config) })
    }
}
