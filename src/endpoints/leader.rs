//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: only the
//! holder reconciles; standbys keep their watches warm and take over once the Lease has not
//! changed for its duration (judged by their own clock, so skew between nodes does not
//! matter).

use super::metrics::Metrics;
use crate::kube::time as clock;
use crate::kube::{Client, KubeError, Lease, LeaseSpec, ObjectMeta};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LeaderElection {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    /// Who we are in `holderIdentity`: unique per process.
    pub identity: String,
    pub lease_duration: Duration,
}

/// The Lease record last seen and when it was first seen in that state.
type Observed = Option<(LeaseSpec, Instant)>;

impl LeaderElection {
    /// `hostname_pid`: the pod name in a cluster, unique among processes of one host.
    pub fn default_identity() -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        format!("{host}_{}", std::process::id())
    }

    /// Blocks until this process holds the Lease, then renews it on a thread. A holder that
    /// cannot renew for two thirds of the duration (client-go's 10 s of 15 s) exits, so it
    /// stops writing before any standby may take over.
    pub fn acquire_and_hold(self, metrics: Arc<Metrics>) -> std::io::Result<()> {
        let retry = self.retry_period();
        let mut observed: Observed = None;
        log::info!("waiting to lead through lease {}/{} as {}", self.namespace, self.name, self.identity);
        loop {
            match self.try_acquire_or_renew(&mut observed) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => log::warn!("lease {}/{}: {e}", self.namespace, self.name),
            }
            std::thread::sleep(retry);
        }
        log::info!("leading as {}", self.identity);
        metrics.set_leader(true);
        std::thread::Builder::new().name("lease-renew".into()).spawn(move || self.renew_forever(observed)).map(|_| ())
    }

    /// client-go's 2 s of 15 s: several renewal attempts fit in the deadline.
    fn retry_period(&self) -> Duration {
        self.lease_duration / 7
    }

    fn renew_forever(self, mut observed: Observed) {
        let every = self.retry_period();
        let deadline = self.lease_duration * 2 / 3;
        let mut renewed = Instant::now();
        loop {
            std::thread::sleep(every);
            match self.try_acquire_or_renew(&mut observed) {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => log::warn!("lease {}/{}: held by someone else", self.namespace, self.name),
                Err(e) => log::warn!("lease {}/{}: renewing: {e}", self.namespace, self.name),
            }
            if renewed.elapsed() > deadline {
                log::error!("lost the lease {}/{}; exiting so a standby takes over", self.namespace, self.name);
                std::process::exit(1);
            }
        }
    }

    /// One attempt: true when we hold the Lease afterwards.
    fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, KubeError> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}", self.namespace, self.name);
        let now = clock::now_micro();
        let seconds = self.lease_duration.as_secs().max(1) as i32;
        let mut lease = match self.client.get::<Lease>(&path) {
            Err(KubeError::NotFound { .. }) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: self.name.clone(),
                        namespace: self.namespace.clone(),
                        ..Default::default()
                    },
                    spec: LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                    },
                };
                let mut body = serde_json::to_value(&lease).map_err(encode)?;
                body["apiVersion"] = "coordination.k8s.io/v1".into();
                body["kind"] = "Lease".into();
                let collection = path.rsplit_once('/').map_or(path.as_str(), |(c, _)| c);
                return match self.client.create::<Lease>(collection, &body) {
                    Ok(_) => Ok(true),
                    Err(KubeError::Conflict { .. }) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            other => other?,
        };
        if observed.as_ref().is_none_or(|(spec, _)| *spec != lease.spec) {
            *observed = Some((lease.spec.clone(), Instant::now()));
        }
        let holder = lease.spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(lease.spec.lease_duration_seconds.unwrap_or(seconds).max(1) as u64);
        let expired = observed.as_ref().is_some_and(|(_, since)| since.elapsed() > duration);
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if holder != self.identity {
            log::info!("taking over lease {}/{} from {holder:?}", self.namespace, self.name);
            lease.spec.acquire_time = Some(now.clone());
            lease.spec.lease_transitions = Some(lease.spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec.holder_identity = Some(self.identity.clone());
        lease.spec.lease_duration_seconds = Some(seconds);
        lease.spec.renew_time = Some(now);
        let body = serde_json::to_value(&lease).map_err(encode)?;
        match self.client.replace::<Lease>(&path, &body) {
            Ok(written) => {
                *observed = Some((written.spec, Instant::now()));
                Ok(true)
            }
            Err(KubeError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn encode(e: serde_json::Error) -> KubeError {
    KubeError::Decode { message: format!("encoding a lease: {e}") }
}
