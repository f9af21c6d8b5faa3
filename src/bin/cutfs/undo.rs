//! Undo records of namespace changes not yet durable. A change is applied to the backing
//! directory at once, with a record of how to reverse it; an fsync of a directory it touches
//! makes it durable (the record and any removed file waiting in the trash are dropped), and a
//! power cut reverses, newest first, those it does not keep.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;

use fuser::Errno;

use crate::state::State;
use crate::syscalls::{check, cstr, renameat, unlinkat};

pub enum Undo {
    /// Undo of a create, mknod, symlink, link or mkdir: remove the name.
    Remove { dir: u64, name: OsString },
    /// Undo of an unlink: the file waits in the trash under `trash`.
    Restore {
        dir: u64,
        name: OsString,
        trash: OsString,
    },
    /// Undo of an rmdir: make the (empty) directory again.
    Mkdir { dir: u64, name: OsString, mode: u32 },
    /// Undo of a rename: rename back, then put back what the rename replaced.
    Rename {
        from_dir: u64,
        from: OsString,
        to_dir: u64,
        to: OsString,
        victim: Victim,
        exchange: bool,
    },
}

pub enum Victim {
    None,
    /// A non-directory, hard-linked into the trash under this name.
    Trash(OsString),
    /// An empty directory.
    EmptyDir(u32),
}

/// A namespace change not yet durable: the directories it touches and how to undo it.
pub struct Change {
    pub dirs: Vec<u64>,
    pub undo: Undo,
}

impl State {
    /// Hard-links `name` of directory `dir` into the trash under a new name (returned), so
    /// that a rename over it can be undone by putting it back.
    pub fn link_into_trash(&mut self, dir: u64, name: &OsStr) -> Result<OsString, Errno> {
        let t = self.trash_name();
        let c = cstr(name);
        let ct = cstr(&t);
        let to_dir = self.fd(dir)?;
        // SAFETY: NUL-terminated names, descriptors we own.
        check(unsafe {
            libc::linkat(
                to_dir.as_raw_fd(),
                c.as_ptr(),
                self.trash.as_raw_fd(),
                ct.as_ptr(),
                0,
            )
        })?;
        Ok(t)
    }

    /// The changes touching `dir` become durable (and so do the removals they made).
    pub fn commit_dir(&mut self, dir: u64) {
        let changes = std::mem::take(&mut self.changes);
        for c in changes {
            if c.dirs.contains(&dir) {
                self.forget_trash(&c.undo);
            } else {
                self.changes.push(c);
            }
        }
    }

    pub fn forget_trash(&self, undo: &Undo) {
        let name = match undo {
            Undo::Restore { trash, .. } => trash,
            Undo::Rename {
                victim: Victim::Trash(t),
                ..
            } => t,
            _ => return,
        };
        if unlinkat(&self.trash, name, 0).is_err() {
            let _ = unlinkat(&self.trash, name, libc::AT_REMOVEDIR);
        }
    }

    pub fn undo(&self, undo: &Undo) -> Result<(), Errno> {
        match undo {
            Undo::Remove { dir, name } => {
                let d = self.fd(*dir)?;
                match unlinkat(d, name, 0) {
                    Err(e) if e == Errno::EISDIR || e == Errno::EPERM => {
                        // A directory that still holds durable entries: out of the namespace.
                        unlinkat(d, name, libc::AT_REMOVEDIR).or_else(|_| {
                            renameat(d, name, &self.trash, &OsString::from("dir-undone"), 0)
                        })
                    }
                    other => other,
                }
            }
            Undo::Restore { dir, name, trash } => {
                renameat(&self.trash, trash, self.fd(*dir)?, name, 0)
            }
            Undo::Mkdir { dir, name, mode } => {
                let c = cstr(name);
                // SAFETY: NUL-terminated name, a descriptor we own.
                check(unsafe { libc::mkdirat(self.fd(*dir)?.as_raw_fd(), c.as_ptr(), *mode) })
            }
            Undo::Rename {
                from_dir,
                from,
                to_dir,
                to,
                victim,
                exchange,
            } => {
                let (fd, td) = (self.fd(*from_dir)?, self.fd(*to_dir)?);
                if *exchange {
                    return renameat(fd, from, td, to, libc::RENAME_EXCHANGE);
                }
                renameat(td, to, fd, from, libc::RENAME_NOREPLACE)?;
                match victim {
                    Victim::None => Ok(()),
                    Victim::Trash(t) => renameat(&self.trash, t, td, to, 0),
                    Victim::EmptyDir(mode) => {
                        let c = cstr(to);
                        // SAFETY: NUL-terminated name, a descriptor we own.
                        check(unsafe { libc::mkdirat(td.as_raw_fd(), c.as_ptr(), *mode) })
                    }
                }
            }
        }
    }
}
