//! The operations, their random generation and their one-line text form (the replayable log).

/// A small seeded PRNG (splitmix64): the same seed gives the same op sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

macro_rules! kinds {
    ($($variant:ident = $name:literal weight $w:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind { $($variant,)* }
        pub const ALL: &[Kind] = &[$(Kind::$variant,)*];
        impl Kind {
            pub fn name(self) -> &'static str { match self { $(Kind::$variant => $name,)* } }
            pub fn weight(self) -> u64 { match self { $(Kind::$variant => $w,)* } }
            pub fn from_name(s: &str) -> Option<Kind> {
                match s { $($name => Some(Kind::$variant),)* _ => None }
            }
        }
    };
}

// The names are what `--ops`, `--skip` and the KNOWN_DIFFERENT list use.
kinds! {
    Open = "open" weight 6,
    Creat = "creat" weight 3,
    Tmpfile = "tmpfile" weight 1,
    Close = "close" weight 1,
    Read = "read" weight 3,
    Pread = "pread" weight 3,
    Write = "write" weight 5,
    Pwrite = "pwrite" weight 6,
    Ftruncate = "ftruncate" weight 3,
    Truncate = "truncate" weight 2,
    Fsync = "fsync" weight 1,
    Fdatasync = "fdatasync" weight 1,
    Lseek = "lseek" weight 3,
    SeekData = "seek_data" weight 2,
    SeekHole = "seek_hole" weight 2,
    Falloc = "fallocate" weight 2,
    FallocKeep = "fallocate_keep_size" weight 2,
    PunchHole = "punch_hole" weight 2,
    ZeroRange = "zero_range" weight 2,
    CollapseRange = "collapse_range" weight 2,
    InsertRange = "insert_range" weight 2,
    CopyRange = "copy_file_range" weight 3,
    Mkdir = "mkdir" weight 3,
    Rmdir = "rmdir" weight 2,
    Unlink = "unlink" weight 2,
    Rename = "rename" weight 3,
    RenameNoreplace = "rename_noreplace" weight 2,
    RenameExchange = "rename_exchange" weight 2,
    RenameWhiteout = "rename_whiteout" weight 1,
    Link = "link" weight 2,
    LinkFd = "link_fd" weight 1,
    Symlink = "symlink" weight 2,
    Readlink = "readlink" weight 1,
    Chmod = "chmod" weight 2,
    Chown = "chown" weight 2,
    Utimens = "utimensat" weight 2,
    Setxattr = "setxattr" weight 2,
    Getxattr = "getxattr" weight 2,
    Listxattr = "listxattr" weight 1,
    Removexattr = "removexattr" weight 1,
    Stat = "stat" weight 2,
    Lstat = "lstat" weight 2,
    Fstat = "fstat" weight 2,
    Readdir = "readdir" weight 2,
    GetFlags = "getflags" weight 1,
    SetFlags = "setflags" weight 1,
}

/// Fd slots: an op names a slot, each side keeps its own fd in it. Slot `BAD_SLOT` is an fd
/// number that is never open and `NEG_SLOT` is -1 (both must give EBADF).
pub const NSLOT: u8 = 4;
pub const BAD_SLOT: u8 = NSLOT;
pub const NEG_SLOT: u8 = NSLOT + 1;

/// A small namespace, so that ops collide: names of every type at the same places, a path
/// through a file (ENOTDIR), `.`, `..` and a name over NAME_MAX.
pub fn paths() -> Vec<String> {
    let mut p: Vec<String> = [
        "f0", "f1", "f2", "d0", "d1", "s0", "d0/f0", "d0/f1", "d0/d2", "d0/s1", "d1/f0",
        "d0/d2/f0", "d0/d2/d3", ".", "d0/..", "f0/x", "d1/..",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    p.push("n".repeat(256));
    p
}

/// Relative, and never out of the work directory (the two sides share a parent in a self-test).
pub const SYMLINK_TARGETS: &[&str] = &[
    "f0", "d0", "d0/f1", "missing", "s0", "d0/../f0", "f0/", "d0/s1",
];

pub const XATTR_NAMES: &[&str] = &[
    "user.a",
    "user.bb",
    "user.long-name-of-an-attribute",
    "trusted.t",
    "user.",
];
pub const XATTR_VALUES: &[&str] = &["", "1", "value", "a-somewhat-longer-value-0123456789"];

/// Offsets: page edges, 1 MiB, 1 GiB, 1 TiB, around logstorfs's 8 TiB and ext4's 16 TiB
/// limits, the largest loff_t and negatives.
pub const OFFSETS: &[i64] = &[
    0,
    0,
    0,
    1,
    511,
    4095,
    4096,
    4096,
    4097,
    8191,
    8192,
    12288,
    65535,
    65536,
    131072,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 4096,
    1 << 30,
    1 << 40,
    (1 << 43) - 4096,
    (1 << 43) + 4096,
    (1 << 44) - 4096,
    1 << 44,
    i64::MAX - 4095,
    i64::MAX,
    -1,
    -4096,
];
/// Offsets relative to the end of file (at, before and past EOF).
pub const EOF_DELTAS: &[i64] = &[-4097, -4096, -100, -1, 0, 0, 1, 4095, 4096, 65536];
pub const LENGTHS: &[i64] = &[
    0, 1, 17, 511, 4095, 4096, 4096, 4097, 8192, 12288, 65537, 131072, 262149,
];
/// Lengths for fallocate only (no buffer behind them). No valid length
/// beyond the free space: ext4 leaves a fallocate that fails with ENOSPC half done.
pub const HUGE_LENGTHS: &[i64] = &[i64::MAX, -1, -4096, 1 << 62];

pub const MODES: &[i64] = &[
    0o644, 0o755, 0o600, 0o4755, 0o2755, 0o6644, 0o1777, 0o000, 0o2644,
];
pub const IDS: &[i64] = &[0, 1000, 65534, -1];

/// One operation. Fields mean what the kind says (see `describe`); unused ones are 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Op {
    pub kind: Kind,
    pub p1: u8,
    pub p2: u8,
    pub s1: u8,
    pub s2: u8,
    pub off: i64,
    pub off2: i64,
    pub len: i64,
    pub fl: i64,
    /// 1: `off` (and `off2`) are relative to the end of file (or, for copy_file_range, the file
    /// positions are used: NULL offset pointers).
    pub eof: u8,
}

fn slot(r: &mut Rng) -> u8 {
    if r.chance(4) {
        r.pick(&[BAD_SLOT, NEG_SLOT])
    } else {
        r.below(NSLOT as usize) as u8
    }
}

/// Offsets from 8 TiB - 4 KiB to 16 TiB: ext4 takes them, logstorfs (MAX_FILE_SIZE) does not.
fn beyond_8tib(off: i64) -> bool {
    ((1 << 43) - 4096..1 << 44).contains(&off)
}

fn offset(r: &mut Rng, g: &Gen) -> (i64, u8) {
    if r.chance(30) {
        (r.pick(EOF_DELTAS), 1)
    } else if r.chance(75) {
        (
            r.pick(&OFFSETS[..17]) + if r.chance(20) { r.below(100) as i64 } else { 0 },
            0,
        )
    } else {
        let o = r.pick(OFFSETS);
        (
            if !g.beyond_8tib && beyond_8tib(o) {
                1 << 44
            } else {
                o
            },
            0,
        )
    }
}

/// What ops are generated.
pub struct Gen {
    pub kinds: Vec<Kind>,
    /// Whether offsets between 8 TiB and 16 TiB are used (the `8tib_to_16tib` feature).
    pub beyond_8tib: bool,
    /// Whether lseek and copy_file_range's output go past ext4's largest size (the
    /// `past_s_maxbytes` feature).
    pub past_s_maxbytes: bool,
    /// Whether chown(-1, -1) is generated (the `chown_nothing` feature).
    pub chown_nothing: bool,
    /// Whether FS_IOC_SETFLAGS sets append-only (the `append_flag` feature).
    pub append_flag: bool,
    /// Whether FS_IOC_SETFLAGS sets FS_SYNC_FL (the `sync_flag` feature).
    pub sync_flag: bool,
}

fn falloc_len(r: &mut Rng) -> i64 {
    if r.chance(10) {
        r.pick(HUGE_LENGTHS)
    } else {
        r.pick(LENGTHS)
    }
}

/// A kind drawn with probability proportional to its weight.
fn pick_kind(r: &mut Rng, kinds: &[Kind]) -> Kind {
    let total: u64 = kinds.iter().map(|k| k.weight()).sum();
    let mut x = r.next() % total;
    let mut kind = kinds[0];
    for k in kinds {
        if x < k.weight() {
            kind = *k;
            break;
        }
        x -= k.weight();
    }
    kind
}

/// Most ops name the first paths, so that names get reused; a few the odd ones.
fn path_index(r: &mut Rng, npaths: usize) -> u8 {
    if r.chance(85) {
        r.below(13) as u8
    } else {
        r.below(npaths) as u8
    }
}

/// A random op of `g`'s kinds: its kind drawn by weight, two paths and two slots, then the
/// arguments its family takes.
pub fn generate(r: &mut Rng, g: &Gen, npaths: usize) -> Op {
    let kind = pick_kind(r, &g.kinds);
    let path = |r: &mut Rng| path_index(r, npaths);
    let mut op = Op {
        kind,
        p1: path(r),
        p2: path(r),
        s1: slot(r),
        s2: slot(r),
        off: 0,
        off2: 0,
        len: 0,
        fl: 0,
        eof: 0,
    };
    use Kind::*;
    match kind {
        Open | Creat | Tmpfile => open_args(r, &mut op),
        Read | Pread | Write | Pwrite | Ftruncate | Truncate | Lseek | SeekData | SeekHole
        | Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange | InsertRange | CopyRange => {
            data_args(r, g, &mut op)
        }
        Mkdir | Rename | Link | Symlink => namespace_args(r, &mut op),
        Chmod | Chown | Utimens | Setxattr | Getxattr | Listxattr | Removexattr | SetFlags => {
            attr_args(r, g, &mut op)
        }
        Close | Fsync | Fdatasync | RenameNoreplace | RenameExchange | RenameWhiteout | LinkFd
        | Rmdir | Unlink | Readlink | Stat | Lstat | Fstat | Readdir | GetFlags => {}
    }
    op
}

/// Open flags, modes and the slot an open, creat or O_TMPFILE fills.
fn open_args(r: &mut Rng, op: &mut Op) {
    use Kind::*;
    match op.kind {
        Open => {
            let acc = r.pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR, libc::O_RDWR]);
            let mut fl = acc;
            for (bit, p) in [
                (libc::O_CREAT, 50),
                (libc::O_EXCL, 15),
                (libc::O_TRUNC, 15),
                (libc::O_APPEND, 15),
                (libc::O_DIRECTORY, 8),
                (libc::O_NOFOLLOW, 10),
            ] {
                if r.chance(p) {
                    fl |= bit;
                }
            }
            op.fl = fl as i64;
            op.len = r.pick(MODES);
            op.s1 = r.below(NSLOT as usize) as u8;
        }
        Creat => {
            op.len = r.pick(MODES);
            op.s1 = r.below(NSLOT as usize) as u8;
        }
        Tmpfile => {
            op.fl = (r.pick(&[libc::O_RDWR, libc::O_WRONLY, libc::O_RDONLY])
                | if r.chance(20) { libc::O_EXCL } else { 0 }) as i64;
            op.len = r.pick(MODES);
            op.s1 = r.below(NSLOT as usize) as u8;
        }
        other => unreachable!("{other:?} is not an open op"),
    }
}

/// Offsets, lengths and modes of the data ops (reads, writes, truncates, seeks, fallocate, copy_file_range).
fn data_args(r: &mut Rng, g: &Gen, op: &mut Op) {
    use Kind::*;
    match op.kind {
        Read => op.len = r.pick(LENGTHS),
        Pread | Write | Pwrite => {
            (op.off, op.eof) = offset(r, g);
            op.len = r.pick(LENGTHS);
            op.fl = r.next() as i64 & 0xffff; // data pattern
        }
        Ftruncate | Truncate => (op.off, op.eof) = offset(r, g),
        Lseek => {
            (op.off, _) = offset(r, g);
            if !g.past_s_maxbytes && op.off >= (1 << 44) - 4096 {
                op.off = 1 << 40;
            }
            op.fl = r.pick(&[libc::SEEK_SET, libc::SEEK_CUR, libc::SEEK_END, 7]) as i64;
        }
        SeekData | SeekHole => (op.off, op.eof) = offset(r, g),
        Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange | InsertRange => {
            (op.off, op.eof) = offset(r, g);
            op.len = falloc_len(r);
            if op.kind == ZeroRange && r.chance(50) {
                op.fl = libc::FALLOC_FL_KEEP_SIZE as i64;
            }
        }
        CopyRange => {
            (op.off, op.eof) = offset(r, g);
            (op.off2, _) = offset(r, g);
            if !g.past_s_maxbytes && op.off2 >= (1 << 44) - 4096 {
                op.off2 = 1 << 40;
            }
            // No huge lengths: a copy runs to EOF, and through a sparse terabyte file ext4
            // writes its holes out as zeros until the disk is full.
            op.len = r.pick(LENGTHS);
            op.fl = if r.chance(5) { 1 } else { 0 };
        }
        other => unreachable!("{other:?} is not an data op"),
    }
}

/// Modes and flags of the namespace ops (mkdir, rename, link, symlink).
fn namespace_args(r: &mut Rng, op: &mut Op) {
    use Kind::*;
    match op.kind {
        Mkdir => op.len = r.pick(&[0o755, 0o700, 0o2755, 0o1777]),
        Rename => {
            op.fl = if r.chance(5) {
                (libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) as i64
            } else {
                0
            }
        }
        Link => {
            op.fl = if r.chance(30) {
                libc::AT_SYMLINK_FOLLOW as i64
            } else {
                0
            }
        }
        Symlink => op.fl = r.below(SYMLINK_TARGETS.len()) as i64,
        other => unreachable!("{other:?} is not an namespace op"),
    }
}

/// Modes, owners, times, xattrs and inode flags of the attribute ops.
fn attr_args(r: &mut Rng, g: &Gen, op: &mut Op) {
    use Kind::*;
    match op.kind {
        Chmod => op.len = r.pick(MODES),
        Chown => {
            op.off = r.pick(IDS);
            op.off2 = r.pick(IDS);
            if !g.chown_nothing && op.off == -1 && op.off2 == -1 {
                op.off = 0;
            }
            op.fl = if r.chance(30) {
                libc::AT_SYMLINK_NOFOLLOW as i64
            } else {
                0
            };
        }
        Utimens => {
            let t = |r: &mut Rng| -> i64 {
                r.pick(&[
                    -1,
                    -2,
                    1_000_000_000,
                    1_500_000_000,
                    4_000_000_000,
                    -100_000,
                    0,
                ])
            };
            op.off = t(r);
            op.off2 = t(r);
            op.len = r.below(1_000_000_000) as i64;
            op.fl = if r.chance(30) {
                libc::AT_SYMLINK_NOFOLLOW as i64
            } else {
                0
            };
        }
        Setxattr => {
            op.off = r.below(XATTR_NAMES.len()) as i64;
            op.len = r.below(XATTR_VALUES.len()) as i64;
            op.fl = r.pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]) as i64;
            op.eof = r.chance(20) as u8; // lsetxattr
        }
        Getxattr => {
            op.off = r.below(XATTR_NAMES.len()) as i64;
            op.len = r.pick(&[0, 1, 256]);
            op.eof = r.chance(20) as u8;
        }
        Listxattr => {
            op.len = r.pick(&[0, 1, 256]);
            op.eof = r.chance(20) as u8;
        }
        Removexattr => {
            op.off = r.below(XATTR_NAMES.len()) as i64;
            op.eof = r.chance(20) as u8;
        }
        SetFlags => {
            op.fl = r.pick(&[0, 0, 0x10, 0x20, 0x40, 0x80, 0x40 | 0x80, 0x8, 0x1000]);
            if !g.sync_flag && op.fl == 0x8 {
                // FS_SYNC_FL becomes no flag.
                op.fl = 0;
            }
            if !g.append_flag && op.fl == 0x20 {
                // FS_APPEND_FL becomes FS_IMMUTABLE_FL.
                op.fl = 0x10;
            }
        }
        other => unreachable!("{other:?} is not an attribute op"),
    }
}

impl Op {
    /// The replayable form: `kind p1 p2 s1 s2 off off2 len fl eof`.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {}",
            self.kind.name(),
            self.p1,
            self.p2,
            self.s1,
            self.s2,
            self.off,
            self.off2,
            self.len,
            self.fl,
            self.eof
        )
    }

    pub fn decode(line: &str) -> Option<Op> {
        let line = line.split('#').next()?;
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() != 10 {
            return None;
        }
        Some(Op {
            kind: Kind::from_name(t[0])?,
            p1: t[1].parse().ok()?,
            p2: t[2].parse().ok()?,
            s1: t[3].parse().ok()?,
            s2: t[4].parse().ok()?,
            off: t[5].parse().ok()?,
            off2: t[6].parse().ok()?,
            len: t[7].parse().ok()?,
            fl: t[8].parse().ok()?,
            eof: t[9].parse().ok()?,
        })
    }

    /// What a human needs to read the log: the call with its arguments.
    pub fn describe(&self, paths: &[String]) -> String {
        use Kind::*;
        match self.kind {
            Open | Creat | Tmpfile | Close => self.describe_open(paths),
            Read | Pread | Write | Pwrite | Ftruncate | Truncate | Fsync | Fdatasync | Lseek
            | SeekData | SeekHole | Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange
            | InsertRange | CopyRange => self.describe_data(paths),
            Mkdir | Rmdir | Unlink | Rename | RenameNoreplace | RenameExchange | RenameWhiteout
            | Link | LinkFd | Symlink | Readlink => self.describe_namespace(paths),
            Chmod | Chown | Utimens | Setxattr | Getxattr | Listxattr | Removexattr | Stat
            | Lstat | Fstat | Readdir | GetFlags | SetFlags => self.describe_attr(paths),
        }
    }

    /// How the log shows open, creat, O_TMPFILE and close.
    fn describe_open(&self, paths: &[String]) -> String {
        let p = |i: u8| path_text(paths, i);
        let s = slot_text;
        use Kind::*;
        match self.kind {
            Open => format!(
                "{} = open({}, {}, {:o})",
                s(self.s1),
                p(self.p1),
                open_flags(self.fl),
                self.len
            ),
            Creat => format!("{} = creat({}, {:o})", s(self.s1), p(self.p1), self.len),
            Tmpfile => format!(
                "{} = open({}, O_TMPFILE|{}, {:o})",
                s(self.s1),
                p(self.p1),
                open_flags(self.fl),
                self.len
            ),
            Close => format!("close({})", s(self.s1)),
            other => unreachable!("{other:?} is not an open or close op"),
        }
    }

    /// How the log shows the data ops: reads, writes, truncates, syncs, seeks, fallocate and copy_file_range.
    fn describe_data(&self, paths: &[String]) -> String {
        let p = |i: u8| path_text(paths, i);
        let s = slot_text;
        let o = offset_text;
        use Kind::*;
        match self.kind {
            Read => format!("read({}, {})", s(self.s1), self.len),
            Pread => format!(
                "pread({}, {}, {})",
                s(self.s1),
                self.len,
                o(self.off, self.eof)
            ),
            Write => format!("write({}, {})", s(self.s1), self.len),
            Pwrite => format!(
                "pwrite({}, {}, {})",
                s(self.s1),
                self.len,
                o(self.off, self.eof)
            ),
            Ftruncate => format!("ftruncate({}, {})", s(self.s1), o(self.off, self.eof)),
            Truncate => format!("truncate({}, {})", p(self.p1), o(self.off, self.eof)),
            Fsync => format!("fsync({})", s(self.s1)),
            Fdatasync => format!("fdatasync({})", s(self.s1)),
            Lseek => format!("lseek({}, {}, whence {})", s(self.s1), self.off, self.fl),
            SeekData => format!(
                "lseek({}, {}, SEEK_DATA)",
                s(self.s1),
                o(self.off, self.eof)
            ),
            SeekHole => format!(
                "lseek({}, {}, SEEK_HOLE)",
                s(self.s1),
                o(self.off, self.eof)
            ),
            Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange | InsertRange => format!(
                "fallocate({}, {}{}, {}, {})",
                s(self.s1),
                self.kind.name(),
                if self.fl != 0 { "|KEEP_SIZE" } else { "" },
                o(self.off, self.eof),
                self.len
            ),
            CopyRange => format!(
                "copy_file_range({}, {}, {}, {}, {}, flags {})",
                s(self.s1),
                if self.eof == 1 {
                    "NULL".into()
                } else {
                    self.off.to_string()
                },
                s(self.s2),
                if self.eof == 1 {
                    "NULL".into()
                } else {
                    self.off2.to_string()
                },
                self.len,
                self.fl
            ),
            other => unreachable!("{other:?} is not a data op"),
        }
    }

    /// How the log shows the namespace ops: mkdir, rmdir, unlink, renames, links and symlinks.
    fn describe_namespace(&self, paths: &[String]) -> String {
        let p = |i: u8| path_text(paths, i);
        let s = slot_text;
        use Kind::*;
        match self.kind {
            Mkdir => format!("mkdir({}, {:o})", p(self.p1), self.len),
            Rmdir => format!("rmdir({})", p(self.p1)),
            Unlink => format!("unlink({})", p(self.p1)),
            Rename | RenameNoreplace | RenameExchange | RenameWhiteout => {
                format!(
                    "{}({}, {}) flags {}",
                    self.kind.name(),
                    p(self.p1),
                    p(self.p2),
                    self.fl
                )
            }
            Link => format!("linkat({}, {}, flags {})", p(self.p1), p(self.p2), self.fl),
            LinkFd => format!(
                "linkat({}, \"\", {}, AT_EMPTY_PATH)",
                s(self.s1),
                p(self.p2)
            ),
            Symlink => format!(
                "symlink({:?}, {})",
                SYMLINK_TARGETS[self.fl as usize % SYMLINK_TARGETS.len()],
                p(self.p1)
            ),
            Readlink => format!("readlink({})", p(self.p1)),
            other => unreachable!("{other:?} is not a namespace op"),
        }
    }

    /// How the log shows the attribute ops: modes, owners, times, xattrs, stat, readdir and inode flags.
    fn describe_attr(&self, paths: &[String]) -> String {
        let p = |i: u8| path_text(paths, i);
        let s = slot_text;
        use Kind::*;
        match self.kind {
            Chmod => format!("chmod({}, {:o})", p(self.p1), self.len),
            Chown => format!(
                "fchownat({}, {}, {}, flags {})",
                p(self.p1),
                self.off,
                self.off2,
                self.fl
            ),
            Utimens => format!(
                "utimensat({}, atime {}, mtime {}, ns {}, flags {})",
                p(self.p1),
                self.off,
                self.off2,
                self.len,
                self.fl
            ),
            Setxattr => format!(
                "{}setxattr({}, {}, {:?}, flags {})",
                if self.eof == 1 { "l" } else { "" },
                p(self.p1),
                XATTR_NAMES[self.off as usize % XATTR_NAMES.len()],
                XATTR_VALUES[self.len as usize % XATTR_VALUES.len()],
                self.fl
            ),
            Getxattr => format!(
                "{}getxattr({}, {}, size {})",
                if self.eof == 1 { "l" } else { "" },
                p(self.p1),
                XATTR_NAMES[self.off as usize % XATTR_NAMES.len()],
                self.len
            ),
            Listxattr => format!(
                "{}listxattr({}, size {})",
                if self.eof == 1 { "l" } else { "" },
                p(self.p1),
                self.len
            ),
            Removexattr => format!(
                "{}removexattr({}, {})",
                if self.eof == 1 { "l" } else { "" },
                p(self.p1),
                XATTR_NAMES[self.off as usize % XATTR_NAMES.len()]
            ),
            Stat => format!("stat({})", p(self.p1)),
            Lstat => format!("lstat({})", p(self.p1)),
            Fstat => format!("fstat({})", s(self.s1)),
            Readdir => format!("readdir({})", p(self.p1)),
            GetFlags => format!("ioctl({}, FS_IOC_GETFLAGS)", s(self.s1)),
            SetFlags => format!("ioctl({}, FS_IOC_SETFLAGS, {:#x})", s(self.s1), self.fl),
            other => unreachable!("{other:?} is not an attribute op"),
        }
    }
}

/// A path as the log shows it: a long name by its start and length.
fn path_text(paths: &[String], i: u8) -> String {
    let s = &paths[i as usize % paths.len()];
    if s.len() > 20 {
        format!("{}...({} bytes)", &s[..8], s.len())
    } else {
        s.clone()
    }
}

fn slot_text(i: u8) -> String {
    match i {
        BAD_SLOT => "badfd".to_string(),
        NEG_SLOT => "fd-1".to_string(),
        _ => format!("slot{i}"),
    }
}

/// An offset, or one relative to the end of file as `EOF+n`.
fn offset_text(off: i64, eof: u8) -> String {
    if eof == 1 {
        format!("EOF{off:+}")
    } else {
        off.to_string()
    }
}

fn open_flags(fl: i64) -> String {
    let fl = fl as i32;
    let mut s = match fl & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
    .to_string();
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
    ] {
        if fl & bit != 0 {
            s.push('|');
            s.push_str(name);
        }
    }
    s
}
