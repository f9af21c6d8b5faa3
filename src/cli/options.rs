//! Command-line values of the mount commands: sizes, the compaction policy, and `-o` options,
//! all parsed (and refused with a message naming what is wrong) before anything is written.

use clap::ValueEnum;
use fuser::{MountOption, SessionACL};

use crate::engine::{CompactionPolicy, MAX_CAPACITY_BYTES, MIN_CAPACITY_BYTES};
use crate::fs::atime::AtimeMode;

/// A size such as `1G`, `512M`, `64KiB`, `1.5G`, `1073741824`: units are powers of 1024, as
/// `df -h` and the kernel show them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("invalid size '{s}': {e} (use a number with K, M, G or T)"))
}

/// A store capacity: a size within the range the engine supports.
pub fn parse_capacity(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if !(MIN_CAPACITY_BYTES..=MAX_CAPACITY_BYTES).contains(&n) {
        return Err(format!(
            "{s} is outside the supported store sizes, {} MiB to {} TiB",
            MIN_CAPACITY_BYTES >> 20,
            MAX_CAPACITY_BYTES >> 40
        ));
    }
    Ok(n)
}

/// How compaction chooses the segments it empties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// Least live data first.
    Greedy,
    /// Free space gained times age, over cost, as in LFS.
    CostBenefit,
}

impl From<Policy> for CompactionPolicy {
    fn from(p: Policy) -> CompactionPolicy {
        match p {
            Policy::Greedy => CompactionPolicy::Greedy,
            Policy::CostBenefit => CompactionPolicy::CostBenefit,
        }
    }
}

/// What `-o` options ask for. The logstorfs settings are `None` where no option names them.
#[derive(Debug, Default)]
pub struct MountOptions {
    /// Options for the kernel's mount, in the order given.
    pub fuse: Vec<MountOption>,
    /// Who besides the mounting user may use the mount (`allow_other`, `allow_root`).
    pub acl: Option<SessionACL>,
    pub read_only: bool,
    /// The atime rule asked for (the last option naming one wins).
    pub atime: Option<AtimeMode>,
    /// The source `findmnt` and `df` show (`fsname=`; the store path by default).
    pub fsname: Option<String>,
    pub flush_interval: Option<u64>,
    pub group_split_size: Option<u64>,
    pub compaction_policy: Option<Policy>,
    /// Ask the kernel for its writeback cache: a flag of FUSE's INIT reply, not of mount(2).
    pub writeback_cache: bool,
    /// `daemon_permissions`: the daemon checks permissions where it can (see
    /// [`MountOptions::daemon_checks_permissions`]).
    pub daemon_permissions: bool,
    /// The bucket prefix to mirror to (`remote=s3://BUCKET/PREFIX`), its credentials file and
    /// the seconds between uploads: `--remote`, `--remote-lag` for fstab lines.
    pub remote: Option<String>,
    pub credentials: Option<std::path::PathBuf>,
    pub remote_lag: Option<u64>,
}

impl MountOptions {
    /// Whether the daemon checks permissions itself. Only where `daemon_permissions` asks: the
    /// kernel then also skips its protections of sticky directories (`fs.protected_regular`,
    /// `fs.protected_fifos`), which the daemon cannot make up for (such an `O_CREAT` open
    /// reaches it without `O_CREAT`, or not at all). And only on a mount that its owner alone
    /// may use (no `allow_other`, no `allow_root`) without `default_permissions`: its callers'
    /// groups, capabilities and filesystem uid the daemon reads per request. Not with the
    /// writeback cache, where the kernel sends a utimes to "now" (which write permission
    /// allows) as given times (which only the owner may set); nor where device nodes are
    /// allowed (`dev`), since their driver opens them with no request to the daemon.
    pub fn daemon_checks_permissions(&self) -> bool {
        self.daemon_permissions
            && matches!(self.acl, None | Some(SessionACL::Owner))
            && !self.fuse.contains(&MountOption::DefaultPermissions)
            && !self.allows_devices()
            && !self.writeback_cache
    }

    /// Whether device nodes may be opened: `dev`, the last of `dev` and `nodev` winning as in
    /// mount(8) (FUSE mounts are `nodev` by default).
    fn allows_devices(&self) -> bool {
        self.fuse
            .iter()
            .rev()
            .find(|o| matches!(o, MountOption::Dev | MountOption::NoDev))
            == Some(&MountOption::Dev)
    }

    /// The atime rule of this mount: `relatime` unless an option names another, as the
    /// kernel's default; a read-only mount never changes atime.
    pub fn atime_mode(&self) -> AtimeMode {
        if self.read_only {
            AtimeMode::NoAtime
        } else {
            self.atime.unwrap_or_default()
        }
    }
}

/// Words of mount(8) and fstab that are for mount(8) itself, not for the file system: accepted
/// so that an fstab line works, and ignored.
fn for_mount_itself(opt: &str) -> bool {
    matches!(
        opt,
        "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

/// Parses `-o` options (each argument comma separated). Any option neither the kernel's, nor
/// FUSE's, nor ours, nor mount(8)'s own words is refused, naming it.
pub fn parse_mount_options(opts: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    for opt in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        if for_mount_itself(opt) {
            continue;
        }
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let mo = match name {
            "flush_interval" | "group_split_size" | "compaction_policy" | "fsname" | "subtype"
            | "remote" | "credentials" | "remote_lag" => valued_option(&mut out, opt, name, value)?,
            _ if value.is_some() => return Err(unknown(opt)),
            _ => flag_option(&mut out, opt)?,
        };
        out.fuse.extend(mo);
    }
    Ok(out)
}

/// An option that takes a value (`name=value`, the value not empty): ours are kept in `out`;
/// `subtype=` is the kernel's, returned.
fn valued_option(
    out: &mut MountOptions,
    opt: &str,
    name: &str,
    value: Option<&str>,
) -> Result<Option<MountOption>, String> {
    let need = |what: &str| -> Result<&str, String> {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("mount option '{opt}': give {name}={what}"))
    };
    match name {
        "flush_interval" => {
            let v = need("SECONDS")?;
            out.flush_interval =
                Some(v.parse().map_err(|_| {
                    format!("mount option '{opt}': {v} is not a number of seconds")
                })?);
        }
        "remote" => out.remote = Some(need("s3://BUCKET/PREFIX")?.to_string()),
        "credentials" => out.credentials = Some(need("FILE")?.into()),
        "remote_lag" => {
            let v = need("SECONDS")?;
            out.remote_lag =
                Some(v.parse().map_err(|_| {
                    format!("mount option '{opt}': {v} is not a number of seconds")
                })?);
        }
        "group_split_size" => {
            let v = need("SIZE")?;
            out.group_split_size =
                Some(parse_size(v).map_err(|e| format!("mount option '{opt}': {e}"))?);
        }
        "compaction_policy" => {
            let v = need("POLICY")?;
            out.compaction_policy =
                Some(Policy::from_str(v, false).map_err(|_| {
                    format!("mount option '{opt}': expected greedy or cost-benefit")
                })?);
        }
        "fsname" => out.fsname = Some(need("NAME")?.to_string()),
        _ => return Ok(Some(MountOption::Subtype(need("NAME")?.to_string()))),
    }
    Ok(None)
}

/// An option without a value: the kernel's and FUSE's are returned for the mount (some also
/// kept in `out`), ours are kept in `out` alone; any other is refused.
fn flag_option(out: &mut MountOptions, opt: &str) -> Result<Option<MountOption>, String> {
    Ok(Some(match opt {
        "allow_other" => {
            out.acl = Some(SessionACL::All);
            return Ok(None);
        }
        "allow_root" => {
            out.acl = Some(SessionACL::RootAndOwner);
            return Ok(None);
        }
        "ro" => {
            out.read_only = true;
            MountOption::RO
        }
        "rw" => {
            out.read_only = false;
            MountOption::RW
        }
        "auto_unmount" => MountOption::AutoUnmount,
        "default_permissions" => MountOption::DefaultPermissions,
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "dirsync" => MountOption::DirSync,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        "atime" | "noatime" | "relatime" | "strictatime" => {
            out.atime = AtimeMode::from_option(opt);
            // The kernel leaves atime on FUSE to the daemon; only these two have a flag.
            match opt {
                "atime" => MountOption::Atime,
                "noatime" => MountOption::NoAtime,
                _ => return Ok(None),
            }
        }
        // Directories follow the files' rule here, as the kernel leaves it to us.
        "nodiratime" => return Ok(None),
        "daemon_permissions" => {
            out.daemon_permissions = true;
            return Ok(None);
        }
        "writeback_cache" => {
            out.writeback_cache = true;
            return Ok(None);
        }
        _ => return Err(unknown(opt)),
    }))
}

fn unknown(opt: &str) -> String {
    format!(
        "unknown mount option '{opt}' (logstorfs takes the kernel's and FUSE's mount options, \
         flush_interval=, group_split_size=, compaction_policy=, and ignores mount(8)'s own)"
    )
}

/// The atime rule `-o` options ask for; options that are not valid give the default rule.
pub fn atime_mode(opts: &[String]) -> AtimeMode {
    parse_mount_options(opts).map_or_else(|_| AtimeMode::default(), |o| o.atime_mode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOptions, String> {
        parse_mount_options(&[s.to_string()])
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2gb").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn capacities_outside_the_engine_range_are_refused() {
        assert_eq!(parse_capacity("16M").unwrap(), 16 << 20);
        assert_eq!(parse_capacity("16T").unwrap(), 16 << 40);
        for bad in ["0", "15M", "17T", "1P"] {
            let err = parse_capacity(bad).unwrap_err();
            assert!(
                err.contains("outside the supported store sizes"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_daemon_checks_permissions_only_where_asked_and_the_owner_alone_uses_the_mount() {
        assert!(!parse("noatime").unwrap().daemon_checks_permissions());
        assert!(
            parse("daemon_permissions")
                .unwrap()
                .daemon_checks_permissions()
        );
        assert!(
            parse("daemon_permissions,dev,nodev")
                .unwrap()
                .daemon_checks_permissions()
        );
        for kernel_checks in [
            "allow_other",
            "allow_root",
            "default_permissions",
            "writeback_cache",
            "dev",
        ] {
            assert!(
                !parse(&format!("daemon_permissions,{kernel_checks}"))
                    .unwrap()
                    .daemon_checks_permissions(),
                "{kernel_checks}"
            );
        }
    }

    #[test]
    fn kernel_and_fuse_options_map_to_fuser() {
        let o = parse("allow_other,default_permissions,ro,noatime,subtype=x").unwrap();
        assert_eq!(o.acl, Some(SessionACL::All));
        assert!(o.read_only);
        assert_eq!(
            o.fuse,
            [
                MountOption::DefaultPermissions,
                MountOption::RO,
                MountOption::NoAtime,
                MountOption::Subtype("x".into())
            ]
        );
        assert_eq!(o.atime_mode(), AtimeMode::NoAtime);
    }

    #[test]
    fn our_settings_are_options() {
        let o = parse_mount_options(&[
            "flush_interval=0,group_split_size=4M".into(),
            "compaction_policy=greedy,fsname=/srv/store".into(),
        ])
        .unwrap();
        assert_eq!(o.flush_interval, Some(0));
        assert_eq!(o.group_split_size, Some(4 << 20));
        assert_eq!(o.compaction_policy, Some(Policy::Greedy));
        assert_eq!(o.fsname.as_deref(), Some("/srv/store"));
        assert!(o.fuse.is_empty());
    }

    #[test]
    fn mount_words_are_ignored() {
        let o =
            parse("defaults,auto,noauto,user,users,nofail,_netdev,x-systemd.automount,comment=x")
                .unwrap();
        assert!(o.fuse.is_empty() && o.acl.is_none() && !o.read_only);
    }

    #[test]
    fn unknown_and_malformed_options_are_refused_by_name() {
        for (opt, says) in [
            ("foo", "unknown mount option 'foo'"),
            ("ro,bogus=1", "unknown mount option 'bogus=1'"),
            ("allow_other=1", "unknown mount option 'allow_other=1'"),
            ("flush_interval=soon", "'flush_interval=soon'"),
            ("flush_interval", "give flush_interval=SECONDS"),
            ("group_split_size=1Q", "'group_split_size=1Q'"),
            ("compaction_policy=lru", "expected greedy or cost-benefit"),
        ] {
            let err = parse(opt).unwrap_err();
            assert!(err.contains(says), "{opt}: {err}");
        }
    }

    #[test]
    fn writeback_cache_is_asked_of_fuse_not_passed_to_mount() {
        let o = parse("noatime,writeback_cache").unwrap();
        assert!(o.writeback_cache);
        assert!(!parse("noatime").unwrap().writeback_cache);
        assert_eq!(o.fuse, vec![MountOption::NoAtime]);
    }

    #[test]
    fn atime_rules() {
        let mode = |o: &str| atime_mode(&[o.to_string()]);
        assert_eq!(mode(""), AtimeMode::Relatime);
        assert_eq!(mode("strictatime"), AtimeMode::StrictAtime);
        assert_eq!(mode("strictatime,noatime"), AtimeMode::NoAtime);
        assert_eq!(mode("strictatime,ro"), AtimeMode::NoAtime);
        assert_eq!(mode("ro,rw,strictatime"), AtimeMode::StrictAtime);
    }
}
