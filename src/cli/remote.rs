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
use crate::object::counted::{Counted, RequestCounts};
use crate::object::{ErrorKind, ObjectStorage};

/// Seconds between mirror rounds unless `--remote-lag` says otherwise.
pub const DEFAULT_REMOTE_LAG_SECS: u64 = 5;

/// Where and how often a mount mirrors its store.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    pub url: String,
    /// A credentials file (`-o credentials=FILE`), else the `AWS_*` environment.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub credentials: Option<PathBuf>,
    pub lag: Duration,
    /// How long a manifest stays restorable once a newer one exists.
    pub retain: Duration,
    /// `--remote-sync`: an fsync also waits, up to this long, until the bucket holds its data.
    pub sync_timeout: Option<Duration>,
    /// The writer number this store publishes with, and the manifest whose image it goes on
    /// from (decided by `mount` before any write: [`check_writer`], [`restore_into`]).
    pub writer: u64,
    pub continues: Option<u64>,
}

/// Seconds a manifest is kept unless `--retain` says otherwise: a day.
pub const DEFAULT_RETAIN_SECS: u64 = 24 * 3600;

/// Seconds an fsync waits for the bucket with `--remote-sync` unless
/// `--remote-sync-timeout` says otherwise.
pub const DEFAULT_REMOTE_SYNC_TIMEOUT_SECS: u64 = 60;

/// Rounds overtaken in a row before the uploader waits a lag again.
const MAX_OVERTAKEN_IN_A_ROW: u32 = 20;

/// A published image that replaced one this many `--remote-lag`s old (and at least
/// [`BEHIND_WARN_FLOOR`]) is logged as a warning: the store writes faster than it uploads, or
/// the gateway is slow or was away. Writers never wait for the bucket without `--remote-sync`,
/// so this warning and `stats` are how a user learns that the bucket fell behind.
const BEHIND_WARN_LAGS: u32 = 4;
const BEHIND_WARN_FLOOR: Duration = Duration::from_secs(30);
/// At most one such warning in this long.
const BEHIND_WARN_EVERY: Duration = Duration::from_secs(300);

/// Published manifests between two collections of what no manifest kept needs.
const ROUNDS_PER_COLLECTION: u64 = 32;

/// The daemon's file in the store directory about its mirror: which prefix, which writer
/// (the random number in every manifest this store made), and the figures of the last round
/// (`logstorfs stats` shows them).
pub const REMOTE_FILE: &str = "remote.json";

/// What [`REMOTE_FILE`] holds. Fields added later default when an older file lacks them: the
/// writer number in it must never be lost to a format change.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RemoteRecord {
    pub url: String,
    /// Written into every manifest this store publishes; a newest manifest with another
    /// writer means another store took the prefix.
    pub writer: u64,
    pub lag_secs: u64,
    pub retain_secs: u64,
    /// The newest manifest this store published, and the durable LSN it holds.
    pub manifest: u64,
    pub bucket_lsn: u64,
    /// The store's durable LSN after the last round: the bucket lags behind by the difference.
    pub local_lsn: u64,
    pub published_unix_ms: u64,
    pub manifests_published: u64,
    pub objects_put: u64,
    pub bytes_put: u64,
    /// Bytes of the last round's image not in the bucket (see `MirrorStats::queued_bytes`).
    pub queued_bytes: u64,
    /// Requests to the bucket since the mount, by kind (the restore before it not counted).
    pub requests: RequestCounts,
    /// The last round's error, if it failed.
    pub last_error: Option<String>,
}

impl RemoteRecord {
    pub fn read(store: &Path) -> Option<RemoteRecord> {
        let bytes = std::fs::read(store.join(REMOTE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces the file durably (the writer number must survive a crash).
    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        let tmp = store.join(format!("{REMOTE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &f, &json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, store.join(REMOTE_FILE))?;
        std::fs::File::open(store)?.sync_all()
    }
}

/// A writer number no other store will draw.
fn new_writer() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (nanos ^ ((std::process::id() as u64) << 32)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

/// Decides, before anything is written, whether the store in `store` (which exists) may
/// mirror to the bucket: it must be the writer of the bucket's newest manifest, or the bucket
/// must hold none. `take_over` makes it the writer whatever the bucket holds. Sets the
/// writer number to publish with and the manifest the store goes on from.
pub fn check_writer(
    objects: &dyn ObjectStorage,
    remote: &mut Remote,
    store: &Path,
    take_over: bool,
) -> Result<(), String> {
    let url = &remote.url;
    let newest = mirror::newest_manifest(objects).map_err(|e| format!("--remote {url}: {e}"))?;
    let record = RemoteRecord::read(store).filter(|r| r.url == *url);
    let ours = match (&newest, &record) {
        (None, _) => true,
        // Published by this store, or the very image it was restored from.
        (Some(m), Some(r)) => m.writer == r.writer || m.number == r.manifest,
        (Some(_), None) => false,
    };
    if ours || take_over {
        remote.writer = record.map_or_else(new_writer, |r| r.writer);
        remote.continues = newest.filter(|_| ours).map(|m| m.number);
        return Ok(());
    }
    let m = newest.expect("not ours: the bucket holds a manifest");
    Err(match record {
        Some(r) => format!(
            "{url} was taken over by another store (its manifest {} is not this store's, which \
             published up to {}): this store is fenced. Mount it without --remote to copy files \
             out, mount an empty directory to get the bucket's store, or give --take-over to \
             make the bucket this store's again",
            m.number, r.manifest
        ),
        None => format!(
            "{url} already holds another store (manifest {}): mount an empty directory to \
             restore it, or give --take-over to replace it with {}",
            m.number,
            store.display()
        ),
    })
}

/// A new writer number, for a store the mount creates.
pub fn writer_of_new_store() -> u64 {
    new_writer()
}

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

/// `format --remote`: opens the bucket prefix a new store will start, which must hold no
/// manifest (an existing store there is never overwritten by a format).
pub fn new_prefix(
    url: &str,
    credentials: Option<&Path>,
) -> Result<(Remote, Arc<dyn ObjectStorage>), String> {
    crate::object::S3Url::parse(url).map_err(|e| format!("--remote {url}: {e}"))?;
    let remote = Remote {
        url: url.to_string(),
        credentials: credentials.map(Path::to_path_buf),
        lag: Duration::from_secs(DEFAULT_REMOTE_LAG_SECS),
        retain: Duration::from_secs(DEFAULT_RETAIN_SECS),
        writer: new_writer(),
        ..Remote::default()
    };
    let objects = open_bucket(&remote)?;
    if bucket_holds_store(objects.as_ref(), url)? {
        return Err(format!(
            "--remote {url} already holds a store: give format a new prefix, or mount that \
             store (an empty directory restores it; --take-over replaces it with another)"
        ));
    }
    Ok((remote, objects))
}

/// `format --remote`: records the new store's writer (durably, before any upload) and
/// publishes its first manifest; returns the manifest's number.
pub fn publish_first(
    engine: &crate::engine::Engine,
    objects: Arc<dyn ObjectStorage>,
    remote: &Remote,
    store: &Path,
) -> Result<u64, String> {
    let url = &remote.url;
    let mut record = RemoteRecord {
        url: url.clone(),
        writer: remote.writer,
        lag_secs: remote.lag.as_secs(),
        retain_secs: remote.retain.as_secs(),
        ..RemoteRecord::default()
    };
    let write_record = |record: &RemoteRecord| {
        record
            .write(store)
            .map_err(|e| format!("cannot write {}: {e}", store.join(REMOTE_FILE).display()))
    };
    write_record(&record)?;
    let mirror =
        Mirror::attach(objects, remote.writer, None).map_err(|e| format!("--remote {url}: {e}"))?;
    // Nothing else writes: a round is overtaken only by the background's own moves.
    let mut n = None;
    for _ in 0..100 {
        match mirror.round(engine) {
            Ok(Round::Published(m)) => {
                n = Some(m);
                break;
            }
            Ok(Round::Overtaken | Round::Unchanged) => {}
            Err(e) => return Err(format!("--remote {url}: {e}")),
        }
    }
    let n = n.ok_or_else(|| format!("--remote {url}: no image could be published"))?;
    let s = mirror.stats();
    record.manifest = n;
    record.bucket_lsn = s.bucket_lsn;
    record.local_lsn = engine.durable_lsn();
    record.published_unix_ms = mirror::unix_now_ms();
    write_record(&record)?;
    Ok(n)
}

/// Refuses a store too large for one manifest to name ([`largest_mirrored_capacity`]): its
/// mirror could never publish an image.
///
/// [`largest_mirrored_capacity`]: mirror::manifest::largest_mirrored_capacity
pub fn check_mirrorable(capacity: u64, segment_size: u64, url: &str) -> Result<(), String> {
    let largest = mirror::manifest::largest_mirrored_capacity(segment_size);
    if capacity > largest {
        let size = crate::fs::stats::human_bytes;
        return Err(format!(
            "--remote {url}: a store of {} cannot be mirrored: a manifest (one object) names \
             the segments of at most {} of store ({} segments)",
            size(capacity),
            size(largest),
            size(segment_size)
        ));
    }
    Ok(())
}

/// Restores the bucket's newest manifest into `store` (which holds no store), showing progress
/// on a terminal, and records it there with a new writer number: the restored store may go on
/// mirroring while the bucket's newest image is the one it came from, and its first manifest
/// fences the store that image was made by. Sets the writer and the manifest it goes on from.
pub fn restore_into(
    objects: &dyn ObjectStorage,
    remote: &mut Remote,
    store: &Path,
    manifest: Option<u64>,
) -> Result<(), String> {
    let restored = restore_image(objects, &remote.url, store, manifest)?;
    let record = RemoteRecord {
        url: remote.url.clone(),
        writer: new_writer(),
        manifest: restored.manifest,
        bucket_lsn: restored.durable_lsn,
        local_lsn: restored.durable_lsn,
        ..RemoteRecord::default()
    };
    record
        .write(store)
        .map_err(|e| format!("cannot write {}: {e}", store.join(REMOTE_FILE).display()))?;
    remote.writer = record.writer;
    remote.continues = Some(restored.manifest);
    Ok(())
}

/// `--discard-local`: moves the fenced store in `store` aside (nothing of it is deleted) and
/// restores the bucket's newest image in its place. Returns where the old store went.
pub fn discard_local(
    objects: &dyn ObjectStorage,
    remote: &mut Remote,
    store: &Path,
) -> Result<PathBuf, String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = store.as_os_str().to_owned();
    kept.push(format!(".discarded-{secs}"));
    let kept = PathBuf::from(kept);
    std::fs::rename(store, &kept).map_err(|e| {
        format!(
            "--discard-local: cannot move {} to {}: {e}",
            store.display(),
            kept.display()
        )
    })?;
    crate::engine::storage::create_dir_durably(store)
        .map_err(|e| format!("cannot create store directory {}: {e}", store.display()))?;
    restore_into(objects, remote, store, None)?;
    Ok(kept)
}

/// The paths of store `kept` (a store moved aside by `--discard-local`) that store `now` lacks
/// or holds otherwise (another kind, size or modification time): what the discarded store
/// held that the bucket's image does not. Both are opened read-only; nothing is written.
pub fn lost_paths(kept: &Path, now: &Path) -> Result<Vec<String>, String> {
    use crate::engine::{Engine, EngineOptions};
    use crate::fs::{FileKind, ROOT_INO};
    let open = |dir: &Path| {
        let options = EngineOptions {
            read_only: true,
            tombstone_prefix_lengths: crate::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
            ..Default::default()
        };
        Engine::open(dir, &options)
            .map_err(|e| e.to_string())
            .and_then(|engine| Fs::new(engine).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot open {} read-only: {e}", dir.display()))
    };
    let (old, new) = (open(kept)?, open(now)?);
    let fs_error = |path: &str, e: crate::fs::FsError| format!("{}{path}: {e}", kept.display());
    let mut lost = Vec::new();
    // (directory in `old`, the same directory in `new` if it is there, its path)
    let mut dirs = vec![(ROOT_INO, Some(ROOT_INO), String::new())];
    while let Some((dir, there, path)) = dirs.pop() {
        let mut cookie = 0;
        loop {
            let entries = old.readdir(dir, cookie).map_err(|e| fs_error(&path, e))?;
            let Some(last) = entries.last() else {
                break;
            };
            cookie = last.cookie;
            for entry in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
                let name = format!("{path}/{}", String::from_utf8_lossy(&entry.name));
                let was = old
                    .lookup(dir, &entry.name)
                    .map_err(|e| fs_error(&name, e))?;
                let is = there.and_then(|t| new.lookup(t, &entry.name).ok());
                let same = is.as_ref().is_some_and(|is| {
                    is.kind == was.kind
                        && (was.kind == FileKind::Directory
                            || (is.size, is.mtime) == (was.size, was.mtime))
                });
                if was.kind == FileKind::Directory {
                    let there = is.filter(|is| is.kind == FileKind::Directory);
                    dirs.push((was.ino, there.map(|is| is.ino), name.clone()));
                }
                if !same {
                    lost.push(name);
                }
            }
        }
    }
    lost.sort();
    old.close().map_err(|e| e.to_string())?;
    new.close().map_err(|e| e.to_string())?;
    Ok(lost)
}

fn restore_image(
    objects: &dyn ObjectStorage,
    url: &str,
    store: &Path,
    manifest: Option<u64>,
) -> Result<Restored, String> {
    let bar = super::progress::bytes_bar("restoring from the bucket");
    let restored = mirror::restore(objects, manifest, store, &mut |done, total| {
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
    control: Arc<Control>,
    thread: std::thread::JoinHandle<()>,
}

/// Between the uploader thread and whoever asks it for something: the unmount (a last round,
/// then stop) and `--remote-sync`'s fsyncs (a round now, and word of the bucket's LSN).
#[derive(Default)]
struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
}

#[derive(Default)]
struct ControlState {
    stop: bool,
    round_wanted: bool,
    /// Every batch up to it is in the bucket's newest image.
    bucket_lsn: u64,
    /// The thread has returned (unmounted, or fenced): nothing more goes up.
    gone: bool,
}

impl Uploader {
    /// Attaches the mirror with `writer`, records it in `store` (durably, before any upload),
    /// and starts the rounds.
    pub fn start(
        fs: Arc<Fs>,
        objects: Arc<dyn ObjectStorage>,
        remote: &Remote,
        store: &Path,
    ) -> Result<Uploader, String> {
        let writer = remote.writer;
        let url = remote.url.clone();
        let counted = Arc::new(Counted::new(objects));
        let mirror = Mirror::attach(counted.clone(), writer, remote.continues)
            .map_err(|e| format!("--remote {url}: {e}"))?;
        let mut record = RemoteRecord::read(store)
            .filter(|r| r.url == url && r.writer == writer)
            .unwrap_or_default();
        record.url = url.clone();
        record.writer = writer;
        record.lag_secs = remote.lag.as_secs();
        record.retain_secs = remote.retain.as_secs();
        // What the bucket holds stays; the figures of this mount's work start at zero.
        record.manifests_published = 0;
        record.objects_put = 0;
        record.bytes_put = 0;
        record.queued_bytes = 0;
        record.requests = RequestCounts::default();
        record.last_error = None;
        record
            .write(store)
            .map_err(|e| format!("cannot write {}: {e}", store.join(REMOTE_FILE).display()))?;
        let store = store.to_path_buf();
        let control = Arc::new(Control::default());
        let (lag, retain) = (remote.lag, remote.retain);
        let thread = {
            let control = control.clone();
            std::thread::Builder::new()
                .name("mirror".into())
                .spawn(move || {
                    let mut round = RoundLog {
                        store,
                        record,
                        requests: counted,
                    };
                    upload_until_stopped(&fs, &mirror, &url, lag, retain, &control, &mut round);
                    control.state.lock().gone = true;
                    control.changed.notify_all();
                })
                .map_err(|e| format!("cannot start the mirror's thread: {e}"))?
        };
        Ok(Uploader { control, thread })
    }

    /// What an fsync waits for with `--remote-sync`: a round now, until the bucket holds the
    /// durable LSN it is given, or `timeout` has passed (then the fsync fails with EIO).
    pub fn fsync_waiter(&self, timeout: Duration) -> crate::fs::AfterSync {
        let control = self.control.clone();
        Box::new(move |lsn| {
            let deadline = std::time::Instant::now() + timeout;
            let mut c = control.state.lock();
            while c.bucket_lsn < lsn {
                if c.gone {
                    return Err(
                        "the mirror has stopped (fenced, or unmounting): the bucket \
                                does not hold this fsync's data"
                            .into(),
                    );
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "the bucket did not take this fsync's data within {} s \
                         (--remote-sync-timeout); it is durable locally",
                        timeout.as_secs()
                    ));
                }
                c.round_wanted = true;
                control.changed.notify_all();
                control.changed.wait_until(&mut c, deadline);
            }
            Ok(())
        })
    }

    /// Stops the rounds after one last (everything durable so far goes up), and waits.
    pub fn finish(self) {
        self.control.state.lock().stop = true;
        self.control.changed.notify_all();
        let _ = self.thread.join();
    }
}

fn upload_until_stopped(
    fs: &Fs,
    mirror: &Mirror,
    url: &str,
    lag: Duration,
    retain: Duration,
    control: &Control,
    log: &mut RoundLog,
) {
    let mut published = 0u64;
    // Rounds overtaken in a row: the next one starts at once (a round that waited a whole lag
    // after each overtaken one fell behind a store writing faster than the lag's worth).
    let mut overtaken = 0u32;
    // The bucket held the whole store as of this instant: the start of the last round that
    // published or found nothing new.
    let mut bucket_current_as_of = std::time::Instant::now();
    let mut last_behind_warning: Option<std::time::Instant> = None;
    loop {
        let stopping = {
            let mut c = control.state.lock();
            if !c.stop && !c.round_wanted && overtaken == 0 {
                control.changed.wait_for(&mut c, lag);
            }
            c.round_wanted = false;
            c.stop
        };
        let round_start = std::time::Instant::now();
        let bytes_before = mirror.stats().bytes_put;
        let result = if stopping {
            mirror.last_round(fs.engine())
        } else {
            mirror.round(fs.engine())
        };
        log.after_round(mirror, fs, &result);
        if matches!(result, Ok(Round::Overtaken)) {
            overtaken += 1;
            log::debug!(
                "mirror: round overtaken by a segment freed under it ({overtaken} in a row)"
            );
            // At unmount too: the last writes go up unless rounds keep being overtaken.
            if overtaken < MAX_OVERTAKEN_IN_A_ROW {
                continue;
            }
        }
        overtaken = 0;
        {
            let mut c = control.state.lock();
            c.bucket_lsn = c.bucket_lsn.max(mirror.stats().bucket_lsn);
            control.changed.notify_all();
        }
        match result {
            Ok(Round::Published(n)) => {
                log::debug!("mirror: manifest {n} published to {url}");
                let behind = bucket_current_as_of.elapsed();
                bucket_current_as_of = round_start;
                if behind > (lag * BEHIND_WARN_LAGS).max(BEHIND_WARN_FLOOR)
                    && last_behind_warning.is_none_or(|t| t.elapsed() >= BEHIND_WARN_EVERY)
                {
                    last_behind_warning = Some(std::time::Instant::now());
                    log::warn!(
                        "mirror to {url}: the bucket was {:.0} s behind the store until manifest \
                         {n} ({} MiB put in {:.1} s): the store writes faster than the uploads \
                         go, or the gateway is slow or was away",
                        behind.as_secs_f64(),
                        (mirror.stats().bytes_put - bytes_before) >> 20,
                        round_start.elapsed().as_secs_f64()
                    );
                }
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
            Ok(Round::Unchanged) => bucket_current_as_of = round_start,
            Ok(Round::Overtaken) => {}
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

/// Keeps [`REMOTE_FILE`] up to date after each round.
struct RoundLog {
    store: PathBuf,
    record: RemoteRecord,
    requests: Arc<Counted>,
}

impl RoundLog {
    fn after_round(&mut self, mirror: &Mirror, fs: &Fs, result: &mirror::Result<Round>) {
        let r = &mut self.record;
        let s = mirror.stats();
        match result {
            Ok(Round::Published(n)) => {
                r.manifest = *n;
                r.bucket_lsn = s.bucket_lsn;
                r.published_unix_ms = mirror::unix_now_ms();
                r.last_error = None;
            }
            Ok(_) => r.last_error = None,
            Err(e) => r.last_error = Some(e.to_string()),
        }
        r.local_lsn = fs.engine().durable_lsn();
        r.manifests_published = s.manifests;
        r.objects_put = s.objects_put;
        r.bytes_put = s.bytes_put;
        r.queued_bytes = s.queued_bytes;
        r.requests = self.requests.counts();
        if let Err(e) = r.write(&self.store) {
            log::warn!(
                "cannot write {}: {e}",
                self.store.join(REMOTE_FILE).display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_file_written_before_fields_were_added_keeps_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        // The file as the first mirrored stores wrote it, before the upload queue and the
        // request counts were kept.
        std::fs::write(
            dir.path().join(REMOTE_FILE),
            r#"{"url": "s3://b/p", "writer": 77, "lag_secs": 5, "retain_secs": 86400,
                "manifest": 3, "bucket_lsn": 10, "local_lsn": 12, "published_unix_ms": 1,
                "manifests_published": 3, "objects_put": 9, "bytes_put": 100,
                "last_error": null}"#,
        )
        .unwrap();
        let record = RemoteRecord::read(dir.path()).expect("the older file reads");
        assert_eq!((record.url.as_str(), record.writer), ("s3://b/p", 77));
        assert_eq!(record.requests, RequestCounts::default());
    }
}
