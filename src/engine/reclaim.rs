//! Reclamation: frees closed segments whose records are all dead, without copying anything
//! (what compaction and the separator emptied, what overwrites and deletes left behind). The
//! rule it keeps: a dead segment's bytes may go only once nothing can need them, which takes,
//! in order, the reads that looked a location up there finishing (`read_pins.rs`), a marker
//! with the durable floor (so that recovery does not take the freed batches for a gap), the
//! sync table entries of the copies that replaced its records, synced (`synctable.rs`), and
//! its first buffer's directory cleared and synced before its first sector is zeroed.

use super::{EngineError, Inner, Result};

impl Inner {
    /// Frees closed segments whose records are all dead, without copying anything: a marker
    /// records the durable floor first (so that recovery does not take the freed batches for a
    /// gap), then the segments' first blocks are zeroed and synced. Copies written since the
    /// last reclamation (their sources may be among the dead) are recorded in the sync table
    /// first: each entry after a sync that made its copies durable, and synced before any
    /// zeroing (see `synctable.rs`).
    pub(super) fn reclaim_dead_segments(&self) -> Result<usize> {
        let _serial = self.reclaim_lock.lock();
        let durable = self.log.durable_lsn();
        let dead = self.segments.dead_segments(durable);
        if dead.is_empty() {
            return Ok(0);
        }
        // No index entry points into them any more; a read that looked one up before may still
        // be reading there.
        self.read_pins.wait_out_earlier_reads();
        // Nothing is changed yet if the marker cannot be written (no room, or the store is
        // closing): report it, without latching the store read-only.
        self.log.flush_marker()?;
        self.test_step("reclaim: marker written");
        // Their first buffers' directories, made durable by the marker's sync below, before
        // any first sector is zeroed (see `SegmentManager::clear_first_directory`).
        for &segment in &dead {
            if let Err(e) = self.segments.clear_first_directory(segment) {
                self.log.fail(format!("freeing segments: {e}"));
                return Err(e);
            }
        }
        self.test_step("reclaim: first directories cleared");
        let table = &self.segments.sync_table;
        let result = (|| {
            // Entries of copies an earlier sync made durable: the marker's sync makes them
            // durable too.
            let synced = table.take_synced();
            if !synced.is_empty() {
                table.record(&synced)?;
                self.test_step("reclaim: sync table written before the marker sync");
            }
            table.sync(|| self.storage.sync())?;
            self.test_step("reclaim: marker synced");
            // Entries of copies only the marker's sync made durable: one more sync.
            let synced = table.take_synced();
            if !synced.is_empty() {
                table.record(&synced)?;
                self.test_step("reclaim: sync table written");
                self.storage.sync()?;
                self.test_step("reclaim: sync table synced");
            }
            for &segment in &dead {
                self.segments.begin_free(segment)?;
                self.test_step("reclaim: a first block zeroed");
            }
            self.storage.sync()?;
            Ok::<(), EngineError>(())
        })();
        if let Err(e) = result {
            self.log.fail(format!("freeing segments: {e}"));
            return Err(e);
        }
        for &segment in &dead {
            self.segments.finish_free(segment);
            self.put_notes.forget_segment(segment);
        }
        Ok(dead.len())
    }
}
