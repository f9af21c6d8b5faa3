//! POSIX access ACLs given as the `system.posix_acl_access` xattr (what `cp -a`, `setfacl` and
//! `chmod` through libacl write). As ext4 does, an ACL that only restates the mode bits is not
//! stored: it becomes the mode. An extended ACL is stored as an xattr and its owner/mask/other
//! entries become the mode bits; named entries are kept but not enforced (the kernel checks the
//! mode bits only, because we do not ask for FUSE_POSIX_ACL).

use super::{FsError, FsResult};

pub const ACCESS_ACL_XATTR: &[u8] = b"system.posix_acl_access";

const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// What an access ACL means for the inode.
#[derive(Debug, PartialEq, Eq)]
pub struct AclMode {
    /// The permission bits (0o777) it implies.
    pub perm: u16,
    /// Whether it says no more than those bits (then it is not stored).
    pub equivalent: bool,
}

/// Parses the xattr form: a little-endian u32 version, then entries of (tag u16, perm u16,
/// id u32), all little-endian.
pub fn parse_access_acl(value: &[u8]) -> FsResult<AclMode> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Err(FsError::Invalid);
    }
    let version = u32::from_le_bytes(value[0..4].try_into().map_err(|_| FsError::Invalid)?);
    if version != ACL_VERSION {
        return Err(FsError::Invalid);
    }
    let (mut user, mut group, mut other, mut mask) = (None, None, None, None);
    let mut named = false;
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]) & 7;
        match tag {
            TAG_USER_OBJ => user = Some(perm),
            TAG_GROUP_OBJ => group = Some(perm),
            TAG_OTHER => other = Some(perm),
            TAG_MASK => mask = Some(perm),
            TAG_USER | TAG_GROUP => named = true,
            _ => return Err(FsError::Invalid),
        }
    }
    let (Some(u), Some(g), Some(o)) = (user, group, other) else {
        return Err(FsError::Invalid);
    };
    let g = mask.unwrap_or(g);
    Ok(AclMode {
        perm: (u << 6) | (g << 3) | o,
        equivalent: !named && mask.is_none(),
    })
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
