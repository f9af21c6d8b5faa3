//! `mount --remote s3://BUCKET/PREFIX`: the store mirrored to a bucket (`src/mirror`). The
//! bucket is opened and checked before anything is written; a store directory that holds no
//! store is restored from the bucket's newest manifest (with a progress bar) before the mount;
//! while mounted, an uploader thread runs a mirror round every `--remote-lag` seconds, and once
//! more at unmount.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::fs::Fs;
use crate::mirror::{self, Mirror, MirrorError, Restored, Round};
use crate::object::{ErrorKind, ObjectStorage};

/// Seconds between mirror rounds unless `--remote-lag` says otherwise.
pub const DEFAULT_REMOTE_LAG_SECS: u64 = 5;

/// Where and how often a mount mirrors its store.
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    /// A credentials file (`-o credentials=FILE`), else the `AWS_*` environment.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub credentials: Option<PathBuf>,
    pub lag: Duration,
    /// How long a manifest stays restorable once a newer one exists.
    pub retain: Duration,
}

/// Seconds a manifest is kept unless `--retain` says otherwise: a day.
pub const DEFAULT_RETAIN_SECS: u64 = 24 * 3600;

/// Published manifests between two collections of what no manifest kept needs.
const ROUNDS_PER_COLLECTION: u64 = 32;

/// Opens the bucket and checks that it answers to these credentials.
#[cfg(feature = "s3")]
pub fn open_bucket(remote: &Remote) -> Result<Arc<dyn ObjectStorage>, String> {
    use crate::object::S3Config;
    use crate::object::s3::{S3Options, S3Storage};
    let config = S3Config::from_env(&remote.url, remote.credentials.as_deref())
        .map_err(|e| format!("--remote {}: {e}", remote.url))?;
    let storage = S3Storage::new(&config, S3Options::default())
        .map_err(|e| format!("--remote {}: {e}", remote.url))?;
    storage
        .check()
        .map_err(|e| format!("--remote {}: {e}", remote.url))?;
    Ok(Arc::new(storage))
}

#[cfg(not(feature = "s3"))]
pub fn open_bucket(remote: &Remote) -> Result<Arc<dyn ObjectStorage>, String> {
    Err(format!(
        "--remote {}: this logstorfs was built without the object tier; build it with \
         `cargo build --release --features s3`",
        remote.url
    ))
}

/// Whether the bucket holds a manifest to restore from.
pub fn bucket_holds_store(objects: &dyn ObjectStorage, url: &str) -> Result<bool, String> {
    mirror::manifests(objects)
        .map(|m| !m.is_empty())
        .map_err(|e| format!("--remote {url}: {e}"))
}

/// Restores the bucket's newest manifest into `store` (which holds no store), showing progress
/// on a terminal.
pub fn restore_into(
    objects: &dyn ObjectStorage,
    url: &str,
    store: &Path,
) -> Result<Restored, String> {
    let bar = super::progress::bytes_bar("restoring from the bucket");
    let restored = mirror::restore(objects, None, store, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| format!("cannot restore {} from {url}: {e}", store.display()))?;
    bar.finish_and_clear();
    log::info!(
        "restored {} from {url}: manifest {}, durable LSN {}, {} objects, {} bytes fetched",
        store.display(),
        restored.manifest,
        restored.durable_lsn,
        restored.objects_fetched,
        restored.bytes_fetched
    );
    Ok(restored)
}

/// The thread that runs mirror rounds while the store is mounted.
pub struct Uploader {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Uploader {
    pub fn start(
        fs: Arc<Fs>,
        objects: Arc<dyn ObjectStorage>,
        remote: &Remote,
    ) -> Result<Uploader, String> {
        let url = remote.url.clone();
        let mirror = Mirror::attach(objects).map_err(|e| format!("--remote {url}: {e}"))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (lag, retain) = (remote.lag, remote.retain);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mirror".into())
                .spawn(move || upload_until_stopped(&fs, &mirror, &url, lag, retain, &stop))
                .map_err(|e| format!("cannot start the mirror's thread: {e}"))?
        };
        Ok(Uploader { stop, thread })
    }

    /// Stops the rounds after one last (everything durable so far goes up), and waits.
    pub fn finish(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

fn upload_until_stopped(
    fs: &Fs,
    mirror: &Mirror,
    url: &str,
    lag: Duration,
    retain: Duration,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut published = 0u64;
    loop {
        let stopping = {
            let mut stopped = stop.0.lock();
            if !*stopped {
                stop.1.wait_for(&mut stopped, lag);
            }
            *stopped
        };
        match mirror.round(fs.engine()) {
            Ok(Round::Published(n)) => {
                log::debug!("mirror: manifest {n} published to {url}");
                published += 1;
                if published.is_multiple_of(ROUNDS_PER_COLLECTION) && !stopping {
                    match mirror.collect(retain) {
                        Ok(c) => log::debug!(
                            "mirror: {} manifests and {} objects no longer needed deleted",
                            c.manifests,
                            c.objects
                        ),
                        Err(e) => log::warn!("mirror to {url}: collecting objects: {e}"),
                    }
                }
            }
            Ok(Round::Unchanged | Round::Overtaken) => {}
            Err(MirrorError::Object(e)) if e.kind == ErrorKind::AlreadyExists => {
                log::error!(
                    "mirror to {url} stopped: another writer took this prefix ({e}); the local \
                     store goes on unmirrored"
                );
                return;
            }
            Err(e) => log::warn!("mirror to {url}: {e}; trying again in {lag:?}"),
        }
        if stopping {
            let s = mirror.stats();
            log::info!(
                "mirror to {url}: {} manifests, {} objects, {} bytes put; the bucket holds LSN {}",
                s.manifests,
                s.objects_put,
                s.bytes_put,
                s.bucket_lsn
            );
            return;
        }
    }
}
