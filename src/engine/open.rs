//! Opening and closing a store: the store's lock and superblock, recovery (or a checkpoint),
//! the engine's state built on what recovery found, and the flusher and background threads
//! started; at close, the last sync, marker and checkpoint. The rule it keeps: nothing is
//! written to a store before what recovery accepted is durable and the discarded buffers are
//! zeroed, and a checkpoint is written only when everything it describes is durable.

use std::collections::BTreeMap;
use std::path::Path;

use super::background::REMOVAL_STEP_ENTRIES;
use super::concurrency::{
    self, Arc, AtomicBool, AtomicU64, Condvar, Instant, Mutex, Ordering, RwLock,
};
use super::format::{self, SUPERBLOCK_VERSION, Superblock};
use super::segments::SegmentManager;
use super::storage::{self, FileStorage, Storage};
use super::summaries::{self, Summaries, WriteOut};
use super::{
    Engine, EngineError, EngineOptions, Inner, MAX_CAPACITY_BYTES, MIN_CAPACITY_BYTES, Result,
    WRITE_BUFFER_SIZE, check, checkpoint, groups, log, recovery, synctable, tombstones,
};

impl Engine {
    /// Opens the store in `dir`, creating it (with `options`' geometry) if it holds none and
    /// `options.create_if_missing` is set. Takes the store's lock: a second opener is refused.
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        if options.read_only {
            return Self::open_on(Arc::new(check::ReadOnlyStorage::open(dir)?), options);
        }
        let storage = FileStorage::open(dir, options.create_if_missing).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                EngineError::Locked(e.to_string())
            } else if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::NotAStore(e.to_string())
            } else {
                EngineError::Io(e)
            }
        })?;
        Self::open_on(Arc::new(storage), options)
    }

    /// [`Engine::open`] with test instrumentation of the store's storage (an I/O log for
    /// power-cut replay, injected write errors): see `storage/io_log.rs`. Recording needs a new
    /// store, since the log must hold every byte of it.
    pub fn open_instrumented(
        dir: &Path,
        options: &EngineOptions,
        what: &storage::io_log::Instrumentation,
    ) -> Result<Engine> {
        // Nothing to record or to fail: a read-only open writes nothing.
        if options.read_only {
            return Self::open(dir, options);
        }
        if what.record_io.is_some() && dir.join(storage::SUPERBLOCK_FILE).exists() {
            return Err(EngineError::Io(std::io::Error::other(format!(
                "recording an I/O log needs a new store; {} already holds one",
                dir.display()
            ))));
        }
        let storage = FileStorage::open(dir, options.create_if_missing).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                EngineError::Locked(e.to_string())
            } else {
                EngineError::Io(e)
            }
        })?;
        let storage = storage::io_log::InstrumentedStorage::new(Arc::new(storage), what)?;
        Self::open_on(Arc::new(storage), options)
    }

    /// Opens a store on any [`Storage`] (for crash-simulation tests: [`storage::SimStorage`]).
    pub fn open_on(storage: Arc<dyn Storage>, options: &EngineOptions) -> Result<Engine> {
        Self::open_with(storage, options, options.read_only)
    }

    /// [`Engine::open_on`]; `read_only`: see [`Engine::open_read_only`] (`read_only.rs`).
    pub(super) fn open_with(
        storage: Arc<dyn Storage>,
        options: &EngineOptions,
        read_only: bool,
    ) -> Result<Engine> {
        let superblock = read_or_create_superblock(&storage, options)?;
        let put_notes = tombstones::PutNotes::new(
            superblock.segment_count as usize,
            options.tombstone_prefix_lengths.clone(),
        );
        let started = Instant::now();
        // The checkpoint of the last clean close spares reading the segments it still
        // describes.
        let superblock_bytes = storage.read_superblock()?.unwrap_or_default();
        let (recovered, summaries) = load_or_recover(&storage, &superblock, &put_notes, read_only)?;
        let recovered_at = started.elapsed();
        let (segments, superblock) = segment_manager(
            &storage,
            superblock,
            recovered.infos,
            summaries,
            recovered.traces,
        )?;
        let segment_count = superblock.segment_count;
        // A read-only open leaves all of this to the next writer, whose recovery decides alike.
        if !read_only {
            settle_recovered_on_disk(
                &storage,
                &segments,
                &recovered.invalidate,
                superblock,
                &superblock_bytes,
            )?;
        }
        if !read_only {
            segments
                .summaries
                .adopt_scanned(recovered.scanned_summaries);
        }
        let index = recovered.index;
        release_recovery_memory();
        index.for_each_location(|loc| segments.add_live(loc.segment, loc.len));
        ::log::info!(
            "open: recovery {:.3} s ({} records, {} segments read, {} from summaries, {} from \
             the checkpoint), then invalidation, sync and live bytes {:.3} s",
            recovered_at.as_secs_f64(),
            recovered.report.records_accepted,
            recovered.report.segments_scanned,
            recovered.report.segments_summarized,
            recovered.report.segments_checkpointed,
            (started.elapsed() - recovered_at).as_secs_f64()
        );
        let durable = recovered.next_lsn - 1;
        // The floor on disk: the highest any buffer records.
        let log = log::Log::new(
            segments.clone(),
            recovered.next_lsn,
            durable,
            recovered.report.durable_floor,
        );
        warn_of_recovery_losses(&recovered.report, &recovered.invalidate);
        let inner = Arc::new(Inner::new(
            storage,
            segments,
            index,
            log,
            options,
            recovered.report,
            put_notes,
            segment_count,
            read_only,
        ));
        if read_only {
            return Ok(Engine {
                inner,
                threads: Vec::new(),
            });
        }
        start_threads(inner)
    }

    /// Syncs and closes the store, releasing its lock.
    pub fn close(mut self) -> Result<()> {
        if self.inner.read_only {
            self.inner.closed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let mut result = self.inner.sync();
        let mut marker_written = false;
        if result.is_ok() {
            // A last marker, synced, records that everything is durable: recovery (and fsck)
            // can then tell damage to the newest batches from a write torn by a power cut.
            match self.inner.log.flush_close_marker() {
                Ok(()) => {
                    result = self.inner.storage.sync().map_err(EngineError::from);
                    marker_written = true;
                }
                Err(EngineError::NoSpace) => {}
                Err(e) => result = Err(e),
            }
        }
        self.inner.closed.store(true, Ordering::SeqCst);
        self.stop_background();
        // The checkpoint describes the index as recovery would rebuild it: with every entry a
        // range delete covers removed.
        self.inner.settle_pending(false);
        // A background pass may have moved the index onto copies after the syncs above, and
        // not synced them: one that failed half-way (out of segments) has no reclamation, and
        // so no sync, behind it. The checkpoint below describes the index, so everything it
        // points at must be durable first.
        let synced = self.inner.storage.sync();
        if let (Ok(()), Err(e)) = (&result, synced) {
            result = Err(EngineError::from(e));
        }
        let log = &self.inner.log;
        ::log::info!(
            "close: {:?}, failure {:?}, last LSN {}, durable {}",
            result.as_ref().map(|_| ()),
            log.failure(),
            log.last_lsn(),
            log.durable_lsn()
        );
        // Without the marker (no room for it), no checkpoint either: the next open scans, so
        // that it knows the floor on disk does not cover the newest batches, and writes the
        // marker itself (`Inner::vouch_for_newest_batches`).
        if result.is_ok()
            && marker_written
            && log.failure().is_none()
            && log.last_lsn() == log.durable_lsn()
        {
            // Everything is durable and nothing runs any more: the next open may load this
            // instead of scanning every segment (see checkpoint.rs).
            if let Ok(Some(sb)) = self.inner.storage.read_superblock() {
                let mut writes = self.inner.checkpoint_writes.lock();
                checkpoint::write(
                    &self.inner.storage,
                    &sb,
                    &self.inner.segments,
                    &self.inner.index,
                    &self.inner.put_notes,
                    log.last_lsn(),
                );
                *writes += 1;
            }
        }
        // After the checkpoint, whose durability must not rest on this write-out's sync.
        if result.is_ok() {
            self.inner.write_out_summaries(WriteOut::Closing);
        }
        result
    }
}

impl Drop for Engine {
    /// Dropping without [`Engine::close`] stops the background thread and nothing else: what
    /// was written stays wherever the host has it, as after a crash of the process.
    fn drop(&mut self) {
        self.stop_background();
    }
}

fn create_superblock(storage: &dyn Storage, options: &EngineOptions) -> Result<Superblock> {
    let seg = options.segment_size_bytes;
    if !seg.is_power_of_two()
        || !(format::MIN_SEGMENT_SIZE..=format::MAX_SEGMENT_SIZE).contains(&seg)
    {
        return Err(EngineError::Limit(format!(
            "segment size {seg} must be a power of two from {} to {}",
            format::MIN_SEGMENT_SIZE,
            format::MAX_SEGMENT_SIZE
        )));
    }
    if (seg as usize) < WRITE_BUFFER_SIZE {
        return Err(EngineError::Limit(format!(
            "segment size {seg} is smaller than a write buffer ({WRITE_BUFFER_SIZE})"
        )));
    }
    let cap = options.capacity_bytes;
    if !(MIN_CAPACITY_BYTES..=MAX_CAPACITY_BYTES).contains(&cap) {
        return Err(EngineError::Limit(format!(
            "capacity {cap} bytes is outside {MIN_CAPACITY_BYTES}..={MAX_CAPACITY_BYTES}"
        )));
    }
    let segment_count = (cap / seg as u64) as u32;
    let per_file = options
        .segments_per_file
        .max(segment_count.div_ceil(format::MAX_SEGMENT_FILES))
        .max(1);
    let sb = Superblock {
        segment_size: seg,
        segments_per_file: per_file,
        segment_count,
        generation_high_water: 1,
        frees_clear_directories_from: 1,
    };
    storage.write_superblock(&sb.encode())?;
    Ok(sb)
}

/// The store's superblock, written first (from `options`' geometry) if the store holds none and
/// `options.create_if_missing` is set.
fn read_or_create_superblock(
    storage: &Arc<dyn Storage>,
    options: &EngineOptions,
) -> Result<Superblock> {
    Ok(match storage.read_superblock()? {
        Some(bytes) => Superblock::decode(&bytes).map_err(EngineError::NotAStore)?,
        None if options.create_if_missing => create_superblock(&**storage, options)?,
        None => return Err(EngineError::NotAStore("no superblock".into())),
    })
}

/// What the store held at its last moment: what recovery rebuilds from the segments, taking
/// those the checkpoint of the last clean close still describes from it (the others are read),
/// or else those whose summaries hold from their summaries; with the store's summaries.
fn load_or_recover(
    storage: &Arc<dyn Storage>,
    superblock: &Superblock,
    put_notes: &tombstones::PutNotes,
    read_only: bool,
) -> Result<(recovery::Recovered, Summaries)> {
    let size = superblock.segment_size;
    if let Some(base) = checkpoint::load(storage, superblock, put_notes) {
        // The summaries are not loaded: they describe every segment, most of which the
        // checkpoint does (reading them cost 0.4 s for 90 MB of summaries).
        let (newest, count) = summaries::newest_by_headers(&**storage)?;
        let summaries = Summaries::new(storage.clone(), size, newest, count);
        let none = BTreeMap::new();
        match recovery::recover_from_checkpoint(storage, superblock, put_notes, none, base)? {
            Some(recovered) => {
                if !read_only {
                    summaries.drop_segments(&touched_segments(&recovered))?;
                }
                return Ok((recovered, summaries));
            }
            None => ::log::info!(
                "index checkpoint: the log's end lies in segments it describes, reading all"
            ),
        }
    }
    let started = Instant::now();
    let loaded = summaries::load(&**storage)?;
    ::log::info!(
        "segment summaries: {} loaded in {:.3} s",
        loaded.by_segment.len(),
        started.elapsed().as_secs_f64()
    );
    let summaries = Summaries::new(
        storage.clone(),
        size,
        loaded.newest,
        loaded.by_segment.len(),
    );
    let recovered =
        recovery::recover_summarized(storage, superblock, put_notes, loaded.by_segment)?;
    if !read_only {
        summaries.drop_segments(&touched_segments(&recovered))?;
    }
    Ok((recovered, summaries))
}

/// The segments recovery zeroes anything in: their summaries go first (rule 4 of
/// `summaries.rs`: a summary never outlives a change to its segment).
fn touched_segments(recovered: &recovery::Recovered) -> Vec<u32> {
    let mut touched: Vec<u32> = (recovered.invalidate.iter())
        .map(|&(segment, _, _)| segment)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    touched
}

/// The segment manager over the recovered segments, with the superblock it works from.
fn segment_manager(
    storage: &Arc<dyn Storage>,
    superblock: Superblock,
    infos: Vec<super::segments::SegmentInfo>,
    summaries: Summaries,
    traces: super::segments::RecoveredTraces,
) -> Result<(Arc<SegmentManager>, Superblock)> {
    let sync_table = synctable::SyncTable::open(storage.clone(), superblock.segment_count)?;
    // A store written by a build before superblock version 3 (whose frees left the first
    // buffer's directory in place): every generation handed out from now on is at or
    // above the high-water mark, and is freed by this build.
    let superblock = Superblock {
        frees_clear_directories_from: superblock
            .frees_clear_directories_from
            .min(superblock.generation_high_water),
        ..superblock
    };
    let segments = Arc::new(SegmentManager::new(
        storage.clone(),
        superblock,
        infos,
        sync_table,
        summaries,
        traces,
    ));
    Ok((segments, superblock))
}

/// Makes the disk agree with what recovery accepted before anything new is written: the
/// discarded buffers zeroed, the superblock marked as of this format, everything synced.
fn settle_recovered_on_disk(
    storage: &Arc<dyn Storage>,
    segments: &SegmentManager,
    invalidate: &[(u32, u32, u32)],
    superblock: Superblock,
    superblock_bytes: &[u8],
) -> Result<()> {
    // Discarded buffers must not come back once new batches reuse their LSNs.
    for &(segment, start, end) in invalidate {
        segments.write(segment, start, &vec![0u8; (end - start) as usize])?;
    }
    // A store of an older format is marked as of this one before anything is written to
    // it in this one: an older build then refuses the store instead of taking the new
    // buffers for torn ones (format.rs, "Record directory"), or freeing segments without
    // clearing their first buffer's directory (`Superblock::frees_clear_directories_from`).
    if Superblock::version_field(superblock_bytes) != Some(SUPERBLOCK_VERSION) {
        let current = Superblock {
            generation_high_water: segments.generation_high_water(),
            ..superblock
        };
        storage.write_superblock(&current.encode())?;
    }
    // What recovery accepted may still be only in the host's page cache (after a crash
    // of the process, not of the machine): make it durable before building on it.
    storage.sync_everything()?;
    Ok(())
}

/// Hands recovery's transient memory back to the system. Recovery's record candidates, the map
/// of points it resolved versions in and the flat copy the index is built from are freed by
/// now but stay resident: glibc returns only the top of the heap by itself, and the index's
/// leaves sit above those holes. Without this the daemon keeps its recovery peak for good
/// (278 B of RSS per record after mounting 100k records, 118 B with it; docs/BENCHMARKS.md).
fn release_recovery_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: glibc call without preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tells the log what recovery gave up: records nothing names any more, buffers discarded.
fn warn_of_recovery_losses(report: &recovery::RecoveryReport, invalidate: &[(u32, u32, u32)]) {
    if report.buffers_unnamed > 0 {
        ::log::warn!(
            "recovery found {} damaged buffer(s) whose record directory is damaged too: \
             records there that nothing names are lost, and their files may read older \
             contents; `logstorfs fsck` reports where",
            report.buffers_unnamed
        );
    }
    if !invalidate.is_empty() || report.buffers_discarded > 0 {
        ::log::warn!(
            "recovery discarded {} buffer(s) beyond LSN {}",
            report.buffers_discarded,
            report.last_lsn
        );
    }
}

/// Starts the flusher, then the background thread, on a store open for writing, and puts a
/// marker behind the newest batches recovery accepted.
fn start_threads(inner: Arc<Inner>) -> Result<Engine> {
    let flusher = inner.clone();
    let flusher = concurrency::spawn("logstor-flush", move || flusher.log.run_flusher())?;
    let worker = inner.clone();
    let background = concurrency::spawn("logstor-bg", move || worker.background_loop());
    let background = match background {
        Ok(b) => b,
        Err(e) => {
            inner.log.stop();
            let _ = flusher.join();
            return Err(e.into());
        }
    };
    // What recovery accepted is durable now, but its newest batches may have nothing on
    // disk behind them that says so: a marker does (see `Inner::vouch_for_newest_batches`).
    inner.vouch_for_newest_batches();
    Ok(Engine {
        inner,
        threads: vec![background, flusher],
    })
}

impl Inner {
    /// The engine's state over what recovery found, before any thread runs.
    #[allow(clippy::too_many_arguments)]
    fn new(
        storage: Arc<dyn Storage>,
        segments: Arc<SegmentManager>,
        index: super::index::Index,
        log: log::Log,
        options: &EngineOptions,
        recovery: recovery::RecoveryReport,
        put_notes: tombstones::PutNotes,
        segment_count: u32,
        read_only: bool,
    ) -> Inner {
        Inner {
            storage,
            segments,
            index,
            log,
            options: options.clone(),
            recovery,
            user_bytes_written: AtomicU64::new(0),
            promised_bytes: AtomicU64::new(0),
            compaction_bytes_written: AtomicU64::new(0),
            separator_bytes_written: AtomicU64::new(0),
            segments_handed_over: AtomicU64::new(0),
            separator_memory_peak: AtomicU64::new(0),
            compaction_lock: Mutex::new(()),
            group_writer: Mutex::new(groups::GroupWriter::new(segment_count)),
            put_notes,
            tombstones_dropped: AtomicU64::new(0),
            foreground_passes: AtomicU64::new(0),
            compaction_victims: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            reclaim_lock: Mutex::new(()),
            taken_at_checkpoint: AtomicU64::new(0),
            checkpoint_writes: Mutex::new(0),
            removal_lock: Mutex::new(()),
            removal_step: AtomicU64::new(REMOVAL_STEP_ENTRIES as u64),
            read_pins: Default::default(),
            #[cfg(feature = "shuttle")]
            test_read_stall_turns: AtomicU64::new(0),
            #[cfg(feature = "shuttle")]
            test_put_index_stall_turns: AtomicU64::new(0),
            test_index_delay_ms: AtomicU64::new(0),
            test_background_paused: AtomicBool::new(false),
            test_step_hook: Mutex::new(None),
            current_group: RwLock::new(None),
            read_only,
        }
    }
}
