//! The mirror: a store copied to an S3-compatible bucket as a sequence of durable images, so
//! that it outlives its disk and can be rebuilt on another machine.
//!
//! Each round ([`Mirror::round`]) takes a durable image of the engine (`engine/image.rs`: the
//! superblock and every segment use's synced bytes, as a power cut could leave them), uploads
//! what the bucket lacks of it, and publishes a manifest naming the image's pieces:
//! 1. a closed segment use goes up whole, once, as its own `seg/` object (its bytes are final);
//! 2. the bytes open uses gained since the last round go up together as one `log/` object;
//! 3. the index checkpoint file, when the engine wrote a new one, as a `checkpoint/` object
//!    (a restored store's recovery then reads only the segments it cannot prove unchanged);
//! 4. then `manifest/N+1` names, for every use in the image, the pieces that cover it, and the
//!    checkpoint.
//!
//! Nothing is uploaded before it is durable locally (the image is synced first), and a
//! manifest is created only after every object it names is in the bucket, so the newest
//! manifest is always a whole image. A restore ([`restore`]) writes the newest (or a chosen)
//! manifest's image into an empty directory; recovery then opens it as it opens a store after
//! a power cut, and the store holds exactly the batches up to the manifest's durable LSN (and
//! possibly copies that recovery cuts as it always does).
//!
//! Compaction needs no PUT term of its own in its policy: its copies fill group segments densely
//! (a pass goes on in the group's open segment), each segment goes up once, whole, when it
//! closes, and a victim's object is deleted once no kept manifest names it. So a pass costs
//! `live / segment size` PUTs and one DELETE per victim: the bytes it copies over a constant
//! and the read of each victim, the two terms its cost-benefit score (`engine/compaction/
//! policy.rs`) already weighs. What a PUT costs beyond its bytes is paid per round instead (one
//! `log/` object, one manifest), which `--remote-lag` bounds.
//!
//! Every object is created once (`If-None-Match: *`); a create refused because another writer
//! made the name (a manifest number taken) stops the mirror: one writer per prefix. Formats and
//! names: `manifest.rs`.

pub mod manifest;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::image::ImageWriter;
use crate::engine::{Engine, EngineError};
use crate::object::{Bytes, ErrorKind, MAX_OBJECT_BYTES, ObjectError, ObjectStorage};
use manifest::{
    CHECKPOINT_PREFIX, CheckpointRef, LOG_PREFIX, MANIFEST_PREFIX, Manifest, Piece, Source,
};

#[derive(Debug)]
pub enum MirrorError {
    Object(ObjectError),
    Engine(EngineError),
    /// The bucket holds something this build cannot take: a damaged manifest or object.
    Bucket(String),
}

impl fmt::Display for MirrorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorError::Object(e) => write!(f, "{e}"),
            MirrorError::Engine(e) => write!(f, "{e}"),
            MirrorError::Bucket(s) => write!(f, "the bucket's copy is unusable: {s}"),
        }
    }
}

impl std::error::Error for MirrorError {}

impl From<ObjectError> for MirrorError {
    fn from(e: ObjectError) -> Self {
        MirrorError::Object(e)
    }
}

impl From<EngineError> for MirrorError {
    fn from(e: EngineError) -> Self {
        MirrorError::Engine(e)
    }
}

pub type Result<T> = std::result::Result<T, MirrorError>;

/// What a round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Manifest of this number published.
    Published(u64),
    /// The image is the one the last manifest holds: nothing uploaded.
    Unchanged,
    /// A segment use of the image ended before its bytes were read (the reclaimer freed it):
    /// nothing was published; the next round takes a new image.
    Overtaken,
}

/// Counters of a mirror, for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    pub manifests: u64,
    pub objects_put: u64,
    pub bytes_put: u64,
    /// Durable LSN of the newest manifest published by this mirror.
    pub bucket_lsn: u64,
    /// The upload queue: bytes of the last round's image that the bucket lacks (closed segment
    /// uses not put, bytes open uses gained). 0 once a round published its image or found the
    /// bucket holding it; after a round that failed or was overtaken, what it left to put.
    pub queued_bytes: u64,
}

/// A store's mirror in one bucket prefix (see the module's doc).
pub struct Mirror {
    objects: Arc<dyn ObjectStorage>,
    /// Written into every manifest: which store made it (one writer per prefix).
    writer: u64,
    state: Mutex<State>,
}

struct State {
    next_manifest: u64,
    next_log: u64,
    /// For each open segment use in the newest manifest: the pieces that cover its bytes so
    /// far, in order.
    uses: BTreeMap<(u32, u64), Vec<Piece>>,
    /// Closed segment uses whose `seg/` object is in the bucket (uploaded by this mirror), with
    /// the piece that names it. Kept across rounds that publish nothing: the object is valid
    /// for any image that holds the use.
    whole: BTreeMap<(u32, u64), Piece>,
    /// The engine's checkpoint (by [`ImageCheckpoint::writes`]) last seen, and its object in
    /// the bucket (`None`: too large for one object, left out of the images).
    ///
    /// [`ImageCheckpoint::writes`]: crate::engine::image::ImageCheckpoint::writes
    checkpoint: Option<(u64, Option<CheckpointRef>)>,
    /// Bytes of segments put since the last checkpoint went up (see [`Mirror::put_checkpoint`]).
    put_since_checkpoint: u64,
    /// The next checkpoint the engine writes goes up whatever the ratio (see
    /// [`Mirror::last_round`]).
    checkpoint_wanted: bool,
    /// The pieces and checkpoint of the newest manifest published.
    published: Option<(Vec<Piece>, Option<CheckpointRef>)>,
    /// When each manifest this mirror published was made (what `--retain` counts from).
    created: BTreeMap<u64, u64>,
    /// The newest manifest of this mirror that names each object (see [`Mirror::collect`]).
    last_named_by: BTreeMap<String, u64>,
    /// The newest manifest in the bucket when this mirror attached, and whether it (with every
    /// older one) has outlived the retention: found out once, by reading it.
    before_attach: Option<(u64, bool)>,
    stats: MirrorStats,
}

/// What [`Mirror::collect`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub manifests: u64,
    pub objects: u64,
}

impl Mirror {
    /// A mirror into `objects` publishing as `writer`: numbers go on after the newest manifest
    /// and log object there. `continues`: the manifest whose image the store is a continuation
    /// of (it was restored from it, or published it), whose closed uses the store holds byte
    /// for byte: they are not uploaded again. Without it, every closed use goes up again under
    /// this writer's name (a store that takes a prefix over).
    pub fn attach(
        objects: Arc<dyn ObjectStorage>,
        writer: u64,
        continues: Option<u64>,
    ) -> Result<Mirror> {
        let mut whole = BTreeMap::new();
        if let Some(n) = continues {
            for p in read_manifest(objects.as_ref(), n)?.pieces {
                if matches!(p.source, Source::Segment(_)) {
                    whole.insert((p.segment, p.generation), p);
                }
            }
        }
        let newest = |prefix: &str| -> Result<Option<u64>> {
            Ok(objects
                .list(prefix)?
                .iter()
                .filter_map(|o| manifest::number_of(&o.name, prefix))
                .max())
        };
        let newest_manifest = newest(MANIFEST_PREFIX)?;
        let next_manifest = newest_manifest.map_or(1, |n| n + 1);
        // Checkpoint objects are numbered from the log objects' sequence.
        let next_log = newest(LOG_PREFIX)?
            .max(newest(CHECKPOINT_PREFIX)?)
            .map_or(1, |n| n + 1);
        Ok(Mirror {
            objects,
            writer,
            state: Mutex::new(State {
                next_manifest,
                next_log,
                uses: BTreeMap::new(),
                whole,
                checkpoint: None,
                put_since_checkpoint: 0,
                checkpoint_wanted: false,
                published: None,
                created: BTreeMap::new(),
                last_named_by: BTreeMap::new(),
                before_attach: newest_manifest.map(|n| (n, false)),
                stats: MirrorStats::default(),
            }),
        })
    }

    pub fn stats(&self) -> MirrorStats {
        self.state.lock().stats
    }

    /// The round before the store closes (an unmount): if the newest image in the bucket names
    /// no checkpoint (the ratio of [`Mirror::put_checkpoint`] left the recent ones out), the
    /// engine writes one and this round uploads it, so that a store restored from the bucket
    /// after a clean unmount need not scan every segment. At most one per unmount: a store
    /// whose newest image has a checkpoint goes as it is. Called again after an overtaken
    /// round, it asks for no second checkpoint.
    pub fn last_round(&self, engine: &Engine) -> Result<Round> {
        {
            let mut st = self.state.lock();
            let image_has_one = st.published.as_ref().is_some_and(|(_, c)| c.is_some());
            if !image_has_one && !st.checkpoint_wanted {
                st.checkpoint_wanted = true;
                drop(st);
                engine.write_checkpoint()?;
            }
        }
        self.round(engine)
    }

    /// Takes a durable image of `engine`, uploads what the bucket lacks of it, and publishes
    /// its manifest (see the module's doc). One round at a time (the state lock is held).
    pub fn round(&self, engine: &Engine) -> Result<Round> {
        let mut st = self.state.lock();
        let image = engine.durable_image(st.checkpoint.map(|(writes, _)| writes))?;
        // Worked on a copy: an overtaken or failed round leaves the state as it was.
        let mut uses: BTreeMap<(u32, u64), Vec<Piece>> = BTreeMap::new();
        // This round's log objects, numbered from `st.next_log` on, each at most
        // `MAX_OBJECT_BYTES`.
        let mut logs: Vec<Vec<u8>> = Vec::new();
        // Closed uses not in the bucket yet go up as they are read, `ROUND_PUTS` at a time
        // (memory: that many segments), and stay known even if the round is overtaken later.
        let missing: Vec<_> = image
            .segments
            .iter()
            .filter(|e| e.closed)
            .filter(|e| {
                st.whole
                    .get(&(e.segment, e.generation))
                    .is_none_or(|p| p.len != e.len)
            })
            .copied()
            .collect();
        let open_gains: u64 = image
            .segments
            .iter()
            .filter(|e| !e.closed)
            .map(|e| {
                let have: u64 = st
                    .uses
                    .get(&(e.segment, e.generation))
                    .map_or(0, |pieces| pieces.iter().map(|p| p.len as u64).sum());
                (e.len as u64).saturating_sub(have)
            })
            .sum();
        st.stats.queued_bytes = missing.iter().map(|e| e.len as u64).sum::<u64>() + open_gains;
        match self.put_closed_uses(engine, &missing, &mut st) {
            Ok(true) => {}
            Ok(false) => return Ok(Round::Overtaken),
            Err(e) => return Err(e),
        }
        // Before the log objects are numbered: it takes the next number itself.
        let checkpoint = match image.checkpoint {
            None => None,
            Some(c) => match c.bytes {
                None => st.checkpoint.and_then(|(_, r)| r),
                Some(bytes) => {
                    let uploaded = self.put_checkpoint(&mut st, bytes)?;
                    st.checkpoint = Some((c.writes, uploaded));
                    uploaded
                }
            },
        };
        for e in image.segments.iter().filter(|e| !e.closed) {
            let key = (e.segment, e.generation);
            let mut pieces = st.uses.get(&key).cloned().unwrap_or_default();
            let have = pieces.iter().map(|p| p.len).sum::<u32>();
            if e.len > have {
                let mut bytes = vec![0u8; (e.len - have) as usize];
                if !engine.read_segment_use(e.segment, e.generation, have, &mut bytes)? {
                    return Ok(Round::Overtaken);
                }
                if logs
                    .last()
                    .is_none_or(|l| l.len() + bytes.len() > MAX_OBJECT_BYTES)
                {
                    logs.push(Vec::new());
                }
                let number = st.next_log + logs.len() as u64 - 1;
                let log = logs.last_mut().expect("pushed above");
                pieces.push(Piece {
                    segment: e.segment,
                    generation: e.generation,
                    offset: have,
                    len: bytes.len() as u32,
                    crc: crc32fast::hash(&bytes),
                    source: Source::Log(number),
                    at: log.len() as u64,
                });
                log.extend_from_slice(&bytes);
            }
            uses.insert(key, pieces);
        }
        let pieces: Vec<Piece> = image
            .segments
            .iter()
            .flat_map(|e| match st.whole.get(&(e.segment, e.generation)) {
                Some(p) if e.closed => vec![*p],
                _ => uses[&(e.segment, e.generation)].clone(),
            })
            .collect();
        if st
            .published
            .as_ref()
            .is_some_and(|(p, c)| *p == pieces && *c == checkpoint)
        {
            // The bucket's newest image is this one: it holds every batch up to its LSN.
            st.stats.bucket_lsn = st.stats.bucket_lsn.max(image.durable_lsn);
            st.stats.queued_bytes = 0;
            return Ok(Round::Unchanged);
        }
        // Numbers are spent before their PUTs: a PUT whose reply was lost may have created its
        // object, and a later round must not create that name again with other bytes.
        let first_log = st.next_log;
        st.next_log += logs.len() as u64;
        for (i, log) in logs.into_iter().enumerate() {
            let name = manifest::log_object(first_log + i as u64);
            st.stats.bytes_put += log.len() as u64;
            st.put_since_checkpoint += log.len() as u64;
            let len = log.len() as u64;
            self.objects.put_new(&name, Bytes::from(log))?;
            st.stats.objects_put += 1;
            st.stats.queued_bytes = st.stats.queued_bytes.saturating_sub(len);
        }
        let number = st.next_manifest;
        st.next_manifest += 1;
        let created = unix_now_ms();
        let m = Manifest {
            number,
            writer: self.writer,
            durable_lsn: image.durable_lsn,
            created_unix_ms: created,
            superblock: image.superblock.clone(),
            checkpoint,
            pieces: pieces.clone(),
        };
        let encoded = m.encode();
        st.stats.bytes_put += encoded.len() as u64;
        self.objects
            .put_new(&manifest::manifest_object(m.number), Bytes::from(encoded))?;
        st.stats.objects_put += 1;
        st.stats.manifests += 1;
        st.stats.bucket_lsn = image.durable_lsn;
        st.stats.queued_bytes = 0;
        st.created.insert(number, created);
        for name in pieces
            .iter()
            .map(Piece::object)
            .chain(checkpoint.map(|c| c.object()))
        {
            st.last_named_by.insert(name, number);
        }
        st.uses = uses;
        let in_image: std::collections::BTreeSet<(u32, u64)> = image
            .segments
            .iter()
            .map(|e| (e.segment, e.generation))
            .collect();
        st.whole.retain(|k, _| in_image.contains(k));
        st.published = Some((pieces, checkpoint));
        Ok(Round::Published(m.number))
    }

    /// Reads and puts each closed use of `uses`, `ROUND_PUTS` at a time, noting each one put in
    /// `st.whole` (whatever happens to the others); `false` if a use ended before it was read.
    fn put_closed_uses(
        &self,
        engine: &Engine,
        uses: &[crate::engine::image::SegmentExtent],
        st: &mut State,
    ) -> Result<bool> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let queue = Mutex::new(uses.iter());
        let stop = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel::<Result<Option<Piece>>>();
        let (mut overtaken, mut failed) = (false, None);
        std::thread::scope(|scope| {
            for _ in 0..ROUND_PUTS.min(uses.len()) {
                let (tx, queue, stop) = (tx.clone(), &queue, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(e) = queue.lock().next() else {
                            return;
                        };
                        let put = self.put_closed_use(engine, e);
                        if !matches!(put, Ok(Some(_))) {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(put).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for put in rx {
                match put {
                    Ok(Some(piece)) => {
                        st.stats.bytes_put += piece.len as u64;
                        st.put_since_checkpoint += piece.len as u64;
                        st.stats.objects_put += 1;
                        st.stats.queued_bytes =
                            st.stats.queued_bytes.saturating_sub(piece.len as u64);
                        st.whole.insert((piece.segment, piece.generation), piece);
                    }
                    Ok(None) => overtaken = true,
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(!overtaken),
        }
    }

    /// Reads closed use `e` and puts it as its `seg/` object; `None` if the use has ended.
    fn put_closed_use(
        &self,
        engine: &Engine,
        e: &crate::engine::image::SegmentExtent,
    ) -> Result<Option<Piece>> {
        let mut bytes = vec![0u8; e.len as usize];
        if !engine.read_segment_use(e.segment, e.generation, 0, &mut bytes)? {
            return Ok(None);
        }
        let piece = Piece {
            segment: e.segment,
            generation: e.generation,
            offset: 0,
            len: e.len,
            crc: crc32fast::hash(&bytes),
            source: Source::Segment(self.writer),
            at: 0,
        };
        self.objects.put_new(&piece.object(), Bytes::from(bytes))?;
        Ok(Some(piece))
    }

    /// Uploads a checkpoint file as the next `checkpoint/` object, or `None`: images then go
    /// without one until the engine writes the next (recovery scans what it would have
    /// vouched for). A store of small records has an index about half the size of its data,
    /// and the engine writes a checkpoint each time a quarter of its segments were taken: every
    /// one uploaded would double the bytes a mirror puts. So after the mirror's first, one goes
    /// up only once segments of [`CHECKPOINT_UPLOAD_RATIO`] times its size went up since the
    /// last; never one larger than an object may be.
    fn put_checkpoint(&self, st: &mut State, bytes: Vec<u8>) -> Result<Option<CheckpointRef>> {
        let first = st.checkpoint.is_none();
        if !first
            && !st.checkpoint_wanted
            && st.put_since_checkpoint < CHECKPOINT_UPLOAD_RATIO * bytes.len() as u64
        {
            return Ok(None);
        }
        if bytes.len() > MAX_OBJECT_BYTES {
            ::log::warn!(
                "the index checkpoint ({} bytes) is larger than an object may be: a store \
                 restored from the bucket scans every segment",
                bytes.len()
            );
            return Ok(None);
        }
        // Spent before the PUT, as log numbers are (see `round`).
        let c = CheckpointRef {
            number: st.next_log,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
        };
        st.next_log += 1;
        st.put_since_checkpoint = 0;
        st.checkpoint_wanted = false;
        st.stats.bytes_put += c.len;
        self.objects.put_new(&c.object(), Bytes::from(bytes))?;
        st.stats.objects_put += 1;
        Ok(Some(c))
    }
}

impl Mirror {
    /// Deletes the manifests made more than `retain` ago (never the newest), then every object
    /// that no manifest left names: uses freed, log bytes since covered by a whole segment, and
    /// whatever a writer that crashed mid-round left. A restore or a read-only mount may use
    /// any manifest younger than `retain`.
    ///
    /// Each object is named by a contiguous run of manifests (a closed use from its upload
    /// until it is freed; a log object from its round until its segment closes), and manifests
    /// are made in number order, so an object may go once the newest manifest naming it is
    /// older than the oldest one kept. Objects of manifests from before this mirror attached
    /// are not known one by one: they go only once every such manifest has expired (the first
    /// manifest of this mirror names again, by name, every closed use it still needs).
    /// Runs between rounds (the state lock is held): an object uploaded by a round that was
    /// overtaken is kept for the next one.
    pub fn collect(&self, retain: Duration) -> Result<Collected> {
        let mut st = self.state.lock();
        let mut done = Collected::default();
        let cutoff = unix_now_ms().saturating_sub(retain.as_millis() as u64);
        if let Some((newest_before, false)) = st.before_attach {
            let made = read_manifest(self.objects.as_ref(), newest_before)?.created_unix_ms;
            if made >= cutoff || st.created.is_empty() {
                return Ok(done);
            }
            st.before_attach = Some((newest_before, true));
        }
        let Some(&newest) = st.created.keys().next_back() else {
            return Ok(done);
        };
        let oldest_kept = st
            .created
            .iter()
            .find(|(_, made)| **made >= cutoff)
            .map_or(newest, |(n, _)| *n);
        for n in manifests(self.objects.as_ref())? {
            if n < oldest_kept {
                self.objects.delete(&manifest::manifest_object(n))?;
                done.manifests += 1;
            }
        }
        st.created.retain(|n, _| *n >= oldest_kept);
        let held: std::collections::BTreeSet<String> = st
            .whole
            .values()
            .map(Piece::object)
            .chain(st.checkpoint.and_then(|(_, c)| c).map(|c| c.object()))
            .collect();
        for prefix in OBJECT_PREFIXES {
            for o in self.objects.list(prefix)? {
                let named = held.contains(&o.name)
                    || st
                        .last_named_by
                        .get(&o.name)
                        .is_some_and(|&n| n >= oldest_kept);
                if !named {
                    self.objects.delete(&o.name)?;
                    st.last_named_by.remove(&o.name);
                    done.objects += 1;
                }
            }
        }
        Ok(done)
    }
}

/// PUTs of closed segment uses at once in a round: one stream to a gateway carried about
/// 75-100 MiB/s here, less than a store's writes; the round is then overtaken by the segments
/// compaction frees, and the bucket's lag grows without bound.
const ROUND_PUTS: usize = 4;

/// Segment bytes put per checkpoint byte put, at least (see [`Mirror::put_checkpoint`]).
const CHECKPOINT_UPLOAD_RATIO: u64 = 4;

/// The prefixes of the objects manifests name.
const OBJECT_PREFIXES: [&str; 3] = [manifest::SEGMENT_PREFIX, LOG_PREFIX, CHECKPOINT_PREFIX];

/// The newest manifest in the bucket, if any.
pub fn newest_manifest(objects: &dyn ObjectStorage) -> Result<Option<Manifest>> {
    match manifests(objects)?.last() {
        Some(&n) => read_manifest(objects, n).map(Some),
        None => Ok(None),
    }
}

/// The numbers of the manifests in the bucket, oldest first.
pub fn manifests(objects: &dyn ObjectStorage) -> Result<Vec<u64>> {
    let mut numbers: Vec<u64> = objects
        .list(MANIFEST_PREFIX)?
        .iter()
        .filter_map(|o| manifest::number_of(&o.name, MANIFEST_PREFIX))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Reads manifest `number`.
pub fn read_manifest(objects: &dyn ObjectStorage, number: u64) -> Result<Manifest> {
    let name = manifest::manifest_object(number);
    let bytes = objects.get(&name)?;
    let m = Manifest::decode(&bytes).map_err(|e| MirrorError::Bucket(format!("{name}: {e}")))?;
    if m.number != number {
        return Err(MirrorError::Bucket(format!(
            "{name} calls itself manifest {}",
            m.number
        )));
    }
    Ok(m)
}

/// What a restore fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub manifest: u64,
    pub durable_lsn: u64,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
}

/// Writes the image of manifest `number` (the newest if `None`) into `dir`, which must hold no
/// store; `progress(done, total)` is called with the bytes written so far. Every piece's
/// checksum is checked before its bytes are written. Fails with [`ErrorKind::NotFound`] if the
/// bucket holds no manifest.
pub fn restore(
    objects: &dyn ObjectStorage,
    number: Option<u64>,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    let number = match number {
        Some(n) => n,
        None => *manifests(objects)?.last().ok_or_else(|| {
            ObjectError::new(
                ErrorKind::NotFound,
                "restore",
                MANIFEST_PREFIX,
                "the bucket holds no manifest: nothing was mirrored there",
            )
        })?,
    };
    let m = read_manifest(objects, number)?;
    let writer = ImageWriter::create(dir, &m.superblock)?;
    let total: u64 =
        m.pieces.iter().map(|p| p.len as u64).sum::<u64>() + m.checkpoint.map_or(0, |c| c.len);
    let mut by_object: BTreeMap<String, Vec<Piece>> = BTreeMap::new();
    for p in &m.pieces {
        by_object.entry(p.object()).or_default().push(*p);
    }
    let mut done = Restored {
        manifest: m.number,
        durable_lsn: m.durable_lsn,
        ..Restored::default()
    };
    let mut written = 0u64;
    progress(0, total);
    if let Some(c) = m.checkpoint {
        let name = c.object();
        let bytes = objects.get(&name)?;
        done.objects_fetched += 1;
        done.bytes_fetched += bytes.len() as u64;
        if !checkpoint_matches(&bytes, &c) {
            return Err(MirrorError::Bucket(format!(
                "{name}: the checkpoint is not the {} bytes the manifest names",
                c.len
            )));
        }
        writer.checkpoint(&bytes)?;
        written += c.len;
        progress(written, total);
    }
    // Objects are fetched by `RESTORE_FETCHES` threads at once: against a real network each
    // GET is mostly waiting. Each writes its pieces where they go; the superblock is written
    // last, after all of them (`ImageWriter::finish`).
    let queue = Mutex::new(by_object.into_iter());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<Result<(u64, u64)>>();
    std::thread::scope(|scope| {
        for _ in 0..RESTORE_FETCHES {
            let tx = tx.clone();
            let (queue, failed, writer) = (&queue, &failed, &writer);
            scope.spawn(move || {
                while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some((name, pieces)) = queue.lock().next() else {
                        return;
                    };
                    let fetched = fetch_pieces(objects, writer, &name, &pieces);
                    if fetched.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if tx.send(fetched).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for fetched in rx {
            let (object_bytes, piece_bytes) = fetched?;
            done.objects_fetched += 1;
            done.bytes_fetched += object_bytes;
            written += piece_bytes;
            progress(written, total);
        }
        Ok::<(), MirrorError>(())
    })?;
    writer.finish()?;
    Ok(done)
}

/// GETs at once during a restore.
const RESTORE_FETCHES: usize = 4;

/// Fetches object `name` and writes `pieces` of it into the image, each checked against its
/// CRC first; returns (the object's bytes, the pieces' bytes).
fn fetch_pieces(
    objects: &dyn ObjectStorage,
    writer: &ImageWriter,
    name: &str,
    pieces: &[Piece],
) -> Result<(u64, u64)> {
    let bytes = objects.get(name)?;
    let mut written = 0;
    for p in pieces {
        let piece = p.bytes_in(&bytes).ok_or_else(|| {
            MirrorError::Bucket(format!(
                "{name}: bytes {}..+{} for segment {} are missing or fail their checksum",
                p.at, p.len, p.segment
            ))
        })?;
        writer.write(p.segment, p.offset, piece)?;
        written += p.len as u64;
    }
    Ok((bytes.len() as u64, written))
}

fn checkpoint_matches(bytes: &[u8], c: &CheckpointRef) -> bool {
    bytes.len() as u64 == c.len && crc32fast::hash(bytes) == c.crc
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): manifests' and
/// `remote.json`'s times.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What [`check_bucket`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketReport {
    pub manifests: u64,
    pub newest_manifest: Option<u64>,
    pub newest_lsn: u64,
    pub objects_checked: u64,
    pub bytes_read: u64,
    /// Whatever makes a manifest unrestorable: undecodable, an object missing or short, a
    /// piece whose bytes fail their checksum.
    pub problems: Vec<String>,
    /// Objects of ours that no manifest names (a collection deletes them; not a problem).
    pub unreferenced: Vec<String>,
}

/// Checks every manifest in the bucket against the objects: each decodes, each object it
/// names is there, and every piece's bytes pass their checksum (each object is read once).
/// Changes nothing.
pub fn check_bucket(objects: &dyn ObjectStorage) -> Result<BucketReport> {
    let mut report = BucketReport::default();
    let mut named: BTreeMap<String, Vec<(u64, Piece)>> = BTreeMap::new();
    let mut checkpoints: BTreeMap<String, (u64, CheckpointRef)> = BTreeMap::new();
    for n in manifests(objects)? {
        report.manifests += 1;
        match read_manifest(objects, n) {
            Ok(m) => {
                report.newest_manifest = Some(n);
                report.newest_lsn = m.durable_lsn;
                if let Some(c) = m.checkpoint {
                    checkpoints.entry(c.object()).or_insert((n, c));
                }
                for p in m.pieces {
                    named.entry(p.object()).or_default().push((n, p));
                }
            }
            Err(e) => report.problems.push(format!("manifest {n}: {e}")),
        }
    }
    for (name, pieces) in &named {
        let bytes = match objects.get(name) {
            Ok(b) => b,
            Err(e) => {
                let first = pieces.first().map_or(0, |(n, _)| *n);
                report
                    .problems
                    .push(format!("{name} (named by manifest {first} and on): {e}"));
                continue;
            }
        };
        report.objects_checked += 1;
        report.bytes_read += bytes.len() as u64;
        let mut bad = std::collections::BTreeSet::new();
        for (n, p) in pieces {
            if p.bytes_in(&bytes).is_none() && bad.insert((p.at, p.len)) {
                report.problems.push(format!(
                    "{name}: bytes {}..+{} (segment {} at {}, named by manifest {n}) are \
                     missing or fail their checksum",
                    p.at, p.len, p.segment, p.offset
                ));
            }
        }
    }
    for (name, (n, c)) in &checkpoints {
        match objects.get(name) {
            Ok(bytes) => {
                report.objects_checked += 1;
                report.bytes_read += bytes.len() as u64;
                if !checkpoint_matches(&bytes, c) {
                    report.problems.push(format!(
                        "{name} (named by manifest {n} and on): not the {} bytes of checksum \
                         {:08x} named",
                        c.len, c.crc
                    ));
                }
            }
            Err(e) => report
                .problems
                .push(format!("{name} (named by manifest {n} and on): {e}")),
        }
    }
    for prefix in OBJECT_PREFIXES {
        for o in objects.list(prefix)? {
            if !named.contains_key(&o.name) && !checkpoints.contains_key(&o.name) {
                report.unreferenced.push(o.name);
            }
        }
    }
    Ok(report)
}
