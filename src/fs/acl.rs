//! POSIX ACLs given as the `system.posix_acl_access` and `system.posix_acl_default` xattrs (what
//! `setfacl`, `cp -a` and `chmod` through libacl write), kept as ext4 keeps them:
//! - An access ACL that only restates the mode bits is not stored: it becomes the mode. An
//!   extended one is stored and its owner/mask/other entries become the mode bits; a chmod
//!   rewrites those entries ([`Acl::chmod`], Linux's `posix_acl_chmod`).
//! - A directory's default ACL is inherited on create ([`Acl::inherit`], Linux's
//!   `posix_acl_create`): a new directory takes it as its default ACL, and every new inode but a
//!   symlink as its access ACL, masked by the mode of the create call; the umask is then not
//!   applied. Without a default ACL the umask is.
//! - Enforcement: on a mount with `default_permissions` the kernel's (we negotiate
//!   `FUSE_POSIX_ACL`, so it reads the access ACL from us and checks named entries itself); on
//!   one without, ours ([`Acl::permits`], through `permission` and `permit`).

use super::{FsError, FsResult};

pub const ACCESS_ACL_XATTR: &[u8] = b"system.posix_acl_access";
pub const DEFAULT_ACL_XATTR: &[u8] = b"system.posix_acl_default";

const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// An ACL xattr a new inode inherits: its name and value.
pub type InheritedXattr = (&'static [u8], Vec<u8>);

/// One entry as stored: tag, permission bits (rwx = 4|2|1), and the user or group ID of a named
/// entry (undefined, all ones, for the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A valid ACL, its entries in the order stored (the kernel's canonical order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<AclEntry>,
}

impl Acl {
    /// Parses the xattr form: a little-endian u32 version, then entries of (tag u16, perm u16,
    /// id u32), all little-endian; checks it as Linux's `posix_acl_valid` does (one owner,
    /// group and other entry, named entries in their place, a mask if there are any). `None`
    /// for a value with no entries, which Linux takes as removing the ACL.
    pub fn parse(value: &[u8]) -> FsResult<Option<Acl>> {
        if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
            return Err(FsError::Invalid);
        }
        let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if version != ACL_VERSION {
            return Err(FsError::Invalid);
        }
        let entries: Vec<AclEntry> = value[4..]
            .chunks_exact(8)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        // The states of `posix_acl_valid`: what may come next.
        #[derive(PartialEq)]
        enum Next {
            UserObj,
            User,
            Group,
            Other,
            Done,
        }
        let mut next = Next::UserObj;
        let mut needs_mask = false;
        for e in &entries {
            if e.perm & !7 != 0 {
                return Err(FsError::Invalid);
            }
            next = match (e.tag, next) {
                (TAG_USER_OBJ, Next::UserObj) => Next::User,
                (TAG_USER, Next::User) => {
                    needs_mask = true;
                    Next::User
                }
                (TAG_GROUP_OBJ, Next::User) => Next::Group,
                (TAG_GROUP, Next::Group) => {
                    needs_mask = true;
                    Next::Group
                }
                (TAG_MASK, Next::Group) => Next::Other,
                (TAG_OTHER, Next::Other) => Next::Done,
                (TAG_OTHER, Next::Group) if !needs_mask => Next::Done,
                _ => return Err(FsError::Invalid),
            };
        }
        if next != Next::Done {
            return Err(FsError::Invalid);
        }
        Ok(Some(Acl { entries }))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for e in &self.entries {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn find(&self, tag: u16) -> Option<&AclEntry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    /// The mode bits this ACL implies (the group class is the mask if there is one), and
    /// whether it says no more than they do.
    pub fn mode(&self) -> AclMode {
        let perm = |tag| self.find(tag).map_or(0, |e| e.perm & 7);
        let group = if self.find(TAG_MASK).is_some() {
            perm(TAG_MASK)
        } else {
            perm(TAG_GROUP_OBJ)
        };
        AclMode {
            perm: (perm(TAG_USER_OBJ) << 6) | (group << 3) | perm(TAG_OTHER),
            equivalent: self.entries.len() == 3,
        }
    }

    /// What a chmod to `perm` does to an access ACL (`posix_acl_chmod_masq`): the owner and
    /// other entries take the new bits, and the mask (or, without one, the owning group entry)
    /// the group bits. Named entries are kept.
    pub fn chmod(&mut self, perm: u16) {
        let has_mask = self.find(TAG_MASK).is_some();
        for e in &mut self.entries {
            match e.tag {
                TAG_USER_OBJ => e.perm = (perm >> 6) & 7,
                TAG_OTHER => e.perm = perm & 7,
                TAG_MASK => e.perm = (perm >> 3) & 7,
                TAG_GROUP_OBJ if !has_mask => e.perm = (perm >> 3) & 7,
                _ => {}
            }
        }
    }

    /// What a new inode created with permission bits `perm` in a directory whose default ACL
    /// is `self` gets (`posix_acl_create_masq`): the access ACL (the default ACL with each
    /// class entry cut to the bits of `perm`, `None` if that only restates the mode), and the
    /// new permission bits (`perm` cut to the ACL's entries; set-ID and sticky bits kept).
    pub fn inherit(&self, perm: u16) -> (Option<Acl>, u16) {
        let mut acl = self.clone();
        let mut mode = perm;
        let mut not_equiv = false;
        for e in &mut acl.entries {
            match e.tag {
                TAG_USER_OBJ => {
                    e.perm &= (mode >> 6) & 7;
                    mode &= (e.perm << 6) | !0o700;
                }
                TAG_USER | TAG_GROUP | TAG_MASK => not_equiv = true,
                TAG_OTHER => {
                    e.perm &= mode & 7;
                    mode &= e.perm | !0o007;
                }
                _ => {}
            }
        }
        // The group class: the mask if there is one, else the owning group entry.
        let class = if acl.find(TAG_MASK).is_some() {
            TAG_MASK
        } else {
            TAG_GROUP_OBJ
        };
        if let Some(e) = acl.entries.iter_mut().find(|e| e.tag == class) {
            e.perm &= (mode >> 3) & 7;
            mode &= (e.perm << 3) | !0o070;
        }
        (not_equiv.then_some(acl), mode)
    }

    /// Whether a caller who is not the owner (uid `uid`, in the groups `in_group` names) gets
    /// all of `want` (rwx bits) from this access ACL: Linux's `posix_acl_permission`. The first
    /// matching named user, or the groups that match, decide, limited by the mask; else other.
    pub fn permits(
        &self,
        uid: u32,
        owner: u32,
        owner_group: u32,
        in_group: &dyn Fn(u32) -> bool,
        want: u16,
    ) -> bool {
        let want = want & 7;
        let mask = self.find(TAG_MASK).map_or(7, |e| e.perm);
        let mut group_matched = false;
        for e in &self.entries {
            match e.tag {
                TAG_USER_OBJ if uid == owner => return e.perm & want == want,
                TAG_USER if e.id == uid => return e.perm & mask & want == want,
                TAG_GROUP_OBJ | TAG_GROUP => {
                    let gid = if e.tag == TAG_GROUP_OBJ {
                        owner_group
                    } else {
                        e.id
                    };
                    if in_group(gid) {
                        group_matched = true;
                        if e.perm & want == want {
                            return e.perm & mask & want == want;
                        }
                    }
                }
                TAG_OTHER => return !group_matched && e.perm & want == want,
                _ => {}
            }
        }
        false
    }
}

/// What an access ACL means for the inode.
#[derive(Debug, PartialEq, Eq)]
pub struct AclMode {
    /// The permission bits (0o777) it implies.
    pub perm: u16,
    /// Whether it says no more than those bits (then it is not stored).
    pub equivalent: bool,
}

/// The mode an access ACL value implies ([`Acl::parse`], [`Acl::mode`]).
pub fn parse_access_acl(value: &[u8]) -> FsResult<AclMode> {
    Ok(Acl::parse(value)?.ok_or(FsError::Invalid)?.mode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for (t, p, id) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn minimal_acl_is_the_mode() {
        let a = acl(&[
            (TAG_USER_OBJ, 6, u32::MAX),
            (TAG_GROUP_OBJ, 4, u32::MAX),
            (TAG_OTHER, 4, u32::MAX),
        ]);
        assert_eq!(
            parse_access_acl(&a).unwrap(),
            AclMode {
                perm: 0o644,
                equivalent: true
            }
        );
    }

    #[test]
    fn extended_acl_uses_the_mask_for_group_bits() {
        let a = acl(&[
            (TAG_USER_OBJ, 7, u32::MAX),
            (TAG_USER, 7, 1000),
            (TAG_GROUP_OBJ, 5, u32::MAX),
            (TAG_MASK, 1, u32::MAX),
            (TAG_OTHER, 0, u32::MAX),
        ]);
        assert_eq!(
            parse_access_acl(&a).unwrap(),
            AclMode {
                perm: 0o710,
                equivalent: false
            }
        );
    }

    #[test]
    fn malformed_acls_are_einval() {
        assert!(parse_access_acl(&[1, 2, 3]).is_err());
        assert!(parse_access_acl(&acl(&[(TAG_USER_OBJ, 6, 0)])).is_err());
        let mut bad = acl(&[
            (TAG_USER_OBJ, 6, 0),
            (TAG_GROUP_OBJ, 4, 0),
            (TAG_OTHER, 4, 0),
        ]);
        bad[0] = 3;
        assert!(parse_access_acl(&bad).is_err());
    }
}
