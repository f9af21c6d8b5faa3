//! Compaction endurance: a store held nearly full is overwritten many times its
//! capacity at random offsets; compaction must keep making room (no `NoSpace` while live data
//! stays below capacity) and every value must read back as last written, before and after a
//! reopen.
//!
//! Levels of live data are in percent of the usable capacity (`usable_capacity_bytes`, what
//! `df` shows: the store less its reserve and compaction's headroom); a 256 MiB store's usable
//! capacity is 84.8% of it, so "75%" is 63.6% of the store's bytes. A full store (filled until
//! a write gets NoSpace) is tested too. Overwrites are counted in store sizes.
//!
//! Sizes come from the environment (defaults below), so that larger figures can be run by hand:
//!
//! ```text
//! LOGSTORFS_ENDURANCE_MIB=512 LOGSTORFS_ENDURANCE_TIMES=10 LOGSTORFS_ENDURANCE_TIMES_85=3 \
//!     cargo test --release --test compaction_endurance -- --nocapture
//! ```
//!
//! - `LOGSTORFS_ENDURANCE_MIB`: store capacity (default 256 MiB; about 25 s in all here);
//! - `LOGSTORFS_ENDURANCE_TIMES`: capacities overwritten at 75% live data (default 4);
//! - `LOGSTORFS_ENDURANCE_TIMES_85`: capacities overwritten at 85% live data, and in a full
//!   store (default 3).
//!
//! A small store (64 MiB: 64 segments, 4 of them reserved) cannot hold 85% of its bytes as
//! live data that compaction can keep room for. It must refuse the fill with NoSpace instead
//! (its capacity is what compaction can sustain, see `user_capacity` in `engine/write_path.rs`), and
//! then never refuse an overwrite: had it taken the 85%, it would run out of room a capacity or
//! two into the overwrites.
//!
//! Keys are 4 KiB pages of one file (random page numbers); a batch holds 1 to 8 pages, like the
//! filesystem's writes. The model keeps, per page, a stamp from which its bytes are derived.

use std::sync::Arc;
use std::time::Instant;

use logstorfs::engine::storage::{SimRng, SimStorage};
use logstorfs::engine::{Engine, EngineError, EngineOptions, EngineStats, Mutation, ROOT_GROUP};

const MIB: u64 = 1 << 20;
/// Store capacity unless `LOGSTORFS_ENDURANCE_MIB` says otherwise.
const DEFAULT_MIB: u64 = 256;
const PAGE: usize = 4096;
/// Record header (24) + key (17) + value.
const RECORD_BYTES: u64 = 24 + 17 + PAGE as u64;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn key(page: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'C');
    k.extend_from_slice(&7u64.to_be_bytes());
    k.extend_from_slice(&page.to_be_bytes());
    k
}

/// The bytes of `page` as written with `stamp`: every 8 bytes differ, so a misplaced or stale
/// page cannot pass for another.
fn page_bytes(page: u64, stamp: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAGE];
    let mut x = (page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stamp) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    v[..8].copy_from_slice(&page.to_le_bytes());
    v[8..16].copy_from_slice(&stamp.to_le_bytes());
    v
}

fn options(capacity: u64) -> EngineOptions {
    EngineOptions {
        capacity_bytes: capacity,
        ..EngineOptions::default()
    }
}

/// Checks pages against the model: all of them, or `sample` random ones.
fn verify(engine: &Engine, model: &[u64], rng: &mut SimRng, sample: Option<usize>) {
    let mut check = |page: u64| {
        let got = engine
            .get(&key(page))
            .unwrap_or_else(|e| panic!("read of page {page}: {e}"))
            .unwrap_or_else(|| panic!("page {page} is missing"));
        let stamp = model[page as usize];
        if got != page_bytes(page, stamp) {
            let seen = u64::from_le_bytes(got[8..16].try_into().unwrap());
            panic!("page {page}: expected the write stamped {stamp}, read stamp {seen}");
        }
    };
    match sample {
        None => (0..model.len() as u64).for_each(&mut check),
        Some(n) => (0..n).for_each(|_| check(rng.below(model.len() as u64))),
    }
}

/// What a store's live data is measured against.
#[derive(Clone, Copy)]
enum Level {
    /// Percent of the usable capacity (what `df` shows).
    OfUsable(u64),
    /// Percent of the store's size (all its segments).
    OfStore(u64),
}

struct Outcome {
    /// Live data after the fill, in percent of the store's size.
    filled_percent: f64,
    /// The same in percent of the usable capacity.
    filled_percent_of_usable: f64,
    user_bytes: u64,
    compaction_bytes: u64,
    device_bytes: u64,
    reclaimed: u64,
}

/// Fills the store to `level` with pages (or as much as it takes, which must be at least
/// `at_least` percent of the same basis), overwrites random pages until `times` capacities of user bytes
/// are written, checking samples on the way, every page at the end, and every page again after
/// a reopen. No overwrite may get NoSpace.
fn endurance(capacity_mib: u64, level: Level, at_least: u64, times: u64, seed: u64) -> Outcome {
    let capacity = capacity_mib * MIB;
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options(capacity)).expect("create");
    let empty = engine.stats();
    let capacity = empty.capacity_bytes;
    let usable = empty.usable_capacity_bytes;
    let (basis, percent) = match level {
        Level::OfUsable(p) => (usable, p),
        Level::OfStore(p) => (capacity, p),
    };
    let mut pages = basis * percent / 100 / RECORD_BYTES;
    let mut model = vec![0u64; pages as usize];
    let mut rng = SimRng::new(seed);
    let mut stamp = 0;
    let started = Instant::now();
    let write = |engine: &Engine, batch: &[(u64, u64)], phase: &str| -> bool {
        let mutations: Vec<Mutation> = batch
            .iter()
            .map(|&(page, stamp)| Mutation::put(ROOT_GROUP, key(page), page_bytes(page, stamp)))
            .collect();
        match engine.write(&mutations) {
            Ok(_) => true,
            Err(EngineError::NoSpace) if phase == "fill" => false,
            Err(EngineError::NoSpace) => {
                let s = engine.stats();
                panic!(
                    "NoSpace in the {phase} after {} MiB of user writes, at {:.1}% live data \
                     ({} of {} bytes), {} free segments of {}",
                    s.user_bytes_written / MIB,
                    s.live_bytes as f64 * 100.0 / s.capacity_bytes as f64,
                    s.live_bytes,
                    s.capacity_bytes,
                    s.segments_free,
                    s.segments_total
                )
            }
            Err(e) => panic!("write: {e}"),
        }
    };
    // Fill, in page order, up to the first NoSpace (a refused batch is not written).
    let mut page = 0;
    while page < pages {
        let n = (1 + rng.below(8)).min(pages - page);
        let batch: Vec<(u64, u64)> = (page..page + n)
            .map(|p| (p, stamp + 1 + p - page))
            .collect();
        if !write(&engine, &batch, "fill") {
            pages = page;
            model.truncate(pages as usize);
            break;
        }
        for &(p, s) in &batch {
            model[p as usize] = s;
        }
        stamp += n;
        page += n;
    }
    let filled: EngineStats = engine.stats();
    let live_percent = filled.live_bytes as f64 * 100.0 / capacity as f64;
    let live_percent_of_usable = filled.live_bytes as f64 * 100.0 / usable as f64;
    let reached = filled.live_bytes as f64 * 100.0 / basis as f64;
    assert!(
        reached >= at_least as f64 - 1.0,
        "filled to {reached:.1}% only"
    );
    // Overwrite random pages.
    let target = filled.user_bytes_written + times * capacity;
    let mut next_check = filled.user_bytes_written + capacity / 2;
    loop {
        let user = engine.stats().user_bytes_written;
        if user >= target {
            break;
        }
        if user >= next_check {
            verify(&engine, &model, &mut rng, Some(2000));
            next_check += capacity / 2;
        }
        let n = 1 + rng.below(8);
        let batch: Vec<(u64, u64)> = (0..n)
            .map(|_| {
                let p = rng.below(pages);
                stamp += 1;
                model[p as usize] = stamp;
                (p, stamp)
            })
            .collect();
        write(&engine, &batch, "overwrites");
    }
    verify(&engine, &model, &mut rng, None);
    let end = engine.stats();
    let outcome = Outcome {
        filled_percent: live_percent,
        filled_percent_of_usable: live_percent_of_usable,
        user_bytes: end.user_bytes_written - filled.user_bytes_written,
        compaction_bytes: end.compaction_bytes_written - filled.compaction_bytes_written,
        device_bytes: end.device_bytes_written - filled.device_bytes_written,
        reclaimed: end.segments_reclaimed - filled.segments_reclaimed,
    };
    engine.close().expect("close");
    let reopened: Arc<SimStorage> = storage;
    let engine = Engine::open_on(reopened, &options(capacity)).expect("reopen");
    verify(&engine, &model, &mut rng, None);
    engine.close().expect("close after reopen");
    eprintln!(
        "{live_percent_of_usable:.1}% of the usable capacity live ({live_percent:.1}% of {} MiB), \
         {}x the store overwritten: {:.1} s; compaction/user {:.2}, device/user {:.2}, \
         {} segments reclaimed",
        capacity / MIB,
        times,
        started.elapsed().as_secs_f64(),
        outcome.compaction_bytes as f64 / outcome.user_bytes as f64,
        outcome.device_bytes as f64 / outcome.user_bytes as f64,
        outcome.reclaimed
    );
    outcome
}

/// Compaction bytes per user byte that uniform random overwrites at 75% live data may cost
/// (DESIGN.md section 8). Not a timing: the bytes compaction writes depend on which segments
/// it picks, and a policy fault (a victim chosen by the wrong figure, stale live counts) shows
/// as a higher ratio. Measured 0.8 (greedy, 256 and 512 MiB).
const TARGET_COMPACTION_PER_USER_AT_75: f64 = 1.5;

#[test]
fn store_at_75_percent_live_overwritten_many_times_reads_back_last_writes() {
    let times = env_u64("LOGSTORFS_ENDURANCE_TIMES", 4);
    let mib = env_u64("LOGSTORFS_ENDURANCE_MIB", DEFAULT_MIB);
    let o = endurance(mib, Level::OfUsable(75), 75, times, 75);
    assert!(o.user_bytes >= times * mib * MIB);
    // Overwriting more than the capacity is only possible if compaction freed segments.
    assert!(o.reclaimed > 0 && o.compaction_bytes > 0);
    let wa = o.compaction_bytes as f64 / o.user_bytes as f64;
    assert!(
        wa <= TARGET_COMPACTION_PER_USER_AT_75,
        "compaction wrote {wa:.2} bytes per user byte at 75% live data"
    );
}

#[test]
fn store_at_85_percent_live_overwritten_three_times_never_runs_out_of_space() {
    let times = env_u64("LOGSTORFS_ENDURANCE_TIMES_85", 3);
    let mib = env_u64("LOGSTORFS_ENDURANCE_MIB", DEFAULT_MIB);
    let o = endurance(mib, Level::OfUsable(85), 85, times, 85);
    assert!(o.user_bytes >= times * mib * MIB);
    assert!(o.reclaimed > 0 && o.compaction_bytes > 0);
}

/// Filled until a write gets NoSpace (90% of the store's bytes is more than it takes), then
/// overwritten: not one overwrite may be refused.
#[test]
fn full_store_overwritten_three_times_never_runs_out_of_space() {
    let times = env_u64("LOGSTORFS_ENDURANCE_TIMES_85", 3);
    let mib = env_u64("LOGSTORFS_ENDURANCE_MIB", DEFAULT_MIB);
    let o = endurance(mib, Level::OfStore(90), 84, times, 86);
    assert!(
        o.filled_percent_of_usable >= 99.0,
        "filled to {:.1}% of the usable capacity",
        o.filled_percent_of_usable
    );
    assert!(o.user_bytes >= times * mib * MIB);
    assert!(o.reclaimed > 0 && o.compaction_bytes > 0);
}

/// A 64 MiB store takes about 78% live data (not 85%: see the header), and from there no
/// overwrite runs out of room.
#[test]
fn small_store_refuses_what_it_cannot_sustain_then_never_runs_out_of_room() {
    for seed in 1..=4 {
        let o = endurance(64, Level::OfStore(85), 77, 3, seed);
        assert!(o.user_bytes >= 3 * 64 * MIB);
        assert!(o.filled_percent < 84.0, "took {:.1}%", o.filled_percent);
    }
}
