//! The client against a tiny HTTPS server on 127.0.0.1 with a generated CA: TLS to an IP
//! address, bearer tokens, Status errors, retries and keep-alive.

use super::*;
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
}

struct Reply {
    status: u16,
    body: String,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply { status, body: body.to_string() }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

struct TestServer {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

/// A CA and a server certificate for the IP address 127.0.0.1, as the test apiserver has.
fn certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (ca_cert.pem(), cert.der().clone(), key_der)
}

impl TestServer {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestServer {
        let (ca_pem, cert, key) = certificates();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, connections2) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                connections2.fetch_add(1, Ordering::SeqCst);
                let (config, handler, seen) = (config.clone(), handler.clone(), seen2.clone());
                std::thread::spawn(move || serve(tcp, config, &*handler, &seen));
            }
        });
        TestServer { port, ca_pem, seen, connections }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A kubeconfig for this server with a token file beside it; returns its path.
    fn kubeconfig(&self, name: &str, cluster_extra: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kactus-live-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "secret-token\n").unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let cluster = if cluster_extra.is_empty() {
            format!("    certificate-authority-data: {ca}\n")
        } else {
            cluster_extra.to_string()
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             contexts:\n- name: test\n  context: {{cluster: test, user: kactus}}\n\
             clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n{cluster}\
             users:\n- name: kactus\n  user:\n    tokenFile: token\n",
            self.port
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn client(&self, name: &str, retries: u32) -> Client {
        let opts = ClientOptions { timeout: Duration::from_secs(5), retries, ..ClientOptions::default() };
        Client::new(Some(&self.kubeconfig(name, "")), opts).unwrap()
    }
}

/// Serves HTTP/1.1 requests on one TLS connection until the client closes it.
fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, handler: &Handler, seen: &Mutex<Vec<Seen>>) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Seen {
            method,
            target,
            authorization: headers.get("authorization").cloned(),
            content_type: headers.get("content-type").cloned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        seen.lock().unwrap().push(request.clone());
        let answer = handler(&request);
        let stream = reader.get_mut();
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.status,
            answer.body.len()
        );
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(answer.body.as_bytes()))
            .and_then(|_| stream.flush());
        if written.is_err() {
            stream.conn.send_close_notify();
            let _ = stream.flush();
            return;
        }
    }
}

const NAD_NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"network-attachment-definitions.k8s.cni.cncf.io \"green\" not found","reason":"NotFound","details":{"name":"green","group":"k8s.cni.cncf.io","kind":"network-attachment-definitions"},"code":404}"#;
const UNAVAILABLE: &str =
    r#"{"kind":"Status","status":"Failure","message":"etcd is busy","reason":"ServiceUnavailable","code":503}"#;
const POD: &str = r#"{"kind":"Pod","metadata":{"name":"app1","namespace":"default","annotations":{"networks":"[{\"name\":\"green\"}]"}},"spec":{"nodeName":"node1"},"status":{"phase":"Running"}}"#;

#[test]
fn missing_nad_is_not_found_over_https_to_an_ip_with_the_file_token() {
    let server = TestServer::start(|_| reply(404, NAD_NOT_FOUND));
    let client = server.client("notfound", 3);
    let err = client.get_network_attachment_definition("default", "green").unwrap_err();
    assert_eq!(err.to_string(), "network-attachment-definitions default/green not found");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "a 404 is not retried");
    assert_eq!(seen[0].target, "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/green");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer secret-token"));
}

#[test]
fn unavailable_then_ok_is_retried() {
    let calls = AtomicUsize::new(0);
    let server = TestServer::start(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => reply(503, UNAVAILABLE),
        _ => reply(200, POD),
    });
    let client = server.client("retry", 3);
    let pod = client.get_pod("default", "app1").unwrap();
    assert_eq!(pod.metadata.name, "app1");
    assert_eq!(pod.metadata.annotations["networks"], r#"[{"name":"green"}]"#);
    assert_eq!(client.request_count(), 3);
}

#[test]
fn exhausted_retries_are_transient_and_name_path_and_cause() {
    let server = TestServer::start(|_| reply(503, UNAVAILABLE));
    let client = server.client("exhausted", 2);
    let err = client.get_pod("default", "app1").unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/api/v1/namespaces/default/pods/app1"), "{message}");
    assert!(message.contains("503 etcd is busy"), "{message}");
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn annotation_patch_is_a_merge_patch_with_null_for_removal() {
    let server = TestServer::start(|_| reply(200, POD));
    let client = server.client("patch", 0);
    let annotations = BTreeMap::from([
        ("k8s.v1.cni.cncf.io/network-status".to_string(), Some("[]".to_string())),
        ("old".to_string(), None),
    ]);
    client.patch_pod_annotations("default", "app1", &annotations).unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.content_type.as_deref(), Some("application/merge-patch+json"));
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"metadata": {"annotations": {
            "k8s.v1.cni.cncf.io/network-status": "[]", "old": null}}})
    );
}

#[test]
fn requests_share_one_connection_across_threads() {
    let server = TestServer::start(|_| reply(200, POD));
    let client = server.client("keepalive", 0);
    client.get_pod("default", "app1").unwrap();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let client = client.clone();
            scope.spawn(move || client.get_pod("default", "app1").unwrap());
        }
    });
    for _ in 0..5 {
        client.get_pod("default", "app1").unwrap();
    }
    assert_eq!(client.request_count(), 9);
    assert!(
        server.connections.load(Ordering::SeqCst) <= 4,
        "connections are pooled: {}",
        server.connections.load(Ordering::SeqCst)
    );
}

#[test]
fn an_untrusted_server_is_a_config_error_without_retries() {
    let server = TestServer::start(|_| reply(200, POD));
    let (other_ca, _, _) = certificates();
    let ca = base64::engine::general_purpose::STANDARD.encode(other_ca);
    let path = server.kubeconfig("untrusted", &format!("    certificate-authority-data: {ca}\n"));
    let client = Client::new(Some(&path), ClientOptions::default()).unwrap();
    let err = client.get_pod("default", "app1").unwrap_err();
    assert!(matches!(err, KubeError::Config { .. }), "{err:?}");
    assert_eq!(client.request_count(), 1);

    let path = server.kubeconfig("insecure", "    insecure-skip-tls-verify: true\n");
    let client = Client::new(Some(&path), ClientOptions::default()).unwrap();
    assert_eq!(client.get_pod("default", "app1").unwrap().metadata.name, "app1");
}

#[test]
fn a_refused_connection_is_transient() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = TestServer { port, ..TestServer::start(|_| reply(200, POD)) };
    let client = server.client("refused", 1);
    let err = client.get_pod("default", "app1").unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("giving up after 2 attempts"), "{err}");
}
