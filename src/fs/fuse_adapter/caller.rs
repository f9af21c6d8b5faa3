//! Who is asking: the caller of a request as the filesystem sees it (uid, gid, groups and the
//! capabilities that change what a call may do), read from the request and, only when a call
//! needs more than it carries, from `/proc`. In doubt a caller lacks a capability, the safe side.

use fuser::Request;

use std::cell::OnceCell;

use super::super::Caller;
use super::super::inode_flags::FlagsCaller;
use super::super::permission::Credentials;

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// The caller of one request for a permission check: its groups and capabilities are read
/// from `/proc` at most once, and only if the check asks.
pub(super) struct RequestCredentials<'r> {
    req: &'r Request,
    status: OnceCell<Option<String>>,
}

impl<'r> RequestCredentials<'r> {
    pub(super) fn new(req: &'r Request) -> Self {
        RequestCredentials {
            req,
            status: OnceCell::new(),
        }
    }

    fn status(&self) -> Option<&str> {
        self.status
            .get_or_init(|| caller_status(self.req))
            .as_deref()
    }
}

impl Credentials for RequestCredentials<'_> {
    fn uid(&self) -> u32 {
        self.req.uid()
    }
    fn in_group(&self, gid: u32) -> bool {
        gid == self.req.gid() || self.status().is_some_and(|s| status_in_group(s, gid))
    }
    fn capable(&self, cap: u32) -> bool {
        self.status()
            .is_some_and(|s| status_has_capability(self.req, s, cap))
    }
}

/// `/proc/PID/status` of the caller's thread, if it is still there.
pub(super) fn caller_status(req: &Request) -> Option<String> {
    let pid = req.pid();
    if pid == 0 {
        return None; // from another pid namespace, or from the kernel itself
    }
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// Whether the caller has `CAP_FSETID`, which lets its writes, truncations and fallocates keep
/// set-user-ID and set-group-ID bits. The kernel says so for writes (`FUSE_WRITE_KILL_SUIDGID`)
/// and truncations (`FATTR_KILL_SUIDGID`, which fuser does not pass on), not for fallocate: we
/// read the caller's effective capabilities. A capability counts only in our own user namespace
/// (the kernel's `capable()` is against the initial one): in doubt, the caller lacks it, so the
/// bits go, which is the safe side.
pub(super) fn caller_has_fsetid(req: &Request) -> bool {
    const CAP_FSETID: u32 = 4;
    caller_has_capability(req, CAP_FSETID)
}

/// Whether the caller has capability number `cap` in its effective set, counted only in our
/// own user namespace (see [`caller_has_fsetid`]).
pub(super) fn caller_has_capability(req: &Request, cap: u32) -> bool {
    caller_status(req).is_some_and(|status| status_has_capability(req, &status, cap))
}

/// Whether the `status` of `req`'s caller names capability `cap` in its effective set, counted
/// only if the caller is in our own user namespace.
fn status_has_capability(req: &Request, status: &str, cap: u32) -> bool {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let theirs = ns(&req.pid().to_string());
    if theirs.is_none() || theirs != ns("self") {
        return false;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// The caller of a flag change, with the capabilities it needs (`CAP_FOWNER` 3,
/// `CAP_LINUX_IMMUTABLE` 9).
pub(super) fn flags_caller(req: &Request) -> FlagsCaller {
    FlagsCaller {
        uid: req.uid(),
        fowner: caller_has_capability(req, 3),
        linux_immutable: caller_has_capability(req, 9),
    }
}

/// Whether the caller is in group `gid`: its filesystem group ID or one of its supplementary
/// groups (which the request does not carry: read from `/proc` only when a set-group-ID file
/// without group execute asks).
pub(super) fn caller_in_group(req: &Request, gid: u32) -> bool {
    gid == req.gid() || caller_status(req).is_some_and(|status| status_in_group(&status, gid))
}

/// Whether a `/proc/PID/status` names `gid` among the supplementary groups.
fn status_in_group(status: &str, gid: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
}
