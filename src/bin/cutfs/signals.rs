//! The signals that drive cutfs: SIGUSR1 and SIGUSR2 cut the power, SIGTERM and SIGINT
//! unmount. They are taken by one thread with sigwait, so that a cut runs under the state's
//! lock like any operation and never inside a signal handler; every other thread has them
//! blocked.

use fuser::SessionUnmounter;

use crate::pending::Rng;
use crate::state::Shared;

/// Blocks the signals in the calling thread; the FUSE threads started after this inherit the
/// mask.
pub fn block() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for the signals of `set` and acts on each, until one unmounts.
pub fn serve(set: &libc::sigset_t, shared: &Shared, mut unmounter: SessionUnmounter) {
    let mut rng = Rng::new(shared.seed);
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised signal set, `sig` a valid out-pointer.
        if unsafe { libc::sigwait(set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            libc::SIGUSR1 | libc::SIGUSR2 => cut(sig, shared, &mut rng),
            _ => {
                if let Err(e) = unmounter.unmount() {
                    // Busy (a process still uses the mount): leave rather than ignore the
                    // request; the kernel then fails every access until a lazy unmount.
                    eprintln!("cutfs: unmount on signal {sig}: {e}; exiting");
                    std::process::exit(1);
                }
                return;
            }
        }
    }
}

/// SIGUSR1 cuts keeping nothing pending, SIGUSR2 keeping each pending sector with the
/// probability `--keep` or, without it, one drawn per cut.
fn cut(sig: libc::c_int, shared: &Shared, rng: &mut Rng) {
    let mut s = shared.state.lock();
    if s.cut {
        eprintln!("cutfs: power cut done already");
        return;
    }
    let (mode, p) = if sig == libc::SIGUSR1 {
        ("keep nothing".to_string(), None)
    } else {
        let p = shared
            .keep
            .unwrap_or_else(|| rng.below(1001) as f64 / 1000.0);
        (format!("keep each with p={p:.3}"), Some(p))
    };
    let what = s.power_cut(rng, p);
    eprintln!(
        "cutfs: power cut done ({mode}, seed {}): {what}",
        shared.seed
    );
}
