//! podagent's side of the fast path (protocol in `crate::fastpath`): kactus asks, over a
//! root-only unix socket, for what it would otherwise read from the apiserver, and hands over
//! its network-status PATCH and its Event. Answers come from the pod store the controller's
//! watch fills and from a cluster-wide NAD watch of this module's own; what they do not hold
//! is read live, so a cache is never the reason a pod misses a network:
//!
//! - a pod not in the store with the asked UID (just created, or deleted and recreated under
//!   its name) is waited for briefly, then read with one GET; another UID is not the pod;
//! - a NAD not in the store is read with a GET (then Kaloom's `Network`), so one created a
//!   moment before its pod works.
//!
//! It never queues: past `max_concurrent` requests it answers `busy`, and before its pod
//! store is listed `not-synced`; kactus then takes its in-process path at once.

use super::pods::{Pod, MIRROR_OF};
use crate::fastpath::{
    self, Answer, Ask, EventNote, NetworkKey, NetworkObject, NetworkSource, PodKey, Refusal, Reply, Request,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// How long a pod missing from the store (or there with another UID) is waited for on the
/// watch before podagent reads it live.
const POD_WAIT: Duration = Duration::from_millis(100);
const POD_WAIT_STEP: Duration = Duration::from_millis(5);
/// The bound on reading a request (a client that connects and says nothing holds a slot).
const READ_BOUND: Duration = Duration::from_millis(500);
/// The bound on answering one: kactus has stopped waiting long before (see
/// `fastpath::client`), so a request that takes longer only holds a slot.
const ANSWER_BOUND: Duration = Duration::from_secs(3);
/// The fast path's counters, `podagent_fastpath_*`.
#[derive(Debug, Default, Clone)]
pub struct FastPathMetrics {
    pub answers: Counter,
    pub refusals: Family<Vec<(String, String)>, Counter>,
    /// Pods and networks the caches did not hold, read from the apiserver.
    pub live_reads: Counter,
    /// What the NAD watch delivered (a change, a relist's object).
    pub nad_events: Counter,
    /// When the NAD watch last delivered something (unix seconds): the NAD cache's age.
    pub nad_cache_updated: Gauge,
}

impl FastPathMetrics {
    pub fn register(registry: &mut Registry) -> FastPathMetrics {
        let m = FastPathMetrics::default();
        registry.register("podagent_fastpath_answers", "Fast-path requests answered", m.answers.clone());
        registry.register(
            "podagent_fastpath_refusals",
            "Fast-path requests refused, by reason (kactus took its in-process path)",
            m.refusals.clone(),
        );
        registry.register(
            "podagent_fastpath_live_reads",
            "Pods and networks read from the apiserver because the caches did not hold them",
            m.live_reads.clone(),
        );
        registry.register(
            "podagent_fastpath_nad_events",
            "NetworkAttachmentDefinition watch events taken into the fast path's cache",
            m.nad_events.clone(),
        );
        registry.register(
            "podagent_fastpath_nad_cache_updated_timestamp_seconds",
            "When the NetworkAttachmentDefinition watch last delivered a change (its cache's age is now minus this)",
            m.nad_cache_updated.clone(),
        );
        m
    }

    fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&vec![("reason".to_string(), reason.as_str().to_string())]).inc();
    }
}

/// What the server is given.
pub struct FastPath {
    pub socket: PathBuf,
    pub max_concurrent: usize,
    pub client: kube::Client,
    pub pods: Store<Pod>,
    pub recorder: Recorder,
    pub metrics: FastPathMetrics,
}

/// What every request shares.
struct Shared {
    client: kube::Client,
    pods: Store<Pod>,
    pods_synced: AtomicBool,
    nads: Store<DynamicObject>,
    nad_resource: ApiResource,
    recorder: Recorder,
    metrics: FastPathMetrics,
    max_concurrent: usize,
    slots: Arc<Semaphore>,
}

/// Binds the socket (root-only: 0600 in a 0700 directory) and serves it, and the NAD
/// watch, in the background. A failure to bind is podagent's failure to start.
pub fn start(fp: FastPath) -> Result<(), String> {
    let listener = bind(&fp.socket)?;
    let nad_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    let writer = reflector::store::Writer::<DynamicObject>::new(nad_resource.clone());
    let shared = Arc::new(Shared {
        client: fp.client,
        pods: fp.pods,
        pods_synced: AtomicBool::new(false),
        nads: writer.as_reader(),
        nad_resource,
        recorder: fp.recorder,
        metrics: fp.metrics,
        max_concurrent: fp.max_concurrent,
        slots: Arc::new(Semaphore::new(fp.max_concurrent)),
    });
    tokio::spawn(watch_nads(shared.clone(), writer));
    log::info!("fast path: serving kactus on {} ({} request(s) at once)", fp.socket.display(), fp.max_concurrent);
    tokio::spawn(accept(listener, shared));
    Ok(())
}

fn bind(socket: &Path) -> Result<UnixListener, String> {
    let dir = socket.parent().ok_or_else(|| format!("fast-path socket {} has no directory", socket.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // The directory is made root's alone only when it is the socket's own (nothing else in
    // it): a socket pointed at a shared directory (/run) must not change that directory's
    // mode. The socket's 0600 and the peer's uid check keep others out either way.
    let others = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
        .any(|entry| Some(entry.file_name().as_os_str()) != socket.file_name());
    if others {
        log::warn!("fast path: {} holds other files: its mode is left as it is", dir.display());
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod 0700 {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove the old {}: {e}", socket.display())),
    }
    let listener = UnixListener::bind(socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod 0600 {}: {e}", socket.display()))?;
    Ok(listener)
}

/// The NADs of every namespace (a pod may name another namespace's), kept apart from the
/// pod store. A cluster that serves no NADs leaves the store empty: every network is then
/// read live, which is still right.
async fn watch_nads(shared: Arc<Shared>, writer: reflector::store::Writer<DynamicObject>) {
    use futures::StreamExt;
    let api: Api<DynamicObject> = Api::all_with(shared.client.clone(), &shared.nad_resource);
    let metrics = shared.metrics.clone();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .for_each(|event| {
            match event {
                Ok(_) => {
                    metrics.nad_events.inc();
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    metrics.nad_cache_updated.set(now.as_secs() as i64);
                }
                Err(e) => log::debug!("fast path: watching NetworkAttachmentDefinitions: {e}"),
            }
            futures::future::ready(())
        })
        .await;
}

/// What `kubectl apply` adds to a NAD (or a Kaloom `Network`) and no reader of it looks at:
/// `managedFields` and the last-applied annotation (the whole object again). They are most of
/// a NAD's bytes as it sits in a cluster (856 of 1,376 for BENCHMARK.md's), so the cache keeps
/// them out of every NAD it holds and no answer sends them. kactus reads the name, the
/// resourceVersion, the other annotations (the resource one) and `spec`, kept as they are.
fn trim(nad: &mut DynamicObject) {
    nad.metadata.managed_fields = None;
    if let Some(annotations) = nad.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                log::warn!("fast path: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only root may steer root code: the socket's mode says so, the peer's uid makes sure.
        match conn.peer_cred() {
            Ok(cred) if cred.uid() == 0 => {}
            Ok(cred) => {
                log::warn!("fast path: refused a connection from uid {}", cred.uid());
                continue;
            }
            Err(e) => {
                log::warn!("fast path: peer credentials: {e}");
                continue;
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move { serve_one(conn, shared).await });
    }
}

async fn serve_one(mut conn: UnixStream, shared: Arc<Shared>) {
    let reply = match shared.slots.clone().try_acquire_owned() {
        Err(_) => Reply::refused(Refusal::Busy, format!("{} request(s) under way", shared.max_concurrent)),
        Ok(_slot) => match tokio::time::timeout(READ_BOUND, read_frame(&mut conn)).await {
            Ok(Ok(body)) => match tokio::time::timeout(ANSWER_BOUND, answer(&shared, &body)).await {
                Ok(reply) => reply,
                Err(_) => Reply::refused(Refusal::Failed, format!("no answer within {ANSWER_BOUND:?}")),
            },
            Ok(Err(e)) => Reply::refused(Refusal::BadRequest, format!("reading the request: {e}")),
            Err(_) => Reply::refused(Refusal::BadRequest, "no request within the bound"),
        },
    };
    match &reply.answer {
        Answer::Refused { reason, message } => {
            shared.metrics.refused(*reason);
            log::debug!("fast path: refused ({}): {message}", reason.as_str());
        }
        _ => {
            shared.metrics.answers.inc();
        }
    }
    let Ok(body) = serde_json::to_vec(&reply) else { return };
    let mut out = Vec::with_capacity(body.len() + 4);
    if fastpath::write_frame(&mut out, &body).is_ok() {
        let _ = conn.write_all(&out).await;
    }
}

async fn read_frame(conn: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let len = conn.read_u32().await? as usize;
    if len > fastpath::MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok(body)
}

async fn answer(shared: &Shared, body: &[u8]) -> Reply {
    let theirs = fastpath::version_of(body);
    if theirs != fastpath::VERSION {
        return Reply::refused(
            Refusal::Version,
            format!("podagent speaks {}, the request {theirs}", fastpath::VERSION),
        );
    }
    let request: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Reply::refused(Refusal::BadRequest, e.to_string()),
    };
    let answer = match request.ask {
        Ask::Resolve { pod, networks } => resolve(shared, &pod, networks).await,
        Ask::Report { pod, status, event } => report(shared, &pod, &status, event).await,
    };
    Reply { version: fastpath::VERSION, answer }
}

async fn resolve(shared: &Shared, key: &PodKey, mut networks: Vec<NetworkKey>) -> Answer {
    if !shared.pods_synced.load(Ordering::Acquire) && !pods_listed(shared) {
        return refused(Refusal::NotSynced, "the node's pods are not listed yet");
    }
    let pod = match find_pod(shared, key).await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return refused(Refusal::PodNotFound, format!("pod {}/{} with UID {}", key.namespace, key.name, key.uid))
        }
        Err(e) => return refused(Refusal::Failed, format!("get pod {}/{}: {e}", key.namespace, key.name)),
    };
    let annotations: BTreeMap<String, String> = pod.annotations();
    // The networks the pod's annotation names, beside those kactus asked for: an annotation
    // that does not parse names none (kactus refuses it when it parses it itself).
    let pod_ref = crate::cni::PodRef {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        uid: Some(key.uid.clone()),
        infra_container_id: None,
    };
    if let Ok(atts) = crate::plugin::plan::pod_attachments(&pod_ref, &annotations, "eth0") {
        networks
            .extend(atts.iter().map(|a| NetworkKey { namespace: a.namespace.clone(), name: a.selection.name.clone() }));
    }
    let wanted: BTreeSet<NetworkKey> = networks.into_iter().collect();
    let mut objects = Vec::with_capacity(wanted.len());
    for net in wanted {
        match network(shared, &net).await {
            Ok(object) => objects.push(object),
            Err(e) => return refused(Refusal::Failed, format!("network {}/{}: {e}", net.namespace, net.name)),
        }
    }
    Answer::Resolved { uid: key.uid.clone(), annotations, networks: objects }
}

/// Whether the pod store has had its first list (asked of the store on each request until
/// it says so, then remembered).
fn pods_listed(shared: &Shared) -> bool {
    use futures::FutureExt;
    let listed = shared.pods.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok());
    if listed {
        log::info!("fast path: the node's pods are listed; answering from the caches");
        shared.pods_synced.store(true, Ordering::Release);
    }
    listed
}

/// The pod with the asked UID: from the store, waited for there briefly, else one live GET.
async fn find_pod(shared: &Shared, key: &PodKey) -> Result<Option<Pod>, kube::Error> {
    let oref = ObjectRef::new(&key.name).within(&key.namespace);
    let matches = |pod: &Pod| {
        pod.metadata.uid.as_deref() == Some(key.uid.as_str()) || pod.annotation(MIRROR_OF) == Some(key.uid.as_str())
    };
    let mut waited = Duration::ZERO;
    loop {
        if let Some(pod) = shared.pods.get(&oref).filter(|p| matches(p)) {
            return Ok(Some((*pod).clone()));
        }
        if waited >= POD_WAIT {
            break;
        }
        tokio::time::sleep(POD_WAIT_STEP).await;
        waited += POD_WAIT_STEP;
    }
    shared.metrics.live_reads.inc();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    Ok(api.get_opt(&key.name).await?.filter(matches))
}

/// A network's object: the NAD from the store, else read live, else Kaloom's `Network`.
async fn network(shared: &Shared, key: &NetworkKey) -> Result<NetworkObject, kube::Error> {
    let object = |source, object: serde_json::Value| NetworkObject {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source,
        object,
    };
    let oref = ObjectRef::new_with(&key.name, shared.nad_resource.clone()).within(&key.namespace);
    if let Some(nad) = shared.nads.get(&oref) {
        return Ok(object(NetworkSource::Nad, serde_json::to_value(&*nad).unwrap_or_default()));
    }
    shared.metrics.live_reads.inc();
    let nads: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), &key.namespace, &shared.nad_resource);
    if let Some(mut nad) = nads.get_opt(&key.name).await? {
        trim(&mut nad);
        return Ok(object(NetworkSource::Nad, serde_json::to_value(&nad).unwrap_or_default()));
    }
    let kaloom = ApiResource::from_gvk(&GroupVersionKind::gvk("kaloom.com", "v1", "Network"));
    let networks: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), &key.namespace, &kaloom);
    match networks.get_opt(&key.name).await {
        Ok(Some(mut net)) => {
            trim(&mut net);
            Ok(object(NetworkSource::Kaloom, serde_json::to_value(&net).unwrap_or_default()))
        }
        // Not served (no such CRD) or not readable: the NAD's absence is the answer, as in
        // kactus's own reads.
        Ok(None) | Err(kube::Error::Api(_)) => Ok(object(NetworkSource::Absent, serde_json::Value::Null)),
        Err(e) => Err(e),
    }
}

/// network-status now (the answer waits for the PATCH, as kactus's own does), the Event in
/// the background.
async fn report(shared: &Shared, key: &PodKey, status: &serde_json::Value, event: Option<EventNote>) -> Answer {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    if let Err(e) = api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(status)).await {
        return refused(Refusal::Failed, format!("patch pods/status of {}/{}: {e}", key.namespace, key.name));
    }
    if let Some(note) = event {
        let recorder = shared.recorder.clone();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: Some(key.uid.clone()),
            ..Default::default()
        };
        tokio::spawn(async move {
            let event = Event {
                type_: if note.kind == "Warning" { EventType::Warning } else { EventType::Normal },
                reason: note.reason.clone(),
                note: Some(note.message),
                action: "Add".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                log::warn!("fast path: event {} not recorded: {e}", note.reason);
            }
        });
    }
    Answer::Reported
}

fn refused(reason: Refusal, message: impl Into<String>) -> Answer {
    Answer::Refused { reason, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_socket_is_roots_and_only_its_own_directory_is_tightened() {
        let own = tempfile::tempdir().unwrap();
        let dir = own.path().join("kactus");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A socket left by an earlier podagent is replaced.
        drop(std::os::unix::net::UnixListener::bind(dir.join("podagent.sock")).unwrap());
        let _listener = bind(&dir.join("podagent.sock")).unwrap();
        assert_eq!((mode(&dir), mode(&dir.join("podagent.sock"))), (0o700, 0o600));

        // A shared directory keeps its mode.
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(shared.path().join("other"), "").unwrap();
        let _listener = bind(&shared.path().join("podagent.sock")).unwrap();
        assert_eq!((mode(shared.path()), mode(&shared.path().join("podagent.sock"))), (0o755, 0o600));
    }
}
