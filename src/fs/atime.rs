//! Access times, kept as ext4 keeps them under the mount's atime option.
//!
//! The kernel never updates atime on a FUSE filesystem itself (every FUSE inode is
//! `S_NOATIME`): it leaves it to the daemon, and marks its cached atime stale after each READ,
//! READDIR and READLINK it sends. So `Fs::read`, `Fs::readdir` and `Fs::readlink` touch atime,
//! and the rule below decides whether that costs a write: under `relatime` (the kernel's
//! default) only when the atime is not after the mtime or the ctime, or is a day old
//! (`relatime_need_update`), so repeated reads of an unchanged file write nothing.
//!
//! A read the page cache answers never reaches us. The adapter therefore opens a file for
//! reading without `FOPEN_KEEP_CACHE` exactly when a read would touch its atime
//! ([`needs_update`] now), so the first read after a change reaches the daemon, as it reaches
//! ext4's atime code; other opens keep the cache.

use super::inode_flags::FS_NOATIME_FL;
use super::keys::{InodeRecord, Timestamp};

/// The mount's atime option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// `noatime` (and any read-only mount): reads never change atime.
    NoAtime,
    /// `relatime`, the kernel's default (also what `atime` means on Linux).
    #[default]
    Relatime,
    /// `strictatime`: every access that finds an atime other than now sets it.
    StrictAtime,
}

impl AtimeMode {
    /// The mode a mount option names, if it names one.
    pub fn from_option(opt: &str) -> Option<AtimeMode> {
        match opt {
            "noatime" => Some(AtimeMode::NoAtime),
            "relatime" | "atime" => Some(AtimeMode::Relatime),
            "strictatime" => Some(AtimeMode::StrictAtime),
            _ => None,
        }
    }
}

/// Seconds after which `relatime` refreshes an atime even if the file did not change.
pub const RELATIME_MAX_AGE_SECS: i64 = 24 * 60 * 60;

fn key(t: Timestamp) -> (i64, u32) {
    (t.secs, t.nanos)
}

/// Whether an access at `now` changes `rec`'s atime (Linux's `atime_needs_update` with
/// `relatime_need_update`): never for an inode flagged no-atime.
pub fn needs_update(mode: AtimeMode, rec: &InodeRecord, now: Timestamp) -> bool {
    // `chattr +A`: ext4 marks such an inode S_NOATIME, which `atime_needs_update` obeys first.
    if rec.flags & FS_NOATIME_FL != 0 {
        return false;
    }
    let atime = key(rec.atime);
    let due = match mode {
        AtimeMode::NoAtime => false,
        AtimeMode::StrictAtime => true,
        AtimeMode::Relatime => {
            key(rec.mtime) >= atime
                || key(rec.ctime) >= atime
                || now.secs.saturating_sub(rec.atime.secs) >= RELATIME_MAX_AGE_SECS
        }
    };
    due && atime != key(now)
}
