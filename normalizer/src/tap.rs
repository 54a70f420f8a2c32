//! A hook on committed batches, for live views of the pipeline (`callhook tap`, the console).
//!
//! Guarantee: the observer sees each batch after the sink committed it (so a live view never
//! shows an event the database does not hold), on the loop's thread; it must not block. The
//! binary installs one that hands the items to a lossy `tokio::sync::broadcast` fan-out. It is
//! process-wide rather than a loop field because the loop is rebuilt by a factory on every
//! restart, in both modes, and the observer outlives them all.

use std::sync::{Arc, OnceLock};

use callhook_sinks::SinkItem;

/// Called with the items of every committed batch (pushes with their events, dead letters).
pub type CommitObserver = Arc<dyn Fn(&[SinkItem]) + Send + Sync>;

static OBSERVER: OnceLock<CommitObserver> = OnceLock::new();

/// Installs the process's observer; returns `false` (and changes nothing) when one already is.
pub fn set_commit_observer(observer: CommitObserver) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Hands a committed batch to the observer, if any.
pub(crate) fn committed(items: &[SinkItem]) {
    if let Some(observer) = OBSERVER.get() {
        observer(items);
    }
}
