//! THE list of what still differs from ext4, each with the reason: an op (see `ops.rs`), a
//! compared detail (`blocks`, `atime`) or a range of arguments. A default run leaves these out,
//! so that CI runs every op that matches today; `--all` puts them back, `--ops NAME` one of
//! them. Shrink this list as branches land.
#[rustfmt::skip]
pub const KNOWN_DIFFERENT: &[(&str, &str)] = &[
    // Being implemented on other branches.
    ("fallocate", "mode 0 extends the size but reserves nothing: st_blocks stays 0 where ext4 allocates"),
    ("fallocate_keep_size", "fallocate modes other than 0 get EOPNOTSUPP"),
    ("punch_hole", "fallocate modes other than 0 get EOPNOTSUPP"),
    ("zero_range", "fallocate modes other than 0 get EOPNOTSUPP"),
    ("collapse_range", "fallocate modes other than 0 get EOPNOTSUPP"),
    ("insert_range", "fallocate modes other than 0 get EOPNOTSUPP"),
    ("seek_data", "no FUSE_LSEEK: the kernel answers SEEK_DATA as if the file had no holes"),
    ("seek_hole", "no FUSE_LSEEK: the kernel answers SEEK_HOLE with EOF always"),
    ("tmpfile", "O_TMPFILE gets EOPNOTSUPP (fuser 0.18 has no FUSE_TMPFILE)"),
    ("rename_whiteout", "RENAME_WHITEOUT gets EINVAL"),
    ("getflags", "no FS_IOC_GETFLAGS ioctl: ENOTTY"),
    ("setflags", "no FS_IOC_SETFLAGS ioctl: ENOTTY"),
    ("atime", "reads never update atime (as noatime); ext4 here runs relatime"),
    // Limits of FUSE.
    ("past_s_maxbytes", "FUSE limit: a FUSE mount's s_maxbytes is MAX_LFS_FILESIZE and FUSE_INIT has no field to lower it, so lseek past ext4's 16 TiB - 4 KiB succeeds where ext4 gives EINVAL, and copy_file_range to there with nothing to copy returns 0 where ext4 gives EFBIG"),
    ("lseek_dir", "FUSE limit: lseek on a FUSE directory is the kernel's generic_file_llseek (size 0, no FUSE_LSEEK for directories); ext4 bounds it by its htree (SEEK_END is EINVAL or the htree's end)"),
    ("chown_nothing", "FUSE limit: chown(-1, -1) by root reaches the daemon as a SETATTR that sets nothing, the request a write's killpriv also sends, so set-user-ID stays where ext4 drops it (see FuseFs::setattr)"),
    // logstorfs's own choice.
    ("8tib_to_16tib", "logstorfs's MAX_FILE_SIZE is 8 TiB, ext4's 16 TiB - 4 KiB: offsets between get EFBIG"),
];
