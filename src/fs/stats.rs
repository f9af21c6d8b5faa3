//! `logstorfs stats` output: the engine's figures as a JSON object, written by hand.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::engine::{EngineStats, GroupId};

/// Escapes `s` as the contents of a JSON string.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The root directory (relative to the mount) of group `id`, from `roots` (see
/// `fs::group_root_paths`). A group whose root merged back or was removed may still own
/// segments until its records are rewritten or freed: it is shown as "(merged)".
fn group_root(roots: &HashMap<GroupId, String>, id: GroupId) -> String {
    roots
        .get(&id)
        .cloned()
        .unwrap_or_else(|| "(merged)".to_string())
}

/// Device bytes written per user byte written so far (buffer headers and padding, separator
/// copies and compaction copies included); 0 before anything was written.
fn write_amplification(s: &EngineStats) -> f64 {
    if s.user_bytes_written == 0 {
        0.0
    } else {
        s.device_bytes_written as f64 / s.user_bytes_written as f64
    }
}

/// The stats JSON object (one line).
pub fn stats_json(s: &EngineStats, roots: &HashMap<GroupId, String>) -> String {
    let mut o = String::from("{");
    let fields: [(&str, u64); 21] = [
        ("capacity_bytes", s.capacity_bytes),
        ("usable_capacity_bytes", s.usable_capacity_bytes),
        ("segment_size_bytes", s.segment_size_bytes),
        ("segments_total", s.segments_total),
        ("segments_free", s.segments_free),
        ("mixed_segments", s.mixed_segments),
        ("live_bytes", s.live_bytes),
        ("index_entries", s.index_entries),
        ("index_bytes", s.index_bytes),
        ("user_bytes_written", s.user_bytes_written),
        ("separator_bytes_written", s.separator_bytes_written),
        ("segments_handed_over", s.segments_handed_over),
        ("separator_memory_bytes", s.separator_memory_bytes),
        ("compaction_bytes_written", s.compaction_bytes_written),
        ("device_bytes_written", s.device_bytes_written),
        ("segments_reclaimed", s.segments_reclaimed),
        ("compaction_victims", s.compaction_victims),
        ("foreground_compaction_steps", s.foreground_compaction_steps),
        ("last_lsn", s.last_lsn),
        ("durable_lsn", s.durable_lsn),
        ("groups_count", s.groups.len() as u64),
    ];
    for (name, v) in fields {
        let _ = write!(o, "\"{name}\":{v},");
    }
    let _ = write!(o, "\"write_amplification\":{:.3},", write_amplification(s));
    o.push_str("\"groups\":[");
    for (i, g) in s.groups.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let hist: Vec<String> = g
            .utilization_histogram
            .iter()
            .map(|v| v.to_string())
            .collect();
        let _ = write!(
            o,
            "{{\"id\":{},\"root\":\"{}\",\"segments\":{},\"live_bytes\":{},\"utilization_histogram\":[{}]}}",
            g.id,
            json_escape(&group_root(roots, g.id)),
            g.segments,
            g.live_bytes,
            hist.join(",")
        );
    }
    o.push_str("]}");
    o
}

/// A human-readable rendering of the same figures.
pub fn stats_text(s: &EngineStats, roots: &HashMap<GroupId, String>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "capacity_bytes           {}", s.capacity_bytes);
    let _ = writeln!(o, "usable_capacity_bytes    {}", s.usable_capacity_bytes);
    let _ = writeln!(o, "segment_size_bytes       {}", s.segment_size_bytes);
    let _ = writeln!(o, "segments_total           {}", s.segments_total);
    let _ = writeln!(o, "segments_free            {}", s.segments_free);
    let _ = writeln!(o, "mixed_segments           {}", s.mixed_segments);
    let _ = writeln!(o, "live_bytes               {}", s.live_bytes);
    let _ = writeln!(o, "index_entries            {}", s.index_entries);
    let _ = writeln!(o, "index_bytes              {}", s.index_bytes);
    let _ = writeln!(o, "user_bytes_written       {}", s.user_bytes_written);
    let _ = writeln!(o, "separator_bytes_written  {}", s.separator_bytes_written);
    let _ = writeln!(o, "compaction_bytes_written {}", s.compaction_bytes_written);
    let _ = writeln!(o, "device_bytes_written     {}", s.device_bytes_written);
    let _ = writeln!(o, "segments_handed_over     {}", s.segments_handed_over);
    let _ = writeln!(o, "separator_memory_bytes   {}", s.separator_memory_bytes);
    let _ = writeln!(o, "segments_reclaimed       {}", s.segments_reclaimed);
    let _ = writeln!(o, "compaction_victims       {}", s.compaction_victims);
    let _ = writeln!(
        o,
        "foreground_compaction_steps {}",
        s.foreground_compaction_steps
    );
    let _ = writeln!(o, "write_amplification      {:.3}", write_amplification(s));
    for g in &s.groups {
        let _ = writeln!(
            o,
            "group {} root {} segments {} live_bytes {} histogram {:?}",
            g.id,
            group_root(roots, g.id),
            g.segments,
            g.live_bytes,
            g.utilization_histogram
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GroupStats;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(json_escape("a\"b\\c\n\u{1}"), "a\\\"b\\\\c\\n\\u0001");
    }

    #[test]
    fn json_has_required_fields_and_groups() {
        let s = EngineStats {
            capacity_bytes: 1 << 30,
            usable_capacity_bytes: 900 << 20,
            live_bytes: 77,
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
        };
        let roots = HashMap::from([(0, "/".to_string()), (4, "/a/\"q\"".to_string())]);
        let j = stats_json(&s, &roots);
        for f in [
            "\"capacity_bytes\":1073741824",
            "\"usable_capacity_bytes\":943718400",
            "\"live_bytes\":77",
            "\"segments_free\":0",
            "\"index_bytes\":0",
            "\"separator_bytes_written\":0",
            "\"compaction_bytes_written\":0",
            "\"groups\":[{\"id\":0,\"root\":\"/\",\"segments\":3,\"live_bytes\":70,\"utilization_histogram\":[1,0,0,0,0,0,0,0,0,2]},",
            "{\"id\":4,\"root\":\"/a/\\\"q\\\"\",\"segments\":1,",
            "{\"id\":5,\"root\":\"(merged)\",",
        ] {
            assert!(j.contains(f), "{f} missing from {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}'));
    }
}
