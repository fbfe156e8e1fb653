//! podagent finding sandboxes from the container runtime over CRI: a fake runtime (a gRPC
//! server on a unix socket answering `ListPodSandbox` and `PodSandboxStatus` the way
//! containerd does) knows the test's pods, and the real podagent, with kactus's cache out
//! of its reach, hot-plugs through what the runtime says.

mod common;
use common::grpc::{unary, Answer, FakeDaemon, UnixGrpcServer};
use common::podagent::*;
use common::*;
use kactus::podagent::cri::api::{self, PodSandboxState};
use kactus::podagent::cri::{CriError, CriLocator};
use kactus::podagent::locator::{sandbox_locator, SandboxLookup};
use kactus::podagent::mount_ns::PluginMountNamespace;
use kactus::podagent::sandbox::Sandbox as PodSandbox;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::body::Body;

/// A sandbox the fake runtime runs.
#[derive(Clone)]
struct RuntimeSandbox {
    id: String,
    pod_uid: String,
    netns: PathBuf,
    ready: bool,
}

/// The fake runtime's state, shared with its gRPC handlers.
#[derive(Clone, Default)]
struct FakeRuntime {
    sandboxes: Arc<Mutex<Vec<RuntimeSandbox>>>,
    calls: Arc<AtomicUsize>,
}

impl FakeRuntime {
    fn run(&self, id: &str, pod_uid: &str, netns: &Path) {
        let sandbox = RuntimeSandbox { id: id.into(), pod_uid: pod_uid.into(), netns: netns.into(), ready: true };
        self.sandboxes.lock().unwrap().push(sandbox);
    }

    fn list(&self, request: api::ListPodSandboxRequest) -> api::ListPodSandboxResponse {
        let filter = request.filter.unwrap_or_default();
        let sandboxes = self.sandboxes.lock().unwrap();
        let items = sandboxes.iter().map(|s| api::PodSandbox {
            id: s.id.clone(),
            state: if s.ready { PodSandboxState::SandboxReady } else { PodSandboxState::SandboxNotready } as i32,
            created_at: 1,
            labels: [
                (api::POD_UID_LABEL.to_string(), s.pod_uid.clone()),
                ("io.kubernetes.pod.name".into(), "x".into()),
            ]
            .into(),
        });
        let items = items
            .filter(|s| filter.id.is_empty() || s.id == filter.id)
            .filter(|s| filter.state.as_ref().is_none_or(|want| want.state == s.state))
            .filter(|s| filter.label_selector.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .collect();
        api::ListPodSandboxResponse { items }
    }

    /// containerd's verbose status: the sandbox's OCI spec under `info["info"]`.
    fn status(&self, request: api::PodSandboxStatusRequest) -> Result<api::PodSandboxStatusResponse, tonic::Status> {
        let sandboxes = self.sandboxes.lock().unwrap();
        let s = sandboxes.iter().find(|s| s.id == request.pod_sandbox_id).ok_or_else(|| {
            tonic::Status::not_found(format!("an error occurred when try to find sandbox {:?}", request.pod_sandbox_id))
        })?;
        let info = json!({"pid": 4242, "processStatus": "running", "netNamespaceClosed": false,
            "runtimeSpec": {"ociVersion": "1.1.0", "linux": {"namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": s.netns}]}}});
        let verbose =
            if request.verbose { [("info".to_string(), info.to_string())].into() } else { Default::default() };
        let status = api::PodSandboxStatus { id: s.id.clone(), state: PodSandboxState::SandboxReady as i32 };
        Ok(api::PodSandboxStatusResponse { status: Some(status), info: verbose })
    }
}

impl FakeDaemon for FakeRuntime {
    const SERVICE: &'static str = api::SERVICE;

    fn answer(self, path: &str, request: http::Request<Body>) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let path = path.to_string();
        Box::pin(async move {
            match path.as_str() {
                api::LIST_POD_SANDBOX => unary(request, move |q| Ok(self.list(q))).await,
                api::POD_SANDBOX_STATUS => unary(request, move |q| self.status(q)).await,
                other => tonic::Status::unimplemented(format!("{other} is not faked")).into_http(),
            }
        })
    }
}

/// The fake runtime serving on `<dir>/cri.sock` until dropped.
struct RuntimeSocket {
    path: PathBuf,
    runtime: FakeRuntime,
    _server: UnixGrpcServer,
}

impl RuntimeSocket {
    fn start(dir: &Path) -> RuntimeSocket {
        let runtime = FakeRuntime::default();
        let server = UnixGrpcServer::start(&dir.join("cri.sock"), runtime.clone());
        RuntimeSocket { path: server.path.clone(), runtime, _server: server }
    }

    fn calls(&self) -> usize {
        self.runtime.calls.load(Ordering::SeqCst)
    }
}

/// Awaits a lookup as podagent's runtime does.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn pod(namespace: &str, name: &str, uid: &str) -> kactus::podagent::pods::Pod {
    serde_json::from_value(json!({"metadata": {"namespace": namespace, "name": name, "uid": uid}})).unwrap()
}

fn pod_uid(sb: &Sandbox, name: &str) -> String {
    sb.api().store().get("pods", "default", name).unwrap()["metadata"]["uid"].as_str().unwrap().to_string()
}

#[test]
fn cri_locator_finds_the_ready_sandbox_and_its_netns_by_pod_uid() {
    let dir = tempfile::tempdir().unwrap();
    let netns = dir.path().join("netns-app1");
    std::fs::write(&netns, "").unwrap();
    let cri = RuntimeSocket::start(dir.path());
    cri.runtime.run("old-app1", "uid-1", &netns);
    cri.runtime.sandboxes.lock().unwrap()[0].ready = false;
    cri.runtime.run("sandbox-app1", "uid-1", &netns);
    cri.runtime.run("sandbox-app2", "uid-2", Path::new("/nonexistent"));

    let locator = CriLocator::new(cri.path.clone(), Duration::from_secs(2));
    let found = block_on(locator.lookup(&pod("default", "app1", "uid-1")));
    assert_eq!(found, Ok(PodSandbox { container_id: "sandbox-app1".into(), netns: netns.clone() }));
    assert_eq!(cri.calls(), 2, "one ListPodSandbox, one PodSandboxStatus");

    // An unknown pod: the runtime's answer, naming socket and pod.
    let Err(CriError::Answered(e)) = block_on(locator.lookup(&pod("default", "ghost", "uid-9"))) else {
        panic!("ghost found")
    };
    for part in [cri.path.to_str().unwrap(), "default/ghost", "uid-9", "no ready sandbox"] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    // A netns the runtime names but podagent cannot see says so.
    let Err(CriError::Answered(e)) = block_on(locator.lookup(&pod("default", "app2", "uid-2"))) else {
        panic!("app2 found")
    };
    assert!(e.contains("/nonexistent is not visible here"), "{e}");
}

#[test]
fn cri_locator_calls_an_absent_or_silent_runtime_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let absent = CriLocator::new(dir.path().join("none.sock"), Duration::from_secs(2));
    let Err(CriError::Unreachable(e)) = block_on(absent.lookup(&pod("default", "app1", "uid-1"))) else {
        panic!("no error")
    };
    assert!(e.contains("none.sock") && e.contains("default/app1") && e.contains("connect"), "{e}");

    // A socket that accepts but never speaks HTTP/2: bounded by the timeout.
    let silent = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let locator = CriLocator::new(silent, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let Err(CriError::Unreachable(e)) = block_on(locator.lookup(&pod("default", "app1", "uid-1"))) else {
        panic!("no error")
    };
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(e.contains("no answer within"), "{e}");
}

#[test]
fn auto_lookup_uses_the_kactus_cache_when_the_runtime_socket_is_absent() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let uid = pod_uid(&sb, "app1");
    let absent = Some(sb.path("no-runtime.sock"));
    let app1 = pod("default", "app1", &uid);

    let auto = sandbox_locator(SandboxLookup::Auto, absent.clone(), sb.cache_dir()).unwrap();
    let expected = PodSandbox { container_id: "c-app1".into(), netns: sb.pods[p].path.clone() };
    assert_eq!(block_on(auto.locate(&app1)), Ok(expected));
    // Only the runtime: its absence is the error.
    let cri = sandbox_locator(SandboxLookup::Cri, absent, sb.cache_dir()).unwrap();
    let e = block_on(cri.locate(&app1)).unwrap_err();
    assert!(e.contains("no-runtime.sock") && e.contains("default/app1"), "{e}");
}

#[test]
fn auto_lookup_takes_the_runtime_word_over_the_cache_when_it_answers() {
    let mut sb = Sandbox::new();
    running_pod(&mut sb);
    let uid = pod_uid(&sb, "app1");
    let cri = RuntimeSocket::start(sb.dir.path());
    // The runtime has torn app1's sandbox down; the cache still lists it.
    let auto = sandbox_locator(SandboxLookup::Auto, Some(cri.path.clone()), sb.cache_dir()).unwrap();
    let e = block_on(auto.locate(&pod("default", "app1", &uid))).unwrap_err();
    assert!(e.contains("no ready sandbox"), "{e}");
}

#[test]
fn podagent_hot_plugs_data_into_a_pod_found_over_cri_only() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let cri = RuntimeSocket::start(sb.dir.path());
    // The runtime runs app1's sandbox under the ID it gave kactus (c-app1).
    cri.runtime.run("c-app1", &pod_uid(&sb, "app1"), &sb.pods[p].path);
    let flags = [
        "--sandbox-lookup=cri".to_string(),
        format!("--cri-socket={}", cri.path.display()),
        // Out of reach: a sandbox podagent finds can only have come from the runtime.
        format!("--kactus-cache-dir={}", sb.path("no-cache").display()),
    ];
    let agent = PodAgent::start_with(&sb, &node, &flags);

    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert_data_appears(&sb, p);
    assert!(cri.calls() >= 2, "the runtime was asked");
    let calls = node.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[0].contains("K8S_POD_INFRA_CONTAINER_ID=c-app1"), "{calls:?}");
    assert!(wait_until(|| agent.metric("podagent_adds_total") == 1), "the ADD was never counted");
    assert_eq!(agent.metric("podagent_failures_total"), 0);
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(!log.contains("kactus cache"), "the cache was consulted:\n{log}");
}

#[test]
fn podagent_in_auto_mode_without_a_runtime_hot_plugs_through_the_kactus_cache() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let flags = [
        format!("--cri-socket={}", sb.path("no-runtime.sock").display()),
        format!("--kactus-cache-dir={}", sb.cache_dir().display()),
    ];
    let agent = PodAgent::start_with(&sb, &node, &flags);

    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert!(wait_until(|| sb.pods[p].has_link(DATA) && lists(&sb, DATA)), "data never appeared");
    set_networks(&sb, r#"[{"name":"green"}]"#);
    assert!(wait_until(|| !sb.pods[p].has_link(DATA) && !lists(&sb, DATA)), "data never went away");
    // Counted once the plugin call has returned, a moment after the device went.
    assert!(wait_until(|| agent.metric("podagent_dels_total") == 1), "the DEL was never counted");
    assert_eq!(agent.metric("podagent_adds_total"), 1);
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let fallbacks = log.lines().filter(|l| l.contains("sandboxes are found in the kactus cache")).count();
    assert_eq!(fallbacks, 1, "the fallback is logged once:\n{log}");
    assert!(log.contains("no-runtime.sock"), "the log names the socket:\n{log}");
}

/// Flags that make podagent find sandboxes over the fake runtime's socket.
fn over_cri(cri: &RuntimeSocket) -> Vec<String> {
    vec!["--sandbox-lookup=cri".to_string(), format!("--cri-socket={}", cri.path.display())]
}

/// A podagent that cannot start exits 1 with the reason, whatever it built before failing
/// (the CRI client among it), never with a panic's abort.
fn assert_failed_start(sb: &Sandbox, node: &Node, flags: &[String], reason: &str) {
    let (code, log) = PodAgent::run_to_exit(sb, node, flags);
    assert_eq!(code, Some(1), "not a clean error exit:\n{log}");
    assert!(log.contains(reason), "{reason:?} missing from:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn podagent_whose_metrics_port_is_taken_exits_saying_so() {
    let sb = Sandbox::new();
    let node = node_cni(&sb);
    let cri = RuntimeSocket::start(sb.dir.path());
    // Something of the node holds podagent's port.
    let _taken =
        kactus::netns::run_in(&sb.node.path, || std::net::TcpListener::bind("127.0.0.1:9648")).unwrap().unwrap();
    assert_failed_start(&sb, &node, &over_cri(&cri), "listen on 127.0.0.1:9648: Address already in use");
}

#[test]
fn podagent_whose_plugin_mount_namespace_cannot_be_opened_exits_naming_it() {
    let sb = Sandbox::new();
    let node = node_cni(&sb);
    let cri = RuntimeSocket::start(sb.dir.path());
    let mut flags = over_cri(&cri);
    flags.push("--plugin-mount-namespace=/proc/999999999/ns/mnt".into());
    assert_failed_start(&sb, &node, &flags, "opening mount namespace /proc/999999999/ns/mnt");
}

#[test]
fn podagent_stops_on_sigterm_once_its_controller_has_returned() {
    let sb = Sandbox::new();
    let node = node_cni(&sb);
    let cri = RuntimeSocket::start(sb.dir.path());
    let agent = PodAgent::start_with(&sb, &node, &over_cri(&cri));
    let log = agent.log.clone();
    assert_eq!(agent.terminate(), Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("podagent stopped on SIGTERM"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_host_mount_namespace_falls_back_to_the_runtime_serving_the_cri_socket() {
    let dir = tempfile::tempdir().unwrap();
    let cri = RuntimeSocket::start(dir.path());
    let unopenable = PathBuf::from("/proc/999999999/ns/mnt");
    let host = PluginMountNamespace::Host(unopenable.clone());
    // This test process serves the fake runtime's socket: its namespace stands in.
    let ns = block_on(host.open(Some(&cri.path))).unwrap().expect("a namespace");
    assert_eq!(ns.path(), Path::new(&format!("/proc/{}/ns/mnt", std::process::id())));
    assert_eq!(cri.calls(), 0, "the runtime is not asked anything");

    // No runtime to stand in: both failures, and what to do.
    let absent = dir.path().join("none.sock");
    let e = block_on(host.open(Some(&absent))).unwrap_err();
    for part in ["/proc/999999999/ns/mnt", "nor the container runtime's", "none.sock", "--plugin-mount-namespace"] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    assert!(block_on(host.open(None)).unwrap_err().contains("no container runtime socket"));
    // A namespace given by path is that one or an error; none is podagent's own.
    let e = block_on(PluginMountNamespace::At(unopenable).open(Some(&cri.path))).unwrap_err();
    assert!(e.contains("/proc/999999999/ns/mnt") && !e.contains("runtime's"), "{e}");
    assert!(block_on(PluginMountNamespace::Own.open(Some(&cri.path))).unwrap().is_none());
}

/// The default, on whichever machine runs the test: the host's init's namespace where root can
/// open it; where it cannot (init in another user namespace, as in a sandboxed node), the
/// runtime's, said in the log, and hot-plug works through it.
#[test]
fn podagent_by_default_runs_the_plugin_in_the_host_s_or_else_the_runtime_s_mount_namespace() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let cri = RuntimeSocket::start(sb.dir.path());
    cri.runtime.run("c-app1", &pod_uid(&sb, "app1"), &sb.pods[p].path);
    let mut flags = over_cri(&cri);
    flags.push("--plugin-mount-namespace=host".into());
    let agent = PodAgent::start_with(&sb, &node, &flags);
    let log = std::fs::read_to_string(&agent.log).unwrap();
    if std::fs::File::open("/proc/1/ns/mnt").is_ok() {
        assert!(log.contains("runs in mount namespace /proc/1/ns/mnt"), "{log}");
        return;
    }
    let fallback = format!(
        "/proc/1/ns/mnt cannot be opened: the node's CNI plugin runs in the mount namespace of the container \
         runtime, pid {} serving {}",
        std::process::id(),
        cri.path.display()
    );
    assert!(log.contains(&fallback), "{fallback:?} missing from:\n{log}");
    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert_data_appears(&sb, p);
}
