//! SIGINT, SIGTERM and SIGHUP unmount the daemon's filesystem, which ends its session loop and
//! closes the store cleanly. A signal that comes before the session can be unmounted (while
//! the store is opened and recovered, or between the mount and the handing over of its
//! unmounter) is remembered, and the session is unmounted as soon as it exists.

use std::sync::Arc;

use fuser::SessionUnmounter;
use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Where the session's unmounter goes once there is one, and whether a signal asked for the
/// unmount before that.
#[derive(Default)]
pub struct UnmountSlot {
    unmounter: Option<SessionUnmounter>,
    requested: bool,
}

pub type SharedUnmountSlot = Arc<Mutex<UnmountSlot>>;

impl UnmountSlot {
    /// Hands over the session's unmounter; unmounts at once if a signal already asked.
    pub fn set(slot: &SharedUnmountSlot, mut unmounter: SessionUnmounter) {
        let mut s = slot.lock();
        if s.requested {
            log::info!("unmounting: a signal came while the mount was being set up");
            if let Err(e) = unmounter.unmount() {
                log::error!("unmount on an earlier signal: {e}");
            }
        }
        s.unmounter = Some(unmounter);
    }

    /// The session has ended: nothing left to unmount.
    pub fn clear(slot: &SharedUnmountSlot) {
        slot.lock().unmounter = None;
    }
}

/// Starts a thread that waits for the signals and unmounts through `slot` (at once, or once
/// the session has put its unmounter there).
pub fn start_unmount_on_signal(slot: SharedUnmountSlot) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                log::info!("signal {sig}: unmounting");
                let mut s = slot.lock();
                s.requested = true;
                if let Some(u) = s.unmounter.as_mut()
                    && let Err(e) = u.unmount()
                {
                    log::error!("unmount on signal {sig}: {e}");
                }
            }
        })?;
    Ok(())
}
