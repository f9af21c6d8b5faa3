//! THE list of what still differs from ext4, each with the reason: an op (see `ops.rs`), a
//! compared detail (`blocks`, `atime`) or a range of arguments. A default run leaves these out,
//! so that CI runs every op that matches today; `--all` puts them back, `--ops NAME` one of
//! them. Shrink this list as branches land.
#[rustfmt::skip]
pub const KNOWN_DIFFERENT: &[(&str, &str)] = &[
    // Being implemented on other branches.
    ("collapse_range", "FUSE limit: the kernel's fuse_file_fallocate passes only KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE to the daemon and refuses COLLAPSE_RANGE with EOPNOTSUPP"),
    ("insert_range", "FUSE limit: the kernel's fuse_file_fallocate refuses INSERT_RANGE with EOPNOTSUPP before the daemon sees it"),
    ("tmpfile", "O_TMPFILE gets EOPNOTSUPP (fuser 0.18 has no FUSE_TMPFILE)"),
    // Limits of FUSE.
    ("atime", "FUSE limit: a read the kernel answers itself (at or past the end of file as it knows the size, or from the page cache through a descriptor opened when no update was due) never reaches the daemon, so relatime's update is missing after it; the rule itself is compared with ext4 by scripts/acl_vs_ext4.sh"),
    ("past_s_maxbytes", "FUSE limit: a FUSE mount's s_maxbytes is MAX_LFS_FILESIZE and FUSE_INIT has no field to lower it, so lseek past ext4's 16 TiB - 4 KiB succeeds where ext4 gives EINVAL, and copy_file_range to there with nothing to copy returns 0 where ext4 gives EFBIG"),
    ("lseek_dir", "FUSE limit: lseek on a FUSE directory is the kernel's generic_file_llseek (size 0, no FUSE_LSEEK for directories); ext4 bounds it by its htree (SEEK_END is EINVAL or the htree's end)"),
    ("chown_nothing", "FUSE limit: chown(-1, -1) by root reaches the daemon as a SETATTR that sets nothing, the request a write's killpriv also sends, so set-user-ID stays where ext4 drops it (see FuseFs::setattr)"),
    // logstorfs's own choice.
    ("append_flag", "an append-only file refuses every write below its end, also through a descriptor opened for writing before the flag was set, which ext4 lets write anywhere: over FUSE the kernel lets fcntl clear O_APPEND, so the daemon cannot count on it (src/fs/inode_flags.rs); scripts/chattr_vs_ext4.sh compares the append-only refusals with ext4"),
    ("sync_flag", "FS_SYNC_FL (chattr +S) is refused with EOPNOTSUPP rather than kept and not honoured (src/fs/inode_flags.rs); ext4 takes it"),
    ("flags_after_vfs", "FUSE limit: a FUSE inode does not carry the immutable and append-only flags to the kernel (no S_IMMUTABLE/S_APPEND), so where ext4's VFS refuses such an inode first with EPERM, the FUSE mount's VFS may refuse first for another reason (ENOTDIR, EISDIR, an offset plus length past i64: EFBIG or EOVERFLOW, a link of an unlinked file: ENOENT, a copy within one file whose ranges overlap: EINVAL) or answer a write of no bytes itself (0); tolerated only when an inode the op names is flagged on ext4 and everything after the status agrees"),
    ("copy_keeps_holes", "copy_file_range keeps the source's holes as holes (src/fs/copy_range.rs), where ext4, which has no copy of its own, writes them out as zeros: st_blocks and SEEK_DATA/SEEK_HOLE then differ on the copy. Runs with copy_file_range leave the seeks and the st_blocks check out; scripts/fsdiff.sh gives half its time to runs without copy_file_range, which keep them"),
    ("allocated_is_data", "fallocate (mode 0, KEEP_SIZE) and ZERO_RANGE store zero pages (src/fs/falloc.rs: that is how the space is reserved), which SEEK_DATA/SEEK_HOLE then find as data; ext4 allocates unwritten extents, which they find as holes. Runs with those modes leave the seeks out; scripts/fsdiff.sh gives half its time to runs without them"),
    ("8tib_to_16tib", "logstorfs's MAX_FILE_SIZE is 8 TiB, ext4's 16 TiB - 4 KiB: offsets between get EFBIG"),
];
