//! Directory listings with attributes (READDIRPLUS): the one listing that hands the kernel
//! lookup references, so it must give back every reference of a listing that fails midway.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{INodeNo, ReplyDirectoryPlus, Request};

use super::super::{DirListEntry, FsError};
use super::FuseFs;
use super::convert::{errno, file_attr, generation};

impl FuseFs {
    /// Lists a directory with each entry's attributes, taking the lookup reference the
    /// kernel takes on every entry but `.` and `..`; a listing that fails gives back the
    /// references of the entries it had added.
    pub(super) fn reply_readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                let ttl = self.entry_ttl(ino.0);
                let names = |e: &&DirListEntry| e.name != b"." && e.name != b"..";
                self.fs
                    .prefetch_inodes(entries.iter().filter(names).map(|e| e.ino));
                // Entries added so far that hold a lookup reference.
                let mut referenced: Vec<u64> = Vec::new();
                for e in entries {
                    let dots = e.name == b"." || e.name == b"..";
                    // The kernel takes a lookup reference on every entry but "." and "..".
                    let attr = if dots {
                        self.fs.getattr(e.ino)
                    } else {
                        self.fs.readdir_entry(e.ino)
                    };
                    let attr = match attr {
                        Ok(a) => a,
                        Err(FsError::NotFound) => continue, // removed since the listing
                        // An inode that cannot be read (damaged: EIO): the listing fails rather
                        // than leave its name out as if the file did not exist (found by the
                        // random flips of `scripts/crash_damage.sh`). The entries added so far
                        // never reach the kernel: their references go back.
                        Err(err) => {
                            for ino in referenced {
                                self.fs.forget(ino, 1);
                            }
                            reply.error(errno("readdirplus", req, &err));
                            return;
                        }
                    };
                    let name = OsStr::from_bytes(&e.name);
                    if reply.add(
                        INodeNo(e.ino),
                        e.cookie,
                        name,
                        &ttl,
                        &file_attr(&attr),
                        generation(&attr),
                    ) {
                        if !dots {
                            self.fs.forget(e.ino, 1);
                        }
                        break;
                    }
                    if !dots {
                        referenced.push(e.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdirplus", req, &e)),
        }
    }
}
