//! How the filesystem is encoded as engine records. This is the ONLY place that builds engine
//! keys or encodes record values for the filesystem.
//!
//! Every key starts with a one-byte type tag, followed by big-endian fields, so that all records
//! of one inode (or one directory) are adjacent in key order and can be scanned or deleted with
//! one prefix or range:
//!
//! | tag   | key layout                         | value                                        |
//! |-------|------------------------------------|----------------------------------------------|
//! | `I`   | `I ino:u64`                        | [`InodeRecord`] (100 bytes, see `encode`)    |
//! | `D`   | `D parent:u64 name_hash:u64`       | list of [`DirEntry`] sharing the hash        |
//! | `C`   | `C ino:u64 page_index:u64`         | file bytes of one 4 KiB page (up to 4096); empty: unwritten |
//! | `L`   | `L ino:u64`                        | symlink target bytes                         |
//! | `X`   | `X ino:u64 name...`                | xattr value                                  |
//! | `O`   | `O ino:u64`                        | empty: the inode is an orphan (unlinked while open) |
//! | `M`   | `M name...`                        | filesystem metadata (inode high-water mark)  |
//! | `G`   | `G ino:u64`                        | group id:u32: directory `ino` is a group root |
//!
//! Layout decision: file data lives in 4 KiB pages, one record per page. A small overwrite
//! rewrites at most one page (4 KiB), never a large chunk, and a page that was never written is
//! simply absent (reads as zeros: sparse files). The price is a per-record overhead (header plus
//! a 17-byte key) of about 1% and one index entry per 4 KiB; bigger extents that compaction
//! merges are a later optimisation. The last page of a file may be shorter than 4096 bytes;
//! bytes beyond a page's stored length read as zeros. An empty page is one `fallocate`
//! allocated and nothing wrote since (see `unwritten.rs`): zeros, with a full page's space held.
//!
//! Directory entries are keyed by a 56-bit hash of the name (FNV-1a), so the key stays small
//! whatever the name's length; names that share a hash share one record whose value is the list
//! of those entries. The readdir cookie of an entry is `hash << 7 | (position_in_list + 1)`, which
//! survives insertions and removals of other names (`rm -r` reads while deleting) and fits in 63
//! bits: the kernel keeps a directory's position as a signed `loff_t`, so a cookie with bit 63
//! set would make `lseek`/`seekdir` to it fail with EINVAL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::GroupId;

pub const TAG_INODE: u8 = b'I';
pub const TAG_DIRENT: u8 = b'D';
pub const TAG_CHUNK: u8 = b'C';
pub const TAG_SYMLINK: u8 = b'L';
pub const TAG_XATTR: u8 = b'X';
pub const TAG_ORPHAN: u8 = b'O';
pub const TAG_META: u8 = b'M';
pub const TAG_GROUP_ROOT: u8 = b'G';

/// Size of one data page record's payload.
pub const PAGE_SIZE: u64 = 4096;

/// Most entries that may share one name hash (the cookie keeps the position in 7 bits). Stores
/// written before the cookie lost its eighth bit may hold lists of up to 255: see
/// [`dirent_cookie`].
pub const MAX_ENTRIES_PER_HASH: usize = 127;

/// Bits of a cookie below the name hash.
const COOKIE_POSITION_BITS: u32 = 7;
/// The position part of a cookie that means "the whole list of this hash was returned".
const COOKIE_LIST_DONE: u64 = (1 << COOKIE_POSITION_BITS) - 1;

/// Name of the metadata record holding the inode high-water mark.
pub const META_INODE_HIGH_WATER: &[u8] = b"inode_high_water";

/// Length of the prefixes by which the filesystem deletes a file's pages and xattrs (tag and
/// inode number); the engine tracks them so that compaction can drop those range deletes.
pub const TOMBSTONE_PREFIX_LENGTHS: &[usize] = &[9];

fn key_with_ino(tag: u8, ino: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(tag);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

pub fn inode_key(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_INODE, ino)
}

pub fn symlink_key(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_SYMLINK, ino)
}

pub fn orphan_key(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_ORPHAN, ino)
}

/// Prefix of every orphan record.
pub fn orphan_prefix() -> Vec<u8> {
    vec![TAG_ORPHAN]
}

/// The inode number of an orphan key, if it is one.
pub fn orphan_ino(key: &[u8]) -> Option<u64> {
    if key.len() == 9 && key[0] == TAG_ORPHAN {
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    } else {
        None
    }
}

pub fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(TAG_META);
    k.extend_from_slice(name);
    k
}

/// The record saying directory `ino` is a compaction group root (value: [`encode_group`]).
/// Only roots have one; every other directory's group is its nearest root's (`fs::groups`).
pub fn group_root_key(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_GROUP_ROOT, ino)
}

/// Prefix of every group root record.
pub fn group_root_prefix() -> Vec<u8> {
    vec![TAG_GROUP_ROOT]
}

/// The directory of a group root key, if it is one.
pub fn group_root_ino(key: &[u8]) -> Option<u64> {
    if key.len() == 9 && key[0] == TAG_GROUP_ROOT {
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    } else {
        None
    }
}

/// Encodes a group id (4 bytes, big-endian).
pub fn encode_group(g: GroupId) -> Vec<u8> {
    g.to_be_bytes().to_vec()
}

pub fn decode_group(buf: &[u8]) -> Option<GroupId> {
    Some(GroupId::from_be_bytes(buf.try_into().ok()?))
}

/// Prefix of every inode record.
pub fn inode_prefix() -> Vec<u8> {
    vec![TAG_INODE]
}

/// The inode number of an inode key, if it is one.
pub fn inode_ino(key: &[u8]) -> Option<u64> {
    if key.len() == 9 && key[0] == TAG_INODE {
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    } else {
        None
    }
}

/// Prefix of every data page of `ino`.
pub fn chunk_prefix(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_CHUNK, ino)
}

pub fn chunk_key(ino: u64, page_index: u64) -> Vec<u8> {
    let mut k = key_with_ino(TAG_CHUNK, ino);
    k.extend_from_slice(&page_index.to_be_bytes());
    k
}

/// The page index of a chunk key of `ino`, if it is one.
pub fn chunk_page_index(ino: u64, key: &[u8]) -> Option<u64> {
    if key.len() == 17 && key[0] == TAG_CHUNK && key[1..9] == ino.to_be_bytes() {
        Some(u64::from_be_bytes(key[9..17].try_into().ok()?))
    } else {
        None
    }
}

/// Exclusive end of `ino`'s chunk keys (the first key after all of them).
pub fn chunk_end(ino: u64) -> Vec<u8> {
    // `C ino` followed by 8 bytes of 0xff is the largest page key; the prefix of the next inode
    // sorts after all of them.
    match ino.checked_add(1) {
        Some(next) => key_with_ino(TAG_CHUNK, next),
        None => vec![TAG_CHUNK + 1],
    }
}

pub fn xattr_prefix(ino: u64) -> Vec<u8> {
    key_with_ino(TAG_XATTR, ino)
}

pub fn xattr_key(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = xattr_prefix(ino);
    k.extend_from_slice(name);
    k
}

pub fn dirent_prefix(parent: u64) -> Vec<u8> {
    key_with_ino(TAG_DIRENT, parent)
}

pub fn dirent_key(parent: u64, hash: u64) -> Vec<u8> {
    let mut k = dirent_prefix(parent);
    k.extend_from_slice(&hash.to_be_bytes());
    k
}

/// The name hash of a dirent key of `parent`, if it is one.
pub fn dirent_key_hash(parent: u64, key: &[u8]) -> Option<u64> {
    if key.len() == 17 && key[0] == TAG_DIRENT && key[1..9] == parent.to_be_bytes() {
        Some(u64::from_be_bytes(key[9..17].try_into().ok()?))
    } else {
        None
    }
}

/// The 56-bit, never-zero name hash (FNV-1a 64, top 56 bits). Stable across versions: it is
/// part of the on-disk format.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 8).max(1)
}

/// Readdir cookies 1 and 2 are `.` and `..`; entries get `hash << 7 | (position + 1)`, which is
/// at least 129 because the hash is never zero, and below 2^63 because it has 56 bits. The last
/// position a cookie can name (126) means "the whole list done": so an entry at or past it in a
/// list longer than [`MAX_ENTRIES_PER_HASH`] (an older store) gets that cookie, and a listing
/// resumed there skips the rest of its list rather than repeat it for ever.
pub fn dirent_cookie(hash: u64, position: usize) -> u64 {
    debug_assert!(hash < 1 << 56);
    (hash << COOKIE_POSITION_BITS) | (position as u64 + 1).min(COOKIE_LIST_DONE)
}

/// Splits a cookie into (hash, number of entries of that hash already returned; `usize::MAX`
/// for all of them).
pub fn split_cookie(cookie: u64) -> (u64, usize) {
    let done = cookie & COOKIE_LIST_DONE;
    let done = if done == COOKIE_LIST_DONE {
        usize::MAX
    } else {
        done as usize
    };
    (cookie >> COOKIE_POSITION_BITS, done)
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    NamedPipe,
    CharDevice,
    BlockDevice,
    Socket,
}

impl FileKind {
    pub fn to_byte(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::NamedPipe => 4,
            FileKind::CharDevice => 5,
            FileKind::BlockDevice => 6,
            FileKind::Socket => 7,
        }
    }

    pub fn from_byte(b: u8) -> Option<FileKind> {
        Some(match b {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::NamedPipe,
            5 => FileKind::CharDevice,
            6 => FileKind::BlockDevice,
            7 => FileKind::Socket,
            _ => return None,
        })
    }

    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::NamedPipe,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFSOCK => FileKind::Socket,
            0 => FileKind::Regular,
            _ => return None,
        })
    }
}

/// A timestamp as stored: seconds and nanoseconds since the epoch (negative seconds allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -(d.as_secs() as i64),
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -(d.as_secs() as i64) - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nanos))
        }
    }
}

/// The persisted attributes of an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub flags: u32,
    /// File size in bytes (symlinks: target length; directories: 0).
    pub size: u64,
    /// Number of data page records stored (st_blocks = pages * 8).
    pub pages: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    /// The compaction group this record was last written into (informational: the group of a
    /// directory is its nearest group root's, kept by `fs::groups`, and a file's is its home
    /// directory's).
    pub group: GroupId,
    /// Directories: the parent directory (root: itself). Others: the home directory, whose
    /// group the file's records go to (DESIGN.md section 3). It follows a rename out of the home
    /// directory; when the home entry is unlinked and other links remain, or the last link goes
    /// while the file is open, the home becomes the root.
    pub parent: u64,
}

/// Format version of an inode record value (first byte).
const INODE_RECORD_VERSION: u8 = 1;
/// Encoded length of an inode record value.
pub const INODE_RECORD_SIZE: usize = 1 + 1 + 2 + 4 * 5 + 8 + 8 + 12 * 4 + 4 + 8;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.bytes(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn ts(&mut self) -> Option<Timestamp> {
        let secs = self.u64()? as i64;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return None;
        }
        Some(Timestamp { secs, nanos })
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

fn put_ts(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&(t.secs as u64).to_be_bytes());
    out.extend_from_slice(&t.nanos.to_be_bytes());
}

impl InodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INODE_RECORD_SIZE);
        out.push(INODE_RECORD_VERSION);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.perm.to_be_bytes());
        for v in [self.nlink, self.uid, self.gid, self.rdev, self.flags] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.pages.to_be_bytes());
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            put_ts(&mut out, t);
        }
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&self.parent.to_be_bytes());
        debug_assert_eq!(out.len(), INODE_RECORD_SIZE);
        out
    }

    /// Decodes a stored inode record; `None` if the bytes are not a valid record.
    pub fn decode(buf: &[u8]) -> Option<InodeRecord> {
        let mut r = Reader::new(buf);
        if r.u8()? != INODE_RECORD_VERSION {
            return None;
        }
        let kind = FileKind::from_byte(r.u8()?)?;
        let perm = r.u16()?;
        let nlink = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let rdev = r.u32()?;
        let flags = r.u32()?;
        let size = r.u64()?;
        let pages = r.u64()?;
        let atime = r.ts()?;
        let mtime = r.ts()?;
        let ctime = r.ts()?;
        let crtime = r.ts()?;
        let group = r.u32()?;
        let parent = r.u64()?;
        if !r.done() {
            return None;
        }
        Some(InodeRecord {
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev,
            flags,
            size,
            pages,
            atime,
            mtime,
            ctime,
            crtime,
            group,
            parent,
        })
    }
}

/// One directory entry: a name in a parent, pointing at a child inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
}

/// Encodes the entries sharing one name hash: repeated `ino:u64 kind:u8 name_len:u16 name`.
pub fn encode_dirents(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.ino.to_be_bytes());
        out.push(e.kind.to_byte());
        out.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&e.name);
    }
    out
}

/// Decodes a dirent record value; `None` if malformed.
pub fn decode_dirents(buf: &[u8]) -> Option<Vec<DirEntry>> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.done() {
        let ino = r.u64()?;
        let kind = FileKind::from_byte(r.u8()?)?;
        let len = r.u16()? as usize;
        let name = r.bytes(len)?.to_vec();
        out.push(DirEntry { name, ino, kind });
    }
    Some(out)
}

/// Encodes a u64 metadata value.
pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn decode_u64(buf: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(buf.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InodeRecord {
        InodeRecord {
            kind: FileKind::Regular,
            perm: 0o644,
            nlink: 3,
            uid: 1000,
            gid: 100,
            rdev: 7,
            flags: 0,
            size: 123_456_789,
            pages: 42,
            atime: Timestamp { secs: 1, nanos: 2 },
            mtime: Timestamp {
                secs: -5,
                nanos: 999_999_999,
            },
            ctime: Timestamp {
                secs: 1_700_000_000,
                nanos: 0,
            },
            crtime: Timestamp { secs: 0, nanos: 0 },
            group: 9,
            parent: 77,
        }
    }

    #[test]
    fn inode_record_round_trips_and_rejects_garbage() {
        let r = sample();
        let enc = r.encode();
        assert_eq!(enc.len(), INODE_RECORD_SIZE);
        assert_eq!(InodeRecord::decode(&enc), Some(r));
        assert_eq!(InodeRecord::decode(&enc[..enc.len() - 1]), None);
        let mut bad = enc.clone();
        bad[0] = 99;
        assert_eq!(InodeRecord::decode(&bad), None);
        let mut bad = enc;
        bad[1] = 0;
        assert_eq!(InodeRecord::decode(&bad), None);
    }

    #[test]
    fn keys_sort_by_type_then_big_endian_fields() {
        assert!(chunk_key(1, 255) < chunk_key(1, 256));
        assert!(chunk_key(1, u64::MAX) < chunk_key(2, 0));
        assert!(chunk_key(1, u64::MAX) < chunk_end(1));
        assert!(chunk_end(1) <= chunk_key(2, 0));
        assert!(chunk_prefix(1) < chunk_key(1, 0));
        assert_eq!(chunk_page_index(5, &chunk_key(5, 300)), Some(300));
        assert_eq!(chunk_page_index(6, &chunk_key(5, 300)), None);
        assert_eq!(inode_key(0x0102)[..], [b'I', 0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(dirent_key(3, 1).starts_with(&dirent_prefix(3)));
        assert!(!dirent_key(4, 1).starts_with(&dirent_prefix(3)));
        assert_eq!(dirent_key_hash(3, &dirent_key(3, 99)), Some(99));
        assert_eq!(orphan_ino(&orphan_key(12)), Some(12));
        assert!(xattr_key(1, b"user.a").starts_with(&xattr_prefix(1)));
    }

    #[test]
    fn name_hash_is_stable_56_bit_and_nonzero() {
        // Pinned values: the hash is part of the on-disk format.
        assert_eq!(name_hash(b""), 0xcbf2_9ce4_8422_2325 >> 8);
        assert_eq!(name_hash(b"a"), 0xaf63_dc4c_8601_ec8c >> 8);
        for n in [&b"x"[..], b"hello", b"a much longer file name.txt"] {
            let h = name_hash(n);
            assert!(h > 0 && h < (1 << 56));
        }
        let c = dirent_cookie(name_hash(b"x"), 3);
        assert!(c > 2);
        assert_eq!(split_cookie(c), (name_hash(b"x"), 4));
        // Every cookie is a positive 63-bit offset; the last position of a list means all.
        let top = (1 << 56) - 1;
        let last = dirent_cookie(top, MAX_ENTRIES_PER_HASH - 1);
        assert!(last <= i64::MAX as u64 && dirent_cookie(1, 0) > 2);
        assert_eq!(split_cookie(last), (top, usize::MAX));
        assert_eq!(split_cookie(dirent_cookie(top, 200)), (top, usize::MAX));
    }

    #[test]
    fn dirents_round_trip() {
        let v = vec![
            DirEntry {
                name: b"a".to_vec(),
                ino: 5,
                kind: FileKind::Directory,
            },
            DirEntry {
                name: vec![0xff; 255],
                ino: u64::MAX,
                kind: FileKind::Symlink,
            },
        ];
        assert_eq!(decode_dirents(&encode_dirents(&v)), Some(v));
        assert_eq!(decode_dirents(&[1, 2, 3]), None);
        assert_eq!(decode_dirents(&[]), Some(vec![]));
    }

    #[test]
    fn timestamps_round_trip_before_and_after_epoch() {
        for t in [
            UNIX_EPOCH + Duration::new(5, 7),
            UNIX_EPOCH - Duration::new(5, 7),
            UNIX_EPOCH - Duration::new(5, 0),
            UNIX_EPOCH,
        ] {
            assert_eq!(Timestamp::from_system(t).to_system(), t);
        }
    }

    #[test]
    fn kind_from_mode() {
        assert_eq!(
            FileKind::from_mode(libc::S_IFDIR | 0o755),
            Some(FileKind::Directory)
        );
        assert_eq!(FileKind::from_mode(0o644), Some(FileKind::Regular));
        assert_eq!(FileKind::from_mode(libc::S_IFSOCK), Some(FileKind::Socket));
    }
}
