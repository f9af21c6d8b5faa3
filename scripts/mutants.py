#!/usr/bin/env python3
"""Breaks each invariant of DESIGN.md section 4 on purpose and checks that a test fails.

Each mutant is a (file, original text, replacement, tests to run). The source tree is copied to a
scratch directory, the mutant applied there, and the named tests run; the mutant must make at
least one of them fail. A mutant whose original text is missing fails the script too, so the list
cannot silently rot when the code changes.

The tests to run are the arguments of one `cargo test` (a list of strings), or a list of such
argument lists, test groups that must each fail: a damage rule that recovery and fsck share is
killed by a recovery test (an engine that opens the damaged image) and by an fsck test (the
checker's report on it), each group naming one side.

Usage: scripts/mutants.py [NAME ...]   (default: all)

Env: MUTANTS_SHARD=K/N runs only the mutants whose position in the list is K modulo N (CI runs
one of three shards, chosen by the commit count, so that every mutant runs in every third CI run
and the stage takes about a quarter of an hour); the log names the shard and what it left out.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, invariant, file, original, replacement, cargo test arguments or a list of them)
MUTANTS = [
    (
        "gate-closes-with-a-hold-left",
        "4.2 write gate: the flush waits until every writer of its buffer let go",
        "src/engine/log/gate.rs",
        "        while *holds > 0 {",
        "        while *holds > 1 {",
        ["--release", "--features", "shuttle", "--lib", "gate_schedules"],
    ),
    (
        "read-of-written-record-takes-the-log-lock",
        "reads: a record already in storage is read without the log's lock (held over allocations)",
        "src/engine/read.rs",
        "        if self\n            .segments\n            .written_through(",
        "        if false\n            && self\n            .segments\n            .written_through(",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "a_read_of_a_written_record_does_not_wait"],
    ),
    (
        "reads-racing-frees",
        "4.4 reads: a segment is freed only once every read that may have looked a location up in it is done",
        "src/engine/reclaim.rs",
        "        self.read_pins.wait_out_earlier_reads();\n",
        "",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "reads_of_a_key_that_compaction_keeps_moving"],
    ),
    (
        "buffer-ranges-read-before-the-index-lock",
        "4.5 index: a put of a write buffer dies on arrival under a newer range delete of that buffer",
        "src/engine/write_path.rs",
        "        for update in encoded.updates(ticket.lsn, ticket.segment, ticket.offset) {\n            // Noted before the ticket is dropped: once a later tombstone's segment is closed,\n            // this put's note is there (index updates and flushes complete in buffer order).\n            if let Update::Point { key, entry } = &update\n                && !entry.tombstone\n            {\n                self.put_notes.note_put(ticket.segment, key, entry.version);\n                #[cfg(feature = \"shuttle\")]\n                for _ in 0..self.test_put_index_stall_turns.load(Ordering::Relaxed) {\n                    concurrency::yield_now();\n                }\n            }\n            let applied = self.index.apply_in_buffer(&update, &ticket.buffer_ranges);\n",
        "        let read_early = Mutex::new(ticket.buffer_ranges.lock().clone());\n        for update in encoded.updates(ticket.lsn, ticket.segment, ticket.offset) {\n            // Noted before the ticket is dropped: once a later tombstone's segment is closed,\n            // this put's note is there (index updates and flushes complete in buffer order).\n            if let Update::Point { key, entry } = &update\n                && !entry.tombstone\n            {\n                self.put_notes.note_put(ticket.segment, key, entry.version);\n                #[cfg(feature = \"shuttle\")]\n                for _ in 0..self.test_put_index_stall_turns.load(Ordering::Relaxed) {\n                    concurrency::yield_now();\n                }\n            }\n            let applied = self.index.apply_in_buffer(&update, &read_early);\n",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "a_put_and_a_prefix_delete_of_one_buffer"],
    ),
    (
        "range-delete-removes-all-on-the-request-path",
        "4.5 (pending) a truncate or unlink looks at a bounded number of index entries on the request path",
        "src/engine/index/ranges.rs",
        "pub const INLINE_REMOVAL_ENTRIES: usize = 256;",
        "pub const INLINE_REMOVAL_ENTRIES: usize = usize::MAX;",
        ["--release", "--test", "fs_data", "truncate_and_unlink_work_grows_with_stored_pages_not_file_size"],
    ),
    (
        "truncate-counts-page-by-page",
        "4.5 (pending) a truncate counts the pages it drops leaf by leaf, not page by page",
        "src/engine/index/mod.rs",
        "            if inside && !met {",
        "            if false && inside && !met {",
        ["--release", "--test", "fs_data", "truncate_and_unlink_work_grows_with_stored_pages_not_file_size"],
    ),
    (
        "pending-range-ignored-by-readers",
        "4.5 (pending) what a pending range delete covers is gone for every reader at once",
        "src/engine/index/mod.rs",
        "            .filter(|e| !inner.hidden(&inner.pending_over(key, &[]), key, e.version))\n",
        "\n",
        ["--release", "--lib", "engine::tests::pending_range_deletes::a_pending_range_delete_hides_what_it_covers_from_every_reader"],
    ),
    (
        "removal-drops-newer-puts",
        "4.5 (pending) the background removes only entries older than the range delete: a newer put stays",
        "src/engine/index/ranges.rs",
        "inner.remove_older_in_range(&resume, &end, key.1, budget);",
        "inner.remove_older_in_range(&resume, &end, u64::MAX, budget);",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "a_newer_put_under_a_pending_range_delete_survives"],
    ),
    (
        "enospc-ignores-pending-removals",
        "space: no write is refused for data a pending range delete already deleted",
        "src/engine/write_path.rs",
        "                self.settle_pending(false);\n                growth = self.growth(batch, total, promise_change);\n",
        "                growth = self.growth(batch, total, promise_change);\n",
        ["--release", "--lib", "engine::tests::pending_range_deletes::a_full_store_takes_writes_once_a_pending_range_delete_returned"],
    ),
    (
        "write-noted-before-it-lands",
        "4.9 durability: a returned sync covers every write that returned before it (concurrent syncs)",
        "src/engine/storage/file.rs",
        "        let landed = land();\n        concurrency::between_steps();\n        self.note(file);\n        landed\n",
        "        self.note(file);\n        concurrency::between_steps();\n        land()\n",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "a_returned_sync_covers_every_earlier_write"],
    ),
    (
        "recovery-keeps-lowest-version",
        "4.5 recovery: of a key's records the highest version wins (bulk resolution)",
        "src/engine/recovery.rs",
        "            .then(b.1.cmp(&a.1))\n",
        "            .then(a.1.cmp(&b.1))\n",
        ["--test", "engine_model"],
    ),
    (
        "checkpoint-claim-trusted-without-probe",
        "4.9 recovery: a segment is taken from the checkpoint only while its first header is the one recorded",
        "src/engine/recovery.rs",
        "        if !self.enter(segment)? || self.first_header(segment)? != claimed {\n",
        "        if !self.enter(segment)? {\n",
        ["--release", "--lib", "engine::tests::checkpoints::recovery_from_a_checkpoint_equals"],
    ),
    (
        "checkpoint-unindexed-holders-taken-unread",
        "4.9 recovery: a segment holding records the index does not name (a copy's source, a displaced tombstone) is read, not taken from the checkpoint",
        "src/engine/checkpoint.rs",
        "            _ if unindexed_holders.binary_search(&segment).is_ok() => SegmentMark::Read,\n",
        "            _ if false => SegmentMark::Read,\n",
        ["--release", "--lib", "engine::tests::checkpoints::recovery_from_a_checkpoint_equals"],
    ),
    (
        "checkpoint-displaced-tombstone-not-noted",
        "4.9 recovery: a tombstone a newer put displaced from the index is read again, not taken from the checkpoint",
        "src/engine/index/mod.rs",
        "                if was_tombstone {\n                    self.resurfacing.insert(old.segment);\n                }\n",
        "",
        ["--release", "--lib", "engine::tests::checkpoints::a_tombstone_displaced_by_a_newer_put"],
    ),
    (
        "checkpoint-open-segment-taken-unread",
        "4.9 recovery: a checkpoint of a running engine has its open segments read",
        "src/engine/checkpoint.rs",
        "            SegmentState::Open if running => SegmentMark::Read,\n",
        "            SegmentState::Open if false => SegmentMark::Read,\n",
        ["--release", "--lib", "engine::tests::checkpoints::recovery_from_a_checkpoint_equals"],
    ),
    (
        "checkpoint-written-before-its-sync",
        "4.9 recovery: a checkpoint of a running engine names only durable records",
        "src/engine/background.rs",
        "        let encoded = match self.sync() {\n",
        "        let encoded = match Ok::<(), EngineError>(()) {\n",
        ["--release", "--lib", "engine::tests::checkpoints::recovery_from_a_checkpoint_equals"],
    ),
    (
        "checkpoint-tie-goes-to-the-checkpoint",
        "4.9 recovery: of a checkpoint entry and a record read of the same version, the one a scan meets first",
        "src/engine/recovery.rs",
        "            || (entry.version == b.version && rank(&entry, salvaged) < rank(&b, false));\n",
        "            || (entry.version == b.version && false);\n",
        ["--release", "--lib", "engine::tests::checkpoints::recovery_from_a_checkpoint_equals"],
    ),
    (
        "copies-notes-lost-on-partial-write",
        "5 tombstones: the puts of every copy a pass wrote are noted, even if the pass then fails",
        "src/engine/groups.rs",
        "        (written, outcome)\n",
        "        (if outcome.is_ok() { written } else { Written { locations: Vec::new(), device_bytes: 0 } }, outcome)\n",
        ["--lib", "engine::tests::copies_and_close::copies_written_before_a_pass_ran_out"],
    ),
    (
        "copies-under-pressure-stay-sorted-by-group",
        "space: a compaction pass short of a segment per group puts a victim's copies in one group",
        "src/engine/copies.rs",
        "            if claim == segments::Claim::User {\n",
        "            if true {\n",
        ["--lib", "engine::tests::copies_and_close::a_compaction_pass_short_of_a_segment_per_group"],
    ),
    (
        "pass-budget-ignores-open-room",
        "space: a store down to its compaction floor still compacts into the room of an open group segment",
        "src/engine/compaction/policy.rs",
        "    (MAX_PASS_LIVE_SEGMENTS * size).min(open_room + usable * copy_room)\n",
        "    (MAX_PASS_LIVE_SEGMENTS * size).min(usable * copy_room + 0 * open_room)\n",
        ["--release", "--test", "engine_model_threads",
         "a_store_of_many_groups_near_full_keeps_taking_overwrites"],
    ),
    (
        "pass-copies-without-the-reclaim-lock",
        "4.4 a victim is not freed (and reused) while its pass reads and copies it: locations carry no generation",
        "src/engine/compaction/pass.rs",
        "                let _no_free = self.reclaim_lock.lock();\n                if !self.still_as_listed(victim, &snapshot[victim as usize].0) {",
        "                if !self.still_as_listed(victim, &snapshot[victim as usize].0) {",
        ["--release", "--lib", "engine::tests::copies_and_close::a_victim_is_never_freed_and_reused"],
    ),
    (
        "separator-copies-before-its-sync",
        "4.9 nothing is copied on the strength of data that is not yet durable: the separator syncs first",
        "src/engine/separator.rs",
        "            .any(|(_, info)| info.max_lsn > self.log.durable_lsn())\n        {\n            self.sync()?;\n        }\n",
        "            .any(|(_, info)| info.max_lsn > self.log.durable_lsn())\n        {\n        }\n",
        ["--lib", "engine::tests::copies_and_close::the_separator_copies_only_records_the_log_made_durable"],
    ),
    (
        "pass-budget-ignores-open-group-segments",
        "4.8 space: a pass copies a segment only if every group it copies into can have a segment",
        "src/engine/copies.rs",
        "        if needed > self.segments.free_for(claim) {",
        "        if needed > self.segments.free_for(claim) + by_group.len() {",
        ["--lib", "engine::tests::copies_and_close::a_pass_without_room_for_every_groups"],
    ),
    (
        "summary-trusted-without-probe",
        "4.9 recovery: a segment summary stands in for its segment only while the segment's first buffer header is the one summarized",
        "src/engine/recovery.rs",
        "        if self.first_header(segment)? != first.header {",
        "        if self.first_header(segment)? != first.header && false {",
        ["--release", "--lib", "engine::tests::summaries::recovery_from_summaries_equals_a_full_scan"],
    ),
    (
        "summary-of-an-open-segment",
        "4.9 recovery: a segment is summarized only once nothing more is written to it",
        "src/engine/summaries.rs",
        "(info.state == SegmentState::Closed || (closing && info.state == SegmentState::Open))",
        "(info.state == SegmentState::Closed || info.state == SegmentState::Open)",
        ["--release", "--lib", "engine::tests::summaries::recovery_from_summaries_equals_a_full_scan"],
    ),
    (
        "summaries-lock-before-the-segment-table",
        "lock order: the segment table's lock before the summaries being built (a write-out and a free would wait for each other)",
        "src/engine/summaries.rs",
        "            let infos = infos();\n            let building = self.building.lock();\n            let ready = complete(&infos, &building);",
        "            let building = self.building.lock();\n            let ready = complete(&infos(), &building);",
        ["--release", "--features", "shuttle", "--test", "engine_schedules",
         "a_summaries_write_out_and_a_segment_free_never_wait_for_each_other"],
    ),
    (
        "summary-written-before-its-segments-sync",
        "4.9 recovery: a segment summary is written only once the bytes it describes are durable",
        "src/engine/summaries.rs",
        "        self.storage.sync()?;\n        let mut read_back",
        "        let mut read_back",
        ["--release", "--lib", "engine::tests::summaries::recovery_from_summaries_equals_a_full_scan"],
    ),
    (
        "summary-tail-puts-not-noted",
        "5 tombstones: recovery from summaries notes the puts on disk behind a use's end, as the scan does",
        "src/engine/recovery.rs",
        "            for (key, version) in tail_puts {\n                put_notes.note_put(segment, &key, version);\n            }\n",
        "            let _ = tail_puts;\n",
        ["--release", "--lib", "engine::tests::summaries::recovery_from_summaries_equals_a_full_scan"],
    ),
    (
        "summary-of-a-damaged-segment",
        "4.9 recovery: a segment summary is written only if a scan of the segment reads exactly what it holds, with no damage",
        "src/engine/summaries.rs",
        "    let agrees = verdicts.stretches.is_empty()\n",
        "    let agrees = true\n",
        ["--release", "--lib", "engine::tests::summaries::recovery_after_damage_summarizes_only_whole_segments"],
    ),
    (
        "checkpoint-before-close-sync",
        "4.9 recovery: a clean close's checkpoint points only at durable records",
        "src/engine/open.rs",
        "        let synced = self.inner.storage.sync();",
        "        let synced: std::io::Result<()> = Ok(());",
        ["--lib", "engine::tests::copies_and_close::a_checkpoint_never_points_at_copies"],
    ),
    (
        "group-map-rebuild-skips-last-read-inode",
        "3 mapping: a change of an inode the group map rebuild has read is applied on top",
        "src/fs/groups.rs",
        "l.scanned_through.is_some_and(|s| ino <= s)",
        "l.scanned_through.is_some_and(|s| ino < s)",
        ["--test", "fs_groups", "a_group_map_rebuilt"],
    ),
    (
        "copies-behind-damage-dropped",
        "4.9 recovery: damage in a segment of copies costs only the damaged buffer",
        "src/engine/scan/walk.rs",
        "        h.kind == SegmentKind::Group\n",
        "        false\n",
        [
            ["--lib", "engine::tests::copies_damage::copies_behind_damage_in_a_group_segment"],
            ["--lib", "engine::tests::damage_rule_sides::copies_behind_damage_without_the_table_fsck"],
        ],
    ),
    (
        "old-use-buffers-read-as-stranded",
        "9 fsck: an earlier use's buffers behind a torn first buffer of a new use are stale",
        "src/engine/scan/verdicts.rs",
        "        .or_else(|| plausible.then_some(stop_generation));",
        "        .or_else(|| (false && plausible).then_some(stop_generation));",
        ["--lib", "engine::check::tests::old_buffers_behind_a_torn_first_buffer"],
    ),
    (
        "torn-copies-called-damage",
        "9 fsck: damaged records in a torn stretch of copies are a note, not damage",
        "src/engine/check/losses.rs",
        "        if (lsn <= evidence_floor && (r.intact || !s.copies)) || synced_copy {",
        "        if lsn <= evidence_floor || synced_copy {",
        ["--lib", "engine::check::tests::damaged_copies_are_a_note"],
    ),
    (
        "deleted-unseen-put-called-lost",
        "9 fsck: a put deleted by an unseen tombstone beside it is no loss",
        "src/engine/check/losses.rs",
        "        if r.intact && (!hides_a_served_put || deleted_unseen(r)) {",
        "        if r.intact && !hides_a_served_put {",
        ["--lib", "engine::check::tests::a_torn_tombstone"],
    ),
    (
        "copies-keep-their-old-group",
        "4.8/3 compaction and the separator copy a put into the group its key belongs to now",
        "src/engine/copies.rs",
        "            if let Some(now) = current(&record.key, &read).filter(|now| now != group) {",
        "            if let Some(now) = current(&record.key, &read).filter(|now| now != group && false) {",
        ["--lib", "engine::tests::separator_groups::copies_go_to_the_group"],
    ),
    (
        "regrouped-segment-handed-over",
        "4.7 a mixed segment whose records move to another group is copied, not handed over",
        "src/engine/separator.rs",
        "            if let Some(group) = first_group.filter(|_| !regrouped)\n",
        "            if let Some(group) = first_group\n",
        ["--lib", "engine::tests::separator_groups::copies_go_to_the_group"],
    ),
    (
        "torn-tail-notes-first-buffer-only",
        "5 trap 'tombstones': every put behind a torn buffer stays noted while on disk",
        "src/engine/scan/verdicts.rs",
        "            let of_this_use = q == at\n                || (",
        "            let of_this_use = q == at\n                || false && (",
        ["--lib", "engine::tests::log_damage::puts_behind_a_torn_buffer_stay_noted"],
    ),
    (
        "lost-tombstone-that-hides-nothing-is-damage",
        "9 fsck: a torn tombstone that hides no served put is no loss",
        "src/engine/check/losses.rs",
        "        if r.intact && (!hides_a_served_put || deleted_unseen(r)) {",
        "        if r.intact && false {",
        ["--lib", "engine::check::tests::a_torn_tombstone"],
    ),
    (
        "group-never-splits",
        "3 mapping: a directory past the split size becomes a group root",
        "src/fs/groups.rs",
        "                None if d.bytes > self.split_bytes => {",
        "                None if d.bytes > self.split_bytes && false => {",
        ["--lib", "fs::groups::tests"],
    ),
    (
        "stale-generation-read-as-damage",
        "4.4 generations: bytes of an earlier use past a segment's end are stale, not damage",
        "src/engine/scan/verdicts.rs",
        "    if stranded.is_empty() && (zeros || earlier_use || (!plausible && pos >= synced_end)) {",
        "    if stranded.is_empty() && (zeros || (!plausible && pos >= synced_end)) {",
        ["--lib", "engine::check::tests::a_buffer_of_an_earlier_use"],
    ),
    (
        "separator-mixes-groups",
        "4.6 separator: every group-owned segment holds records of its group only",
        "src/engine/copies.rs",
        "            by_group.entry(group).or_default().push(record);",
        "            by_group.entry(group % 2).or_default().push(record);",
        ["--lib", "engine::tests::separator_groups::separator_sorts_records_into_their_groups"],
    ),
    (
        "hand-over-of-a-mixed-segment",
        "4.7 segment sets: only a one-group mixed segment is handed over whole",
        "src/engine/separator.rs",
        "                && live.iter().all(|(g, _)| *g == group)\n",
        "                && live.iter().any(|(g, _)| *g == group)\n",
        ["--lib", "engine::tests::separator_groups::separator_sorts_records_into_their_groups"],
    ),
    (
        "tombstone-dropped-too-early",
        "5 trap 'tombstones': a tombstone goes only once no older put of its key is on disk",
        "src/engine/tombstones.rs",
        "        let h = short(hash);\n",
        "        let h = short(hash) ^ 1;\n",
        ["--lib", "engine::tests::compaction_reclaims::tombstones_are_dropped_once_no_older_put_remains"],
    ),
    (
        "tombstone-dropped-too-early-seen-by-a-full-scan",
        "5 trap 'tombstones': a file deleted while a copy of its put sits in an open segment of \
copies stays deleted after a crash (a checkpoint load hides the early drop)",
        "src/engine/tombstones.rs",
        "        let h = short(hash);\n",
        "        let h = short(hash) ^ 1;\n",
        ["--test", "fs_persistence", "create_delete_cycles_do_not_leak_tombstones"],
    ),
    (
        "scan-past-unproven-damage",
        "4.9 recovery: only a stretch the next buffer proves durable is damage, not a torn tail",
        "src/engine/scan/walk.rs",
        "    match next.filter(|&q| proven(q)) {",
        "    match next.filter(|&q| proven(q) || q > 0) {",
        [
            ["--release", "--test", "engine_model", "random_batches"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_torn_buffer_with_an_unproven_one_behind_fsck"],
        ],
    ),
    (
        "recovery-keeps-lost-copies",
        "4.9 recovery: a copy of a batch lost in a power cut does not come back",
        "src/engine/scan/log_end.rs",
        "        if h.lsn_last > last_lsn {",
        "        if h.lsn_first > last_lsn {",
        [
            ["--lib", "engine::tests::compaction_reclaims::copy_of_a_batch_lost_in_a_power_cut"],
            ["--lib", "engine::tests::damage_rule_sides::a_copy_of_a_lost_batch_fsck"],
        ],
    ),
    (
        "padding-not-zeroed",
        "4.1 write buffer: padding is zeroed",
        "src/engine/log/buffers.rs",
        "open.data.resize(buffer_len, 0);",
        "open.data.resize(buffer_len, 0xEE);",
        ["--lib", "engine::tests::write_path_invariants::buffers_are_aligned_and_zero_padded"],
    ),
    (
        "flush-ignores-gate",
        "4.2 write gate: the flush waits for the gate to close",
        "src/engine/log/flusher.rs",
        "                sealed.gate.wait_closed();",
        "                let _ = &sealed.gate;",
        ["--lib", "engine::tests::write_path_invariants::write_gate_holds_flush_and_segment_close_until_index_update"],
    ),
    (
        "segment-closes-early",
        "4.2 write gate: a segment closes only when its index updates are complete",
        "src/engine/log/buffers.rs",
        "            if last <= completed {",
        "            if last <= completed + 1 {",
        ["--lib", "engine::tests::write_path_invariants::write_gate_holds_flush_and_segment_close_until_index_update"],
    ),
    (
        "no-preallocation",
        "4.3 segment manager: space is allocated before a segment is handed out",
        "src/engine/segments.rs",
        "                .allocate(file, self.geometry.file_len())\n                .map_err(|e| {",
        "                .file_len(file)\n                .map(|_| ())\n                .map_err(|e| {",
        ["--lib", "engine::tests::full_store::host_disk_full_at_allocation_is_a_clean_no_space"],
    ),
    (
        "writer-does-not-compact-when-short",
        "trap 'space exhaustion': NoSpace comes from live bytes against the capacity, stable \
from one fill to the next, never from a writer that finds no free segment",
        "src/engine/write_path.rs",
        "            if !self.compaction_step(compaction::SMALL_PASS_LIVE_SEGMENTS)? {",
        "            if true {",
        ["--lib", "engine::tests::full_store::full_store_gives_no_space_and_deletes_make_room"],
    ),
    (
        "generation-not-checked",
        "4.4 generation: recovery accepts only buffers of the segment's current generation",
        "src/engine/scan/walk.rs",
        "                && generation.is_none_or(|g| g == h.generation)",
        "                && generation.is_none_or(|g| g == h.generation || g != u64::MAX)",
        [
            ["--release", "--lib", "engine::tests::segment_reuse::stale_generation_buffers_are_ignored"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::buffers_of_an_earlier_use_behind_a_new_one_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::buffers_of_an_earlier_use_behind_a_new_one_fsck"],
        ],
    ),
    (
        "freed-segment-not-invalidated",
        "4.4 / trap 'reused segments': a freed segment's first sector is zeroed",
        "src/engine/segments.rs",
        "        self.storage.write_at(file, base, &[0u8; SECTOR_SIZE])?;",
        "        let _ = (file, base);",
        ["--lib", "engine::tests::segment_reuse::torn_first_buffer_of_reused_segment_exposes_nothing_old"],
    ),
    (
        "index-ignores-versions",
        "4.5 index: a lower version never replaces a higher one",
        "src/engine/index/mod.rs",
        "            Some((leaf, i)) if leaf.entries[i].version() >= entry.version => Applied {",
        "            Some((leaf, i)) if leaf.entries[i].version() == u64::MAX => Applied {",
        ["--lib", "engine::index::tests::older_version_never_wins_whatever_the_order"],
    ),
    (
        "range-delete-removes-newer-puts",
        "section 6 / 4.5 index: a range delete hides only the puts of its range with a lower LSN, \
whatever order concurrent writers update the index in",
        "src/engine/index/ranges.rs",
        "                if leaf.entries[i].version() < version {",
        "                if true {",
        ["--release", "--test", "engine_model", "concurrent_writers_keep_newest_versions"],
    ),
    (
        "index-estimate-omits-entries",
        "4.5 index: memory per entry is a tracked figure (index_bytes), close to what is allocated",
        "src/engine/index/memory.rs",
        "            + malloc_bytes(self.arena.capacity())\n"
        "            + malloc_bytes(self.entries.capacity() * std::mem::size_of::<Packed>())\n",
        "            + malloc_bytes(self.arena.capacity())\n",
        ["--test", "index_memory"],
    ),
    (
        "range-delete-estimate-omits-its-slot",
        "4.5 index: memory of range deletes is tracked too, close to what is allocated",
        "src/engine/index/memory.rs",
        "                        + RANGE_SLOT_BYTES\n",
        "                        + 0\n",
        ["--test", "index_memory"],
    ),
    (
        "recovery-ignores-lsn-gap",
        "section 6 / 4.9 recovery: no batch survives without every earlier one",
        "src/engine/scan/log_end.rs",
        "        if first > expected {\n            gap_at = Some(expected);\n            break;\n        }",
        "        if first > expected {\n            expected = first;\n        }",
        [
            ["--release", "--test", "engine_model", "random_batches"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_batch_behind_a_torn_log_segment_end_fsck"],
        ],
    ),
    (
        "recovery-drops-range-deletes",
        "4.9 recovery: range deletes hide older versions after recovery",
        "src/engine/recovery.rs",
        "    apply_range_deletes(&mut points, &mut ranges, &mut unindexed_holders);",
        "    let _ = apply_range_deletes;",
        ["--release", "--test", "engine_model", "random_batches"],
    ),
    (
        "torn-buffer-accepted",
        "trap 'torn writes': the CRC covers the whole buffer",
        "src/engine/format/buffer.rs",
        "        (buffer_crc(&buf[..len], version, payload_len) == stored_crc).then_some(header)",
        "        (stored_crc == stored_crc).then_some(header)",
        [
            ["--release", "--test", "engine_model", "random_batches"],
            ["--release", "--lib", "engine::check::tests::power_cuts_alone_are_never_problems"],
        ],
    ),
    (
        "sync-table-proof-ignored",
        "recovery: damage below the synced end the sync table records is damage, not a torn tail",
        "src/engine/scan/walk.rs",
        "        .filter(|p| p.generation == g)\n",
        "        .filter(|p| p.generation == g && false)\n",
        [
            ["--release", "--lib", "engine::tests::copies_damage::damage_in_the_last_buffer_of_copies"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damaged_copies_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damaged_copies_fsck"],
        ],
    ),
    (
        "log-sync-table-proof-ignored",
        "recovery: a damaged last stretch of a closed log segment below its synced end is damage, not a torn tail",
        "src/engine/scan/walk.rs",
        "    let table_tail = !copies && next.is_none() && pos < proven_end;\n",
        "    let table_tail = !copies && next.is_none() && pos < proven_end && false;\n",
        [
            ["--release", "--lib", "engine::tests::log_sync_table_proofs::damage_in_the_last_buffer_of_a_closed_log_segment"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_last_buffer_of_a_closed_log_segment_fsck"],
        ],
    ),
    (
        "log-entry-marker-skipped",
        "the sync that writes closed log segments' entries writes a marker carrying the floor that covers them",
        "src/engine/write_path.rs",
        "            match self.log.flush_proof_marker() {\n",
        "            match Ok::<(), EngineError>(()) {\n",
        ["--lib", "engine::tests::log_sync_table_proofs::damage_in_the_last_buffer_of_a_log_segment_synced_with_later_batches"],
    ),
    (
        "first-buffer-use-ignored",
        "recovery: a failing first buffer naming the generation of valid buffers behind it is that use's (else the whole segment is lost)",
        "src/engine/scan/walk.rs",
        "        .or(first_of_use)\n",
        "\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_the_first_buffer_of_a_log_segment"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_segments_first_buffer_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_segments_first_buffer_fsck"],
        ],
    ),
    (
        "user-may-allocate-counts-unallocatable",
        "full host: users may not take a reserve segment while no segment file can be allocated",
        "src/engine/segments.rs",
        "        self.grow(&mut inner, self.reserved as usize).is_ok()\n",
        "        inner.free.len() + inner.free_unallocated.len() > self.reserved as usize\n",
        ["--lib", "engine::tests::full_store::a_reserve_segment_opened_by_a_delete_takes_no_user_batch"],
    ),
    (
        "fsck-vouched-log-stretch-ignored",
        "fsck: a log stretch the buffer behind vouches for is judged as recovery judges it (only damaged records named)",
        "src/engine/scan/walk.rs",
        "            || (h.kind == SegmentKind::Mixed\n",
        "            || (false && h.kind == SegmentKind::Mixed\n",
        [
            ["--release", "--lib", "engine::check::tests::flipped_byte_in_an_early_buffer_is_a_problem_naming_the_key"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_fsck"],
        ],
    ),
    (
        "log-tail-zeroing-skipped",
        "recovery: a log tail not taken is zeroed, so that it never comes back once its LSNs are reused",
        "src/engine/recovery.rs",
        "            zero.push((segment, d.start as u32, d.end as u32));\n",
        "",
        [
            ["--release", "--lib", "engine::tests::log_sync_table_proofs::a_log_tail_beyond_the_floor_is_dropped_for_good"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_dropped_log_tail_whose_lsns_were_reused_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_dropped_log_tail_whose_lsns_were_reused_fsck"],
        ],
    ),
    (
        "sync-table-not-synced-before-frees",
        "sources of copies are freed only once the sync table entry covering them is synced",
        "src/engine/reclaim.rs",
        '                self.test_step("reclaim: sync table written");\n                self.storage.sync()?;\n',
        '                self.test_step("reclaim: sync table written");\n',
        ["--lib", "engine::tests::copies_damage::power_cuts_during_a_pass_with_the_sync_table"],
    ),
    (
        "sync-table-proves-unwritten-bytes",
        "a sync table entry covers only what was written of its use (past it: an earlier use's bytes)",
        "src/engine/groups.rs",
        "                .note_copies(open.segment, open.generation, open.offset);",
        "                .note_copies(open.segment, open.generation, segment_size);",
        ["--lib", "engine::tests::copies_damage::damage_in_the_middle_of_copies"],
    ),
    (
        "fsck-ignores-sync-table",
        "fsck: a damaged copy the sync table proves synced is taken as recovery takes it: a problem naming its key, whose reads fail",
        "src/engine/check/verdicts.rs",
        "serve(|k, _| takes[k].taken(),",
        "serve(|k, _| matches!(takes[k], scan::Take::Logged),",
        [
            ["--release", "--lib", "engine::tests::copies_damage::damage_in_the_last_buffer_of_copies"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damaged_copies_fsck"],
        ],
    ),
    (
        "stretch-walk-stops-at-first-buffer",
        "recovery: every buffer of a damaged stretch has its records salvaged (resync at block boundaries)",
        "src/engine/scan/stretch.rs",
        "        return (resync_from..end)\n",
        "        return (resync_from..resync_from)\n",
        [
            ["--lib", "engine::tests::copies_damage::stretch_records_walk_every_buffer"],
            ["--lib", "engine::tests::damage_rule_sides::damaged_copies_and_their_directories_fsck"],
        ],
    ),
    (
        "stretch-walk-reads-other-uses",
        "recovery: the walk of a damaged stretch resyncs only at buffers of the stretch's use",
        "src/engine/scan/stretch.rs",
        "                    && BufferHeader::generation_field(&image[q..end]) == g\n",
        "                    && BufferHeader::generation_field(&image[q..end]) != g + 1\n",
        [
            ["--release", "--lib", "engine::tests::copies_damage::stretch_records_walk"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::an_earlier_use_inside_a_damaged_stretch_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::an_earlier_use_inside_a_damaged_stretch_fsck"],
        ],
    ),
    (
        "fsck-stretch-first-buffer-only",
        "fsck: every damaged key of a stretch of several buffers is named",
        "src/engine/scan/verdicts.rs",
        "    let (records, unnamed) = salvageable(image, segment, d.start, d.end, Some(d.generation));",
        "    let (records, unnamed) = salvageable(image, segment, d.start, d.end, None);",
        [
            ["--test", "fsck", "damaged_stretch_of_several_log_buffers"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damaged_copies_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damaged_copies_fsck"],
        ],
    ),
    (
        "record-directory-ignored",
        "damage: a record whose own header or key is damaged is named by its buffer's record directory (else its key serves an older version)",
        "src/engine/scan/directory.rs",
        "                format::read_directory(&image[b..buffer_end], segment, generation)?;\n",
        "                format::read_directory(&image[b..buffer_end], segment, generation).filter(|_| false)?;\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::damage_to_a_records_header_or_key"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_to_a_records_header_or_key_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_to_a_records_header_or_key_fsck"],
        ],
    ),
    (
        "record-directory-key-not-used",
        "damage: a damaged record is indexed under the key its directory entry names, not the damaged bytes",
        "src/engine/scan/directory.rs",
        "                    key: e.key().to_vec(),\n",
        "                    key: image[at + format::RECORD_HEADER_SIZE..at + format::RECORD_HEADER_SIZE + e.header.key_len as usize].to_vec(),\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::damage_to_a_records_header_or_key"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_to_a_records_header_or_key_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_to_a_records_header_or_key_fsck"],
        ],
    ),
    (
        "record-directory-not-written",
        "damage: every sealed buffer ends with a record directory naming its records",
        "src/engine/format/directory.rs",
        "    put_u32(t, MAGIC_OFFSET, DIRECTORY_MAGIC);\n",
        "    put_u32(t, MAGIC_OFFSET, 0);\n",
        ["--lib", "engine::tests::write_path_invariants::buffers_are_aligned_and_zero_padded"],
    ),
    (
        "marker-does-not-vouch",
        "damage: a marker behind a failing log stretch vouches for it when the stretch's record directory names only batches within the marker's floor",
        "src/engine/scan/walk.rs",
        "                    || directory_vouches(\n",
        "                    || false && directory_vouches(\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_the_newest_synced_log_buffer"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_newest_synced_log_buffer_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_newest_synced_log_buffer_fsck"],
        ],
    ),
    (
        "log-tail-directory-ignored",
        "damage: the failing last buffers of a log segment are a log tail up to an intact record directory (taken if within the durable floor)",
        "src/engine/scan/walk.rs",
        "        log_tail_directory_end(image, segment, pos, g)\n",
        "        None::<usize>\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_the_newest_synced_log_buffer"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_newest_synced_log_buffer_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_newest_synced_log_buffer_fsck"],
        ],
    ),
    (
        "no-marker-at-open",
        "damage: an open writes a marker behind the recovered batches, which vouches for them",
        "src/engine/open.rs",
        "    inner.vouch_for_newest_batches();\n",
        "\n",
        ["--lib", "engine::tests::log_damage::damage_in_the_newest_synced_log_buffer"],
    ),
    (
        "no-marker-when-idle",
        "damage: once writes pause, a marker vouches for the newest durable batches",
        "src/engine/background.rs",
        "            if idle_ticks >= IDLE_TICKS_BEFORE_MARKER {\n",
        "            if idle_ticks >= IDLE_TICKS_BEFORE_MARKER && false {\n",
        ["--lib", "engine::tests::log_damage::damage_in_the_newest_synced_log_buffer"],
    ),
    (
        "first-buffer-use-needs-intact-magic",
        "damage: a failing first buffer whose generation field names the use of the valid buffers behind it is theirs, whatever its magic, version or segment index say",
        "src/engine/scan/walk.rs",
        "    let first_of_use = (pos == 0 && image.len() >= BUFFER_HEADER_SIZE)\n",
        "    let first_of_use = (pos == 0 && BufferHeader::plausible_start(image, segment))\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_the_first_buffer_of_a_log_segment"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_segments_first_buffer_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_segments_first_buffer_fsck"],
        ],
    ),
    (
        "directory-buffer-start-ignored",
        "damage: a record directory places its records from its own buffer's start (its trailer's length), not from where the search began",
        "src/engine/format/directory.rs",
        "    let start = tail.len() - buffer_len;\n",
        "    let start = 0;\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::stretch_records_read_record_directories"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::two_log_buffers_damaged_in_their_headers_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::two_log_buffers_damaged_in_their_headers_fsck"],
        ],
    ),
    (
        "lone-first-buffer-taken-for-free",
        "damage: a failing first buffer with nothing valid behind it, whose generation its own record directory names, is that use's log tail (else the segment reads as free)",
        "src/engine/scan/walk.rs",
        "            g > 0 && g < generation_high_water && named_by_own_directory(image, segment, g)\n",
        "            g > 0 && g < generation_high_water && named_by_own_directory(image, segment, g) && false\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::a_log_segment_whose_only_buffer"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_log_segments_only_buffer_damaged_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_log_segments_only_buffer_damaged_fsck"],
        ],
    ),
    (
        "buffer-naming-fields-not-repaired",
        "damage: a buffer whose fields naming it (magic, generation, length, segment) alone are damaged is repaired from its record directory's trailer, checked by the buffer's CRC",
        "src/engine/format/buffer.rs",
        "        for end in (BLOCK_SIZE..=buf.len()).step_by(BLOCK_SIZE) {\n",
        "        for end in (BLOCK_SIZE..=buf.len()).step_by(BLOCK_SIZE).take(0) {\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_recovery"],
            ["--release", "--lib", "engine::tests::record_directories::damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_fsck"],
        ],
    ),
    (
        "buffer-directory-not-resealed",
        "damage: a buffer whose padding or record directory alone is damaged is sealed again from its header and records, checked by the buffer's CRC",
        "src/engine/format/buffer.rs",
        "        let mut copy = vec![0u8; len];\n",
        "        let mut copy = vec![1u8; len];\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_recovery"],
            ["--release", "--lib", "engine::tests::record_directories::damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_fsck"],
        ],
    ),
    (
        "garbled-first-generation-reads-free",
        "damage: a first buffer whose generation field holds no generation, in a header still recognisable, belongs to the use its own record directory and the valid buffers behind it name",
        "src/engine/scan/directory.rs",
        "        && (BufferHeader::magic_is_right(image) || BufferHeader::buffer_len_field(image) == end))\n",
        "        && (BufferHeader::magic_is_right(image) && false))\n",
        [
            ["--release", "--lib", "engine::tests::segment_reuse::a_first_buffer_whose_generation_field_is_garbled"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_first_buffer_with_a_garbled_generation_field_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_first_buffer_with_a_garbled_generation_field_fsck"],
        ],
    ),
    (
        "vouched-by-the-next-buffer-only",
        "damage: a damaged log buffer is vouched for by the highest durable floor of the buffers of its use behind it, not only the next one's",
        "src/engine/scan/directory.rs",
        "                floor = floor.max(h.durable_floor);\n",
        "                floor = floor.max(h.durable_floor);\n                break;\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_a_log_buffer_sealed_before"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_fsck"],
        ],
    ),
    (
        "fsck-vouched-by-the-next-buffer-only",
        "fsck: a damaged log buffer is vouched for by the highest durable floor of the buffers of its use behind it, as recovery does",
        "src/engine/scan/directory.rs",
        "                floor = floor.max(h.durable_floor);\n",
        "                floor = if floor == 0 { h.durable_floor } else { floor.min(h.durable_floor) };\n",
        [
            ["--release", "--lib", "engine::tests::log_damage::damage_in_a_log_buffer_sealed_before"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_a_log_buffer_sealed_early_fsck"],
        ],
    ),
    (
        "first-directory-not-trusted-when-cleared",
        "damage: a first buffer's own directory of a generation whose frees clear it names the segment's use, whatever its first sector holds",
        "src/engine/scan/walk.rs",
        "                    g >= frees_clear_directories_from && g > 0 && g < generation_high_water\n",
        "                    false && g >= frees_clear_directories_from && g > 0 && g < generation_high_water\n",
        [
            ["--release", "--lib", "engine::tests::segment_reuse::a_first_buffer_whose_generation_field_is_garbled"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_first_buffer_with_a_garbled_generation_field_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_first_buffer_with_a_garbled_generation_field_fsck"],
        ],
    ),
    (
        "free-keeps-first-directory",
        "damage: freeing a segment clears its first buffer's directory, so that garbage over a free segment's zeroed first sector brings no old use back",
        "src/engine/segments.rs",
        "        for end in ends {\n",
        "        for end in ends.into_iter().take(0) {\n",
        ["--lib", "engine::tests::segment_reuse::a_freed_segment_keeps_no_first_directory"],
    ),
    (
        "fsck-poisoned-stretch-puts-left-out",
        "fsck: a damaged put of a stretch recovery takes is in fsck's map as recovery indexes it (its reads fail), not left for an older version to stand in",
        "src/engine/check/verdicts.rs",
        "serve(|k, _| takes[k].taken(),",
        "serve(|k, r| takes[k].taken() && r.applied(),",
        [
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_last_buffer_of_a_closed_log_segment_fsck"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::damage_to_a_records_header_or_key_fsck"],
        ],
    ),
    (
        "fsck-failing-records-left-out-of-the-map",
        "fsck: a record failing its own CRC in an accepted buffer is in fsck's map as recovery indexes it (its reads fail)",
        "src/engine/check/map.rs",
        "                out.records_accepted += 1;\n                take_into_map(recs, i, &mut points, &mut ranges);\n",
        "                out.records_accepted += 1;\n                if recs[i].intact {\n                    take_into_map(recs, i, &mut points, &mut ranges);\n                }\n",
        ["--release", "--lib", "engine::tests::failing_record_in_a_valid_buffer::a_failing_record_in_a_valid_buffer_fsck"],
    ),
    (
        "fsck-serves-poisoned-entries",
        "fsck: a poisoned entry (a damaged put the next mount indexes) is not in the live map: its reads fail",
        "src/engine/check/map.rs",
        "            if !r.intact {\n                continue; // poisoned",
        "            if false {\n                continue; // poisoned",
        ["--release", "--lib", "engine::tests::damage_rule_sides::damage_in_the_last_buffer_of_a_closed_log_segment_fsck"],
    ),
    (
        "fsck-silent-about-unnamed-damage",
        "fsck: damage that takes a buffer's records and its directory at once is reported as a problem, not passed over",
        "src/engine/check/verdicts.rs",
        "        unnamed_buffers: stretches.last().map_or(0, |(_, s)| s.unnamed),\n",
        "        unnamed_buffers: 0,\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::a_damaged_buffer_whose_directory_is_damaged_too"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_buffer_damaged_with_its_directory_fsck"],
        ],
    ),
    (
        "copies-judged-by-damaged-kind-byte",
        "damage: a segment whose first buffer fails is of the kind of the next valid buffer of its use, not of the failing header's kind byte",
        "src/engine/scan/walk.rs",
        "        (None, Some(kind)) => first_of_copies.is_some() || kind == SegmentKind::Group,\n",
        "        (None, Some(_)) => first_of_copies.is_some() || image[6] == SegmentKind::Group as u8,\n",
        [
            ["--lib", "engine::tests::copies_damage::a_segment_of_copies_whose_first_header_is_garbled"],
            ["--lib", "engine::tests::damage_rule_sides::copies_with_a_garbled_first_header_fsck"],
        ],
    ),
    (
        "fsck-ignores-named-damaged-range",
        "damage: a damaged range delete that its record directory names is applied, by recovery and by fsck alike (and a damaged tombstone); one that no directory names could hide anything and is left out",
        "src/engine/scan/stretch.rs",
        "        .filter(|r| r.intact || r.from_directory || r.header.kind != RecordKind::DeleteRange)\n",
        "        .filter(|r| r.intact || r.header.kind != RecordKind::DeleteRange)\n",
        [
            ["--release", "--lib", "engine::tests::record_directories::damaged_deletions_that_recovery_keeps"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_damaged_deletion_its_directory_names_recovery"],
            ["--release", "--lib", "engine::tests::damage_rule_sides::a_damaged_deletion_its_directory_names_fsck"],
        ],
    ),
    (
        "deletes-take-the-marker-floor",
        "5 space: delete batches leave the free segment one reclamation's marker needs, so that dead segments can always be freed, also after a remount",
        "src/engine/segments.rs",
        "            Claim::Deletes => RECLAIM_FLOOR,\n",
        "            Claim::Deletes => 0,\n",
        ["--lib", "engine::tests::deletes_in_a_full_store::deletes_leave_reclamation_its_segment"],
    ),
    (
        "mixed-delete-batches-skip-capacity",
        "5 space: a batch that deletes skips the capacity check (and may take the reserve) only if its puts add no live data",
        "src/engine/write_path.rs",
        "            && promise_change <= 0\n            && !self.puts_grow_live_data(batch);\n",
        "            && promise_change <= 0;\n",
        ["--lib", "engine::tests::deletes_in_a_full_store::a_put_beside_a_delete_gets_no_space"],
    ),
    (
        "truncate-range-delete-kept-forever",
        "5 tombstones: a range delete that a newer one holds is dead, so that repeated truncates of a file leave one, not one each",
        "src/engine/index/mod.rs",
        "                    .filter(|(_, old)| range.supersedes(old))\n",
        "                    .filter(|(_, old)| range.supersedes(old) && false)\n",
        ["--test", "fs_data", "repeated_truncates_of_a_file_keep_the_index_bounded"],
    ),
    (
        "recovery-keeps-superseded-range-deletes",
        "4.9 recovery: a full scan drops the range deletes a newer one holds, as the index did when they arrived",
        "src/engine/recovery.rs",
        "    super::index::drop_superseded_ranges(&mut ranges);\n",
        "",
        ["--test", "fs_data", "repeated_truncates_of_a_file_keep_the_index_bounded"],
    ),
    (
        "set-group-id-kept-for-callers-outside-the-group",
        "killpriv: a write, truncation, fallocate or chown by a caller outside the file's group without CAP_FSETID drops set-group-ID even without group execute",
        "src/fs/permission.rs",
        "    let setgid = perm & 0o2000 != 0 && (perm & 0o010 != 0 || !in_file_group);\n",
        "    let setgid = perm & 0o2000 != 0 && (perm & 0o010 != 0 || !in_file_group && false);\n",
        ["--test", "fs_data", "set_group_id_without_group_execute_goes_for_callers_outside_the_group"],
    ),
    (
        "fallocate-keeps-set-user-id",
        "killpriv: fallocate by a caller without CAP_FSETID drops set-user-ID and set-group-ID, as a write does",
        "src/fs/falloc.rs",
        "        if let Some(in_group) = kill_suid_sgid {\n            drop_privileges(rec, in_group);\n        }\n",
        "        let _ = kill_suid_sgid;\n",
        ["--test", "fs_data", "fallocate_drops_privileges_as_a_write_does"],
    ),
    (
        "readdir-cookie-uses-bit-63",
        "fs readdir: every cookie is a positive 63-bit offset (the kernel's loff_t), and resuming from it continues after its entry",
        "src/fs/keys.rs",
        "const COOKIE_POSITION_BITS: u32 = 7;\n",
        "const COOKIE_POSITION_BITS: u32 = 8;\n",
        ["--release", "--test", "fs_namespace",
         "readdir_cookies_are_positive_63_bit_offsets_that_resume_after_their_entry"],
    ),
    (
        "truncate-probes-every-page-of-its-span",
        "fs truncate: the work on the request path grows with the pages a file stores, not with its size (holes are never visited)",
        "src/fs/file_data.rs",
        "            let removed = if keep_pages == 0 {\n                rec.pages\n            } else {\n                self.engine\n                    .count_keys(&keys::chunk_key(ino, keep_pages), &keys::chunk_end(ino))\n            };\n",
        "            let removed = (keep_pages..rec.size.div_ceil(keys::PAGE_SIZE))\n                .filter(|p| self.engine.contains(&keys::chunk_key(ino, *p)))\n                .count() as u64;\n",
        ["--release", "--test", "fs_data",
         "truncate_and_unlink_work_grows_with_stored_pages_not_file_size"],
    ),
    (
        "fallocate-reserves-nothing",
        "fs fallocate: an allocated range is stored (unwritten pages), so a write into it is never refused, even in a full store",
        "src/fs/falloc.rs",
        "                    None => Vec::new(),\n",
        "                    None if !zero => continue,\n                    None => Vec::new(),\n",
        ["--release", "--test", "fs_fallocate",
         "allocated_space_is_reserved_in_a_full_store_across_a_remount"],
    ),
    (
        "unwritten-pages-not-counted-at-mount",
        "fs fallocate: the space unwritten pages hold is counted again from the index at every mount",
        "src/fs/mod.rs",
        "        fs.count_promises();\n",
        "",
        ["--release", "--test", "fs_fallocate",
         "allocated_space_is_reserved_in_a_full_store_across_a_remount"],
    ),
    (
        "range-delete-keeps-unwritten-promises",
        "fs fallocate: a range delete (truncate, punch, unlink) releases what its unwritten pages held",
        "src/fs/unwritten.rs",
        "            n += self.count_unwritten(start, end) as i64;\n",
        "",
        ["--release", "--test", "fs_fallocate",
         "the_promised_space_is_what_the_unwritten_pages_hold_after_any_operation"],
    ),
    (
        "write-into-promised-space-adds-live-bytes",
        "engine space: a batch that writes into promised space releases the promise in the capacity check, so it is taken in a full store",
        "src/engine/write_path.rs",
        "        (growth + promised).saturating_sub(replaced + released)\n",
        "        (growth + promised).saturating_sub(replaced)\n",
        ["--release", "--test", "fs_fallocate",
         "allocated_space_is_reserved_in_a_full_store_across_a_remount"],
    ),
    (
        "dot-lookup-only-in-directories",
        "file handles: LOOKUP of \".\" answers for any file type from the store, so open_by_handle_at works after the kernel forgot the inode",
        "src/fs/namespace.rs",
        "        if name == b\".\" {\n",
        "        if name == b\".\" && false {\n",
        ["--release", "--test", "fs_export",
         "dot_and_dotdot_lookups_resolve_forgotten_inodes_from_the_store"],
    ),
    (
        "handle-of-an-unlinked-inode-resolves",
        "file handles: an inode without links and without an open handle is gone (ESTALE), even while a ghost of it is in memory",
        "src/fs/export.rs",
        "        if rec.nlink == 0 && (opens == 0 ",
        "        if rec.nlink == 0 && false && (opens == 0 ",
        ["--release", "--test", "fs_export", "dot_lookup_of_a_deleted_inode_is_enoent"],
    ),
    (
        "generation-constant",
        "file handles: a number handed out again after a power cut took back its create gets another generation",
        "src/fs/export.rs",
        "    if ino == ROOT_INO {\n",
        "    if ino == ROOT_INO || ino != 0 {\n",
        ["--release", "--test", "fs_export", "a_number_handed_out_again_gets_another_generation"],
    ),
    (
        "append-only-truncate-allowed",
        "inode flags: an append-only file is never truncated (ext4: EPERM)",
        "src/fs/inode_flags.rs",
        "            && (set.size.is_some()\n",
        "            && (false\n",
        ["--release", "--test", "fs_inode_flags", "an_append_only_file_grows_only"],
    ),
    (
        "append-only-overwrite-allowed",
        "inode flags: a write to an append-only file never lands below its end",
        "src/fs/inode_flags.rs",
        "    refuse(append_only(rec) && offset < rec.size)",
        "    refuse(append_only(rec) && offset > rec.size)",
        ["--release", "--test", "fs_inode_flags", "an_append_only_file_grows_only"],
    ),
    (
        "immutable-file-written",
        "inode flags: an immutable file's contents never change",
        "src/fs/inode_flags.rs",
        "pub(super) fn check_write(rec: &InodeRecord, offset: u64) -> FsResult<()> {\n    check_modify(rec)?;\n",
        "pub(super) fn check_write(rec: &InodeRecord, offset: u64) -> FsResult<()> {\n",
        ["--release", "--test", "fs_inode_flags", "an_immutable_file_refuses_every_change"],
    ),
    (
        "immutable-directory-gains-entries",
        "inode flags: nothing is created in an immutable directory",
        "src/fs/namespace.rs",
        "        inode_flags::check_add_entry(&prec)?;\n        let mut txn = Txn::default();\n",
        "        let mut txn = Txn::default();\n",
        ["--release", "--test", "fs_inode_flags",
         "an_immutable_directory_keeps_its_entries_and_an_append_only_one_only_gains"],
    ),
    (
        "flags-set-without-capability",
        "inode flags: immutable and append-only change only with CAP_LINUX_IMMUTABLE",
        "src/fs/inode_flags.rs",
        "PROTECTED_FLAGS != 0 && !caller.linux_immutable {",
        "PROTECTED_FLAGS != 0 && false {",
        ["--release", "--test", "fs_inode_flags", "who_may_set_which_flag"],
    ),
    (
        "new-inode-inherits-no-flags",
        "inode flags: a new inode takes no-dump and no-atime from its directory, as on ext4",
        "src/fs/inode_flags.rs",
        "    dir.flags & INHERITED_FLAGS & kind_flags(kind)\n",
        "    let _ = (dir, kind);\n    0\n",
        ["--release", "--test", "fs_inode_flags",
         "new_inodes_take_no_dump_and_no_atime_from_their_directory_as_on_ext4"],
    ),
    (
        "no-atime-flag-ignored",
        "inode flags: an inode flagged no-atime keeps its atime on every access",
        "src/fs/atime.rs",
        "    if rec.flags & FS_NOATIME_FL != 0 {\n",
        "    if rec.flags & FS_NOATIME_FL != 0 && false {\n",
        ["--release", "--test", "fs_inode_flags",
         "no_atime_keeps_the_atime_of_reads_listings_and_readlink"],
    ),
    (
        "rename-whiteout-forgotten",
        "RENAME_WHITEOUT: the source name holds a whiteout, in the rename's own batch",
        "src/fs/namespace/rename.rs",
        "            self.add_whiteout(st, txn, parent, prec, name, caller, now)?;\n",
        "",
        ["--release", "--test", "fs_inode_flags",
         "rename_whiteout_leaves_a_whiteout_at_the_source_in_the_same_batch"],
    ),
    (
        "pre-epoch-time-taken-as-fuser-reads-it",
        "fs setattr: a time before the epoch keeps its nanoseconds (fuser 0.18 reads (secs < 0, nsecs) as -(|secs| + nsecs))",
        "src/fs/fuse_adapter/convert.rs",
        "        TimeOrNow::SpecificTime(s) => TimeSet::At(super::super::kernel_time::from_fuser(s)),\n",
        "        TimeOrNow::SpecificTime(s) => TimeSet::At(s),\n",
        ["--release", "--lib", "fs::fuse_adapter::tests::times_before_the_epoch_keep_their_nanoseconds"],
    ),
    (
        "xattr-unknown-namespace-accepted",
        "fs xattrs: a name outside ext4's namespaces is EOPNOTSUPP and a bare prefix EINVAL (FUSE passes every name to the daemon)",
        "src/fs/xattr_names.rs",
        "    if SYSTEM_NAMES.contains(&name) {\n",
        "    if SYSTEM_NAMES.contains(&name) || !name.is_empty() {\n",
        ["--release", "--test", "fs_namespace", "xattr_names_outside_ext4_namespaces_are_refused_as_ext4_does"],
    ),
    (
        "default-acl-not-inherited",
        "fs ACLs: a new inode inherits its directory's default ACL (access ACL, and default ACL for a directory), which replaces the umask",
        "src/fs/namespace.rs",
        "            _ => self.inherit_acl(parent, kind, &mut perm)?,\n",
        "            _ => None::<Vec<(&[u8], Vec<u8>)>>,\n",
        ["--release", "--test", "fs_acl",
         "a_default_acl_is_inherited_on_create_and_replaces_the_umask"],
    ),
    (
        "named-acl-entry-ignores-the-mask",
        "fs ACLs: a named entry grants no more than the mask (which chmod sets)",
        "src/fs/acl.rs",
        "                TAG_USER if e.id == uid => return e.perm & mask & want == want,\n",
        "                TAG_USER if e.id == uid => return e.perm & want == want,\n",
        ["--release", "--test", "fs_acl", "a_named_acl_entry_grants_what_the_mode_bits_deny"],
    ),
    (
        "relatime-writes-on-every-read",
        "fs atime: under relatime a read writes the inode only if atime is not after mtime or ctime, or is a day old",
        "src/fs/atime.rs",
        "            key(rec.mtime) >= atime\n",
        "            true || key(rec.mtime) >= atime\n",
        ["--release", "--test", "fs_acl",
         "relatime_sets_atime_only_when_it_is_not_after_mtime_or_ctime_or_a_day_old"],
    ),
    (
        "engine-keys-ignore-the-range-end",
        "engine: Engine::keys lists the keys in its range only",
        "src/engine/mod.rs",
        "            .scan(start, end, None, limit)\n            .into_iter()\n            .map(|(key, entry)| (key, u64::from(entry.location.len)))",
        "            .scan(start, b\"\", None, limit)\n            .into_iter()\n            .map(|(key, entry)| (key, u64::from(entry.location.len)))",
        ["--release", "--lib", "keys_lists_existing_keys_in_a_range_from_the_index_alone"],
    ),
    (
        "seek-hole-stops-within-a-long-run",
        "fs lseek: SEEK_HOLE follows a run of stored pages to its end, however long",
        "src/fs/seek.rs",
        "            if gap || run.len() < RUN_STEP_KEYS {",
        "            if true {",
        ["--release", "--test", "fs_seek_copy", "seek_data_and_hole_answer_as_ext4"],
    ),
    (
        "seek-hole-at-end-of-file",
        "fs lseek: SEEK_HOLE at or past the end of file is ENXIO, as ext4",
        "src/fs/seek.rs",
        "        if offset >= size {",
        "        if offset > size {",
        ["--release", "--test", "fs_seek_copy", "seek_data_and_hole_answer_as_ext4"],
    ),
    (
        "seek-data-probes-every-page",
        "fs lseek: SEEK_DATA walks the stored pages in the index, never every 4 KiB of a hole",
        "src/fs/seek.rs",
        "            let first = self.engine.keys(&keys::chunk_key(ino, page), &end, 1);",
        "            let first: Vec<Vec<u8>> = (page..=(size - 1) / keys::PAGE_SIZE)\n                .map(|p| keys::chunk_key(ino, p))\n                .filter(|k| self.engine.contains(k))\n                .take(1)\n                .collect();\n            let _ = &end;",
        ["--release", "--test", "fs_seek_copy", "seek_work_grows_with_stored_pages_not_hole_size"],
    ),
    (
        "copy-writes-zeros-for-source-holes",
        "fs copy_file_range: a whole destination page whose source bytes are holes becomes a hole (offsets not congruent)",
        "src/fs/copy_range.rs",
        "            if !any {\n",
        "            if false {\n",
        ["--release", "--test", "fs_seek_copy", "a_source_hole_over_stored_destination_pages_makes_them_holes"],
    ),
    (
        "copy-keeps-destination-pages-over-source-holes",
        "fs copy_file_range: a source hole copied over stored destination pages makes them holes",
        "src/fs/copy_range.rs",
        "                    None if existed => {\n                        batch.push(Mutation::delete(TOMBSTONE_GROUP, key));\n                        rec.pages = rec.pages.saturating_sub(1);\n                    }\n",
        "                    None if existed => {}\n",
        ["--release", "--test", "fs_seek_copy", "a_source_hole_over_stored_destination_pages_makes_them_holes"],
    ),
    (
        "copy-allows-overlap-within-a-file",
        "fs copy_file_range: overlapping ranges of one file are EINVAL, as ext4",
        "src/fs/copy_range.rs",
        "            if ino_in == ino_out && off_in < off_out + n && off_out < off_in + n {",
        "            if false && ino_in == ino_out && off_in < off_out + n && off_out < off_in + n {",
        ["--release", "--test", "fs_seek_copy", "copy_within_one_file_refuses_overlap_and_allows_the_rest"],
    ),
    (
        "copy-chases-its-own-growth",
        "fs copy_file_range: the count is cut once at the source's end of file (a copy within one file that extends it stops)",
        "src/fs/copy_range.rs",
        "            *total = n;\n",
        "            let _ = n;\n",
        ["--release", "--test", "fs_seek_copy", "copy_within_one_file_refuses_overlap_and_allows_the_rest"],
    ),
    (
        "copy-keeps-set-user-id",
        "killpriv: copy_file_range by a caller without CAP_FSETID drops the destination's set-user-ID and set-group-ID, as a write does",
        "src/fs/copy_range.rs",
        "                drop_privileges(&mut rec, in_group);\n",
        "                let _ = in_group;\n",
        ["--release", "--test", "fs_seek_copy", "copy_drops_privileges_of_the_destination_as_a_write_does"],
    ),
    (
        "copy-holds-the-lock-throughout",
        "fs copy_file_range: a large copy lets go of the state lock between batches",
        "src/fs/copy_range.rs",
        "        while done < len {\n            let step = {\n                let mut st = self.state.lock();\n",
        "        let mut st = self.state.lock();\n        while done < len {\n            let step = {\n",
        ["--release", "--test", "fs_seek_copy", "a_large_copy_does_not_stall_other_operations"],
    ),
    (
        "read-ahead-left-at-128k",
        "fs reads: the mount's read-ahead is raised to what one read request carries",
        "src/cli.rs",
        "    raise_read_ahead(mountpoint, under);\n",
        "",
        ["--release", "--test", "fuse_mount", "the_mounts_read_ahead_is_raised"],
    ),
    (
        "copy-visits-every-page",
        "fs copy_file_range: only pages stored on either side are visited, not every 4 KiB of the range",
        "src/fs/copy_range.rs",
        "        let mut visit: Vec<u64> = visit.into_iter().filter(|&p| p <= horizon).collect();",
        "        visit.extend(p_first..=p_last);\n        let mut visit: Vec<u64> = visit.into_iter().filter(|&p| p <= horizon).collect();",
        ["--release", "--test", "fs_seek_copy", "copy_work_grows_with_stored_pages_not_range_size"],
    ),
    (
        "copy-bytes-not-counted-for-the-group-map",
        "fs copy_file_range: the pages a copy adds count for the destination's directory (group splits)",
        "src/fs/copy_range.rs",
        "                    groups.add_homed_bytes(rec.parent, delta);\n",
        "                    let _ = delta;\n",
        ["--release", "--test", "fs_seek_copy", "copies_between_compaction_groups_land_in_the_destination_group"],
    ),
    (
        "format-changed-without-a-version",
        "format: a store written by an earlier build reads exactly (a change that round-trips in "
        "the current build, so that only the committed images can tell)",
        "src/engine/format/buffer.rs",
        "    let mut h = Hasher::new();\n    h.update(&buf[..CRC_OFFSET]);\n",
        "    let mut h = Hasher::new_with_initial(1);\n    h.update(&buf[..CRC_OFFSET]);\n",
        ["--release", "--test", "format_fixture"],
    ),
    (
        "put-new-read-back-compares-sizes",
        "object tier: a refused create-only PUT succeeds only if the object holds exactly the bytes sent",
        "src/object/mod.rs",
        "    if there == sent {",
        "    if there.len() == sent.len() {",
        ["--release", "--features", "s3", "--lib", "object::tests::an_existing_object_counts_as_ours_only_with_the_same_bytes"],
    ),
    (
        "offline-stats-opens-the-store-writable",
        "stats of an unmounted store changes no byte of it (a read-only open)",
        "src/fs/stats.rs",
        "    let engine = Engine::open_read_only(dir, &options)?;",
        "    let engine = Engine::open(dir, &options)?;",
        ["--release", "--test", "cli_stats", "offline_stats_changes_no_byte_of_the_store"],
    ),
    (
        "offline-stats-ignores-the-mounts-checkpoint",
        "stats offline reads the checkpoint a clean unmount left (the mount's tombstone prefixes)",
        "src/fs/stats.rs",
        "        tombstone_prefix_lengths: super::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),",
        "        tombstone_prefix_lengths: Vec::new(),",
        ["--release", "--test", "cli_stats",
         "offline_stats_uses_the_checkpoint_of_a_clean_unmount_without_a_warning"],
    ),
    (
        "offline-stats-reports-write-counters-as-zero",
        "stats offline: the counters only a daemon knows are null, never a false 0",
        "src/fs/stats.rs",
        "        let daemon = |v: u64| mounted.then_some(v);",
        "        let daemon = |v: u64| Some(v);",
        ["--release", "--test", "cli_stats", "offline_stats_has_the_daemons_fields_with_its_counters_null"],
    ),
    (
        "offline-stats-ignores-unwritten-pages",
        "stats offline: the space allocated pages hold is counted from the index, as a mount does",
        "src/fs/stats.rs",
        "    super::unwritten::set_promises_from_index(&engine);\n",
        "",
        ["--release", "--test", "fs_fallocate", "stats_report_the_space_allocated_pages_hold"],
    ),
    (
        "fsck-problems-exit-0",
        "fsck exits 4 (fsck(8): problems left uncorrected) when it finds problems",
        "src/cli/fsck.rs",
        "    Ok(if out.clean { CLEAN } else { UNCORRECTED })",
        "    Ok(CLEAN)",
        ["--release", "--test", "fsck", "damaged_superblock_is_a_problem"],
    ),
    (
        "read-only-open-on-writable-storage",
        "a read-only open reads through storage that cannot write (offline stats after a crash)",
        "src/engine/read_only.rs",
        "        let storage = ReadOnlyStorage::open(dir)?;",
        "        let storage = super::storage::FileStorage::open(dir, false)?;",
        ["--release", "--test", "cli_stats", "offline_stats_after_a_crash_changes_no_byte_either"],
    ),
    (
        "fuser-unmount-einval-logged",
        "the warning fuser logs on every clean unmount (a second umount2: EINVAL) is dropped, only it",
        "src/cli/logging.rs",
        "    message.starts_with(\"Failed to umount filesystem: \")",
        "    message.starts_with(\"Failed to umount filesystem: \") && message.is_empty()",
        ["--release", "--lib", "cli::logging::tests::only_einval_of_the_final_unmount_is_dropped"],
    ),
    (
        "log-file-never-rotated",
        "the daemon's log file is capped in size and rotated",
        "src/cli/logging.rs",
        "        if self.len > 0 && self.len + buf.len() as u64 > LOG_FILE_CAP {",
        "        if false {",
        ["--release", "--lib", "cli::logging::tests::the_log_file_is_capped_and_rotated"],
    ),
    (
        "read-only-open-takes-the-writable-storage",
        "read-only open: a store opened read-only (mount -o ro) is not written, even after a crash",
        "src/engine/open.rs",
        "        if options.read_only {\n            return Self::open_on(Arc::new(check::ReadOnlyStorage::open(dir)?), options);",
        "        if false {\n            return Self::open_on(Arc::new(check::ReadOnlyStorage::open(dir)?), options);",
        ["--release", "--lib", "engine::store_dir::tests::a_read_only_open_after_a_crash_writes_nothing"],
    ),
    (
        "flag-change-leaves-kernel-attributes-cached",
        "fuse edge: a change whose effect the kernel cannot see (inode flag ioctl: ctime) drops its cached attributes",
        "src/fs/fuse_adapter/ioctl.rs",
        "                if sets {\n                    self.invalidate_attrs(ino.0);",
        "                if sets && false {\n                    self.invalidate_attrs(ino.0);",
        ["--release", "--test", "fuse_kernel_cache", "stat_after_a_flag_change_shows_its_new_ctime"],
    ),
    (
        "copies-never-borrow-an-open-segment",
        "space: with every open segment taken, copies of a group without one go behind the roomiest",
        "src/engine/copies.rs",
        "        borrow_roomiest_open_segment(&writer, size, &mut by_group);",
        "",
        ["--release", "--test", "engine_model_threads",
         "the_smallest_store_of_many_groups_near_full_keeps_taking_overwrites"],
    ),
    (
        "open-group-segments-unbounded",
        "space: at most max_open_segments group-owned segments are open, as user_capacity counts",
        "src/engine/copies.rs",
        "    if homeless.len() <= writer.open_slots_left() {",
        "    if true {",
        ["--release", "--lib", "open_group_segments_stay_within_their_bound"],
    ),
    (
        "write-back-cut-short-answers-a-count",
        "writeback cache: a page-cache WRITE the store cuts short gets its error, not a short count",
        "src/fs/file_data.rs",
        "            Some(e) if whole => Err(e),",
        "            Some(e) if !whole => Err(e),",
        ["--release", "--features", "test-hooks", "--test", "fuse_writeback",
         "a_write_back_the_full_store_cuts_short_fails_fsync"],
    ),
    (
        "mirror-image-before-the-first-sync",
        "mirror: an image holds every batch written before the round (the open buffer is written out first)",
        "src/engine/image.rs",
        "        self.inner.check_open()?;\n        if !self.inner.read_only {\n            self.inner.sync()?;\n        }\n",
        "        self.inner.check_open()?;\n",
        ["--release", "--test", "mirror_model"],
    ),
    (
        "mirror-reads-a-later-use",
        "mirror: a segment's bytes are read only while the use the image noted still holds it",
        "src/engine/image.rs",
        "        let live_use = info.generation == generation\n            && matches!",
        "        let live_use = (info.generation == generation || true)\n            && matches!",
        ["--release", "--test", "mirror_model"],
    ),
    (
        "mirror-collects-what-the-oldest-kept-names",
        "mirror: a collection deletes an object only once no kept manifest names it",
        "src/mirror/mod.rs",
        "                        .is_some_and(|&n| n >= oldest_kept);",
        "                        .is_some_and(|&n| n > oldest_kept);",
        ["--release", "--test", "mirror_model", "a_collection_deletes"],
    ),
    (
        "mirror-collects-before-earlier-manifests-expire",
        "mirror: objects of manifests from before the mirror attached go only once all of those expired",
        "src/mirror/mod.rs",
        "            if made >= cutoff || st.created.is_empty() {",
        "            if st.created.is_empty() && false {",
        ["--release", "--test", "mirror_model", "a_collection_deletes"],
    ),
    (
        "signal-before-the-mount-is-lost",
        "daemon: a SIGTERM that comes before the session can be unmounted still unmounts it",
        "src/cli/signals.rs",
        "        if s.requested {",
        "        if s.requested && false {",
        ["--release", "--test", "fuse_mount", "a_sigterm_before_the_mount_is_up"],
    ),
    (
        "mirror-image-claims-batches-written-after-its-uses",
        "mirror: an image's LSN is that of the last batch inside the segment ends it noted, not the durable LSN after its second sync",
        "src/engine/image.rs",
        "            superblock,\n            durable_lsn,\n            segments,",
        "            superblock,\n            durable_lsn: self.inner.log.durable_lsn().max(durable_lsn),\n            segments,",
        ["--release", "--test", "mirror_model", "images_taken_while_checkpoints_and_writes_go_on"],
    ),
    (
        "mirror-uploads-every-checkpoint",
        "mirror: checkpoints go up at most at a quarter of the segment bytes, after a mirror's first",
        "src/mirror/mod.rs",
        "        if !first\n            && !st.checkpoint_wanted\n",
        "        if false && !first\n            && !st.checkpoint_wanted\n",
        ["--release", "--test", "mirror_model", "checkpoints_go_up_at_most"],
    ),
    (
        "mirror-last-round-leaves-no-checkpoint",
        "mirror: the round before an unmount uploads a checkpoint when the newest image names none",
        "src/mirror/mod.rs",
        "            && !st.checkpoint_wanted\n",
        "            && !(st.checkpoint_wanted && false)\n",
        ["--release", "--test", "mirror_model", "the_last_round_before_an_unmount"],
    ),
    (
        "mirror-restored-store-uploads-its-image-again",
        "mirror: a store restored from a manifest names that image's closed uses where they are",
        "src/mirror/mod.rs",
        "        if let Some(n) = continues {",
        "        if let Some(n) = continues.filter(|_| false) {",
        ["--release", "--test", "mirror_model", "a_restored_store_goes_on"],
    ),
    (
        "mirror-numbers-over-a-dead-rounds-objects",
        "mirror: a writer numbers its objects after every one in the bucket, those of a round killed before its manifest too",
        "src/mirror/mod.rs",
        "        let next_log = newest(LOG_PREFIX)?\n",
        "        let next_log = None::<u64>\n",
        ["--release", "--test", "mirror_model", "a_writer_killed_between"],
    ),
    (
        "permission-read-search-ignored-on-directories",
        "access(2): CAP_DAC_READ_SEARCH lets a caller read and search any directory",
        "src/fs/permission.rs",
        "        (want & MAY_WRITE == 0 && who.capable(CAP_DAC_READ_SEARCH)) || who.capable(",
        "        (want & MAY_WRITE == 0 && who.capable(CAP_DAC_READ_SEARCH) && false) || who.capable(",
        ["--release", "--test", "permission_vs_kernel"],
    ),
    (
        "permission-supplementary-groups-ignored",
        "access(2): a caller in the owning group by a supplementary group gets the group bits",
        "src/fs/permission.rs",
        "    let class = if want & (perm ^ (perm >> 3)) != 0 && who.in_group(target.gid) {\n",
        "    let class = if want & (perm ^ (perm >> 3)) != 0 && who.uid() == target.gid {\n",
        ["--release", "--test", "permission_vs_kernel"],
    ),
    (
        "permission-sticky-ignores-directory-owner",
        "unlink in a sticky directory: its owner may remove any name in it",
        "src/fs/permission.rs",
        "    if sticky && who.uid() != dir.uid && !owner_or_capable(who, victim) {\n",
        "    if sticky && !owner_or_capable(who, victim) {\n",
        ["--release", "--test", "permission_vs_kernel"],
    ),
    (
        "permission-chgrp-ignores-membership",
        "chgrp: the owner may give a file only a group it is in",
        "src/fs/permission.rs",
        "        && !(owner && (gid == target.gid || who.in_group(gid)))\n",
        "        && !(owner && (gid == target.gid || who.in_group(gid) || true))\n",
        ["--release", "--test", "permission_vs_kernel", "setattr_rules"],
    ),
    (
        "permission-chmod-keeps-setgid",
        "chmod: the set-group-ID bit goes unless the caller is in the group or has CAP_FSETID",
        "src/fs/permission.rs",
        "            new & !0o2000\n",
        "            new\n",
        ["--release", "--test", "permission_vs_kernel", "setattr_rules"],
    ),
    (
        "permission-rename-moves-a-directory-without-write-on-it",
        "rename: a directory that changes parent needs write permission on itself (its ..)",
        "src/fs/permission.rs",
        "    if second.is_err() || same_dir || !source.directory {\n",
        "    if second.is_err() || same_dir || !source.directory || true {\n",
        ["--release", "--test", "permission_vs_kernel", "rename_and_open"],
    ),
    (
        "permission-noatime-for-anyone",
        "open: O_NOATIME only for the owner or CAP_FOWNER",
        "src/fs/permission.rs",
        "    if noatime && !owner_or_capable(who, target) {\n",
        "    if false && noatime && !owner_or_capable(who, target) {\n",
        ["--release", "--test", "permission_vs_kernel", "rename_and_open"],
    ),
    (
        "permit-lookup-unchecked",
        "a mount that checks for itself: a LOOKUP needs search on the directory",
        "src/fs/fuse_adapter.rs",
        "                true => self.fs.may_look_up_in(who, parent.0),\n",
        "                true => Ok(()),\n",
        ["--release", "--test", "permission_vs_kernel", "a_mount"],
    ),
    (
        "permit-entries-cached-in-closed-directories",
        "a mount that checks for itself: names in a directory some callers may not search are not cached",
        "src/fs/permit.rs",
        "        match self.checks_permissions && !self.searched_alike(dir).unwrap_or(false) {\n",
        "        match false {\n",
        ["--release", "--test", "permission_vs_kernel", "a_mount"],
    ),
    (
        "permit-closing-a-directory-drops-no-entries",
        "a mount that checks for itself: closing a directory to some drops the entries the kernel holds",
        "src/fs/fuse_adapter.rs",
        "        if self.fs.entry_lifetime(dir) == EntryLifetime::Usual {\n            return;\n",
        "        if true {\n            return;\n",
        ["--release", "--test", "permission_vs_kernel", "entries_the_kernel_holds_go"],
    ),
    (
        "permit-truncation-unchecked",
        "a mount that checks for itself: truncate(2) and open(2) with O_TRUNC need write permission",
        "src/fs/fuse_adapter.rs",
        "        let truncation_needs_write = size.is_some() && fh.is_none();\n",
        "        let truncation_needs_write = false;\n",
        ["--release", "--test", "permission_vs_kernel", "a_mount"],
    ),
    (
        "permit-hard-link-source-unchecked",
        "a mount that checks for itself: protected_hardlinks asks read and write on the source",
        "src/fs/permit.rs",
        "        if protected {\n",
        "        if protected && false {\n",
        ["--release", "--test", "permission_vs_kernel", "a_mount"],
    ),
    (
        "permit-owner-searches-for-every-caller",
        "a mount that checks for itself: a caller may carry another filesystem uid, so kept entries need every class to search",
        "src/fs/permit.rs",
        "        Ok(t.perm & 0o111 == 0o111\n",
        "        Ok(t.perm & 0o100 != 0\n",
        ["--release", "--test", "permission_vs_kernel", "a_caller_with_another_filesystem_uid"],
    ),
    (
        "permit-daemon-checks-unasked",
        "someone checks every open: a mount keeps the kernel's checks (and its sticky-directory protections) unless daemon_permissions asks",
        "src/cli/options.rs",
        "        self.daemon_permissions\n            && matches!(",
        "        matches!(",
        ["--release", "--test", "permission_vs_kernel", "a_default_mount_keeps"],
    ),
    (
        "permit-device-opens-unchecked",
        "someone checks every open: a mount allowing device nodes keeps the kernel's checks",
        "src/cli/options.rs",
        "            && !self.allows_devices()\n",
        "",
        ["--release", "--test", "permission_vs_kernel", "device_nodes"],
    ),
]


# A mutant run that takes longer than this is stopped and reported as a hang (not as caught:
# a test that hangs instead of failing must be fixed so that it fails).
MUTANT_TIMEOUT_S = 600


def run(cmd, cwd, env):
    """Runs cmd in its own process group; returns (returncode or None after a hang, output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=MUTANT_TIMEOUT_S)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def env_for(args, env):
    """The object tier's mutants build in the object stage's target directory (scripts/test.sh
    runs that stage first), whose dependencies of the `s3` feature (an AWS TLS library among
    them: minutes to build) are built already; incremental or not, a mutant's own crate is
    rebuilt either way."""
    if "s3" not in args:
        return env
    env = dict(env)
    env["CARGO_TARGET_DIR"] = os.path.join(ROOT, "target")
    env.pop("CARGO_PROFILE_RELEASE_INCREMENTAL", None)
    return env


def groups_of(args):
    """The test groups of a mutant: one argument list, or a list of them."""
    return args if args and isinstance(args[0], list) else [args]


def run_group(args, tree, env):
    """Runs one test group on the mutated tree: (verdict, seconds, output); verdict is "caught",
    "escaped", "hung", "compile" (the mutant does not compile) or "broken" (cargo failed
    without a failing test)."""
    started = time.time()
    returncode, stdout = run(["cargo", "test", "-q"] + args, tree, env_for(args, env))
    took = time.time() - started
    if returncode is None:
        return "hung", took, stdout
    if "error[E" in stdout or "could not compile" in stdout:
        return "compile", took, stdout
    if returncode != 0 and ("panicked" in stdout or "FAILED" in stdout):
        return "caught", took, stdout
    if returncode != 0:
        return "broken", took, stdout
    return "escaped", took, stdout


def shard_of(value):
    """(k, n) from MUTANTS_SHARD "K/N"; (0, 1) when unset. A malformed value is an error, not
    a silent full run or an empty one."""
    if not value:
        return 0, 1
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        sys.exit(f"MUTANTS_SHARD={value!r}: expected K/N, such as 0/2")
    if n < 1 or not 0 <= k < n:
        sys.exit(f"MUTANTS_SHARD={value!r}: K must be in 0..N-1")
    return k, n


def main():
    wanted = set(sys.argv[1:])
    k, n = shard_of(os.environ.get("MUTANTS_SHARD", ""))
    if n > 1:
        left_out = [m[0] for i, m in enumerate(MUTANTS) if i % n != k]
        print(f"mutants: shard {k} of {n}: {len(MUTANTS) - len(left_out)} of {len(MUTANTS)} mutants;"
              f" the other shard(s) run on the next commit(s). Left out this run: "
              + ", ".join(left_out))
    scratch = tempfile.mkdtemp(prefix="logstorfs-mutants-")
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target", "mutants"))
    # Incremental release builds: a mutant changes one line, and an incremental build recompiles
    # only the codegen units that line touches (about 5 s a mutant instead of 24 s for a whole
    # crate). The optimisation level stays that of --release, which the model tests need.
    env.setdefault("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
    env.setdefault("MODEL_SEEDS", "40")
    env.setdefault("MODEL_STEPS", "800")
    caught = 0
    failed = []
    # Every mutant's original text is checked, whatever the shard, so that none rots unseen.
    for name, _, path, original, _, _ in MUTANTS:
        count = open(os.path.join(ROOT, path)).read().count(original)
        if count != 1:
            print(f"MUTANT {name}: original text found {count} times in {path}:"
                  " update scripts/mutants.py")
            failed.append(name)
    try:
        for position, (name, invariant, path, original, replacement, args) in enumerate(MUTANTS):
            if wanted and name not in wanted:
                continue
            if position % n != k or name in failed:
                continue
            tree = os.path.join(scratch, "tree")
            shutil.rmtree(tree, ignore_errors=True)
            os.makedirs(tree)
            for item in ("Cargo.toml", "Cargo.lock", "src", "tests", "benches", "examples"):
                src = os.path.join(ROOT, item)
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(tree, item))
                elif os.path.exists(src):
                    shutil.copy(src, os.path.join(tree, item))
            target = os.path.join(tree, path)
            text = open(target).read()
            open(target, "w").write(text.replace(original, replacement))
            groups = groups_of(args)
            took = 0.0
            verdict = "caught"
            for number, group in enumerate(groups, 1):
                verdict, seconds, stdout = run_group(group, tree, env)
                took += seconds
                which = f" (test group {number} of {len(groups)}: {' '.join(group)})" \
                    if len(groups) > 1 else ""
                if verdict != "caught":
                    break
            if verdict == "hung":
                print(f"MUTANT {name}: tests hung for {MUTANT_TIMEOUT_S}s instead of failing"
                      f"{which}\n{stdout[-2000:]}")
                failed.append(name)
            elif verdict == "compile":
                print(f"MUTANT {name}: does not compile; fix the mutant\n{stdout[-2000:]}")
                failed.append(name)
            elif verdict == "caught":
                print(f"caught   {name:32} ({invariant}) in {took:.0f}s")
                caught += 1
            elif verdict == "broken":
                print(f"MUTANT {name}: cargo failed without a failing test{which}; fix the script\n"
                      f"{stdout[-2000:]}")
                failed.append(name)
            else:
                print(f"ESCAPED  {name:32} ({invariant}): no test failed{which}")
                failed.append(name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"mutants: {caught} passed, {len(failed)} failed")
    if failed:
        # Repeated last: CI keeps only the tail of a long log.
        print("failed mutants: " + ", ".join(failed))
    if os.environ.get("RESULTS_FILE"):
        with open(os.environ["RESULTS_FILE"], "a") as results:
            results.write(f"mutants {caught} {len(failed)}\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
