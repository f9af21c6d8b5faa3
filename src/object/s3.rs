//! [`ObjectStorage`] on an S3-compatible gateway, through Apache Arrow's `object_store` crate.
//!
//! `object_store` is async; this file is the only one in the crate that knows it. An
//! [`S3Storage`] owns a small tokio runtime (two worker threads, for the HTTP connections'
//! tasks) and each blocking method runs its request with `Runtime::block_on` on the caller's
//! thread, so many callers may be in flight at once. Calling from inside another async runtime
//! would panic; the filesystem and the engine have none.

use std::error::Error as StdError;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::{
    Bytes, ErrorKind, MAX_OBJECT_BYTES, ObjectError, ObjectInfo, ObjectStorage, PutOutcome,
    S3Config, check_name,
};

/// Tuning that is not part of where the bucket is; tests shorten it.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Retries of one request by the client (connection refused, 5xx, 429, and timeouts of
    /// requests safe to repeat), with exponential backoff from 100 ms.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// Whole-request timeout (a PUT of [`MAX_OBJECT_BYTES`] must fit in it).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts of a create-only PUT whose reply never came after it may have been sent (a
    /// timeout, a reset mid-reply: the client does not repeat those for a PUT, which is not
    /// idempotent). The attempt after a lost reply that did create the object meets 412 and the
    /// read-back finds our bytes.
    pub put_attempts: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            max_retries: 5,
            retry_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            put_attempts: 4,
        }
    }
}

/// A bucket prefix on an S3-compatible gateway.
pub struct S3Storage {
    // Declared before the runtime: dropped first, while the runtime that runs its connection
    // tasks still exists.
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// The key prefix with its trailing `/`, or empty.
    key_prefix: String,
    options: S3Options,
}

impl S3Storage {
    /// Builds the client; sends nothing (see [`S3Storage::check`]).
    pub fn new(config: &S3Config, options: S3Options) -> Result<S3Storage, ObjectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-tier")
            .enable_all()
            .build()
            .map_err(|e| {
                ObjectError::config(format!("cannot start the object tier's runtime: {e}"))
            })?;
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.url.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| ObjectError::config(format!("cannot configure the S3 client: {e}")))?;
        let key_prefix = if config.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.url.prefix)
        };
        Ok(S3Storage {
            store: Arc::new(store),
            runtime,
            url: config.url.to_string(),
            key_prefix,
            options,
        })
    }

    /// One listing request under the prefix: proves that the endpoint answers, the credentials
    /// are accepted and the bucket exists, with the error naming which of them is wrong.
    pub fn check(&self) -> Result<(), ObjectError> {
        let prefix = self.dir_of("");
        self.runtime.block_on(async {
            let mut stream = self.store.list(prefix.as_ref());
            match stream.next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(self.error("check", &self.url, e)),
            }
        })
    }

    fn location(&self, name: &str) -> String {
        format!("{}/{}", self.url, name)
    }

    fn path(&self, op: &'static str, name: &str) -> Result<StorePath, ObjectError> {
        check_name(name).map_err(|why| {
            ObjectError::new(
                ErrorKind::Other,
                op,
                self.location(name),
                format!("invalid object name {name:?}: {why}"),
            )
        })?;
        StorePath::parse(format!("{}{}", self.key_prefix, name)).map_err(|e| {
            ObjectError::new(
                ErrorKind::Other,
                op,
                self.location(name),
                format!("invalid object name {name:?}: {e}"),
            )
        })
    }

    /// The listing "directory" for a string prefix: S3 lists whole `/` components through
    /// object_store, so list the enclosing directory and filter by the rest.
    fn dir_of(&self, prefix: &str) -> Option<StorePath> {
        let dir = match prefix.rfind('/') {
            Some(i) => format!("{}{}", self.key_prefix, &prefix[..i]),
            None => self.key_prefix.trim_end_matches('/').to_string(),
        };
        if dir.is_empty() {
            None
        } else {
            Some(StorePath::from(dir))
        }
    }

    fn error(&self, op: &'static str, location: &str, e: object_store::Error) -> ObjectError {
        classify(op, location, &e)
    }

    async fn put_once(&self, path: &StorePath, bytes: &Bytes) -> Result<(), object_store::Error> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
            .map(|_| ())
    }

    async fn get_bytes(&self, path: &StorePath) -> Result<Bytes, object_store::Error> {
        self.store.get(path).await?.bytes().await
    }
}

impl ObjectStorage for S3Storage {
    fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome, ObjectError> {
        let path = self.path("put", name)?;
        let location = self.location(name);
        if bytes.len() > MAX_OBJECT_BYTES {
            return Err(ObjectError::new(
                ErrorKind::Other,
                "put",
                location,
                format!(
                    "{} bytes is more than one create-only PUT may carry ({MAX_OBJECT_BYTES})",
                    bytes.len()
                ),
            ));
        }
        self.runtime.block_on(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let (err, reply_lost) = match self.put_once(&path, &bytes).await {
                    Ok(()) => return Ok(PutOutcome::Created),
                    Err(e) => (classify("put", &location, &e), reply_may_be_lost(&e)),
                };
                match err.kind {
                    ErrorKind::AlreadyExists => {
                        let there = self
                            .get_bytes(&path)
                            .await
                            .map_err(|e| classify("put (read-back)", &location, &e))?;
                        return super::judge_existing(&location, &bytes, &there);
                    }
                    ErrorKind::Unreachable if reply_lost && attempt < self.options.put_attempts => {
                        log::warn!(
                            "{err}: attempt {attempt} of {}, retrying",
                            self.options.put_attempts
                        );
                        tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                    }
                    _ => return Err(err),
                }
            }
        })
    }

    fn get(&self, name: &str) -> Result<Bytes, ObjectError> {
        let path = self.path("get", name)?;
        self.runtime
            .block_on(self.get_bytes(&path))
            .map_err(|e| self.error("get", &self.location(name), e))
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let path = self.path("get", name)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.runtime
            .block_on(async {
                let opts = object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(range.clone())),
                    ..Default::default()
                };
                match self.store.get_opts(&path, opts).await {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| self.error("get", &self.location(name), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        if !prefix.is_empty() {
            // A trailing '/' (a whole directory) is fine; the rest must be a name's beginning.
            check_name(prefix.trim_end_matches('/')).map_err(|why| {
                ObjectError::new(
                    ErrorKind::Other,
                    "list",
                    self.location(prefix),
                    format!("invalid prefix {prefix:?}: {why}"),
                )
            })?;
        }
        let dir = self.dir_of(prefix);
        let want = format!("{}{}", self.key_prefix, prefix);
        let mut out = self.runtime.block_on(async {
            let mut stream = self.store.list(dir.as_ref());
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.error("list", &self.location(prefix), e))?;
                let key = meta.location.as_ref();
                if let Some(name) = key.strip_prefix(&self.key_prefix)
                    && key.starts_with(&want)
                {
                    out.push(ObjectInfo {
                        name: name.to_string(),
                        size: meta.size,
                    });
                }
            }
            Ok::<_, ObjectError>(out)
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), ObjectError> {
        let path = self.path("delete", name)?;
        self.runtime
            .block_on(self.store.delete(&path))
            .map_err(|e| self.error("delete", &self.location(name), e))
    }
}

/// Maps the client's error to our kinds. The HTTP status is visible through object_store's
/// variants (404, 412/409, 401/403); a connection failure through its `HttpError` in the source
/// chain; S3's error code (`NoSuchBucket`, `InvalidAccessKeyId`, ...) only in the response body
/// that the message quotes.
fn classify(op: &'static str, location: &str, e: &object_store::Error) -> ObjectError {
    use object_store::Error as E;
    let text = chain_text(e);
    let code = s3_code(&text);
    let transport = transport_kind(e);
    let (kind, hint) = match (e, code.as_deref()) {
        (_, Some("NoSuchBucket")) => (
            ErrorKind::NoBucket,
            "the bucket does not exist: create it, or check the URL's bucket name",
        ),
        (E::NotFound { .. }, _) => (ErrorKind::NotFound, ""),
        (E::AlreadyExists { .. } | E::Precondition { .. }, _) => (ErrorKind::AlreadyExists, ""),
        (E::PermissionDenied { .. } | E::Unauthenticated { .. }, _)
        | (
            _,
            Some(
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "InvalidToken"
                | "ExpiredToken",
            ),
        ) => (
            ErrorKind::Auth,
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the credentials file) and the bucket's permissions",
        ),
        _ if transport.is_some() => (
            ErrorKind::Unreachable,
            "check AWS_ENDPOINT and that the gateway runs",
        ),
        _ => (ErrorKind::Other, ""),
    };
    let mut detail = match &code {
        Some(c) => format!("{c}: {text}"),
        None => text,
    };
    if !hint.is_empty() {
        detail = format!("{hint} ({detail})");
    }
    ObjectError::new(kind, op, location, detail)
}

/// The error and its sources, one message each, joined with `: ` (the top message of the client
/// often says only "Generic S3 error").
fn chain_text(e: &object_store::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// `<Code>X</Code>` of an S3 error body quoted in the message.
fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(text[start..start + len].to_string())
}

/// Whether the request may have reached the server although no reply came: the client retries
/// such a failure only for idempotent requests, and a create-only PUT is not one. (A refused
/// connection, or one closed before the reply began, the client has retried already.)
fn reply_may_be_lost(e: &object_store::Error) -> bool {
    matches!(
        transport_kind(e),
        Some(
            HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
                | HttpErrorKind::Unknown
                | HttpErrorKind::Decode
        )
    )
}

/// The kind of the connection failure in the error's source chain, if any.
fn transport_kind(e: &object_store::Error) -> Option<HttpErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = cur {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        cur = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::s3_code;

    #[test]
    fn s3_code_is_read_from_the_quoted_body() {
        let text = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><BucketName>x</BucketName></Error>";
        assert_eq!(s3_code(text).as_deref(), Some("NoSuchBucket"));
        assert_eq!(s3_code("connection refused"), None);
    }
}
