//! `logstorfs stats`: the store's figures as one report, the same whether a running daemon
//! answers (through [`super::STATS_XATTR`]) or the store is read offline
//! ([`offline_report`]), rendered as JSON (serde) or as text for a person ([`StatsReport::text`]).
//!
//! The counters of what was written (user bytes, copies, reclaimed segments, ...) live in the
//! daemon's memory, since its mount: offline they are `None` (`null` in JSON, left out of the
//! text), never a 0 that would read as "nothing written".

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError, EngineOptions, EngineStats, GroupId};

/// One compaction group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub id: GroupId,
    /// The group's root directory, relative to the mount ("/" for the root group). A group
    /// whose root merged back or was removed may still own segments until its records are
    /// rewritten or freed: "(merged)".
    pub root: String,
    pub segments: u64,
    pub live_bytes: u64,
    /// Segments by utilisation, in ten buckets of 10% each (the last holds 90-100%).
    pub utilization_histogram: [u64; 10],
}

/// The figures of `logstorfs stats`. Field names are the JSON keys; see `EngineStats` for
/// what each means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Whether a running daemon answered (else the store was read offline, read-only).
    pub mounted: bool,
    pub capacity_bytes: u64,
    pub usable_capacity_bytes: u64,
    pub segment_size_bytes: u64,
    pub segments_total: u64,
    pub segments_free: u64,
    pub mixed_segments: u64,
    pub live_bytes: u64,
    /// Space held for allocated pages not yet written (`fallocate`): used, as `df` shows it.
    /// Absent from the report of a daemon older than the field: read as 0.
    #[serde(default)]
    pub promised_bytes: u64,
    pub index_entries: u64,
    pub index_bytes: u64,
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub groups_count: u64,
    pub groups: Vec<GroupReport>,
    // Counted by a running daemon since its mount; `None` (JSON `null`) offline.
    pub user_bytes_written: Option<u64>,
    pub separator_bytes_written: Option<u64>,
    pub compaction_bytes_written: Option<u64>,
    pub device_bytes_written: Option<u64>,
    pub segments_handed_over: Option<u64>,
    pub separator_memory_bytes: Option<u64>,
    pub segments_reclaimed: Option<u64>,
    pub compaction_victims: Option<u64>,
    pub foreground_compaction_steps: Option<u64>,
    pub tombstones_dropped: Option<u64>,
    /// Device bytes written per user byte written; `None` offline or before any user write.
    pub write_amplification: Option<f64>,
}

impl StatsReport {
    /// The report of an engine's figures; `roots`: see [`super::group_root_paths`]. `mounted`:
    /// the engine is a daemon's, whose write counters cover its whole mount.
    pub fn new(s: &EngineStats, roots: &HashMap<GroupId, String>, mounted: bool) -> Self {
        let groups = s
            .groups
            .iter()
            .map(|g| GroupReport {
                id: g.id,
                root: roots
                    .get(&g.id)
                    .cloned()
                    .unwrap_or_else(|| "(merged)".to_string()),
                segments: g.segments,
                live_bytes: g.live_bytes,
                utilization_histogram: g.utilization_histogram,
            })
            .collect();
        let daemon = |v: u64| mounted.then_some(v);
        let write_amplification = (mounted && s.user_bytes_written > 0)
            .then(|| s.device_bytes_written as f64 / s.user_bytes_written as f64);
        StatsReport {
            mounted,
            capacity_bytes: s.capacity_bytes,
            usable_capacity_bytes: s.usable_capacity_bytes,
            segment_size_bytes: s.segment_size_bytes,
            segments_total: s.segments_total,
            segments_free: s.segments_free,
            mixed_segments: s.mixed_segments,
            live_bytes: s.live_bytes,
            promised_bytes: s.promised_bytes,
            index_entries: s.index_entries,
            index_bytes: s.index_bytes,
            last_lsn: s.last_lsn,
            durable_lsn: s.durable_lsn,
            groups_count: s.groups.len() as u64,
            groups,
            user_bytes_written: daemon(s.user_bytes_written),
            separator_bytes_written: daemon(s.separator_bytes_written),
            compaction_bytes_written: daemon(s.compaction_bytes_written),
            device_bytes_written: daemon(s.device_bytes_written),
            segments_handed_over: daemon(s.segments_handed_over),
            separator_memory_bytes: daemon(s.separator_memory_bytes),
            segments_reclaimed: daemon(s.segments_reclaimed),
            compaction_victims: daemon(s.compaction_victims),
            foreground_compaction_steps: daemon(s.foreground_compaction_steps),
            tombstones_dropped: daemon(s.tombstones_dropped),
            write_amplification,
        }
    }

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report of numbers and strings serialises")
    }

    /// The report for a person: a summary line first, sizes in binary units.
    pub fn text(&self) -> String {
        let mut o = String::new();
        self.write_summary(&mut o);
        self.write_counters(&mut o);
        self.write_group_table(&mut o);
        o
    }

    /// Capacity, live bytes, write amplification and groups; segments; the index and LSNs.
    fn write_summary(&self, o: &mut String) {
        let percent = self.live_bytes * 100 / self.usable_capacity_bytes.max(1);
        let _ = write!(
            o,
            "usable {}, live {} ({percent}%)",
            human_bytes(self.usable_capacity_bytes),
            human_bytes(self.live_bytes)
        );
        if self.promised_bytes > 0 {
            let _ = write!(
                o,
                ", {} held for allocated pages",
                human_bytes(self.promised_bytes)
            );
        }
        match self.write_amplification {
            Some(wa) => {
                let _ = write!(o, ", write amplification {wa:.2}");
            }
            None if self.mounted => o.push_str(", nothing written since the mount"),
            None => {}
        }
        let plural = if self.groups_count == 1 { "" } else { "s" };
        let _ = writeln!(o, ", {} group{plural}", self.groups_count);
        let _ = writeln!(
            o,
            "{}: {} segments of {}, {} free, {} mixed",
            if self.mounted { "mounted" } else { "offline" },
            self.segments_total,
            human_bytes(self.segment_size_bytes),
            self.segments_free,
            self.mixed_segments
        );
        let _ = writeln!(
            o,
            "index: {} entries, {} of memory; last LSN {}, durable {}",
            self.index_entries,
            human_bytes(self.index_bytes),
            self.last_lsn,
            self.durable_lsn
        );
    }

    /// What was written since the mount, by whom, and what reclaimed it (a mounted store only).
    fn write_counters(&self, o: &mut String) {
        match self.user_bytes_written {
            Some(user) => {
                let n = |v: Option<u64>| v.unwrap_or_default();
                let _ = writeln!(
                    o,
                    "since the mount: {} written by users, {} to the device ({} by the \
                     separator, {} by compaction)",
                    human_bytes(user),
                    human_bytes(n(self.device_bytes_written)),
                    human_bytes(n(self.separator_bytes_written)),
                    human_bytes(n(self.compaction_bytes_written))
                );
                let _ = writeln!(
                    o,
                    "  {} segments handed over whole, {} reclaimed, {} compaction victims, {} \
                     write stalls, {} tombstones dropped; separator memory {}",
                    n(self.segments_handed_over),
                    n(self.segments_reclaimed),
                    n(self.compaction_victims),
                    n(self.foreground_compaction_steps),
                    n(self.tombstones_dropped),
                    human_bytes(n(self.separator_memory_bytes))
                );
            }
            None => o.push_str("write counters: kept by a running daemon only (not mounted)\n"),
        }
    }

    /// One line per group: its root, segments, live bytes and segments by fill.
    fn write_group_table(&self, o: &mut String) {
        let width = self.groups.iter().map(|g| g.root.len()).max().unwrap_or(4);
        let _ = writeln!(
            o,
            "{:>6}  {:<width$}  {:>8}  {:>10}  segments by fill (0-10% .. 90-100%)",
            "group", "root", "segments", "live"
        );
        for g in &self.groups {
            let hist: Vec<String> = g.utilization_histogram.iter().map(u64::to_string).collect();
            let _ = writeln!(
                o,
                "{:>6}  {:<width$}  {:>8}  {:>10}  {}",
                g.id,
                g.root,
                g.segments,
                human_bytes(g.live_bytes),
                hist.join(" ")
            );
        }
    }
}

/// `n` bytes in binary units, three significant digits at most: `876 MiB`, `23.4 MiB`,
/// `1.05 GiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if unit == 0 || v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    // "1.00 GiB" reads as "1 GiB"; "1.50" as "1.5".
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s} {}", UNITS[unit])
}

/// The report of the unmounted store in `dir`, read without changing a byte of it (see
/// `Engine::open_read_only`): a shared lock keeps a daemon from mounting it meanwhile, and
/// [`EngineError::Locked`] says a daemon has it mounted.
pub fn offline_report(dir: &Path) -> Result<StatsReport, EngineError> {
    let options = EngineOptions {
        create_if_missing: false,
        sync_interval: None,
        // As a mount opens it: the checkpoint a clean unmount left is then used, not scanned
        // past (it records these lengths).
        tombstone_prefix_lengths: super::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        ..Default::default()
    };
    let engine = Engine::open_read_only(dir, &options)?;
    // As a mount counts them: the space allocated pages hold is in no counter on disk.
    super::unwritten::set_promises_from_index(&engine);
    let roots = super::group_root_paths(&engine)
        .map_err(|e| EngineError::Corrupt(format!("reading the group roots: {e}")))?;
    let report = StatsReport::new(&engine.stats(), &roots, false);
    engine.close()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GroupStats;

    fn sample() -> EngineStats {
        EngineStats {
            capacity_bytes: 1 << 30,
            usable_capacity_bytes: 876 << 20,
            segment_size_bytes: 1 << 20,
            live_bytes: 23 << 20,
            user_bytes_written: 100 << 20,
            device_bytes_written: 105 << 20,
            groups: vec![
                GroupStats {
                    id: 0,
                    segments: 3,
                    live_bytes: 70,
                    utilization_histogram: [1, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                },
                GroupStats {
                    id: 4,
                    segments: 1,
                    live_bytes: 7,
                    utilization_histogram: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                },
                GroupStats {
                    id: 5,
                    segments: 1,
                    live_bytes: 0,
                    utilization_histogram: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn json_names_groups_by_root_and_reads_back() {
        let roots = HashMap::from([(0, "/".to_string()), (4, "/a/\"q\"".to_string())]);
        let r = StatsReport::new(&sample(), &roots, true);
        let j = r.json();
        for f in [
            "\"capacity_bytes\":1073741824",
            "\"usable_capacity_bytes\":918552576",
            "\"groups\":[{\"id\":0,\"root\":\"/\",\"segments\":3,\"live_bytes\":70,\"utilization_histogram\":[1,0,0,0,0,0,0,0,0,2]},",
            "{\"id\":4,\"root\":\"/a/\\\"q\\\"\",\"segments\":1,",
            "{\"id\":5,\"root\":\"(merged)\",",
            "\"user_bytes_written\":104857600",
            "\"write_amplification\":1.05",
        ] {
            assert!(j.contains(f), "{f} missing from {j}");
        }
        let back: StatsReport = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn offline_has_the_same_fields_with_write_counters_null_not_zero() {
        let roots = HashMap::from([(0, "/".to_string())]);
        let mounted: serde_json::Value =
            serde_json::from_str(&StatsReport::new(&sample(), &roots, true).json()).unwrap();
        let offline: serde_json::Value =
            serde_json::from_str(&StatsReport::new(&sample(), &roots, false).json()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&mounted), keys(&offline));
        assert!(offline["user_bytes_written"].is_null(), "{offline}");
        assert!(offline["device_bytes_written"].is_null(), "{offline}");
        assert!(offline["write_amplification"].is_null(), "{offline}");
        assert_eq!(mounted["device_bytes_written"], 105 << 20);
        let text = StatsReport::new(&sample(), &roots, false).text();
        assert!(!text.contains("write amplification"), "{text}");
        assert!(text.contains("kept by a running daemon only"), "{text}");
    }

    #[test]
    fn text_opens_with_the_summary_in_human_units() {
        let roots = HashMap::from([(0, "/".to_string())]);
        let text = StatsReport::new(&sample(), &roots, true).text();
        assert!(
            text.starts_with(
                "usable 876 MiB, live 23 MiB (2%), write amplification 1.05, 3 groups\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn human_bytes_keeps_three_digits() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(876 << 20), "876 MiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes((23 << 20) + (400 << 10)), "23.4 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
