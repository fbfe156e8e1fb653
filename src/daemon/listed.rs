//! Whether a watch has delivered its first complete list, for any number of waiters.
//!
//! kube-rs's `Store::wait_until_ready` keeps one waker per store (a oneshot channel), so two
//! tasks waiting on the same store at once leave one of them waiting forever; the `Controller`
//! already waits on its own store. This marks the list from the watch stream itself.

use futures::{Stream, TryStreamExt};
use kube::runtime::watcher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Listed(Arc<Inner>);

#[derive(Default)]
struct Inner {
    done: AtomicBool,
    notify: Notify,
}

impl Listed {
    pub fn is_done(&self) -> bool {
        self.0.done.load(Ordering::SeqCst)
    }

    /// Returns once the first list is in.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    /// Passes a watch stream through, marking the end of its first list (after the reflector,
    /// when it comes after one, has applied it) and calling `then` once with it.
    pub fn track<K, S>(&self, stream: S, then: impl Fn() + Send + 'static) -> impl Stream<Item = S::Item> + Send
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    {
        let listed = self.clone();
        stream.inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) && !listed.is_done() {
                then();
                listed.0.done.store(true, Ordering::SeqCst);
                listed.0.notify.notify_waiters();
            }
        })
    }
}
