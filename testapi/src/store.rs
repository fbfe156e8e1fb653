//! The object store: every object the server holds, the global resourceVersion counter and a
//! bounded history of change events that watches replay from.
//!
//! Writes follow the real apiserver's rules that clients can observe: a write that changes
//! nothing keeps the resourceVersion and emits no event; writes to a kind with a status
//! subresource keep the stored status, and `/status` writes change only the status; a stale
//! `metadata.resourceVersion` in a PUT or PATCH body is a 409 Conflict.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::ids::{new_uid, random_bytes};
use super::patch::{merge_patch, Patch};
use super::resources::{self, ResourceKind};
use super::selector::Selector;
use super::status::ApiError;

/// How many change events are kept for watches to resume from; older resourceVersions
/// answer 410 Expired, as after an etcd compaction.
const HISTORY_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What the server would answer (NotFound, Conflict, AlreadyExists, BadRequest...).
    #[error("{}", .0.message())]
    Api(ApiError),
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    #[error("unknown kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("parse YAML: {0}")]
    Yaml(String),
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ApiError> for StoreError {
    fn from(e: ApiError) -> StoreError {
        StoreError::Api(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub resource: &'static str,
    pub namespace: String,
    /// The object after the change; for DELETED the last state with the deletion's RV.
    pub object: Value,
    /// The object before the change, so a watch can tell an object that stopped matching
    /// its selector (that watch sees DELETED) from one that started (ADDED).
    pub previous: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// `DeleteOptions.preconditions`: what the object must still be for a DELETE to go ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// From a DELETE request's body (a `DeleteOptions`, or empty).
    pub fn from_delete_body(body: &[u8]) -> Result<Preconditions, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Preconditions::default());
        }
        let options: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        let field = |name: &str| options["preconditions"][name].as_str().map(str::to_string);
        Ok(Preconditions { uid: field("uid"), resource_version: field("resourceVersion") })
    }

    fn check(&self, kind: &ResourceKind, stored: &Value) -> Result<(), ApiError> {
        let name = stored["metadata"]["name"].as_str().unwrap_or_default();
        for (field, want) in [("UID", &self.uid), ("ResourceVersion", &self.resource_version)] {
            let key = if field == "UID" { "uid" } else { "resourceVersion" };
            let have = stored["metadata"][key].as_str().unwrap_or_default();
            if let Some(want) = want.as_deref().filter(|w| *w != have) {
                return Err(ApiError::precondition_failed(kind, name, field, want, have));
            }
        }
        Ok(())
    }
}

/// Where a watch stands: the last resourceVersion it has seen and the compaction epoch it
/// started in (a compaction ends every open watch with 410).
#[derive(Debug, Clone, Copy)]
pub struct WatchCursor {
    pub last_rv: u64,
    epoch: u64,
}

/// What a waiting watch gets.
pub enum WatchPoll {
    Events(Vec<Arc<Event>>),
    Expired(ApiError),
}

type Key = (&'static str, String, String);

struct State {
    rv: u64,
    garbage_collector: bool,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    /// Watches may resume from any resourceVersion at or after this one.
    compacted_rv: u64,
    epoch: u64,
}

pub struct Store {
    state: Mutex<State>,
    changed: Condvar,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        let state = State {
            rv: 1,
            garbage_collector: false,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 1,
            epoch: 0,
        };
        Store { state: Mutex::new(state), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the whole server down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates or replaces every object in a multi-document YAML string (a `kind: List`
    /// document counts its items). Returns how many objects were applied.
    pub fn apply_yaml(&self, yaml: &str) -> Result<usize, StoreError> {
        let docs = serde_saphyr::from_multiple::<Value>(yaml).map_err(|e| StoreError::Yaml(e.to_string()))?;
        let mut count = 0;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            if doc["kind"] == "List" {
                for item in doc["items"].as_array().into_iter().flatten() {
                    self.apply(item.clone())?;
                    count += 1;
                }
            } else {
                self.apply(doc)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Applies a YAML file, or every `*.yaml`/`*.yml` file of a directory in name order.
    pub fn apply_file_or_dir(&self, path: &Path) -> Result<usize, StoreError> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        if !path.is_dir() {
            return self.apply_yaml(&std::fs::read_to_string(path).map_err(io)?);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut count = 0;
        for file in files {
            count += self.apply_file_or_dir(&file)?;
        }
        Ok(count)
    }

    /// Creates the object or replaces the stored one whatever its resourceVersion, like
    /// `kubectl apply` from a test; status is taken from the object as given.
    pub fn apply(&self, obj: Value) -> Result<Value, StoreError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind_name = obj["kind"].as_str().unwrap_or_default();
        let kind = resources::by_kind(api_version, kind_name).ok_or_else(|| StoreError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind_name.to_string(),
        })?;
        let namespace = match kind.namespaced() {
            true => obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
            false => String::new(),
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut state = self.lock();
        let key = (kind.resource, namespace.clone(), name);
        match state.objects.get(&key).cloned() {
            Some(existing) => {
                let mut obj = obj;
                obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
                Ok(self.commit_update(&mut state, kind, existing, obj, None)?)
            }
            None => Ok(self.commit_create(&mut state, kind, &namespace, obj)?),
        }
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = resources::by_resource(resource)?;
        self.lock().objects.get(&(kind.resource, namespace.to_string(), name.to_string())).cloned()
    }

    /// Merge-patches the main resource (status included, as a test setting up state wants).
    pub fn merge_patch(&self, resource: &str, namespace: &str, name: &str, patch: &Value) -> Result<Value, StoreError> {
        let kind = resources::by_resource(resource).ok_or_else(|| StoreError::UnknownResource(resource.to_string()))?;
        let mut state = self.lock();
        let existing = get_existing(&state, kind, namespace, name)?;
        let mut patched = existing.clone();
        merge_patch(&mut patched, patch);
        check_resource_version(kind, &existing, &patched)?;
        Ok(self.commit_update(&mut state, kind, existing, patched, None)?)
    }

    /// [`Store::merge_patch`] as a strategic merge patch: `conditions` merge by `type`, as
    /// kubelet's and kactus's status writes do, so a test changing one condition keeps the rest.
    pub fn strategic_patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, StoreError> {
        let kind = resources::by_resource(resource).ok_or_else(|| StoreError::UnknownResource(resource.to_string()))?;
        let mut state = self.lock();
        let existing = get_existing(&state, kind, namespace, name)?;
        let mut patched = existing.clone();
        super::patch::strategic_merge(&mut patched, patch);
        check_resource_version(kind, &existing, &patched)?;
        Ok(self.commit_update(&mut state, kind, existing, patched, None)?)
    }

    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let kind = resources::by_resource(resource).ok_or_else(|| StoreError::UnknownResource(resource.to_string()))?;
        Ok(self.delete_kind(kind, namespace, name)?)
    }

    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        match resources::by_resource(resource) {
            Some(kind) => self.list_kind(kind, namespace, &Selector::default()).0,
            None => Vec::new(),
        }
    }

    /// The objects of a kind matching a selector, and the resourceVersion of the snapshot.
    pub fn list_kind(&self, kind: &ResourceKind, namespace: Option<&str>, selector: &Selector) -> (Vec<Value>, u64) {
        let state = self.lock();
        (objects_of(&state, kind, namespace, selector), state.rv)
    }

    /// The oldest resourceVersion a watch or a LIST continuation may still resume from.
    pub fn oldest_resumable_rv(&self) -> u64 {
        self.lock().compacted_rv
    }

    pub fn get_kind(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        get_existing(&self.lock(), kind, namespace, name)
    }

    /// POST: 409 if the name is taken; `generateName` picks a fresh name.
    pub fn create(&self, kind: &'static ResourceKind, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        check_type(kind, &obj)?;
        if let Some(ns) = obj["metadata"]["namespace"].as_str().filter(|_| kind.namespaced()) {
            if ns != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let mut state = self.lock();
        self.commit_create(&mut state, kind, namespace, obj)
    }

    /// PUT of the main resource or its status.
    pub fn replace(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        obj: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        check_type(kind, &obj)?;
        let body_name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut state = self.lock();
        let existing = get_existing(&state, kind, namespace, name)?;
        let mut obj = obj;
        // An empty resourceVersion means an unconditional update, as pods allow.
        if obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().is_empty() {
            obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
        }
        check_resource_version(kind, &existing, &obj)?;
        self.commit_update(&mut state, kind, existing, obj, Some(part))
    }

    /// PATCH of the main resource or its status.
    pub fn patch(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        patch: &Patch,
        part: Part,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let existing = get_existing(&state, kind, namespace, name)?;
        let patched = patch.apply_to(&existing)?;
        check_resource_version(kind, &existing, &patched)?;
        self.commit_update(&mut state, kind, existing, patched, Some(part))
    }

    /// DELETE: removes the object at once (no graceful deletion) and returns its last state.
    pub fn delete_kind(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_if(kind, namespace, name, &Preconditions::default())
    }

    /// DELETE with `DeleteOptions.preconditions`: a uid or resourceVersion that is not the
    /// stored one is a 409 and nothing is deleted, as the real server does. With the garbage
    /// collector on, the object's dependents go with it (see [`Store::enable_garbage_collector`]).
    pub fn delete_if(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = (kind.resource, namespace.to_string(), name.to_string());
        let stored = state.objects.get(&key).ok_or_else(|| ApiError::not_found(kind, name))?;
        preconditions.check(kind, stored)?;
        let obj = self.remove(&mut state, key);
        if state.garbage_collector {
            self.collect_garbage(&mut state);
        }
        Ok(obj)
    }

    /// Turns on the garbage collector: from now on, deleting an object also deletes, in the
    /// same step, every object whose `ownerReferences` are then all gone, and removes the
    /// dangling reference from dependents that still have another owner (background
    /// propagation, without the real collector's delay). Off by default, so a test of a
    /// controller's own clean-up is not passed by the collector doing it.
    pub fn enable_garbage_collector(&self) {
        self.lock().garbage_collector = true;
    }

    fn remove(&self, state: &mut State, key: Key) -> Value {
        let Some(mut obj) = state.objects.remove(&key) else { return Value::Null };
        let previous = obj.clone();
        let rv = next_rv(state);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if let Some(kind) = resources::by_resource(key.0) {
            self.record(state, kind, EventType::Deleted, obj.clone(), Some(previous));
        }
        obj
    }

    /// Deletes dependents whose owners are all gone and drops dangling owner references from
    /// the others, until nothing changes (dependents of deleted dependents go too).
    fn collect_garbage(&self, state: &mut State) {
        loop {
            let uids: std::collections::BTreeSet<String> =
                state.objects.values().filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string)).collect();
            let owned = |o: &Value| o["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
            let dangling: Vec<(Key, Vec<Value>)> = state
                .objects
                .iter()
                .filter_map(|(key, obj)| {
                    let owners = owned(obj);
                    let live: Vec<Value> = owners
                        .iter()
                        .filter(|r| r["uid"].as_str().is_some_and(|u| uids.contains(u)))
                        .cloned()
                        .collect();
                    (live.len() != owners.len()).then(|| (key.clone(), live))
                })
                .collect();
            if dangling.is_empty() {
                return;
            }
            for (key, live) in dangling {
                if live.is_empty() {
                    self.remove(state, key);
                    continue;
                }
                let (Some(kind), Some(existing)) = (resources::by_resource(key.0), state.objects.get(&key).cloned())
                else {
                    continue;
                };
                let mut updated = existing.clone();
                updated["metadata"]["ownerReferences"] = Value::Array(live);
                let _ = self.commit_update(state, kind, existing, updated, None);
            }
        }
    }

    /// Compacts the history: open watches end with 410 and older resourceVersions expire.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted_rv = state.rv;
        state.epoch += 1;
        self.changed.notify_all();
    }

    /// Starts a watch after `from` (None: from now). 410 if `from` is older than the history.
    pub fn watch_from(&self, from: Option<u64>) -> Result<WatchCursor, ApiError> {
        let state = self.lock();
        let last_rv = from.unwrap_or(state.rv);
        if last_rv < state.compacted_rv {
            return Err(ApiError::expired(last_rv, state.compacted_rv));
        }
        Ok(WatchCursor { last_rv, epoch: state.epoch })
    }

    /// The current objects and a cursor just after them, taken under one lock so no change
    /// is lost or seen twice between the two.
    pub fn snapshot_for_watch(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> (Vec<Value>, WatchCursor) {
        let state = self.lock();
        let cursor = WatchCursor { last_rv: state.rv, epoch: state.epoch };
        let items = objects_of(&state, kind, namespace, selector);
        (items, cursor)
    }

    /// Events after the cursor, waiting up to `timeout` for one; an empty list on timeout.
    pub fn poll_events(&self, cursor: &mut WatchCursor, timeout: Duration) -> WatchPoll {
        let mut state = self.lock();
        if !has_events_after(&state, cursor) {
            state = match self.changed.wait_timeout(state, timeout) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        if state.epoch != cursor.epoch || cursor.last_rv < state.compacted_rv {
            return WatchPoll::Expired(ApiError::expired(cursor.last_rv, state.compacted_rv));
        }
        let start = state.history.partition_point(|e| e.rv <= cursor.last_rv);
        let events: Vec<Arc<Event>> = state.history.range(start..).cloned().collect();
        cursor.last_rv = state.rv;
        WatchPoll::Events(events)
    }

    fn commit_create(
        &self,
        state: &mut State,
        kind: &'static ResourceKind,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let meta = &obj["metadata"];
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => generate_name(state, kind, namespace, prefix),
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        check_labels(kind, &name, &obj)?;
        let key = (kind.resource, namespace.to_string(), name.clone());
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        let rv = next_rv(state);
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        match kind.namespaced() {
            true => meta["namespace"] = json!(namespace),
            false => remove_key(meta, "namespace"),
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_in_seconds());
        meta["resourceVersion"] = json!(rv.to_string());
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        state.objects.insert(key, obj.clone());
        self.record(state, kind, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Stores `new` in place of `existing`. `part` None is a test's apply (everything
    /// changes); otherwise the status subresource rules apply.
    fn commit_update(
        &self,
        state: &mut State,
        kind: &'static ResourceKind,
        existing: Value,
        mut new: Value,
        part: Option<Part>,
    ) -> Result<Value, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        match part {
            Some(Part::Status) => {
                let status = new.get("status").cloned();
                // A pod's status subresource takes its labels and annotations too (the real
                // podStatusStrategy keeps only spec, deletionTimestamp and ownerReferences from
                // the stored pod): multus and kactus write network-status through it.
                let metadata = (kind.resource == "pods")
                    .then(|| (new["metadata"].get("labels").cloned(), new["metadata"].get("annotations").cloned()));
                new = existing.clone();
                match status {
                    Some(status) => new["status"] = status,
                    None => remove_key(&mut new, "status"),
                }
                if let Some((labels, annotations)) = metadata {
                    for (field, value) in [("labels", labels), ("annotations", annotations)] {
                        match value {
                            Some(v) => new["metadata"][field] = v,
                            None => remove_key(&mut new["metadata"], field),
                        }
                    }
                }
            }
            Some(Part::Main) if kind.has_status => match existing.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => remove_key(&mut new, "status"),
            },
            _ => {}
        }
        check_labels(kind, new["metadata"]["name"].as_str().unwrap_or_default(), &new)?;
        // What the server owns cannot be changed by a client.
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        for field in ["name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"] {
            match existing["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => remove_key(&mut new["metadata"], field),
            }
        }
        if new == existing {
            return Ok(existing);
        }
        if new.get("spec") != existing.get("spec") {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        let rv = next_rv(state);
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let namespace = new["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = new["metadata"]["name"].as_str().unwrap_or_default().to_string();
        state.objects.insert((kind.resource, namespace, name), new.clone());
        self.record(state, kind, EventType::Modified, new.clone(), Some(existing));
        Ok(new)
    }

    fn record(
        &self,
        state: &mut State,
        kind: &ResourceKind,
        event_type: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        state.history.push_back(Arc::new(Event {
            rv: state.rv,
            kind: event_type,
            resource: kind.resource,
            namespace,
            object,
            previous,
        }));
        while state.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted_rv = dropped.rv;
            }
        }
        self.changed.notify_all();
    }
}

fn objects_of(state: &State, kind: &ResourceKind, namespace: Option<&str>, selector: &Selector) -> Vec<Value> {
    state
        .objects
        .iter()
        .filter(|((resource, ns, _), obj)| {
            *resource == kind.resource && namespace.is_none_or(|n| n == ns) && selector.matches(obj)
        })
        .map(|(_, obj)| obj.clone())
        .collect()
}

fn remove_key(obj: &mut Value, key: &str) {
    if let Some(map) = obj.as_object_mut() {
        map.remove(key);
    }
}

fn has_events_after(state: &State, cursor: &WatchCursor) -> bool {
    state.rv > cursor.last_rv || state.epoch != cursor.epoch
}

fn next_rv(state: &mut State) -> u64 {
    state.rv += 1;
    state.rv
}

fn get_existing(state: &State, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
    state
        .objects
        .get(&(kind.resource, namespace.to_string(), name.to_string()))
        .cloned()
        .ok_or_else(|| ApiError::not_found(kind, name))
}

/// A body naming another kind than the URL is a 400, as in the real server.
fn check_type(kind: &ResourceKind, obj: &Value) -> Result<(), ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind_name = obj["kind"].as_str().unwrap_or_default();
    if (!api_version.is_empty() && api_version != kind.api_version())
        || (!kind_name.is_empty() && kind_name != kind.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or kind {kind_name} is not {}",
            kind.api_version(),
            kind.kind
        )));
    }
    Ok(())
}

/// Optimistic concurrency: a resourceVersion in the written object must be the stored one.
fn check_resource_version(kind: &ResourceKind, existing: &Value, new: &Value) -> Result<(), ApiError> {
    let stored = &existing["metadata"]["resourceVersion"];
    match new["metadata"].get("resourceVersion") {
        Some(rv) if rv != stored && !rv.is_null() => {
            Err(ApiError::conflict(kind, existing["metadata"]["name"].as_str().unwrap_or_default()))
        }
        _ => Ok(()),
    }
}

/// The real apiserver appends 5 characters from this alphabet to `generateName`.
fn generate_name(state: &State, kind: &ResourceKind, namespace: &str, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    loop {
        let suffix: String = random_bytes(5).iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
        let name = format!("{prefix}{suffix}");
        if !state.objects.contains_key(&(kind.resource, namespace.to_string(), name.clone())) {
            return name;
        }
    }
}

/// Now as the apiserver writes `creationTimestamp`: RFC 3339, UTC, whole seconds.
fn now_in_seconds() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// Label values as the real server validates them (422 for one it refuses, as for
/// `endpointslice.kubernetes.io/managed-by: kactus.io/x`, whose slash no label value may hold).
fn check_labels(kind: &ResourceKind, name: &str, obj: &Value) -> Result<(), ApiError> {
    let Some(labels) = obj["metadata"]["labels"].as_object() else { return Ok(()) };
    for (key, value) in labels {
        let value = value.as_str().unwrap_or_default();
        if !super::selector::valid_label_value(value) {
            return Err(ApiError::invalid(
                kind,
                name,
                format!(
                    "metadata.labels: Invalid value: {value:?}: a valid label must be an empty string or consist of \
                     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (key {key:?})"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app1\n  annotations:\n    a: b\nspec:\n  nodeName: node1\n---\napiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: green\n  namespace: net\nspec:\n  config: '{}'\n";

    #[test]
    fn apply_yaml_maps_kinds_and_defaults_namespace() {
        let store = Store::new();
        assert_eq!(store.apply_yaml(PODS).unwrap(), 2);
        let pod = store.get("pods", "default", "app1").unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert!(pod["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(store.get("network-attachment-definitions", "net", "green").is_some());
    }

    #[test]
    fn noop_write_keeps_resource_version_and_stale_rv_conflicts() {
        let store = Store::new();
        store.apply_yaml(PODS).unwrap();
        let before = store.get("pods", "default", "app1").unwrap();
        let same =
            store.merge_patch("pods", "default", "app1", &json!({"metadata": {"annotations": {"a": "b"}}})).unwrap();
        assert_eq!(same["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);
        let stale = json!({"metadata": {"resourceVersion": "1", "annotations": {"a": "c"}}});
        let err = store.merge_patch("pods", "default", "app1", &stale).unwrap_err();
        assert!(matches!(err, StoreError::Api(ref e) if e.code == 409), "{err}");
    }
}
