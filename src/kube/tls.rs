//! rustls client configuration for the apiserver, always on the ring provider.
//!
//! The kubeconfig's CA is the only trust anchor (a cluster CA is private; the system roots
//! would only widen who can impersonate the apiserver). `insecure-skip-tls-verify` is honoured
//! because kubeconfigs of test clusters use it, but it is announced once in the log.

use super::access::ClusterAccess;
use super::error::KubeError;
use super::redact;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Once};

static INSECURE_WARNING: Once = Once::new();

/// Builds the TLS configuration described by `access` (roots, verification, client cert).
pub(crate) fn client_config(access: &ClusterAccess) -> Result<ClientConfig, KubeError> {
    let origin = &access.origin;
    let fail = |what: String| KubeError::config(format!("{origin}: {what}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("TLS setup: {e}")))?;

    let verifier: Arc<dyn ServerCertVerifier> = if access.insecure_skip_tls_verify {
        INSECURE_WARNING.call_once(|| {
            log::warn!("{origin}: insecure-skip-tls-verify is set, the apiserver's certificate is not verified")
        });
        Arc::new(AcceptAnyServerCert { provider: provider.clone() })
    } else {
        let Some(ca) = &access.roots else {
            return Err(fail(
                "no certificate-authority or certificate-authority-data to verify the apiserver \
                 (set insecure-skip-tls-verify: true to skip verification)"
                    .into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        for cert in ca {
            let cert = CertificateDer::from(cert.clone());
            roots.add(cert).map_err(|e| fail(format!("certificate authority is not usable: {e}")))?;
        }
        if roots.is_empty() {
            return Err(fail("certificate authority holds no PEM certificate".into()));
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| fail(format!("certificate authority: {e}")))?;
        match &access.tls_server_name {
            None => webpki,
            Some(name) => {
                let name =
                    ServerName::try_from(name.clone()).map_err(|e| fail(format!("tls-server-name {name:?}: {e}")))?;
                Arc::new(FixedServerName { inner: webpki, name })
            }
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);

    let mut config = match &access.client_cert {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("client certificate: {}", redact::pem(&e))))?;
            if certs.is_empty() {
                return Err(fail("client certificate holds no PEM certificate".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
                .map_err(|e| fail(format!("client key: {}", redact::pem(&e))))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| fail(format!("client certificate and key: {e}")))?
        }
    };
    // HTTP/2 where the apiserver offers it (all of a client's concurrent requests on one
    // connection, one handshake); HTTP/1.1 behind a proxy that speaks nothing else.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies against `tls-server-name` instead of the host in the server URL, as kubectl does
/// when the apiserver is reached by an address its certificate does not name.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure-skip-tls-verify`: any certificate is accepted, but the handshake signatures are
/// still checked so the session is at least bound to the certificate presented.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A configuration for `http://` servers, which never handshake: reqwest is built without a
/// default crypto provider (ring only, by choice) and so always needs one handed in.
pub(crate) fn plain_http_config() -> Result<ClientConfig, KubeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_no_client_auth();
    Ok(config)
}

/// A TLS failure that another attempt would only repeat (an untrusted or mismatched
/// certificate, a client certificate the server refused), found in an error's causes.
pub(crate) fn definite_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut pending = vec![e];
    while let Some(cause) = pending.pop() {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            if matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::NoCertificatesPresented
            ) {
                return Some(tls.to_string());
            }
        }
        pending.extend(cause.source());
        // io::Error hides its payload from source() (and hyper nests them); look inside.
        if let Some(inner) = cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            pending.push(inner);
        }
    }
    None
}
