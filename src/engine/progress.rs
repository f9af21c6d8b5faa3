//! Progress of the long passes over a store (fsck's check, recovery's scan after a crash), for
//! a front end to show: the engine reports how far a pass is, never how to show it. One
//! observer per process, set once by the front end (the command line sets a progress bar when
//! stderr is a terminal); without one, a pass reports to nobody.

use std::sync::OnceLock;

/// What a front end does with a pass's progress.
pub trait Observer: Send + Sync {
    /// A pass of `total` steps (segments) begins; `what` names it for a person.
    fn begin(&self, what: &'static str, total: u64);
    /// `done` of the pass's steps are done.
    fn advance(&self, done: u64);
    /// The pass ended (finished or failed).
    fn end(&self);
}

static OBSERVER: OnceLock<Box<dyn Observer>> = OnceLock::new();

/// Sets the process's observer; a second call is ignored.
pub fn set_observer(observer: Box<dyn Observer>) {
    let _ = OBSERVER.set(observer);
}

/// A pass under way: reports its end when dropped.
pub(crate) struct Pass {
    observer: Option<&'static dyn Observer>,
}

impl Pass {
    pub(crate) fn begin(what: &'static str, total: u64) -> Pass {
        let observer = OBSERVER.get().map(|o| &**o);
        if let Some(o) = observer {
            o.begin(what, total);
        }
        Pass { observer }
    }

    pub(crate) fn advance(&self, done: u64) {
        if let Some(o) = self.observer {
            o.advance(done);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(o) = self.observer {
            o.end();
        }
    }
}
