//! List, then watch from the list's resourceVersion, keeping a local copy of the objects;
//! on 410 Gone relist, on any other failure re-watch after a growing delay. The handler
//! hears about every change after the copy has been updated.

use super::metrics::Metrics;
use crate::kube::{Client, EndpointSlice, KubeError, ObjectMeta, Pod, Service, WatchEvent};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An API object kept in a [`Cache`].
pub trait Object: DeserializeOwned + Clone + Send + Sync + 'static {
    fn meta(&self) -> &ObjectMeta;

    /// `namespace/name`, the cache and work-queue key.
    fn key(&self) -> String {
        format!("{}/{}", self.meta().namespace, self.meta().name)
    }
}

impl Object for Pod {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl Object for Service {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl Object for EndpointSlice {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// The informer's copy of a collection, by key.
pub struct Cache<T> {
    objects: RwLock<BTreeMap<String, T>>,
    synced: AtomicBool,
}

impl<T: Object> Cache<T> {
    pub fn new() -> Arc<Cache<T>> {
        Arc::new(Cache { objects: RwLock::new(BTreeMap::new()), synced: AtomicBool::new(false) })
    }

    pub fn get(&self, key: &str) -> Option<T> {
        self.read().get(key).cloned()
    }

    /// The objects of one namespace that `keep` accepts (only those are copied).
    pub fn in_namespace(&self, namespace: &str, keep: impl Fn(&T) -> bool) -> Vec<T> {
        let prefix = format!("{namespace}/");
        let objects = self.read();
        let in_namespace = objects.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix));
        in_namespace.filter(|(_, v)| keep(v)).map(|(_, v)| v.clone()).collect()
    }

    pub fn all(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    /// Whether the first list has arrived: before that, an empty cache means "unknown",
    /// not "none".
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, T>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, T>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What changed, as the handler hears it.
pub enum Change<'a, T> {
    Applied {
        old: Option<&'a T>,
        new: &'a T,
    },
    Deleted(&'a T),
    /// A (re)list replaced the copy; `previous` is what it held before.
    Relisted {
        previous: &'a BTreeMap<String, T>,
    },
}

pub struct Informer<T> {
    pub client: Client,
    /// Collection path, e.g. `/api/v1/pods` or `/api/v1/namespaces/x/pods`.
    pub path: String,
    pub label_selector: Option<String>,
    pub cache: Arc<Cache<T>>,
    pub metrics: Arc<Metrics>,
}

impl<T: Object> Informer<T> {
    /// Runs forever (on its own thread).
    pub fn run(self, handler: impl Fn(Change<'_, T>)) {
        let query: Vec<(&str, &str)> = self.label_selector.iter().map(|s| ("labelSelector", s.as_str())).collect();
        let mut resource_version = String::new();
        let mut failures = 0u32;
        loop {
            if resource_version.is_empty() {
                match self.client.list::<T>(&self.path, &query) {
                    Ok(list) => {
                        resource_version = list.metadata.resource_version;
                        let fresh: BTreeMap<String, T> = list.items.into_iter().map(|o| (o.key(), o)).collect();
                        let previous = std::mem::replace(&mut *self.cache.write(), fresh);
                        self.cache.synced.store(true, Ordering::SeqCst);
                        handler(Change::Relisted { previous: &previous });
                        failures = 0;
                    }
                    Err(e) => {
                        log::warn!("list {}: {e}", self.path);
                        self.pause(&mut failures);
                        continue;
                    }
                }
            }
            match self.client.watch::<T>(&self.path, &query, &resource_version) {
                Ok(stream) => {
                    for event in stream {
                        match event {
                            Ok(WatchEvent::Added(new) | WatchEvent::Modified(new)) => {
                                resource_version = new.meta().resource_version.clone();
                                let old = self.cache.write().insert(new.key(), new.clone());
                                handler(Change::Applied { old: old.as_ref(), new: &new });
                                failures = 0;
                            }
                            Ok(WatchEvent::Deleted(gone)) => {
                                resource_version = gone.meta().resource_version.clone();
                                self.cache.write().remove(&gone.key());
                                handler(Change::Deleted(&gone));
                            }
                            Ok(WatchEvent::Bookmark { resource_version: rv }) => resource_version = rv,
                            Ok(WatchEvent::Error(status)) => {
                                self.failed(
                                    &mut resource_version,
                                    KubeError::from_status(&status, &self.path),
                                    &mut failures,
                                );
                                break;
                            }
                            Err(e) => {
                                self.failed(&mut resource_version, e, &mut failures);
                                break;
                            }
                        }
                    }
                }
                Err(e) => self.failed(&mut resource_version, e, &mut failures),
            }
            self.metrics.watch_restarts.inc();
        }
    }

    /// 410 Gone means relist now; anything else is logged and the watch retried after a
    /// growing delay, from the last resourceVersion seen.
    fn failed(&self, resource_version: &mut String, e: KubeError, failures: &mut u32) {
        if matches!(e, KubeError::Gone { .. }) {
            log::info!("watch {}: {e}; relisting", self.path);
            resource_version.clear();
        } else {
            log::warn!("watch {}: {e}", self.path);
            self.pause(failures);
        }
    }

    fn pause(&self, failures: &mut u32) {
        let delay = MIN_BACKOFF.saturating_mul(1 << (*failures).min(7)).min(MAX_BACKOFF);
        *failures += 1;
        std::thread::sleep(delay);
    }
}
