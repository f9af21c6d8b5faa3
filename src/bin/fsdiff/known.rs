//! THE list of what still differs from ext4 on purpose or until a branch lands: each name is an
//! op (see `ops.rs`) or a compared detail (`blocks`, `atime`), with the reason. A default run
//! leaves these out, so that CI runs every op that matches today; `--all` puts them back. Shrink
//! this list as the differences go.
pub const KNOWN_DIFFERENT: &[(&str, &str)] = &[
    (
        "fallocate",
        "mode 0 extends the size but reserves nothing: st_blocks stays 0 where ext4 allocates (being implemented)",
    ),
    (
        "lseek_past_16tib",
        "FUSE limit: a FUSE mount's s_maxbytes is MAX_LFS_FILESIZE and FUSE_INIT has no field to lower it, so lseek to past ext4's 16 TiB - 4 KiB succeeds where ext4 says EINVAL",
    ),
    (
        "8tib_to_16tib",
        "logstorfs's MAX_FILE_SIZE is 8 TiB, ext4's 16 TiB - 4 KiB: offsets between get EFBIG (a limit of logstorfs's own choosing)",
    ),
    (
        "fallocate_keep_size",
        "fallocate modes other than 0 get EOPNOTSUPP (being implemented)",
    ),
    (
        "punch_hole",
        "fallocate modes other than 0 get EOPNOTSUPP (being implemented)",
    ),
    (
        "zero_range",
        "fallocate modes other than 0 get EOPNOTSUPP (being implemented)",
    ),
    (
        "collapse_range",
        "fallocate modes other than 0 get EOPNOTSUPP (being implemented)",
    ),
    (
        "insert_range",
        "fallocate modes other than 0 get EOPNOTSUPP (being implemented)",
    ),
    (
        "seek_data",
        "no FUSE lseek: the kernel answers SEEK_DATA as if the file had no holes (being implemented)",
    ),
    (
        "seek_hole",
        "no FUSE lseek: the kernel answers SEEK_HOLE at EOF always (being implemented)",
    ),
    (
        "tmpfile",
        "fuser 0.18 has no FUSE_TMPFILE: O_TMPFILE gets EOPNOTSUPP (being implemented)",
    ),
    (
        "rename_whiteout",
        "RENAME_WHITEOUT not supported yet (being implemented)",
    ),
    (
        "getflags",
        "no FS_IOC_GETFLAGS/SETFLAGS ioctls yet (chattr flags being implemented)",
    ),
    (
        "setflags",
        "no FS_IOC_GETFLAGS/SETFLAGS ioctls yet (chattr flags being implemented)",
    ),
    (
        "atime",
        "atime is never updated by reads (noatime); ext4 here runs relatime (being implemented)",
    ),
];
