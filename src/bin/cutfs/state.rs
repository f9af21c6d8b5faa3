//! The inode table: one open descriptor per backing inode the kernel has looked up, keyed by
//! the inode number the kernel sees, with each regular file's pending (unsynced) data. Holding
//! descriptors rather than paths keeps a node reachable while names above it move.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::time::UNIX_EPOCH;

use fuser::{Errno, FileAttr, FileType, INodeNo};
use parking_lot::Mutex;

use crate::pending::Pending;
use crate::syscalls::{fstat, fstatat, kind_of, openat, time};
use crate::undo::Change;

pub struct Node {
    pub fd: OwnedFd,
    pub kind: FileType,
    /// Regular files only.
    pub data: Option<Pending>,
}
pub struct State {
    pub nodes: HashMap<u64, Node>,
    pub changes: Vec<Change>,
    pub trash: OwnedFd,
    pub trash_count: u64,
    pub root_ino: u64,
    pub cut: bool,
}

pub struct Shared {
    pub state: Mutex<State>,
    pub seed: u64,
    pub keep: Option<f64>,
}
impl State {
    /// The inode number the kernel sees: the backing one, with the root's swapped for 1.
    pub fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            1
        } else if st_ino == 1 {
            self.root_ino
        } else {
            st_ino
        }
    }

    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    pub fn live(&self) -> Result<(), Errno> {
        if self.cut { Err(Errno::EIO) } else { Ok(()) }
    }

    pub fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let st = fstat(&node.fd)?;
        let mut size = st.st_size as u64;
        if let Some(p) = &node.data {
            size = p.size;
        }
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512).max(st.st_blocks as u64),
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Looks `name` up in directory `parent`, opening a descriptor for it the first time.
    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let st = fstatat(&self.node(parent)?.fd, name)?;
        let ino = self.fuse_ino(st.st_ino);
        if !self.nodes.contains_key(&ino) {
            let dir = &self.node(parent)?.fd;
            let kind = kind_of(st.st_mode);
            let fd = match kind {
                FileType::RegularFile => openat(dir, name, libc::O_RDWR | libc::O_NOFOLLOW, 0)
                    .or_else(|_| openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0))?,
                FileType::Directory => openat(
                    dir,
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?,
                _ => openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?,
            };
            let data = (kind == FileType::RegularFile).then(|| Pending::new(st.st_size as u64));
            self.nodes.insert(ino, Node { fd, kind, data });
        }
        self.attr(ino)
    }

    pub fn trash_name(&mut self) -> OsString {
        self.trash_count += 1;
        OsString::from(format!("t{}", self.trash_count))
    }

    pub fn fd(&self, ino: u64) -> Result<&OwnedFd, Errno> {
        Ok(&self.node(ino)?.fd)
    }

    pub fn pending(&mut self, ino: u64) -> Result<(&OwnedFd, &mut Pending), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ESTALE)?;
        match &mut node.data {
            Some(p) => Ok((&node.fd, p)),
            None => Err(Errno::EISDIR),
        }
    }
}
