//! SIGINT, SIGTERM and SIGHUP unmount the daemon's filesystem, which ends its session loop and
//! closes the store cleanly.

use std::sync::Arc;

use fuser::SessionUnmounter;
use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts a thread that waits for the signals and unmounts through `unmounter` (once the
/// session has put one there).
pub fn start_unmount_on_signal(
    unmounter: Arc<Mutex<Option<SessionUnmounter>>>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                log::info!("signal {sig}: unmounting");
                if let Some(u) = unmounter.lock().as_mut()
                    && let Err(e) = u.unmount()
                {
                    log::error!("unmount on signal {sig}: {e}");
                }
            }
        })?;
    Ok(())
}
