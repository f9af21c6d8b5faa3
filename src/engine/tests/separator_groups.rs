//! The separator and groups (DESIGN.md 4.6, 4.7): every record reaches its group's segments,
//! a group-owned segment holds its group's records only, single-group mixed segments are handed
//! over without copying, mixed segments drain, a deleted group's segments are freed, and copies
//! go to the group a key belongs to now.

use super::*;

/// Checks that every group-owned segment holds live records of its own group only, and that
/// every buffer written as group-owned (header kind 2) holds records of its group only.
/// Returns (group-owned segments, mixed segments) in use.
fn assert_segments_hold_their_groups_only(engine: &Engine) -> (usize, usize) {
    let (mut owned, mut mixed) = (0, 0);
    for (segment, is_group, group, _closed, image) in engine.test_segment_images() {
        if !is_group {
            mixed += 1;
            continue;
        }
        owned += 1;
        for g in engine.test_live_groups_in(segment, &image) {
            assert_eq!(
                g, group,
                "segment {segment} of group {group} holds a live record of {g}"
            );
        }
        let hw = u64::MAX;
        for (pos, header) in scan::valid_buffers(&image, segment, hw) {
            if header.kind != format::SegmentKind::Group {
                continue; // a mixed segment handed over whole: its dead records may be anyone's
            }
            assert_eq!(
                header.group, group,
                "segment {segment}: buffer of another group"
            );
            for (_, h) in scan::records_of(segment, pos, &header, &image).unwrap() {
                assert_eq!(
                    h.group, group,
                    "segment {segment}: a record of group {}",
                    h.group
                );
            }
        }
    }
    (owned, mixed)
}

#[test]
fn separator_sorts_records_into_their_groups_and_recovery_keeps_them() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
    engine.test_pause_background();
    let mut expected = std::collections::BTreeMap::new();
    let mut rng = storage::SimRng::new(11);
    for step in 0..600u64 {
        let group = 1 + rng.below(4) as u32;
        let key = format!("g{group}/k{}", rng.below(60));
        let value = vec![(step % 251) as u8; 1 + rng.below(6000) as usize];
        engine
            .write(&[group_put(group, key.clone(), &value)])
            .unwrap();
        expected.insert(key, value);
    }
    let handled = engine.test_separate().unwrap();
    assert!(handled >= 4, "only {handled} mixed segments separated");
    let stats = engine.stats();
    assert!(stats.separator_bytes_written > 0, "nothing was copied");
    let (owned, mixed) = assert_segments_hold_their_groups_only(&engine);
    assert!(owned >= 4, "{owned} group-owned segments");
    assert!(
        mixed <= 1,
        "{mixed} mixed segments left besides the active one"
    );
    let groups: Vec<u32> = stats
        .groups
        .iter()
        .filter(|g| g.segments > 0)
        .map(|g| g.id)
        .collect();
    assert_eq!(groups, vec![1, 2, 3, 4]);
    for (k, v) in &expected {
        assert_eq!(engine.get(k.as_bytes()).unwrap().as_ref(), Some(v), "{k}");
    }
    engine.sync().unwrap();
    drop(engine);
    let engine = Engine::open_on(
        storage.crash(PowerCut::DropAllUnsynced),
        &separator_options(),
    )
    .unwrap();
    engine.test_pause_background();
    for (k, v) in &expected {
        assert_eq!(
            engine.get(k.as_bytes()).unwrap().as_ref(),
            Some(v),
            "{k} after reopen"
        );
    }
    let (owned_again, _) = assert_segments_hold_their_groups_only(&engine);
    assert!(
        owned_again >= owned - 1,
        "recovery lost group segments: {owned_again} < {owned}"
    );
}

#[test]
fn single_group_mixed_segments_are_handed_over_without_copying() {
    let engine = Engine::open_on(SimStorage::new(), &separator_options()).unwrap();
    engine.test_pause_background();
    let value = vec![9u8; 64 << 10];
    for i in 0..64 {
        engine
            .write(&[group_put(7, format!("big/{i:04}"), &value)])
            .unwrap();
    }
    engine.test_separate().unwrap();
    let stats = engine.stats();
    assert_eq!(
        stats.separator_bytes_written, 0,
        "a one-group write was copied"
    );
    assert!(
        stats.segments_handed_over >= 10,
        "{} handed over",
        stats.segments_handed_over
    );
    let seven = stats.groups.iter().find(|g| g.id == 7).expect("group 7");
    assert!(seven.segments >= 10 && seven.live_bytes >= 60 * (64 << 10));
    assert_segments_hold_their_groups_only(&engine);
}

#[test]
fn mixed_segments_drain_after_writes_stop_and_memory_is_bounded() {
    let opts = EngineOptions {
        capacity_bytes: 128 << 20,
        ..separator_options()
    };
    let engine = Engine::open_on(SimStorage::new(), &opts).unwrap();
    let mut rng = storage::SimRng::new(3);
    // Many groups: the separator's memory must not grow with their number. (Each group takes
    // at least a segment of space, which is why the filesystem makes groups only of large
    // directories.)
    for step in 0..1500u64 {
        let group = rng.below(200) as u32;
        let value = vec![(step % 251) as u8; 2000];
        engine
            .write(&[group_put(group, format!("g{group}/{step}"), &value)])
            .unwrap();
    }
    // Liveness, not speed: the background separator must get there on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mixed = loop {
        let mixed = engine.stats().mixed_segments;
        if mixed <= 1 || std::time::Instant::now() > deadline {
            break mixed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        mixed <= 1,
        "{mixed} mixed segments still in use after writes stopped"
    );
    let stats = engine.stats();
    let segment = small_options().segment_size_bytes as u64;
    assert!(stats.separator_memory_bytes > 0);
    assert!(
        stats.separator_memory_bytes <= 2 * segment,
        "separator held {} bytes for 200 groups",
        stats.separator_memory_bytes
    );
}

/// Deleting a group's data frees its data segments whole, without a restart. What remains is
/// its tombstone (a prefix delete, a few dozen bytes), which stays until no older put it covers
/// remains on disk.
#[test]
fn deleting_a_groups_data_frees_its_data_segments_without_restart() {
    let engine = Engine::open_on(SimStorage::new(), &separator_options()).unwrap();
    engine.test_pause_background();
    let value = vec![1u8; 20 << 10];
    for i in 0..120 {
        // Group 5 interleaved with group 6, so that both copying and hand-over happen.
        engine
            .write(&[group_put(5, format!("five/{i:04}"), &value)])
            .unwrap();
        if i % 3 == 0 {
            engine
                .write(&[group_put(6, format!("six/{i:04}"), &value)])
                .unwrap();
        }
    }
    engine.test_separate().unwrap();
    let before = engine.stats();
    let five = before.groups.iter().find(|g| g.id == 5).unwrap();
    assert!(five.segments > 0);
    // The delete goes to another group (the filesystem writes every delete to the root group),
    // so group 5 is left with nothing live at all, its open segment included.
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"five/".to_vec())])
        .unwrap();
    engine.test_separate().unwrap();
    // A second drain with no mixed segment left: the idle pass alone must close the group's
    // empty open segment.
    engine.test_separate().unwrap();
    engine.sync().unwrap();
    engine.test_reclaim().unwrap();
    let after = engine.stats();
    let five = after.groups.iter().find(|g| g.id == 5);
    assert!(
        five.is_none_or(|g| g.segments == 0),
        "group 5 still owns {:?} segments ({:?} live bytes) after its data was deleted",
        five.map(|g| g.segments),
        five.map(|g| g.live_bytes)
    );
    assert!(
        before.groups.iter().find(|g| g.id == 5).unwrap().segments >= 3,
        "the test wrote too little to show segments being freed"
    );
    for i in (0..120).step_by(3) {
        assert_eq!(
            engine
                .get(format!("six/{i:04}").as_bytes())
                .unwrap()
                .unwrap(),
            value
        );
    }
}

/// The separator and compaction copy a put into the group its key belongs to now (as the
/// owner says through `set_current_group`), not the one it was written to; tombstones keep
/// their group. The copies say so in their headers: recovery keeps them in the new group.
#[test]
fn copies_go_to_the_group_a_key_belongs_to_now() {
    let options = separator_options();
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options).unwrap();
    engine.test_pause_background();
    // Keys "moved/*" now belong to group 9, whatever they were written to; the resolver reads
    // another key through the engine to decide, as the filesystem reads an inode record.
    engine.write(&[group_put(0, "where".into(), b"9")]).unwrap();
    engine.set_current_group(Arc::new(
        |key: &[u8], read: &dyn Fn(&[u8]) -> Option<Vec<u8>>| {
            if key.starts_with(b"moved/") {
                let g = read(b"where")?;
                std::str::from_utf8(&g).ok()?.parse().ok()
            } else {
                None
            }
        },
    ));
    let value = vec![3u8; 20 << 10];
    for i in 0..40 {
        engine
            .write(&[group_put(5, format!("moved/{i:03}"), &value)])
            .unwrap();
        engine
            .write(&[group_put(6, format!("stays/{i:03}"), &value)])
            .unwrap();
    }
    engine
        .write(&[Mutation::delete(5, b"moved/000".to_vec())])
        .unwrap();
    engine.sync().unwrap();
    engine.test_separate().unwrap();
    engine.test_separate().unwrap();
    let (group_owned, _) = assert_segments_hold_their_groups_only(&engine);
    assert!(group_owned > 0);
    let in_group = |key: &str| {
        let (segment, _) = engine.test_segment_of(key.as_bytes()).unwrap();
        engine
            .test_segment_images()
            .into_iter()
            .find(|(s, ..)| *s == segment)
            .map(|(_, owned, group, ..)| (owned, group))
            .unwrap()
    };
    assert_eq!(
        in_group("moved/007"),
        (true, 9),
        "a moved key's copy is in group 9"
    );
    assert_eq!(in_group("stays/007"), (true, 6));
    let stats = engine.stats();
    assert!(stats.groups.iter().any(|g| g.id == 9 && g.live_bytes > 0));
    // Mixed segments of group 5 alone: they would be handed over whole, but their keys belong
    // to group 9 now, so they are copied instead.
    let handed_before = engine.stats().segments_handed_over;
    for i in 0..40 {
        engine
            .write(&[group_put(5, format!("moved/solo{i:03}"), &value)])
            .unwrap();
    }
    engine.sync().unwrap();
    engine.test_separate().unwrap();
    assert_eq!(in_group("moved/solo007"), (true, 9));
    assert_eq!(engine.stats().segments_handed_over, handed_before);
    assert_segments_hold_their_groups_only(&engine);
    drop(engine);
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options).unwrap();
    engine.test_pause_background();
    assert_segments_hold_their_groups_only(&engine);
    assert_eq!(engine.get(b"moved/007").unwrap().unwrap(), value);
    assert!(engine.get(b"moved/000").unwrap().is_none());
    let (segment, _) = engine.test_segment_of(b"moved/007").unwrap();
    let group = engine
        .test_segment_images()
        .into_iter()
        .find(|(s, ..)| *s == segment)
        .map(|(_, _, g, ..)| g)
        .unwrap();
    assert_eq!(group, 9, "recovery keeps the copy in its new group");
}

/// A store holds at most `groups::max_open_segments` open group-owned segments (two in 128
/// segments), as `user_capacity` counts: with nine groups written at once, the separator and
/// compaction send the copies of groups beyond the bound behind an open segment.
#[test]
fn open_group_segments_stay_within_their_bound() {
    let engine = Engine::open_on(SimStorage::new(), &small_options()).unwrap();
    engine.test_pause_background();
    let bound = super::super::groups::max_open_segments(128);
    let mut rng = storage::SimRng::new(5);
    for step in 0..2000u64 {
        let group = 1 + rng.below(9) as u32;
        let value = vec![(step % 251) as u8; 1 + rng.below(8000) as usize];
        engine
            .write(&[group_put(
                group,
                format!("g{group}/{}", rng.below(200)),
                &value,
            )])
            .unwrap();
        if step % 100 == 99 {
            engine.test_separate().unwrap();
            if step % 300 == 299 {
                engine.test_compact().unwrap();
            }
            let open = engine
                .test_segment_images()
                .iter()
                .filter(|(_, owned, _, closed, _)| *owned && !*closed)
                .count();
            assert!(
                open <= bound,
                "step {step}: {open} open group segments, bound {bound}"
            );
        }
    }
}
