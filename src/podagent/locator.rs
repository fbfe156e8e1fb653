//! Which [`SandboxLocator`] finds pods' sandboxes, as `--sandbox-lookup` picks: the runtime's
//! own answer over CRI (`cri/`), kactus's cache (`sandbox`), or the first with the second as
//! fallback ([`AutoLocator`]).

use super::cri::{self, CriError, CriLocator};
use super::pods::Pod;
use super::sandbox::{KactusCacheLocator, Sandbox, SandboxLocator};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

/// How podagent finds sandboxes (`--sandbox-lookup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxLookup {
    /// Only the container runtime, over its CRI socket.
    Cri,
    /// Only kactus's cache.
    Cache,
    /// The runtime when its socket answers, else kactus's cache.
    Auto,
}

/// The locator for a lookup mode and the runtime's socket (see [`cri::runtime_socket`]);
/// `cri` without a socket is an error, `auto` without one uses the cache alone.
pub fn sandbox_locator(
    lookup: SandboxLookup,
    socket: Option<PathBuf>,
    cache_dir: PathBuf,
) -> Result<Box<dyn SandboxLocator>, String> {
    let cache = KactusCacheLocator { cache_dir };
    let cri = |socket: PathBuf| CriLocator::new(socket, cri::CALL_TIMEOUT);
    Ok(match (lookup, socket) {
        (SandboxLookup::Cache, _) => Box::new(cache),
        (SandboxLookup::Cri, Some(socket)) => Box::new(cri(socket)),
        (SandboxLookup::Cri, None) => {
            return Err(format!(
                "--sandbox-lookup cri: no runtime socket at {} (pass --cri-socket)",
                cri::DEFAULT_SOCKETS.join(" or ")
            ))
        }
        (SandboxLookup::Auto, Some(socket)) => Box::new(AutoLocator::new(cri(socket), cache)),
        (SandboxLookup::Auto, None) => {
            log::info!(
                "no runtime socket at {}: sandboxes are found in the kactus cache {}",
                cri::DEFAULT_SOCKETS.join(" or "),
                cache.cache_dir.display()
            );
            Box::new(cache)
        }
    })
}

/// Asks the runtime first; only when it cannot be reached at all (socket absent, refused,
/// no answer in time) does the kactus cache answer. A runtime that answers "no ready
/// sandbox" is final: the cache may still hold a sandbox the runtime has torn down.
pub struct AutoLocator {
    cri: CriLocator,
    cache: KactusCacheLocator,
    /// Which answered last (`ANSWERED_BY_*`), so each switch is logged once.
    answered_by: AtomicU8,
}

const ANSWERED_BY_NONE: u8 = 0;
const ANSWERED_BY_CRI: u8 = 1;
const ANSWERED_BY_CACHE: u8 = 2;

impl AutoLocator {
    pub fn new(cri: CriLocator, cache: KactusCacheLocator) -> AutoLocator {
        AutoLocator { cri, cache, answered_by: AtomicU8::new(ANSWERED_BY_NONE) }
    }

    fn answered(&self, by: u8, why: impl FnOnce() -> String) {
        if self.answered_by.swap(by, Ordering::Relaxed) != by {
            log::info!("{}", why());
        }
    }
}

impl SandboxLocator for AutoLocator {
    fn locate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<Sandbox, String>> {
        Box::pin(self.cri_else_cache(pod))
    }
}

impl AutoLocator {
    async fn cri_else_cache(&self, pod: &Pod) -> Result<Sandbox, String> {
        match self.cri.lookup(pod).await {
            Ok(sandbox) => {
                self.answered(ANSWERED_BY_CRI, || {
                    format!("sandboxes are found over CRI at {}", self.cri.socket().display())
                });
                Ok(sandbox)
            }
            Err(CriError::Answered(e)) => Err(e),
            Err(CriError::Unreachable(e)) => {
                let sandbox =
                    self.cache.locate(pod).await.map_err(|cache| format!("{e}; and from the cache: {cache}"))?;
                self.answered(ANSWERED_BY_CACHE, || {
                    format!("sandboxes are found in the kactus cache {} ({e})", self.cache.cache_dir.display())
                });
                Ok(sandbox)
            }
        }
    }
}
