//! The write path's on-disk invariants (DESIGN.md 4.1, 4.2): buffers are 4 KiB-aligned and
//! zero-padded, and a flush, and the close of a segment, wait for every index update of their
//! buffers (the write gate, observed from inside).

use super::*;

/// DESIGN.md 4.1: buffers are 4 KiB-aligned, 4 KiB-padded, and the padding is zero.
#[test]
fn buffers_are_aligned_and_zero_padded() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    for i in 0..5 {
        engine
            .write(&[put(&format!("k{i}"), &vec![0xAB; 100 + i * 1000])])
            .unwrap();
        // Write-behind: the write returned with its batch in the open buffer; write it out.
        engine.test_wait_flushes();
    }
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (segment, _) = engine.test_segment_of(b"k0").unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let mut pos = 0;
    let mut buffers = 0;
    while let Some(h) = format::BufferHeader::decode_checked(&image[pos..]) {
        assert_eq!(pos % BLOCK_SIZE, 0, "buffer starts on a block boundary");
        assert_eq!(
            h.buffer_len as usize % BLOCK_SIZE,
            0,
            "buffer is whole blocks"
        );
        // Between the records and the record directory at the buffer's end: zeros.
        let entries = format::read_directory(
            &image[pos..pos + h.buffer_len as usize],
            segment,
            h.generation,
        )
        .map(|(start, entries)| {
            assert_eq!(start, 0, "the directory is the buffer's own");
            entries
        })
        .expect("every buffer ends with an intact record directory");
        let records = scan::records_of(segment, pos, &h, &image).unwrap();
        assert_eq!(entries.len(), records.len(), "one entry per record");
        for (e, (at, rh)) in entries.iter().zip(&records) {
            assert_eq!(
                (pos + e.at, e.header),
                (*at, *rh),
                "the entry names its record"
            );
        }
        let directory_len: usize = entries.iter().map(|e| e.bytes.len()).sum();
        let padding = &image[pos + format::BUFFER_HEADER_SIZE + h.payload_len as usize
            ..pos + h.buffer_len as usize - format::DIRECTORY_TRAILER_SIZE - directory_len];
        assert!(padding.iter().all(|&b| b == 0), "padding is zeroed");
        pos += h.buffer_len as usize;
        buffers += 1;
    }
    assert_eq!(buffers, 5, "one buffer per sequential write");
}

/// DESIGN.md 4.2: the flush waits for the gate, and the segment closes only once every index
/// update of its buffers is done.
#[test]
fn write_gate_holds_flush_and_segment_close_until_index_update() {
    let storage = SimStorage::new();
    let engine = Arc::new(Engine::open_on(storage, &small_options()).unwrap());
    // Segments are 256 KiB and so are buffers: one batch of nearly 256 KiB fills a segment.
    let big = vec![7u8; 124 << 10];
    engine.write(&[put("first", &big)]).unwrap();
    let (segment, closed) = engine.test_segment_of(b"first").unwrap();
    assert!(!closed, "the segment still has room");
    engine.test_wait_flushes();
    let completed_before = engine.test_completed_flushes();
    engine.test_set_index_delay(Duration::from_millis(600));
    let writer = {
        let engine = engine.clone();
        let big = big.clone();
        std::thread::spawn(move || engine.write(&[put("second", &big)]).unwrap())
    };
    std::thread::sleep(Duration::from_millis(250));
    // The buffer is written by now, but its writer has not updated the index yet.
    assert_eq!(engine.get(b"second").unwrap(), None, "not yet indexed");
    assert_eq!(
        engine.test_completed_flushes(),
        completed_before,
        "flush waits for the gate"
    );
    let (_, closed) = engine.test_segment_of(b"first").unwrap();
    assert!(
        !closed,
        "segment {segment} must stay open until the index update is done"
    );
    writer.join().unwrap();
    engine.test_set_index_delay(Duration::ZERO);
    engine.test_wait_flushes();
    assert!(engine.test_completed_flushes() > completed_before);
    assert_eq!(engine.test_segment_of(b"second").unwrap().0, segment);
    assert!(
        engine.test_segment_of(b"first").unwrap().1,
        "full segment closed after the update"
    );
}
