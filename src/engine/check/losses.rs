//! What recovery does not see, compared with what the next mount serves: the records of
//! damaged stretches, of the failing buffer where a scan stopped and of the valid buffers
//! stranded behind it, of buffers beyond the log's end, and records failing their own CRC in
//! accepted buffers. A record is lost only if it is newer than what the map serves for its key
//! (and not stale: its LSN reused after a remount, or deleted by an unseen deletion); lost
//! records of batches that were durable are a problem (no crash explains them), others a note
//! (a write torn by a crash looks exactly like damage to unsynced data).

use std::collections::BTreeMap;

use super::super::format::{RecordKind, lsn_of_version};
use super::End;
use super::map::Map;
use super::report::{DamagedRecord, EngineCheck, Finding, LiveRecord, Place};
use super::verdicts::{Rec, Scanned, Suspect};

/// Reports every suspect's lost records; returns whether damage to durable data was found.
pub(super) fn report_suspects(
    scanned: &Scanned,
    map: &Map,
    end: &End,
    out: &mut EngineCheck,
) -> bool {
    // The newest batch anywhere on disk (versions far above it are garbage), and the highest
    // durable floor any valid buffer records, stranded ones included: a lost record of a batch
    // at or below it was durable, so no crash explains its loss.
    let evidence_floor = scanned
        .suspects
        .iter()
        .map(|s| s.stranded_floor)
        .fold(end.floor, u64::max);
    let newest_on_disk = scanned
        .bufs
        .iter()
        .map(|b| b.header.lsn_last)
        .chain(scanned.suspects.iter().map(|s| s.stranded_lsn))
        .max()
        .unwrap_or(0);
    // Intact deletions among the unseen records themselves: a put they delete is no loss
    // whatever recovery serves (a segment freed while its zeroing was torn holds puts together
    // with the tombstones that deleted them, both dropped from the index).
    let unseen_deletes: Vec<&Rec> = scanned
        .suspects
        .iter()
        .flat_map(|s| &s.records)
        .filter(|r| r.intact && r.kind != RecordKind::Put)
        .collect();
    let deleted_unseen = |r: &Rec| {
        unseen_deletes.iter().any(|d| {
            d.version > r.version
                && match d.kind {
                    RecordKind::DeleteRange => {
                        r.key >= d.key && (d.end.is_empty() || r.key < d.end)
                    }
                    _ => d.key == r.key,
                }
        })
    };
    let judge = Judge {
        map,
        floor: end.floor,
        last_lsn: end.last_lsn,
        evidence_floor,
        newest_on_disk,
    };
    let mut damage_found = false;
    for s in &scanned.suspects {
        let lost = lost_records(s, &judge, &out.live, &deleted_unseen);
        damage_found |= report_suspect(s, lost, poisoned_records(s, map), out);
    }
    damage_found
}

/// What decides whether a record recovery does not see is lost.
struct Judge<'a> {
    map: &'a Map<'a>,
    floor: u64,
    last_lsn: u64,
    /// The highest durable floor any valid buffer records, stranded ones included.
    evidence_floor: u64,
    /// The newest batch anywhere on disk (versions far above it are garbage).
    newest_on_disk: u64,
}

/// A suspect's records newer than what the next mount serves.
struct Lost {
    /// Of batches that were durable (or copies the sync table proves synced): a problem.
    durable: u64,
    /// That a write torn by a crash explains: a note.
    unsynced: u64,
    /// Its records that fail their own checks.
    damaged_records: u64,
    records: Vec<DamagedRecord>,
}

/// The records of suspect `s` that are lost (see [`Lost`]).
fn lost_records(
    s: &Suspect,
    judge: &Judge,
    live: &BTreeMap<Vec<u8>, LiveRecord>,
    deleted_unseen: &dyn Fn(&Rec) -> bool,
) -> Lost {
    let Judge {
        map,
        floor,
        last_lsn,
        evidence_floor,
        newest_on_disk,
    } = *judge;
    let mut durable_lost = 0u64;
    let mut unsynced_lost = 0u64;
    let mut damaged_records = 0u64;
    let mut lost_here = Vec::new();
    for r in &s.records {
        if !r.intact {
            damaged_records += 1;
        }
        let lsn = lsn_of_version(r.version);
        let (served_version, served_put) = map.served(&r.key);
        let newer = served_version.is_none_or(|v| r.version > v);
        if !newer || map.lsn_reused(lsn) || lsn > newest_on_disk.max(floor).saturating_add(1 << 32)
        {
            continue; // superseded, stale (the log reused the LSN), or a garbage version
        }
        // A lost tombstone changes what is served only if it would hide a put that is
        // served now: one that hides nothing (its puts are gone too, e.g. compaction dropped
        // the served tombstone once they were) is no loss.
        let hides_a_served_put = match r.kind {
            RecordKind::Put => true,
            RecordKind::Delete => served_put,
            RecordKind::DeleteRange => live
                .range(r.key.clone()..)
                .take_while(|(k, _)| r.end.is_empty() || k.as_slice() < r.end.as_slice())
                .any(|(_, l)| l.version < r.version),
        };
        if r.intact && (!hides_a_served_put || deleted_unseen(r)) {
            continue;
        }
        // A damaged record in a stretch of copies may be garbage of a write torn by a power
        // cut (nothing proves copies were synced); an intact one newer than what is served
        // has no source left, and sources are freed only once their copies are synced.
        let synced_copy =
            s.copies && r.place.offset as usize + r.len as usize <= s.synced_end && lsn <= last_lsn;
        if (lsn <= evidence_floor && (r.intact || !s.copies)) || synced_copy {
            durable_lost += 1;
        } else {
            unsynced_lost += 1;
        }
        lost_here.push(DamagedRecord {
            key: r.key.clone(),
            version: r.version,
            place: r.place,
            intact: r.intact,
            served_version: served_version.filter(|_| served_put),
            reads_fail: false,
            value: r.value.clone().filter(|_| r.intact),
        });
    }
    Lost {
        durable: durable_lost,
        unsynced: unsynced_lost,
        damaged_records,
        records: lost_here,
    }
}

/// The findings on suspect `s` with its lost records and the damaged puts of it that the
/// next mount indexes (`poisoned`); returns whether they are damage to durable data (or synced
/// data whose names are gone).
fn report_suspect(
    s: &Suspect,
    lost: Lost,
    poisoned: Vec<DamagedRecord>,
    out: &mut EngineCheck,
) -> bool {
    let Lost {
        durable: durable_lost,
        unsynced: unsynced_lost,
        damaged_records,
        records: lost_here,
    } = lost;
    let place = out.describe(s.place);
    let what = if s.damaged_buffer {
        "buffer fails its checksum"
    } else {
        "valid buffers that recovery does not reach"
    };
    let mut damage_found = report_unreadable(s, what, &place, poisoned, out);
    let detail = format!(
        "{} record(s) damaged, {} stranded buffer(s) behind it; {} record(s) newer than \
         what the next mount serves",
        damaged_records,
        s.stranded_buffers,
        durable_lost + unsynced_lost
    );
    if durable_lost > 0 {
        out.findings.push(Finding::problem(
            place,
            format!(
                "{what}: {detail}, {durable_lost} of them of batches that were durable \
                 (damaged media; the next mount serves older versions or none)"
            ),
        ));
        out.damaged.extend(lost_here);
        damage_found = true;
    } else if unsynced_lost == 0 && s.damaged_buffer && s.served_records > 0 && !damage_found {
        // Damage that cost nothing: every record of the stretch is intact and served (the
        // damage is in a buffer header, padding or a record directory). Media damage all
        // the same, worth knowing of.
        out.findings.push(Finding::note(
            place,
            format!(
                "{what}: {} record(s) in it intact and served (or deletions whose effect \
                 is kept); the damage costs nothing (it is in a buffer header, padding, a \
                 record directory, or a deletion that its directory entry names)",
                s.served_records
            ),
        ));
    } else if unsynced_lost > 0 {
        out.findings.push(Finding::note(
            place,
            if s.copies {
                format!(
                    "{what}: {detail}, all copies (made by the separator or compaction) \
                     that nothing proves were synced: a write torn by a crash, which the \
                     next mount discards (the originals stay until copies are synced)"
                )
            } else {
                format!(
                    "{what}: {detail}, all of batches that were not yet durable (a write \
                     torn by a crash, which the next mount discards; or damage to the \
                     newest data)"
                )
            },
        ));
    }
    damage_found
}

/// The damage of suspect `s` that the next mount takes as it is: damaged puts it indexes so
/// that their reads fail (`poisoned`), and synced records whose names are gone, which nothing
/// makes fail. Returns whether there is any.
fn report_unreadable(
    s: &Suspect,
    what: &str,
    place: &str,
    poisoned: Vec<DamagedRecord>,
    out: &mut EngineCheck,
) -> bool {
    let mut found = false;
    if !poisoned.is_empty() {
        out.findings.push(Finding::problem(
            place,
            format!(
                "{what}: {} damaged record(s) of data proven durable, which the next mount \
                 indexes where they are: reads of their keys fail rather than serve an older \
                 version",
                poisoned.len()
            ),
        ));
        out.damaged.extend(poisoned);
        found = true;
    }
    if s.proven && s.unnamed_buffers > 0 {
        // Synced data whose names are gone: nothing tells which keys it held, so nothing
        // makes their reads fail. Say so, with where it is.
        out.findings.push(Finding::problem(
            place,
            format!(
                "{what}, and its record directory is damaged too ({} buffer(s)): synced \
                 records there that nothing names any more are lost, and the files they \
                 belonged to may read older contents without an error",
                s.unnamed_buffers
            ),
        ));
        found = true;
    }
    found
}

/// Buffers beyond the log's end: the next mount discards them. Normal after a crash (writes
/// not yet durable); a problem if damage found before (`damage_found`) is what ends the log.
pub(super) fn report_discarded(
    scanned: &Scanned,
    map: &Map,
    end: &End,
    damage_found: bool,
    out: &mut EngineCheck,
) {
    let last_lsn = end.last_lsn;
    if !map.discarded.is_empty() {
        let records: usize = map.discarded.iter().map(|b| b.records.len()).sum();
        let at = map.discarded[0];
        let why = match end.gap_at {
            Some(lsn) => format!("batch {lsn} is missing"),
            None => "their batches lie beyond the log's end".into(),
        };
        let place = out.describe(Place {
            segment: at.segment,
            offset: at.offset,
        });
        if damage_found {
            out.findings.push(Finding::problem(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}, damaged): the next mount discards \
                     {} later buffer(s) ({records} records) with it",
                    map.discarded.len()
                ),
            ));
            for b in &map.discarded {
                for r in &scanned.recs[b.records.clone()] {
                    let (v, put) = map.served(&r.key);
                    if r.kind != RecordKind::DeleteRange && v.is_none_or(|v| r.version > v) {
                        out.damaged.push(DamagedRecord {
                            key: r.key.clone(),
                            version: r.version,
                            place: r.place,
                            intact: r.intact,
                            served_version: v.filter(|_| put),
                            reads_fail: false,
                            value: r.value.clone().filter(|_| r.intact),
                        });
                    }
                }
            }
        } else {
            out.findings.push(Finding::note(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}): the next mount discards {} \
                     buffer(s) ({records} records) beyond it, writes not yet durable at a crash",
                    map.discarded.len()
                ),
            ));
        }
    }
}

/// Records failing their own CRC inside accepted buffers: the next mount indexes them, and
/// every read of a put among them that no newer version supersedes fails.
pub(super) fn report_failing_records(
    scanned: &Scanned,
    map: &Map,
    end: &End,
    out: &mut EngineCheck,
) {
    for b in scanned.bufs.iter().filter(|b| end.keeps(b)) {
        // Only failing records are looked up: `indexed` searches the range deletes.
        for i in b.records.clone().filter(|&i| !scanned.recs[i].intact) {
            if let Some(r) = map.indexed(i).filter(|r| r.kind == RecordKind::Put) {
                out.damaged.push(poisoned(r));
            }
        }
    }
}

/// The damaged puts of suspect `s` that the next mount indexes (`Suspect::poisoned`): reads of
/// their keys fail. One that a newer version supersedes costs nothing.
fn poisoned_records(s: &Suspect, map: &Map) -> Vec<DamagedRecord> {
    s.poisoned
        .iter()
        .filter_map(|&i| map.indexed(i))
        .map(poisoned)
        .collect()
}

/// A put failing its own CRC that the next mount indexes, as reported.
fn poisoned(r: &Rec) -> DamagedRecord {
    DamagedRecord {
        key: r.key.clone(),
        version: r.version,
        place: r.place,
        intact: false,
        served_version: None,
        reads_fail: true,
        value: None,
    }
}
