//! The object tier's door: immutable named objects in an S3-compatible bucket, behind a narrow,
//! blocking trait ([`ObjectStorage`]) that the engine's storage can sit on without knowing HTTP,
//! S3 or async Rust.
//!
//! - [`ObjectStorage`]: `put_new` (create-only), `get`, `get_range`, `list`, `delete`.
//! - [`ObjectError`] / [`ErrorKind`]: the few outcomes a caller decides on (absent, already there
//!   with other bytes, unreachable, refused credentials, no such bucket, anything else).
//! - [`S3Url`]: `s3://BUCKET/PREFIX`; [`S3Config`]: endpoint, region and keys from the standard
//!   `AWS_*` environment and/or a credentials file.
//! - [`s3::S3Storage`] (feature `s3`): the implementation over Apache Arrow's `object_store`
//!   crate. `tokio` is confined to that file: it owns a small runtime and every method blocks
//!   on it.
//! - [`counted::Counted`]: any storage with its requests counted (`stats`).
//! - [`memory::MemoryObjects`]: a bucket in memory, with faults on demand, for the model tests
//!   of the tiers above (never in place of a real gateway in the gateway tests).
//!
//! Names are relative to the URL's prefix, `/`-separated, and never reused by the tier's users:
//! every object is created once ([`ObjectStorage::put_new`]) and later only read or deleted.

pub mod counted;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

pub use bytes::Bytes;

/// Largest object [`ObjectStorage::put_new`] accepts. A create-only object must be one PUT:
/// Ceph's RADOS Gateway honours `If-None-Match: *` on PutObject but not on
/// CompleteMultipartUpload, so a multipart upload could silently replace an existing object.
/// S3 allows 5 GiB in one PUT (radosgw: `rgw_max_put_size`, 5 GiB by default); we stay far
/// below so that a PUT, and the read-back after a refused one, hold a bounded amount of memory.
/// Larger data is the caller's to split into several objects.
pub const MAX_OBJECT_BYTES: usize = 256 << 20;

/// What a caller decides on; the message of an [`ObjectError`] carries the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The bucket does not exist (or is not visible to these credentials).
    NoBucket,
    /// `put_new` found an object of that name holding other bytes: another writer made it (a
    /// writer that finds this has been fenced).
    AlreadyExists,
    /// The endpoint could not be reached, or stopped answering (after the retries).
    Unreachable,
    /// The gateway refused the credentials or the operation (HTTP 401/403).
    Auth,
    /// Anything else: a bad name, a malformed answer, a server error after the retries.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "no such object",
            ErrorKind::NoBucket => "no such bucket",
            ErrorKind::AlreadyExists => "the object already exists with other contents",
            ErrorKind::Unreachable => "the object store is unreachable",
            ErrorKind::Auth => "the object store refused the credentials",
            ErrorKind::Other => "object store error",
        })
    }
}

/// An error of the object tier: what kind, during which operation on which object, and the
/// gateway's own words.
#[derive(Clone, Debug)]
pub struct ObjectError {
    pub kind: ErrorKind,
    /// `put`, `get`, `list`, `delete`, ... (or `config` before any request).
    pub op: &'static str,
    /// The object's full location (`s3://bucket/prefix/name`), or the URL for `list`/`config`.
    pub location: String,
    /// What the gateway or the client said, plus a hint where one helps.
    pub detail: String,
}

impl ObjectError {
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        location: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        ObjectError {
            kind,
            op,
            location: location.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn config(detail: impl Into<String>) -> Self {
        ObjectError::new(ErrorKind::Other, "config", "", detail)
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}: {}: {}", self.op, self.kind, self.detail)
        } else {
            write!(
                f,
                "{} {}: {}: {}",
                self.op, self.location, self.kind, self.detail
            )
        }
    }
}

impl std::error::Error for ObjectError {}

/// How a successful [`ObjectStorage::put_new`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// The object was already there with exactly these bytes: an earlier attempt whose reply was
    /// lost made it (or another writer put the same bytes, which is as good).
    AlreadyThere,
}

/// After a create-only PUT was refused because the object exists: success only if it holds
/// exactly the bytes sent (our own earlier attempt, whose reply was lost); anything else was
/// written by another writer, and this one must stop (it has been fenced).
pub(crate) fn judge_existing(
    location: &str,
    sent: &[u8],
    there: &[u8],
) -> Result<PutOutcome, ObjectError> {
    if there == sent {
        Ok(PutOutcome::AlreadyThere)
    } else {
        Err(ObjectError::new(
            ErrorKind::AlreadyExists,
            "put",
            location,
            format!(
                "another writer created it: it holds {} bytes that differ from the {} sent",
                there.len(),
                sent.len()
            ),
        ))
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the storage's prefix, as given to `put_new`.
    pub name: String,
    pub size: u64,
}

/// Immutable objects in a bucket. Blocking: call from ordinary threads (never from inside an
/// async runtime).
pub trait ObjectStorage: Send + Sync {
    /// Creates `name` holding `bytes`, only if it does not exist (`If-None-Match: *`). If it
    /// exists, reads it back: the same bytes are [`PutOutcome::AlreadyThere`] (a retried PUT
    /// whose first reply was lost), other bytes are [`ErrorKind::AlreadyExists`]. A PUT whose
    /// reply did not come is retried a few times before [`ErrorKind::Unreachable`]. At most
    /// [`MAX_OBJECT_BYTES`].
    fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome, ObjectError>;

    /// The whole object.
    fn get(&self, name: &str) -> Result<Bytes, ObjectError>;

    /// Bytes `range` of the object; a range past the end is cut at the end.
    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, ObjectError>;

    /// Every object whose name starts with `prefix` (a plain string prefix, not only whole
    /// `/`-separated components), sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError>;

    /// Deletes the object; deleting an absent object succeeds (S3's DELETE is idempotent).
    fn delete(&self, name: &str) -> Result<(), ObjectError>;
}

/// `s3://BUCKET/PREFIX`: where a store's objects live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, ObjectError> {
        let bad = |why: String| ObjectError::new(ErrorKind::Other, "parse", url, why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL (expected s3://BUCKET/PREFIX)".into()))?;
        if rest.contains(['?', '#']) {
            return Err(bad("an s3:// URL takes no query or fragment (endpoint and keys come from AWS_* or the credentials file)".into()));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name (expected s3://BUCKET/PREFIX)".into()));
        }
        check_bucket_name(bucket).map_err(|why| bad(format!("bucket name {bucket:?} {why}")))?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_name(prefix).map_err(|why| bad(format!("prefix {prefix:?} {why}")))?;
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// S3's bucket naming rules (3-63 characters: lowercase letters, digits, `-` and `.`, starting
/// and ending with a letter or digit), which also make path-style URLs unambiguous.
fn check_bucket_name(b: &str) -> Result<(), &'static str> {
    if b.len() < 3 || b.len() > 63 {
        return Err("must be 3 to 63 characters long");
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
    {
        return Err("may hold only lowercase letters, digits, '-' and '.'");
    }
    let ends_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !ends_ok(b.as_bytes()[0]) || !ends_ok(b.as_bytes()[b.len() - 1]) {
        return Err("must start and end with a letter or digit");
    }
    if b.contains("..") {
        return Err("may not hold two dots in a row");
    }
    Ok(())
}

/// An object name or prefix: `/`-separated components, none empty, `.` or `..`, no control
/// characters, at most 900 bytes (S3 keys are at most 1024, the prefix comes on top).
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 900 {
        return Err("is longer than 900 bytes");
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("holds a control character");
    }
    for part in name.split('/') {
        match part {
            "" => return Err("has an empty component (a leading, trailing or doubled '/')"),
            "." | ".." => return Err("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Where the gateway is and who we are. `None` fields fall back to S3's defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub url: S3Url,
    /// `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`): e.g. `http://127.0.0.1:7480`; `None` = AWS itself.
    pub endpoint: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`); `us-east-1` when unset.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
    /// `AWS_ALLOW_HTTP=true`: plain HTTP to the endpoint (a local gateway).
    pub allow_http: bool,
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`: `BUCKET.host/key` instead of `host/BUCKET/key`.
    /// Path style by default: any gateway answers it, radosgw without wildcard DNS too.
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Config {
    // Never prints the secret: configs end up in logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("url", &self.url.to_string())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// The configuration from the process environment, the credentials file (if any) taking
    /// precedence for the settings it gives.
    pub fn from_env(url: &str, credentials_file: Option<&Path>) -> Result<S3Config, ObjectError> {
        let mut vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        if let Some(path) = credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ObjectError::config(format!(
                    "cannot read credentials file {}: {e}",
                    path.display()
                ))
            })?;
            let profile = vars
                .get("AWS_PROFILE")
                .cloned()
                .unwrap_or_else(|| "default".into());
            let from_file = parse_credentials(&text, &profile).map_err(|e| {
                ObjectError::config(format!("credentials file {}: {e}", path.display()))
            })?;
            vars.extend(from_file);
        }
        S3Config::from_vars(url, &vars)
    }

    /// The configuration from `AWS_*` variables (upper-case names, as in the environment).
    pub fn from_vars(url: &str, vars: &BTreeMap<String, String>) -> Result<S3Config, ObjectError> {
        let url = S3Url::parse(url)?;
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let flag = |k: &str| -> Result<bool, ObjectError> {
            match get(k).as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("false") | Some("0") | Some("no") => Ok(false),
                Some("true") | Some("1") | Some("yes") => Ok(true),
                Some(v) => Err(ObjectError::config(format!(
                    "{k}={v:?}: expected true or false"
                ))),
            }
        };
        // Without both keys the S3 client would go looking for instance credentials on the
        // network; a store's mount must say what is missing instead.
        let access_key_id = get("AWS_ACCESS_KEY_ID").ok_or_else(|| {
            ObjectError::config(
                "no AWS_ACCESS_KEY_ID: set it in the environment or the credentials file",
            )
        })?;
        let secret_access_key = get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            ObjectError::config(
                "no AWS_SECRET_ACCESS_KEY: set it in the environment or the credentials file",
            )
        })?;
        let endpoint = get("AWS_ENDPOINT").or_else(|| get("AWS_ENDPOINT_URL"));
        let allow_http = flag("AWS_ALLOW_HTTP")?;
        if let Some(e) = &endpoint {
            let scheme_ok = e.starts_with("https://") || e.starts_with("http://");
            if !scheme_ok {
                return Err(ObjectError::config(format!(
                    "AWS_ENDPOINT={e:?}: expected http://HOST:PORT or https://HOST"
                )));
            }
            if e.starts_with("http://") && !allow_http {
                return Err(ObjectError::config(format!(
                    "AWS_ENDPOINT={e:?} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it"
                )));
            }
        }
        Ok(S3Config {
            url,
            endpoint,
            region: get("AWS_REGION")
                .or_else(|| get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
            session_token: get("AWS_SESSION_TOKEN"),
            allow_http,
            virtual_hosted_style: flag("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")?,
        })
    }
}

/// A credentials file, in either of two forms:
/// - `KEY=VALUE` lines with the environment's names (`AWS_ACCESS_KEY_ID=...`, an optional
///   leading `export `, optional quotes), as `scripts/ceph.sh env` prints them;
/// - the AWS CLI's INI file (`[default]` then `aws_access_key_id = ...`): the section named
///   `profile` (or `[profile NAME]`) is read, its keys upper-cased (`region` -> `AWS_REGION`,
///   `endpoint_url` -> `AWS_ENDPOINT`).
///
/// `#` and `;` start comment lines. Only `AWS_*` settings are taken; anything else is an error,
/// so that a typo is not silently ignored.
pub fn parse_credentials(text: &str, profile: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut saw_profile = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name
                .strip_prefix("profile ")
                .unwrap_or(name)
                .trim()
                .to_string();
            saw_profile |= name == profile;
            section = Some(name);
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE, got {line:?}", n + 1))?;
        if section.as_deref().is_some_and(|s| s != profile) {
            continue;
        }
        let mut key = k.trim().to_ascii_uppercase();
        if key == "ENDPOINT_URL" || key == "ENDPOINT" {
            key = "AWS_ENDPOINT".into();
        } else if !key.starts_with("AWS_") {
            key = format!("AWS_{key}");
        }
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "line {}: unknown setting {:?} (known: {})",
                n + 1,
                k.trim(),
                KNOWN_KEYS.join(", ")
            ));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(key, v.to_string());
    }
    if section.is_some() && !saw_profile {
        return Err(format!("no [{profile}] section"));
    }
    Ok(out)
}

const KNOWN_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

#[cfg(test)]
mod tests;
