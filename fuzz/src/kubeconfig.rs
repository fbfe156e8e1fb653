//! The plugin's kubeconfig (YAML), resolved to the apiserver, credentials and TLS setup.

use super::checks;
use kactus::cni::code;
use kactus::kube::{fuzzing, KubeError};
use kactus::plugin::apiserver::kube_error;
use std::path::Path;

/// Where the text is taken to come from: relative file names in it resolve to nothing here.
const PATH: &str = "/nonexistent/kactus-fuzz/kubeconfig.yaml";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match fuzzing::kubeconfig(text, Path::new(PATH)) {
        Err(e) => config_error(&e),
        Ok(view) => {
            let server = &view.server;
            assert!(server.starts_with("https://") || server.starts_with("http://"), "{server:?}");
            assert!(!server.ends_with('/'), "{server:?}");
            if let Some(secret) = view.secret.as_deref().filter(|s| distinctive(s, text)) {
                assert!(!view.debug.contains(secret), "the secret {secret:?} shows in {}", view.debug);
            }
            match &view.authorization {
                Some(Ok(Some(header))) => assert!(header.starts_with("Bearer ") || header.starts_with("Basic ")),
                Some(Ok(None)) => panic!("an inline secret gives no Authorization header"),
                Some(Err(e)) => config_error(e),
                None => {}
            }
            if let Err(e) = view.tls {
                config_error(&e);
            }
        }
    }
}

/// A kubeconfig problem names the file, and the plugin answers it with code 7.
fn config_error(e: &KubeError) {
    assert!(matches!(e, KubeError::Config { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(PATH), "the error does not name the file: {msg}");
    checks::own_error(&kube_error(e.clone(), "connect to the apiserver"), &[code::INVALID_NETWORK_CONFIG]);
}

/// A secret that can only show in the debug output by leaking: long enough, found once in
/// the input, and not made of what the output prints for other fields (digits of byte lists).
fn distinctive(secret: &str, text: &str) -> bool {
    secret.len() >= 8
        && text.matches(secret).count() == 1
        && !PATH.contains(secret)
        && !secret.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
}
