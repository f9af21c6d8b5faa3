//! File handles: what `name_to_handle_at`/`open_by_handle_at`, and so an NFS server re-exporting
//! a mount, need from the daemon once the kernel negotiated `FUSE_EXPORT_SUPPORT`.
//!
//! A FUSE file handle is the node id and the 32-bit inode generation the daemon gave in its
//! entry reply (the kernel's `fuse_encode_fh`). When the handle is opened and the inode is no
//! longer in the kernel's inode cache (it was evicted, the daemon got its FORGET), the kernel
//! sends LOOKUP of `.` in the node id ([`Fs::lookup_ino`]), and for a directory that it must
//! connect to the tree, LOOKUP of `..` (`Fs::lookup`, from the directory's `parent` field). It
//! then compares the generation in the reply with the handle's: a mismatch, or ENOENT, is
//! ESTALE for the caller.
//!
//! Both answers come from the store, never only from the in-memory node table: a forgotten inode
//! has no node left (`Fs::forget` drops it), and after a remount no inode but the root has one.
//!
//! Generations: inode numbers are never reused within a store's life as long as every create is
//! kept: the high-water mark (`M inode_high_water`) is raised in the create's own batch, so a
//! number at or above the persisted mark is never handed out twice. But a power cut keeps the
//! batches up to some LSN at or after the last sync only: a create (with the raise of the mark
//! it carried) that was not synced can vanish, and its number is handed out again after the
//! remount. An NFS client may hold a handle of the vanished file (NFS clients keep handles across
//! a server restart), which must then fail with ESTALE rather than open the new file. So the
//! generation is derived from the inode's birth time (`crtime`, nanoseconds, set once at creation:
//! Linux has no call that changes it, and fuser passes a crtime in SETATTR only on macOS), which
//! differs between the vanished inode and its successor, without changing the inode record.
//! Within one mount numbers are never reused, so the kernel never sees two generations for one
//! node id. The root's generation is 0, as the kernel requires.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Attr, FsError, FsResult, ROOT_INO, to_attr};
use super::{FileKind, Fs};

/// The generation of inode `ino` born at `crtime` (see the module doc): 32 bits, since the
/// kernel keeps `i_generation` and the handle's generation as 32-bit values.
pub fn generation(ino: u64, crtime: SystemTime) -> u64 {
    if ino == ROOT_INO {
        return 0;
    }
    let nanos = match crtime.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as u64,
        Err(e) => (e.duration().as_nanos() as u64).wrapping_neg(),
    };
    // splitmix64's finaliser: neighbouring birth times give unrelated generations, so the 32
    // bits kept differ for any two births, not only for births more than 4 s apart.
    let mut x = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x >> 32
}

/// The generation of the inode `a` describes.
pub fn attr_generation(a: &Attr) -> u64 {
    generation(a.ino, a.crtime)
}

impl Fs {
    /// LOOKUP of `.` in node `ino`, of any file type: the kernel asks it to open a file handle
    /// whose inode left its cache. Takes one lookup reference, like any lookup. ENOENT (which
    /// the kernel turns into ESTALE) for a number never handed out and for an inode whose
    /// records are gone: an unlinked file nobody has open, a removed directory, or a ghost the
    /// kernel had not yet forgotten when it asked (its FORGET may still be on the way).
    pub fn lookup_ino(&self, ino: u64) -> FsResult<Attr> {
        let mut st = self.state.lock();
        let opens = st.nodes.get(&ino).map_or(0, |n| n.opens);
        // From the store when no node is left (`Fs::load`); a ghost's in-memory copy has nlink 0.
        let rec = self.load(&st, ino)?;
        // At nlink 0 the records stay only while the file is open (an orphan): the kernel holds
        // such an inode; any other is a ghost or about to be purged, and a removed directory
        // has no name to come back by.
        if rec.nlink == 0 && (opens == 0 || rec.kind == FileKind::Directory) {
            return Err(FsError::NotFound);
        }
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }
}
