//! The node's pods as a stream of updates: list, watch from the list's resourceVersion with
//! bookmarks, reopen from the last seen version when a watch ends, relist on 410 or any
//! watch ERROR, and back off (capped, exponential) while the apiserver is unreachable.

use super::metrics::Metrics;
use crate::kube::{Client, KubeError, Pod, WatchEvent};
use std::sync::mpsc::Sender;
use std::time::Duration;

const PODS: &str = "/api/v1/pods";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub enum Update {
    /// Every pod of the node, after a (re)list: pods not in it are gone.
    Listed(Vec<Pod>),
    Changed(Pod),
    Deleted(Pod),
}

/// Runs until the receiver is dropped.
pub fn watch_node_pods(client: &Client, node: &str, updates: &Sender<Update>, metrics: &Metrics) {
    let selector = format!("spec.nodeName={node}");
    let query = [("fieldSelector", selector.as_str())];
    let mut failures = 0u32;
    'relist: loop {
        let list = match client.list::<Pod>(PODS, &query) {
            Ok(list) => list,
            Err(e) => {
                log::warn!("list pods of node {node}: {e}");
                std::thread::sleep(backoff(&mut failures));
                continue;
            }
        };
        failures = 0;
        let mut version = list.metadata.resource_version;
        log::info!("listed {} pod(s) of node {node} at resourceVersion {version}", list.items.len());
        if updates.send(Update::Listed(list.items)).is_err() {
            return;
        }
        loop {
            let stream = match client.watch::<Pod>(PODS, &query, &version) {
                Ok(stream) => stream,
                Err(KubeError::Gone { message }) => {
                    log::info!("watch from {version} expired ({message}); relisting");
                    Metrics::inc(&metrics.watch_restarts);
                    continue 'relist;
                }
                Err(e) => {
                    log::warn!("watch pods of node {node}: {e}");
                    Metrics::inc(&metrics.watch_restarts);
                    std::thread::sleep(backoff(&mut failures));
                    continue;
                }
            };
            for event in stream {
                let update = match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        version = pod.metadata.resource_version.clone();
                        Update::Changed(pod)
                    }
                    Ok(WatchEvent::Deleted(pod)) => {
                        version = pod.metadata.resource_version.clone();
                        Update::Deleted(pod)
                    }
                    Ok(WatchEvent::Bookmark { resource_version }) => {
                        version = resource_version;
                        continue;
                    }
                    Ok(WatchEvent::Error(status)) => {
                        log::info!("watch ended with {} {}: {}; relisting", status.code, status.reason, status.message);
                        Metrics::inc(&metrics.watch_restarts);
                        continue 'relist;
                    }
                    Err(e) => {
                        log::warn!("watch pods of node {node}: {e}; reopening from {version}");
                        Metrics::inc(&metrics.watch_restarts);
                        std::thread::sleep(backoff(&mut failures));
                        break;
                    }
                };
                failures = 0;
                if updates.send(update).is_err() {
                    return;
                }
            }
        }
    }
}

/// 0.5 s, 1 s, 2 s, ... up to [`MAX_BACKOFF`]; counts the failure.
fn backoff(failures: &mut u32) -> Duration {
    let delay = Duration::from_millis(500).saturating_mul(1 << (*failures).min(16)).min(MAX_BACKOFF);
    *failures += 1;
    delay
}
