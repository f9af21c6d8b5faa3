//! The session with the kernel: what the mount asks of it at INIT (write size, readdirplus,
//! ACLs, export support, the writeback cache when the mount wants it), the read-ahead it is
//! raised to after INIT, and the notifier through which the filesystem tells the kernel of a
//! change it cannot see (an inode flag's ctime).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fuser::{Filesystem, InitFlags, KernelConfig, Notifier, Session};

use super::super::Fs;
use super::MAX_WRITE_BYTES;

/// Sets what the mount asks the kernel for at INIT; a capability the kernel does not offer is
/// done without (the writeback cache with a warning: writes then go through).
pub(super) fn negotiate(config: &mut KernelConfig, fs: &Fs) {
    if let Err(max) = config.set_max_write(MAX_WRITE_BYTES) {
        let _ = config.set_max_write(max);
    }
    let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
    // We clear set-user-ID and set-group-ID bits and capabilities on write, truncation,
    // fallocate and chown ourselves (`Fs::write_as`, `Fs::fallocate_as`,
    // `SetAttr::kill_suid_sgid`). Without this the kernel
    // asks for `security.capability` before every write: a second round trip per write.
    let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
    let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
    // File handles of inodes the kernel evicted resolve by LOOKUP of `.` and `..`
    // (`fs::export`): open_by_handle_at and NFS re-export work instead of ESTALE.
    let _ = config.add_capabilities(InitFlags::FUSE_EXPORT_SUPPORT);
    // The kernel enforces the access ACLs we store (named entries included), reading them
    // with getxattr; inheritance of default ACLs and the ACL side of chmod are ours (`acl`).
    // It also turns `default_permissions` on: a mount whose permissions the daemon checks
    // does without, and its ACLs reach us as the xattrs they are.
    // With FUSE_DONT_MASK it sends the mode unmasked beside the umask, which we apply only
    // where no default ACL replaces it (it would mask it before asking us otherwise).
    if !fs.checks_permissions() {
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
    }
    let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
    if fs.writeback_cache()
        && config
            .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
            .is_err()
    {
        log::warn!("the kernel offers no writeback cache: writes go through");
    }
}

/// Raises the kernel's read-ahead on the mount at `mountpoint` to [`MAX_WRITE_BYTES`], what
/// one read request can carry (the kernel sizes requests by it): a sequential read then comes
/// in requests of a MiB instead of 128 KiB, an eighth of the round trips. The kernel offers no
/// more than 128 KiB at INIT and keeps the lesser of that and our answer, so this is done after
/// INIT, through the mount's device in sysfs (root only: another user's mount keeps 128 KiB).
/// `under` is the device of the mount point's directory before the mount: a stat that finds it
/// again means the mount is gone, and nothing is changed.
///
/// Runs on a thread of its own: its stat of the mount point waits for the session to answer.
pub fn raise_read_ahead(mountpoint: &Path, under: Option<u64>) {
    let mountpoint: PathBuf = mountpoint.to_owned();
    let spawned = std::thread::Builder::new()
        .name("read-ahead".into())
        .spawn(move || {
            let Ok(dev) = std::fs::metadata(&mountpoint).map(|m| m.dev()) else {
                return;
            };
            if Some(dev) == under {
                return;
            }
            let path = format!(
                "/sys/class/bdi/{}:{}/read_ahead_kb",
                libc::major(dev),
                libc::minor(dev)
            );
            if let Err(e) = std::fs::write(&path, (MAX_WRITE_BYTES / 1024).to_string()) {
                log::debug!("read-ahead left at the kernel's: {path}: {e}");
            }
        });
    if let Err(e) = spawned {
        log::debug!("read-ahead left at the kernel's: {e}");
    }
}

/// Where a mount's notifier is kept for its [`FuseFs`] (empty in a session without one).
#[derive(Clone, Default)]
pub struct NotifierSlot(pub(super) Arc<OnceLock<Notifier>>);

impl NotifierSlot {
    pub fn connect<FS: Filesystem>(&self, session: &Session<FS>) {
        let _ = self.0.set(session.notifier());
    }
}

/// Drops entries of the kernel's cache from a thread of its own: dropping an entry takes its
/// directory's lock, which the kernel may hold while it waits for a request of ours (a LOOKUP
/// under an rmdir, say); done from a request thread, it could leave none to answer. So an
/// entry goes shortly after the change that asked for it, not before the change returns.
pub(super) struct EntryDropper {
    queue: std::sync::mpsc::Sender<(u64, Vec<Vec<u8>>)>,
}

impl EntryDropper {
    /// Starts the thread; it ends once the dropper is dropped.
    pub(super) fn start(slot: &NotifierSlot) -> EntryDropper {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<Vec<u8>>)>();
        let slot = Arc::clone(&slot.0);
        let spawned = std::thread::Builder::new()
            .name("drop-entries".into())
            .spawn(move || {
                for (dir, names) in rx {
                    let Some(n) = slot.get() else { continue };
                    for name in names {
                        // ENOENT: the kernel holds no such entry.
                        let _ =
                            n.inval_entry(fuser::INodeNo(dir), std::ffi::OsStr::from_bytes(&name));
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the thread that drops cached entries: {e}");
        }
        EntryDropper { queue: tx }
    }

    /// Asks for the kernel's entries of `names` in directory `dir` to be dropped.
    pub(super) fn drop_entries(&self, dir: u64, names: Vec<Vec<u8>>) {
        if names.is_empty() {
            return;
        }
        if self.queue.send((dir, names)).is_err() {
            log::warn!("the thread that drops cached entries is gone: entries of {dir} stay");
        }
    }
}
