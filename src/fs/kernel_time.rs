//! Times as the kernel sent them, from what fuser makes of them.
//!
//! fuser 0.18 turns a timespec before the epoch, (secs < 0, nsecs > 0), into
//! `UNIX_EPOCH - (|secs| + nsecs)` (its `system_time_from_time`), where the kernel means
//! `secs + nsecs`: `touch -d @-99999.25` arrived as -100000.75. ext4 keeps the time it was
//! given, so this undoes fuser's reading; the times that logstorfs replies with go through
//! fuser's other conversion, which is right.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time the kernel sent, given the `SystemTime` fuser 0.18 built from it.
pub fn from_fuser(t: SystemTime) -> SystemTime {
    match UNIX_EPOCH.duration_since(t) {
        // fuser's duration before the epoch is |secs| and nsecs side by side.
        Ok(before) if before.subsec_nanos() != 0 => {
            UNIX_EPOCH - Duration::from_secs(before.as_secs())
                + Duration::from_nanos(u64::from(before.subsec_nanos()))
        }
        _ => t,
    }
}
