//! `logstorfs fsck`'s report: one serde struct built from a [`Report`], rendered as JSON or as
//! text (one problem per line, then a summary and, when there are problems, what to do next).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::check::{DamagedFile, Report};
use crate::engine::check::Severity;

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct FindingOut {
    pub place: String,
    pub what: String,
}

/// The figures of one segment in use.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentOut {
    pub segment: u32,
    pub kind: &'static str,
    pub group: u32,
    pub generation: u64,
    pub buffers: u64,
    pub records: u64,
    pub used_bytes: u64,
    pub live_bytes: u64,
}

/// The engine's half.
#[derive(Clone, Debug, Serialize)]
pub struct EngineOut {
    pub segment_size: u32,
    pub segment_count: u32,
    pub segments_scanned: u64,
    pub segments_in_use: usize,
    pub buffers: u64,
    pub records: u64,
    pub live_keys: usize,
    pub durable_floor: u64,
    pub last_lsn: u64,
    pub segments: Vec<SegmentOut>,
}

/// The namespace's figures.
#[derive(Clone, Debug, Serialize)]
pub struct FsOut {
    pub inodes: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub symlinks: u64,
    pub other_files: u64,
    pub entries: u64,
    pub data_pages: u64,
    pub xattrs: u64,
    pub orphans: u64,
    pub group_roots: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DamagedFileOut {
    pub ino: u64,
    pub path: String,
    pub parts: Vec<String>,
    pub place: String,
}

/// Everything `fsck` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FsckReport {
    pub store: String,
    pub clean: bool,
    pub problems: Vec<FindingOut>,
    pub notes: Vec<FindingOut>,
    pub damaged_files: Vec<DamagedFileOut>,
    /// What to do about the problems (empty when clean).
    pub next_steps: Vec<String>,
    pub engine: EngineOut,
    pub fs: FsOut,
}

impl FsckReport {
    pub fn new(report: &Report, store: &Path) -> FsckReport {
        let findings = |sev: Severity| -> Vec<FindingOut> {
            report
                .all_findings()
                .filter(|f| f.severity == sev)
                .map(|f| FindingOut {
                    place: f.place.clone(),
                    what: f.what.clone(),
                })
                .collect()
        };
        let e = &report.engine;
        let f = &report.figures;
        let clean = report.is_clean();
        FsckReport {
            store: store.display().to_string(),
            clean,
            problems: findings(Severity::Problem),
            notes: findings(Severity::Note),
            damaged_files: report.damaged_files.iter().map(damaged).collect(),
            next_steps: if clean {
                Vec::new()
            } else {
                next_steps(store, !report.damaged_files.is_empty())
            },
            engine: EngineOut {
                segment_size: e.segment_size,
                segment_count: e.segment_count,
                segments_scanned: e.segments_scanned,
                segments_in_use: e.segments.len(),
                buffers: e.buffers_accepted,
                records: e.records_accepted,
                live_keys: e.live.len(),
                durable_floor: e.durable_floor,
                last_lsn: e.last_lsn,
                segments: e
                    .segments
                    .iter()
                    .map(|s| SegmentOut {
                        segment: s.segment,
                        kind: s.kind,
                        group: s.group,
                        generation: s.generation,
                        buffers: s.buffers,
                        records: s.records,
                        used_bytes: s.used_bytes,
                        live_bytes: s.live_bytes,
                    })
                    .collect(),
            },
            fs: FsOut {
                inodes: f.inodes,
                directories: f.directories,
                regular_files: f.regular_files,
                symlinks: f.symlinks,
                other_files: f.other_files,
                entries: f.entries,
                data_pages: f.data_pages,
                xattrs: f.xattrs,
                orphans: f.orphans,
                group_roots: f.group_roots,
            },
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report of numbers and strings serialises")
    }

    /// Problems one per line ("where: what"), notes prefixed "note: ", a summary line, then the
    /// next steps.
    pub fn text(&self) -> String {
        let mut o = String::new();
        for p in &self.problems {
            let _ = writeln!(o, "{}: {}", p.place, p.what);
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {}: {}", n.place, n.what);
        }
        let (e, f) = (&self.engine, &self.fs);
        let _ = writeln!(
            o,
            "{}: {} ({} inodes: {} directories, {} files, {} symlinks; {} data pages; {} \
             segments in use, {} records, last LSN {})",
            self.store,
            if self.clean {
                "clean".to_string()
            } else {
                format!("{} problem(s) found", self.problems.len())
            },
            f.inodes,
            f.directories,
            f.regular_files,
            f.symlinks,
            f.data_pages,
            e.segments_in_use,
            e.records,
            e.last_lsn
        );
        if !self.next_steps.is_empty() {
            o.push_str("What to do next:\n");
            for (i, step) in self.next_steps.iter().enumerate() {
                let _ = writeln!(o, "  {}. {step}", i + 1);
            }
        }
        o
    }
}

fn damaged(d: &DamagedFile) -> DamagedFileOut {
    DamagedFileOut {
        ino: d.ino,
        path: d.path.clone(),
        parts: d.parts.clone(),
        place: d.place.clone(),
    }
}

/// fsck repairs nothing: what the user can do about the problems it found.
fn next_steps(store: &Path, files_named: bool) -> Vec<String> {
    let s = store.display();
    let mut steps = vec![format!(
        "fsck changed nothing. To keep the evidence, copy the store aside while it is \
         unmounted: cp -a {s} {s}.damaged"
    )];
    steps.push(
        "Mount the store: recovery keeps every record that passes its checks and serves the \
         newest intact version of everything else."
            .to_string(),
    );
    if files_named {
        steps.push(
            "The files named above may read older contents or fail with EIO: restore them \
             from a backup (or delete them), then unmount and run fsck again."
                .to_string(),
        );
    } else {
        steps.push(
            "Copy what you need off the mount, then unmount and run fsck again; if the \
             problems stay, report them with the copy kept above."
                .to_string(),
        );
    }
    steps
}
