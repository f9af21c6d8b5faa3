//! The inode flag ioctls (`chattr`, `lsattr`, `xfs_io -c chattr`): the only ioctls answered;
//! any other is ENOTTY, as from a filesystem without them. Their arguments are decoded here
//! (fuser hands over raw bytes), and a flag change drops the kernel's cached attributes, since
//! it sets ctime and the kernel cannot know that.

use fuser::{Errno, INodeNo, ReplyIoctl, Request};

use super::super::FsError;
use super::FuseFs;
use super::caller::flags_caller;
use super::convert::errno;

/// The ioctls the kernel sends for a FUSE inode's file attributes (`fuse_fileattr_get/set`,
/// kernel 5.13 and later): the 64-bit command numbers, with an `unsigned int` argument for the
/// flags, and `struct fsxattr` (28 bytes) for the xattr view.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
const FSXATTR_SIZE: usize = 28;

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl FuseFs {
    /// The inode flag ioctls (`chattr`, `lsattr`, `xfs_io -c chattr`). Any other ioctl is
    /// ENOTTY, as a filesystem without it answers, and quietly: fuser's default logs a
    /// multi-line warning for each one, thousands a second under a program that probes.
    pub(super) fn inode_flags_ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let out_size = out_size as usize;
        let result = match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS if out_size >= 4 => {
                self.fs.inode_flags(ino.0).map(|f| f.to_ne_bytes().to_vec())
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => match u32_at(in_data, 0) {
                Some(f) => self
                    .fs
                    .set_inode_flags(ino.0, f, flags_caller(req))
                    .map(|()| Vec::new()),
                None => Err(FsError::Invalid),
            },
            FS_IOC_FSGETXATTR if out_size >= FSXATTR_SIZE => self.fs.inode_xflags(ino.0).map(|x| {
                let mut out = vec![0u8; FSXATTR_SIZE];
                out[..4].copy_from_slice(&x.to_ne_bytes());
                out
            }),
            FS_IOC_FSSETXATTR => {
                match (u32_at(in_data, 0), u32_at(in_data, 4), u32_at(in_data, 12)) {
                    (Some(x), Some(extsize), Some(projid)) => self
                        .fs
                        .set_inode_xflags(ino.0, x, projid, extsize, flags_caller(req))
                        .map(|()| Vec::new()),
                    _ => Err(FsError::Invalid),
                }
            }
            _ => {
                reply.error(Errno::from_i32(libc::ENOTTY));
                return;
            }
        };
        let sets = matches!(cmd, FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS | FS_IOC_FSSETXATTR);
        match result {
            Ok(data) => {
                // A flag change sets ctime, which the kernel keeps from before: before the
                // reply, so that a stat after the ioctl returns sees the new one.
                if sets {
                    self.invalidate_attrs(ino.0);
                }
                reply.ioctl(0, &data)
            }
            Err(e) => reply.error(errno("ioctl", req, &e)),
        }
    }
}
