//! A record that fails its own CRC inside a buffer that passes its CRC (the record was damaged
//! in memory before its buffer was sealed): recovery indexes it where it is, like every record
//! of an accepted buffer, so that reads of its key fail rather than serve an older version;
//! fsck says the same of it.

use super::*;

/// "victim" written twice (synced each time) with "neighbour" beside its newer version, whose
/// value is then damaged and its buffer sealed again over the damage, as a sealing of a
/// buffer damaged in memory would leave it.
fn a_failing_record_in_a_valid_buffer() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", &[b'o'; 3000])]).unwrap();
    engine.sync().unwrap();
    engine
        .write(&[put("victim", &[b'n'; 3000]), put("neighbour", b"kept")])
        .unwrap();
    engine.sync().unwrap();
    let loc = engine.inner.index.get(b"victim").unwrap().location;
    drop(engine);
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(loc.segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let (start, header) = scan::valid_buffers(&image, loc.segment, sb.generation_high_water)
        .into_iter()
        .filter(|(pos, _)| *pos <= loc.offset as usize)
        .max_by_key(|(pos, _)| *pos)
        .unwrap();
    let buffer = &mut image[start..start + header.buffer_len as usize];
    buffer[loc.offset as usize - start + loc.len as usize - 10] ^= 0x20;
    header.seal(buffer);
    assert!(BufferHeader::decode_checked(buffer).is_some());
    storage.write_at(file, base + start as u64, buffer).unwrap();
    storage.sync().unwrap();
    storage
}

#[test]
fn a_failing_record_in_a_valid_buffer_recovery() {
    let engine = Engine::open_on(a_failing_record_in_a_valid_buffer(), &small_options()).unwrap();
    assert_reads_as_damaged(
        &engine,
        b"victim",
        "record failing its CRC in a valid buffer",
    );
    assert_eq!(
        engine.get(b"neighbour").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

#[test]
fn a_failing_record_in_a_valid_buffer_fsck() {
    let c = fsck_names_only_the_victim(&*a_failing_record_in_a_valid_buffer());
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem
                && f.what
                    .contains("record fails its checksum although its buffer's passes")),
        "{:?}",
        c.findings
    );
    assert!(c.live.contains_key(&b"neighbour"[..]), "{:?}", c.findings);
}
