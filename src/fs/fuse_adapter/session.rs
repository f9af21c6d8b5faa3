//! The session with the kernel: what the mount asks of it at INIT (write size, readdirplus,
//! ACLs, export support, the writeback cache when the mount wants it), and the notifier through
//! which the filesystem tells the kernel of a change it cannot see (an inode flag's ctime).

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
    // With FUSE_DONT_MASK it sends the mode unmasked beside the umask, which we apply only
    // where no default ACL replaces it (it would mask it before asking us otherwise).
    let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
    let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
    if fs.writeback_cache()
        && config
            .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
            .is_err()
    {
        log::warn!("the kernel offers no writeback cache: writes go through");
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
