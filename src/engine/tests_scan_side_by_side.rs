//! Proves that the one segment scan (`scan.rs`) changes no decision of recovery and only the
//! listed reports of fsck (`docs/scan-differences.md`): the old recovery and the old fsck walk
//! (`recovery_old.rs`, `check_old.rs`) run beside the new ones on thousands of damaged images,
//! bit flips in closed stores and power cuts in running ones. Recovery must rebuild exactly the
//! same state (index, segment states, put notes, report, what it zeroes); every image where
//! fsck's output differs is counted and shown.
//!
//! `LOGSTOR_SIDE_FLIPS` and `LOGSTOR_SIDE_CUTS` set the number of flipped and power-cut images
//! (defaults 300 and 300); the full run of the brief:
//! `LOGSTOR_SIDE_FLIPS=3000 LOGSTOR_SIDE_CUTS=2400 cargo test --release --lib
//! engine::tests_scan_side_by_side -- --ignored --nocapture`.

use std::collections::BTreeMap;

use super::concurrency::Arc;
use super::format::{self, BLOCK_SIZE, Superblock};
use super::storage::{PowerCut, SimRng, SimStorage, Storage};
use super::tests::{segment_images, separator_options, store_for_flips};
use super::{Engine, Mutation, check, check_old, recovery, recovery_old, tombstones};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Everything a recovery rebuilt, in comparable form.
macro_rules! recovered_summary {
    ($r:expr, $notes:expr) => {{
        let r = $r;
        let infos: Vec<String> = r
            .infos
            .iter()
            .map(|i| {
                format!(
                    "{:?} {:?} {} {} {} {}",
                    i.state, i.kind, i.group, i.generation, i.used, i.max_lsn
                )
            })
            .collect();
        let live = r.index.scan(&[], &[], None, usize::MAX);
        let mut locations = Vec::new();
        r.index
            .for_each_location(|l| locations.push((l.segment, l.offset, l.len)));
        locations.sort_unstable();
        let notes: Vec<Vec<(u64, u64)>> = (0..$notes.segment_count() as u32)
            .map(|s| {
                let mut v = $notes.items(s);
                v.sort_unstable();
                v
            })
            .collect();
        format!(
            "{infos:?}\n{live:?}\n{locations:?} {}\n{}\n{:?}\n{:?}\n{notes:?}",
            r.index.range_delete_count(),
            r.next_lsn,
            r.report,
            r.invalidate
        )
    }};
}

/// Where an fsck's report disagrees with what recovery serves: a key recovery indexes as a put
/// must be live in fsck at that version, or named as damaged (its reads fail, or fsck says its
/// newest version is lost); a key live in fsck must be indexed by recovery at that version.
fn disagreements_with_recovery(storage: &Arc<SimStorage>, c: &check::EngineCheck) -> Vec<String> {
    let storage: Arc<dyn Storage> = storage.clone();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    let Ok(r) = recovery::recover(&storage, &sb, &notes) else {
        return Vec::new();
    };
    let indexed: BTreeMap<Vec<u8>, u64> = r
        .index
        .scan(&[], &[], None, usize::MAX)
        .into_iter()
        .filter(|(_, e)| !e.tombstone)
        .map(|(k, e)| (k, e.version))
        .collect();
    let mut out = Vec::new();
    let name = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for (key, version) in &indexed {
        let live = c.live.get(key).map(|l| l.version);
        if live != Some(*version) && !c.damaged.iter().any(|d| &d.key == key) {
            out.push(format!(
                "{} indexed v{version}, fsck live {live:?}, not named damaged",
                name(key)
            ));
        }
    }
    for (key, l) in &c.live {
        if !indexed.contains_key(key) {
            out.push(format!("{} live v{} in fsck, not indexed", name(key), l.version));
        }
    }
    out
}

/// Old and new recovery of `storage`: their summaries, or the error each gave.
fn recoveries(storage: &Arc<SimStorage>) -> (String, String) {
    let storage: Arc<dyn Storage> = storage.clone();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let notes = || tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    let old_notes = notes();
    let old = match recovery_old::recover(&storage, &sb, &old_notes) {
        Ok(r) => recovered_summary!(&r, old_notes),
        Err(e) => format!("error {e}"),
    };
    let new_notes = notes();
    let new = match recovery::recover(&storage, &sb, &new_notes) {
        Ok(r) => recovered_summary!(&r, new_notes),
        Err(e) => format!("error {e}"),
    };
    (old, new)
}

fn options() -> check::CheckOptions<'static> {
    check::CheckOptions {
        keep_value: &|_| true,
        store_dir: None,
    }
}

/// What differs between two fsck outputs, by part (empty: nothing).
fn fsck_differences(old: &check::EngineCheck, new: &check::EngineCheck) -> Vec<String> {
    let mut out = Vec::new();
    let findings = |c: &check::EngineCheck| {
        c.findings
            .iter()
            .map(|f| format!("{:?} {}: {}", f.severity, f.place, f.what))
            .collect::<Vec<_>>()
    };
    let (fo, fn_) = (findings(old), findings(new));
    if fo != fn_ {
        let gone: Vec<_> = fo.iter().filter(|f| !fn_.contains(f)).collect();
        let added: Vec<_> = fn_.iter().filter(|f| !fo.contains(f)).collect();
        out.push(format!(
            "findings: old only {gone:?}; new only {added:?}{}",
            if gone.is_empty() && added.is_empty() {
                " (order)"
            } else {
                ""
            }
        ));
    }
    if old.live != new.live {
        let keys = |c: &check::EngineCheck| {
            c.live
                .iter()
                .map(|(k, l)| (String::from_utf8_lossy(k).into_owned(), l.version))
                .collect::<BTreeMap<_, _>>()
        };
        let (ko, kn) = (keys(old), keys(new));
        let gone: Vec<_> = ko.iter().filter(|(k, v)| kn.get(*k) != Some(v)).collect();
        let added: Vec<_> = kn.iter().filter(|(k, v)| ko.get(*k) != Some(v)).collect();
        out.push(format!("live: old only {gone:?}; new only {added:?}"));
    }
    let damaged = |c: &check::EngineCheck| {
        let mut v: Vec<String> = c
            .damaged
            .iter()
            .map(|d| {
                format!(
                    "{} v{} at {}:{} intact {} served {:?}",
                    String::from_utf8_lossy(&d.key),
                    d.version,
                    d.place.segment,
                    d.place.offset,
                    d.intact,
                    d.served_version
                )
            })
            .collect();
        v.sort();
        v
    };
    let (d_old, d_new) = (damaged(old), damaged(new));
    if d_old != d_new {
        let gone: Vec<_> = d_old.iter().filter(|d| !d_new.contains(d)).collect();
        let added: Vec<_> = d_new.iter().filter(|d| !d_old.contains(d)).collect();
        out.push(format!("damaged: old only {gone:?}; new only {added:?}"));
    }
    let figures = |c: &check::EngineCheck| {
        format!(
            "{:?} scanned {} buffers {} records {} floor {} last {}",
            c.segments,
            c.segments_scanned,
            c.buffers_accepted,
            c.records_accepted,
            c.durable_floor,
            c.last_lsn
        )
    };
    if figures(old) != figures(new) {
        out.push(format!(
            "figures: old {}; new {}",
            figures(old),
            figures(new)
        ));
    }
    out
}

/// Tallies of a side-by-side run.
#[derive(Default)]
struct Tally {
    images: usize,
    recovery_differs: Vec<String>,
    fsck_differs: Vec<String>,
    /// Images where either fsck found a problem, or recovery discarded or salvaged something:
    /// images whose damage the scan had to judge.
    judged: usize,
    /// Images where the old fsck, and the new one, disagree with what recovery serves.
    old_off_recovery: usize,
    new_off_recovery: usize,
}

impl Tally {
    fn compare(&mut self, storage: &Arc<SimStorage>, case: &str) {
        self.images += 1;
        let (old, new) = recoveries(storage);
        if old != new {
            self.recovery_differs
                .push(format!("{case}:\nold {old}\nnew {new}"));
        }
        let old = check_old::check(&**storage, &options()).unwrap();
        let new = check::check(&**storage, &options()).unwrap();
        if !old.findings.is_empty() || !new.findings.is_empty() {
            self.judged += 1;
        }
        if !disagreements_with_recovery(storage, &old).is_empty() {
            self.old_off_recovery += 1;
        }
        let off = disagreements_with_recovery(storage, &new);
        if !off.is_empty() {
            self.new_off_recovery += 1;
            if std::env::var("LOGSTOR_SIDE_SHOW_OFF").is_ok() {
                eprintln!("new fsck disagrees with recovery: {case}: {off:?}: {:?}", new.findings);
            }
        }
        let differences = fsck_differences(&old, &new);
        if !differences.is_empty() {
            self.fsck_differs
                .push(format!("{case}: {}", differences.join(" | ")));
        }
    }
}

/// Bit flips and runs of damaged bytes at random places of closed stores (the places the flip
/// campaign aims at: buffer headers, directory trailers, written bytes, anywhere).
fn flipped_images(tally: &mut Tally, count: usize) {
    let stores = 4u64;
    for seed in 5..5 + stores {
        let (storage, _) = store_for_flips(seed);
        let images = segment_images(&storage);
        let buffers: Vec<Vec<(usize, usize)>> = images
            .iter()
            .map(|(segment, _, image)| {
                recovery::valid_buffers(image, *segment, u64::MAX)
                    .into_iter()
                    .map(|(at, h)| (at, h.buffer_len as usize))
                    .collect()
            })
            .collect();
        let mut rng = SimRng::new(1000 + seed);
        for flip in 0..count / stores as usize {
            let mut places = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let which = rng.below(images.len() as u64) as usize;
                let (_, (file, base), image) = &images[which];
                let in_buffers = &buffers[which];
                let at = match rng.below(8) {
                    0 | 1 if !in_buffers.is_empty() => {
                        let (start, _) = in_buffers[rng.below(in_buffers.len() as u64) as usize];
                        start + rng.below(format::BUFFER_HEADER_SIZE as u64) as usize
                    }
                    2 | 3 if !in_buffers.is_empty() => {
                        let (start, len) =
                            in_buffers[rng.below(in_buffers.len() as u64) as usize];
                        start + len - 1 - rng.below(64) as usize
                    }
                    4 => rng.below(image.len() as u64) as usize,
                    _ => {
                        let last = image.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                        rng.below((last + BLOCK_SIZE).min(image.len()) as u64) as usize
                    }
                };
                let run = if rng.below(4) == 0 {
                    1 + rng.below(300) as usize
                } else {
                    1
                };
                places.push((*file, *base, at, run.min(image.len() - at)));
            }
            let copy = storage.crash(PowerCut::DropAllUnsynced);
            let mask = 1 + rng.below(255) as u8;
            for &(file, base, at, run) in &places {
                for k in at..at + run {
                    copy.corrupt(file, base + k as u64, mask);
                }
            }
            tally.compare(&copy, &format!("store {seed} flip {flip} {places:?} ^ {mask:#04x}"));
        }
    }
}

/// Power cuts (any subset of unsynced sectors kept) at random points of a running store of
/// four groups (separator and compaction passes among the writes), some followed by a
/// recovery, more writes and a second cut; a few with a flipped byte on top.
fn power_cut_images(tally: &mut Tally, count: usize) {
    let cuts_per_point = 10;
    let mut made = 0;
    let mut seed = 0u64;
    while made < count {
        let mut rng = SimRng::new(seed);
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
        engine.test_pause_background();
        for point in 0..8 {
            for i in 0..60 {
                let group = 1 + rng.below(4) as u32;
                let key = vec![b'k', group as u8, rng.below(40) as u8];
                let m = match rng.below(20) {
                    0 | 1 => Mutation::delete(group, key),
                    2 => Mutation::delete_prefix(group, vec![b'k', group as u8]),
                    _ => Mutation::put(group, key, vec![i as u8; 50 + rng.below(9000) as usize]),
                };
                engine.write(&[m]).unwrap();
                if rng.below(8) == 0 {
                    engine.sync().unwrap();
                }
                if rng.below(40) == 0 {
                    engine.test_separate().unwrap();
                }
                if rng.below(60) == 0 {
                    engine.test_compact().unwrap();
                }
            }
            engine.test_wait_flushes();
            for c in 0..cuts_per_point {
                if made >= count {
                    break;
                }
                let cut = seed * 1000 + point * 100 + c;
                let image = storage.crash(PowerCut::Random(cut));
                if c % 5 == 4 {
                    // A flip on top of the cut.
                    let len = image.file_len(0).unwrap().min(4 << 20);
                    image.corrupt(0, rng.below(len), 1 + rng.below(255) as u8);
                }
                if c % 3 == 2 {
                    // Recovered, written to and cut again: reused LSNs, markers, zeroed tails.
                    let Ok(again) = Engine::open_on(image.clone(), &separator_options()) else {
                        tally.compare(&image, &format!("cut {cut} (does not open)"));
                        made += 1;
                        continue;
                    };
                    again.test_pause_background();
                    for i in 0..20u32 {
                        let group = 1 + rng.below(4) as u32;
                        let key = vec![b'k', group as u8, rng.below(40) as u8];
                        let _ = again.write(&[Mutation::put(group, key, vec![i as u8; 3000])]);
                    }
                    again.test_wait_flushes();
                    let second = image.crash(PowerCut::Random(cut + 7));
                    drop(again);
                    tally.compare(&second, &format!("cut {cut}, recovered, cut again"));
                } else {
                    tally.compare(&image, &format!("cut {cut}"));
                }
                made += 1;
            }
        }
        drop(engine);
        seed += 1;
    }
}

fn run(flips: usize, cuts: usize) {
    let mut tally = Tally::default();
    flipped_images(&mut tally, flips);
    let after_flips = (tally.images, tally.fsck_differs.len());
    power_cut_images(&mut tally, cuts);
    eprintln!(
        "side by side: {} images ({} flipped, {} power cuts), {} with findings; recovery \
         differs on {}, fsck on {} ({} of them flipped); fsck's live map or damage list \
         disagrees with recovery's index on {} images with the old fsck, {} with the new",
        tally.images,
        after_flips.0,
        tally.images - after_flips.0,
        tally.judged,
        tally.recovery_differs.len(),
        tally.fsck_differs.len(),
        after_flips.1,
        tally.old_off_recovery,
        tally.new_off_recovery
    );
    for d in tally.fsck_differs.iter().take(env("LOGSTOR_SIDE_SHOW", 20)) {
        eprintln!("fsck differs: {d}");
    }
    for d in tally.recovery_differs.iter().take(3) {
        eprintln!("recovery differs: {d}");
    }
    assert!(
        tally.recovery_differs.is_empty(),
        "recovery differs on {} images",
        tally.recovery_differs.len()
    );
    assert!(tally.judged > 0, "no image had anything to judge");
}

/// A short run, part of the suite.
#[test]
fn old_and_new_scans_recover_alike_on_damaged_images() {
    run(env("LOGSTOR_SIDE_FLIPS", 300), env("LOGSTOR_SIDE_CUTS", 300));
}
