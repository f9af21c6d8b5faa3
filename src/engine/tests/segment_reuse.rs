//! Reused segments (DESIGN.md 4.4): a segment's new use never exposes its old one: buffers of
//! an earlier generation are not read back, a torn first buffer shows nothing old, a freed
//! segment keeps no first directory, and a first buffer whose generation field is garbled does
//! not cost its segment.

use super::*;

/// DESIGN.md 4.4: buffers left from an earlier use of a segment, behind the new use's buffers,
/// are not read back (their generation is older).
#[test]
fn stale_generation_buffers_are_ignored() {
    let engine = Engine::open_on(images::earlier_use_behind_a_new_one(), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"new").unwrap().as_deref(),
        Some(&b"from the new use"[..])
    );
    for i in 1..4 {
        assert_eq!(
            engine.get(format!("old{i}").as_bytes()).unwrap(),
            None,
            "old{i} came back"
        );
    }
}

/// DESIGN.md 4.4 and the "reused segments" trap: a torn first buffer of a new use must not let
/// the old use's buffers be read back. The old use holds keys whose tombstones compaction has
/// dropped (their puts' segment was freed), so that nothing but the segment's invalidation
/// hides their old records: exposing them would bring them back. The power cut keeps a random
/// subset of the unsynced 512-byte sectors (the new first buffer's among them), over many seeds.
#[test]
fn torn_first_buffer_of_reused_segment_exposes_nothing_old() {
    let opts = small_options();
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    // Only this test decides what is synced: a background pass could sync the new use.
    engine.test_pause_background();
    // The old use: a large first buffer, then small buffers of the keys that must not come
    // back, each synced alone (so that each vouches for the buffers before it: a failing first
    // buffer of the old use would read as damage, not as the log's end), then a value that
    // fills the segment.
    engine.write(&[put("fill", &vec![9u8; 124 << 10])]).unwrap();
    engine.sync().unwrap();
    let (segment, _) = engine.test_segment_of(b"fill").unwrap();
    let old: Vec<String> = (0..4).map(|i| format!("old{i}")).collect();
    for key in &old {
        engine.write(&[put(key, b"from the earlier use")]).unwrap();
        engine.sync().unwrap();
        assert_eq!(engine.test_segment_of(key.as_bytes()).unwrap().0, segment);
    }
    engine
        .write(&[put("churn0", &vec![1u8; 120 << 10])])
        .unwrap();
    engine.test_wait_flushes();
    let first_gen = engine
        .test_segments_in_use()
        .into_iter()
        .find(|&(s, _)| s == segment)
        .unwrap()
        .1;
    let mut deletes = vec![Mutation::delete(ROOT_GROUP, b"fill".to_vec())];
    deletes.extend(
        old.iter()
            .map(|k| Mutation::delete(ROOT_GROUP, k.as_bytes().to_vec())),
    );
    engine.write(&deletes).unwrap();
    engine.test_wait_flushes();
    let (tombstones_at, _) = engine.test_segment_of(b"old0").unwrap();
    // Overwrite until the segment is freed and the tombstones' segment is closed with all its
    // values dead, then compact until the tombstones are gone.
    let value = vec![1u8; 60 << 10];
    let mut round = 0;
    while engine
        .test_segments_in_use()
        .iter()
        .any(|&(s, g)| s == segment && g == first_gen)
        || (0..3).any(|i| {
            engine
                .test_segment_of(format!("churn{i}").as_bytes())
                .is_none_or(|(s, _)| s == tombstones_at)
        })
        || engine
            .test_segment_of(b"old0")
            .is_some_and(|(_, closed)| !closed)
    {
        engine
            .write(&[put(&format!("churn{}", round % 3), &value)])
            .unwrap();
        engine.sync().unwrap();
        engine.test_reclaim().unwrap();
        round += 1;
        assert!(round < 10_000, "segment {segment} was never freed");
    }
    while engine.test_compact().unwrap() > 0 {}
    for key in old.iter().map(String::as_str).chain(["fill"]) {
        assert!(
            engine.inner.index.get(key.as_bytes()).is_none(),
            "the tombstone of {key} was not dropped: it would hide an exposed old record"
        );
    }
    // Compaction freed the tombstones' segment (any use of it from now on is a new one).
    assert!(
        !engine
            .test_segments_in_use()
            .iter()
            .any(|&(s, _)| s == tombstones_at),
        "segment {tombstones_at} of the dropped tombstones is still in use"
    );
    // Small overwrites, each in a buffer of its own, until the segment is reused: its new
    // first buffer is one block, so that the cut picks among few sectors over the old use.
    // Then the tombstones' segment is reused in the same unsynced stretch: a cut that keeps
    // its new first buffer's header sector hides its earlier use (the tombstones) for good.
    let small = vec![2u8; 1000];
    let mut new_gen = 0;
    for round in 0.. {
        assert!(
            round < 100_000,
            "segments {segment} and {tombstones_at} never reused"
        );
        let in_use = engine.test_segments_in_use();
        let reused = |target: u32, old_gen: u64| {
            in_use
                .iter()
                .find(|&&(s, g)| s == target && g > old_gen)
                .map(|&(_, g)| g)
        };
        if new_gen == 0 {
            if let Some(g) = reused(segment, first_gen) {
                new_gen = g;
            } else if round % 8 == 7 {
                engine.sync().unwrap();
                engine.test_reclaim().unwrap();
            }
        }
        if new_gen > 0 && reused(tombstones_at, 0).is_some() {
            break;
        }
        engine
            .write(&[put(&format!("churn{}", round % 3), &small)])
            .unwrap();
        engine.test_wait_flushes();
    }
    // The new use's first buffer is written, never synced.
    engine.test_wait_flushes();
    let (file, base) = Superblock::decode(&storage.read_superblock().unwrap().unwrap())
        .unwrap()
        .segment_position(segment);
    let mut header_lost = 0;
    for seed in 0..64 {
        let image = storage.crash(PowerCut::Random(seed));
        let mut first_sector = [0u8; storage::SECTOR_SIZE];
        image.read_at(file, base, &mut first_sector).unwrap();
        header_lost += u64::from(first_sector.iter().all(|&b| b == 0));
        // What a reader sees first, then what recovery made of the segment (on a second image
        // of the same cut: the open rewrites its image).
        let engine = Engine::open_on(image, &opts).unwrap();
        for key in old.iter().map(String::as_str).chain(["fill"]) {
            match engine.get(key.as_bytes()) {
                Ok(None) => {}
                other => panic!(
                    "seed {seed}: {key} read back from the earlier use of segment {segment}: \
                     {other:?}"
                ),
            }
        }
        drop(engine);
        let image = storage.crash(PowerCut::Random(seed));
        let sb = Superblock::decode(&image.read_superblock().unwrap().unwrap()).unwrap();
        let notes = tombstones::PutNotes::new(sb.segment_count as usize, Vec::new());
        let recovered = recovery::recover(&(image as Arc<dyn Storage>), &sb, &notes).unwrap();
        let info = recovered.infos[segment as usize];
        assert!(
            info.state == SegmentState::Free || info.generation == new_gen,
            "seed {seed}: segment {segment} shows its old use (generation {}) after a torn reuse",
            info.generation
        );
    }
    // Both kinds of cut were tried: the new first buffer's header sector lost (the zeroed
    // sector is what is left), and kept with the rest of the buffer torn.
    assert!(
        0 < header_lost && header_lost < 64,
        "{header_lost} of 64 cuts lost the new first buffer's header sector"
    );
}

/// Damage in one place that takes a segment's first buffer's generation field and more of its
/// header (so that it cannot be repaired exactly) made the whole segment read as free: every
/// key in it served an older version or vanished (found by
/// `one_flipped_byte_anywhere_reads_newest_or_fails_never_older` with runs of 16 bytes). A
/// generation field holding no generation ever handed out, in a header still recognisable
/// (its magic or its length field right), is damage; the use is then the one the buffer's own
/// record directory and the valid buffers behind it name (`recovery::first_use_by_own_directory`).
#[test]
fn a_first_buffer_whose_generation_field_is_garbled_keeps_its_segment() {
    // A whole sector of garbage too (see the cases' list).
    for (case, garbled, older_superblock) in images::GARBLED_FIRST_HEADERS {
        let storage = images::garbled_first_generation(garbled, older_superblock);
        let c = fsck(&*storage);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        if case == "whole sector" {
            // The first record's header and key are in that sector too: damaged, named by the
            // directory.
            let damaged: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
            assert_eq!(damaged, [&b"first"[..]], "{case}: {:?}", c.findings);
            assert_fsck_says_reads_fail(&c, b"first");
            assert_reads_as_damaged(&engine, b"first", case);
        } else {
            assert_eq!(c.problems(), 0, "{case}: {:?}", c.findings);
            assert_eq!(
                engine.get(b"first").unwrap().unwrap(),
                vec![b'F'; 3000],
                "{case}"
            );
        }
        assert_eq!(
            engine.get(b"second").unwrap().unwrap(),
            vec![b'S'; 3000],
            "{case}"
        );
    }
}

/// Freeing a segment clears its first buffer's record directory trailer along with zeroing its
/// first sector (`SegmentManager::clear_first_directory`): a free segment then holds no
/// directory of a first buffer, so garbage over its first sector (damage to the zeroed sector)
/// cannot make an old use of it come back through its directory, while the directory of a
/// segment in use tells its use whatever its first sector holds
/// (`a_first_buffer_whose_generation_field_is_garbled_keeps_its_segment`).
#[test]
fn a_freed_segment_keeps_no_first_directory_and_garbage_over_its_first_sector_stays_free() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    for i in 0..120 {
        engine
            .write(&[put(&format!("gone/{i:03}"), &[7u8; 4000])])
            .unwrap();
        if i % 10 == 9 {
            engine.sync().unwrap();
        }
    }
    let before: Vec<(u32, u64)> = engine.test_segments_in_use();
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"gone/".to_vec())])
        .unwrap();
    engine.sync().unwrap();
    assert!(engine.test_reclaim().unwrap() > 0, "nothing was freed");
    let after = engine.test_segments_in_use();
    let freed: Vec<u32> = before
        .iter()
        .filter(|b| !after.contains(b))
        .map(|&(s, _)| s)
        .collect();
    assert!(!freed.is_empty());
    drop(engine);
    let images = segment_images(&storage);
    for &segment in &freed {
        let (_, (file, base), image) = images.iter().find(|(s, _, _)| *s == segment).unwrap();
        assert!(image[..512].iter().all(|&b| b == 0), "segment {segment}");
        assert_eq!(
            scan::own_directory_generation(image, segment),
            None,
            "freed segment {segment} keeps its first buffer's directory"
        );
        for at in 0..512 {
            storage.corrupt(*file, base + at, 0xa5);
        }
    }
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    // Stale bytes of a free segment, not damage to anything in use.
    let c = fsck(&*storage);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    let in_use = engine.test_segments_in_use();
    for segment in freed {
        assert!(
            in_use.iter().all(|&(s, _)| s != segment),
            "freed segment {segment} is in use again after garbage over its first sector"
        );
    }
}
