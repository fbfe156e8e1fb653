//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it, on kube-rs's
//! `Api<Lease>`: only the holder reconciles; standbys keep their watches warm and take over
//! once the Lease has not changed for its duration, judged by their own clock (so skew
//! between nodes does not matter). Writes are optimistic (`resourceVersion`): two replicas
//! can never both think they took the same Lease.
//!
//! A holder that cannot renew stops writing before a standby may take over: it exits once two
//! thirds of the duration have passed since it sent its last successful renewal (client-go's
//! 10 s of 15 s), even while a renewal request is still hanging, and at once when it finds
//! another holder. (kube-lease-manager, the maintained crate on kube 5, keeps reporting
//! leadership while its renewals fail and judges expiry by the server's timestamps against the
//! local clock, so it cannot give this guarantee.)

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Whether this replica may write now: without election always; with it, only until two thirds
/// of the lease duration after its last successful renewal was sent. Checked before every
/// write, so even a holder paused past its deadline (and not yet exited) writes nothing.
#[derive(Clone, Default)]
pub struct Fence {
    /// `None`: no election.
    until: Option<Arc<Mutex<Option<Instant>>>>,
}

impl Fence {
    /// For a replica that runs alone: always open.
    pub fn open() -> Fence {
        Fence { until: None }
    }

    /// For an elected replica: closed until it holds the Lease.
    pub fn closed() -> Fence {
        Fence { until: Some(Arc::default()) }
    }

    pub fn may_write(&self) -> bool {
        match &self.until {
            None => true,
            Some(until) => lock(until).is_some_and(|until| Instant::now() < until),
        }
    }

    fn open_until(&self, until: Instant) {
        if let Some(shared) = &self.until {
            *lock(shared) = Some(until);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct LeaderElection {
    pub api: Api<Lease>,
    /// For messages: `namespace/name`.
    pub lease: String,
    pub name: String,
    /// Who we are in `holderIdentity`: unique per process.
    pub identity: String,
    pub lease_duration: Duration,
    pub fence: Fence,
}

/// The Lease record last seen and when it was first seen in that state.
type Observed = Option<(LeaseSpec, Instant)>;

/// What one attempt to take or renew the Lease found.
enum Attempt {
    Held,
    /// Another replica holds it, and its hold has not expired.
    HeldBy(String),
    /// Someone wrote the Lease between our read and our write: look again.
    Conflict,
}

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

    /// Waits until this process holds the Lease, says so on `leading`, then renews it for as
    /// long as the process lives (see the module's guarantee).
    pub async fn lead(self, leading: tokio::sync::watch::Sender<bool>) {
        let retry = self.retry_period();
        let mut observed: Observed = None;
        log::info!("waiting to lead through lease {} as {}", self.lease, self.identity);
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(retry, self.try_acquire_or_renew(&mut observed)).await {
                Ok(Ok(Attempt::Held)) => {
                    log::info!("leading as {}", self.identity);
                    self.fence.open_until(sent + self.lease_duration * 2 / 3);
                    let _ = leading.send(true);
                    return self.hold(observed, sent).await;
                }
                Ok(Ok(Attempt::HeldBy(_) | Attempt::Conflict)) => {}
                Ok(Err(e)) => log::warn!("lease {}: {}", self.lease, crate::kube::error_chain(&e)),
                Err(_) => log::warn!("lease {}: no answer within {retry:?}", self.lease),
            }
            tokio::time::sleep_until(sent + retry).await;
        }
    }

    /// client-go's 2 s of 15 s: several renewal attempts fit in the deadline.
    fn retry_period(&self) -> Duration {
        self.lease_duration / 7
    }

    async fn hold(self, mut observed: Observed, mut renewed: Instant) {
        let every = self.retry_period();
        let deadline = self.lease_duration * 2 / 3;
        loop {
            tokio::time::sleep_until(renewed + every).await;
            let sent = Instant::now();
            match tokio::time::timeout_at(renewed + deadline, self.try_acquire_or_renew(&mut observed)).await {
                Ok(Ok(Attempt::Held)) => {
                    renewed = sent;
                    self.fence.open_until(sent + deadline);
                }
                Ok(Ok(Attempt::HeldBy(holder))) => self.stop(&format!("{holder:?} holds it now")),
                Ok(Ok(Attempt::Conflict)) => log::warn!("lease {}: changed while renewing; trying again", self.lease),
                Ok(Err(e)) => log::warn!("lease {}: renewing: {}", self.lease, crate::kube::error_chain(&e)),
                Err(_) => self.stop(&format!("not renewed within {deadline:?}")),
            }
            if renewed.elapsed() > deadline {
                self.stop(&format!("not renewed within {deadline:?}"));
            }
        }
    }

    /// Stops writing for good: the process exits, so a standby takes over cleanly.
    fn stop(&self, why: &str) -> ! {
        log::error!("lost the lease {} ({why}); exiting so a standby takes over", self.lease);
        std::process::exit(1);
    }

    /// One attempt to take the Lease, or to renew it when we hold it.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = self.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_default();
        if observed.as_ref().is_none_or(|(seen, _)| seen != spec) {
            *observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(1) as u64);
        let expired = observed.as_ref().is_some_and(|(_, since)| since.elapsed() > duration);
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(Attempt::HeldBy(holder));
        }
        if holder != self.identity {
            log::info!("taking over lease {} from {holder:?}", self.lease);
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                *observed = Some((written.spec.unwrap_or_default(), Instant::now()));
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }
}
