//! Which xattr names exist, as ext4 and the VFS decide it.
//!
//! For ext4 the VFS picks a handler by the name's prefix (`xattr_resolve_name`): a bare prefix
//! is EINVAL and a name no handler takes (another namespace, `system.` other than the POSIX
//! ACLs) is EOPNOTSUPP. A FUSE mount has one handler with an empty prefix, so every name
//! reaches the daemon and these rules are ours.

use super::acl::ACCESS_ACL_XATTR;
use super::{FsError, FsResult};

/// The namespaces ext4 keeps arbitrary names in.
const PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// The `system.` names ext4 knows.
const SYSTEM_NAMES: [&[u8]; 2] = [ACCESS_ACL_XATTR, b"system.posix_acl_default"];

/// Ok if `name` is one ext4 could hold; the errno ext4 gives otherwise.
pub fn check(name: &[u8]) -> FsResult<()> {
    for prefix in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return if rest.is_empty() {
                Err(FsError::Invalid)
            } else {
                Ok(())
            };
        }
    }
    if SYSTEM_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(FsError::NotSupported)
    }
}
