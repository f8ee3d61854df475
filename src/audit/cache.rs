//! The stat cache `cache/audit-state.json`: what the last audits learned about each file, so a
//! re-audit of an unchanged tree only `stat`s (DESIGN §7).
//!
//! Per asset it keeps the file's (size, mtime ns, inode, ctime ns) with its hash, and the same for
//! the sidecar with the facts the rules need. A cached value is used only when all four stat values
//! are equal (the ctime also catches edits that restore the old mtime). Entries whose mtime or ctime
//! is within 2 s of the start of the audit that observed them are never stored ("racy": a second write in the same timestamp tick could leave size and mtime
//! unchanged, and some filesystems have 2 s granularity), so they are re-read next time.
//!
//! Safe to delete; a corrupt or foreign file is ignored with a debug note. Written with
//! `fs::write_atomic_nosync` (a rebuildable cache needs no fsync) and only when something changed.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{AssetState, Facts, FileState, Scan, SidecarState};
use crate::registry::sidecar::{self, LicenseStatus};
use crate::registry::{FileStat, RelPath};

/// 2: the facts carry `license_status` and whether there is an `attribution`.
pub const SCHEMA: u32 = 2;

/// How close to the observing audit's start an mtime or ctime may be before the entry is not stored.
pub const RACY_NS: i64 = 2_000_000_000;

/// (size, mtime ns, inode, ctime ns): compact on disk.
type Key = (u64, i64, u64, i64);

fn key(s: &FileStat) -> Key {
    (s.size, s.mtime_ns, s.ino, s.ctime_ns)
}

/// One asset, stored as a JSON array: `[rel, file part | null, sidecar part | null]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row(String, Option<FilePart>, Option<SidecarPart>);

/// `[size, mtime, ino, ctime, hash]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FilePart(u64, i64, u64, i64, String);

/// `[size, mtime, ino, ctime, facts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SidecarPart(u64, i64, u64, i64, Compact);

/// [`Facts`] without what can be derived: `null` for a uid equal to the hash's first 16 hex, a type
/// equal to the derived one, a recorded path equal to the asset's, a hash equal to the file's.
/// Flags: 1 = has tags, 2 = provenance source, 4 = bytes present, 8/16/24 = license status
/// verified/pending/rejected, 32 = attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Compact(
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    u64,
    Option<String>,
    u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")] Vec<String>,
);

impl Compact {
    fn of(f: &Facts, rel: &RelPath, file_hash: Option<&str>) -> Compact {
        let hash = (file_hash != Some(f.hash.as_str())).then(|| f.hash.clone());
        let uid = (f.hash.is_empty() || f.hash.get(..16) != Some(f.uid.as_str())).then(|| f.uid.clone());
        Compact(
            uid,
            (f.asset_type != sidecar::derived_type_of(rel.as_str())).then(|| f.asset_type.clone()),
            (f.recorded_path != rel.as_str()).then(|| f.recorded_path.clone()),
            hash,
            f.bytes.unwrap_or(0),
            f.license.clone(),
            Compact::flags(f),
            f.fixable.clone(),
        )
    }

    fn flags(f: &Facts) -> u8 {
        u8::from(f.has_tags)
            | (u8::from(f.provenance_source) << 1)
            | (u8::from(f.bytes.is_some()) << 2)
            | (match f.license_status {
                None => 0,
                Some(LicenseStatus::Verified) => 8,
                Some(LicenseStatus::Pending) => 16,
                Some(LicenseStatus::Rejected) => 24,
            })
            | (u8::from(f.has_attribution) << 5)
    }

    /// `*self == Compact::of(f, rel, file_hash)`, without building it: a re-audit compares every row.
    fn is_of(&self, f: &Facts, rel: &RelPath, file_hash: Option<&str>) -> bool {
        // A field stored only when it differs from what can be derived.
        fn same(stored: &Option<String>, differs: bool, value: &str) -> bool {
            match stored {
                Some(s) => differs && s == value,
                None => !differs,
            }
        }
        same(&self.0, f.hash.is_empty() || f.hash.get(..16) != Some(f.uid.as_str()), &f.uid)
            && same(&self.1, f.asset_type != sidecar::derived_type_of(rel.as_str()), &f.asset_type)
            && same(&self.2, f.recorded_path != rel.as_str(), &f.recorded_path)
            && same(&self.3, file_hash != Some(f.hash.as_str()), &f.hash)
            && self.4 == f.bytes.unwrap_or(0)
            && self.5 == f.license
            && self.6 == Compact::flags(f)
            && self.7 == f.fixable
    }

    fn facts(&self, rel: &str, file_hash: Option<&str>) -> Option<Facts> {
        let hash = match (&self.3, file_hash) {
            (Some(h), _) => h.clone(),
            (None, Some(h)) => h.to_string(),
            (None, None) => return None,
        };
        let uid = match &self.0 {
            Some(u) => u.clone(),
            None => hash.get(..16)?.to_string(),
        };
        let asset_type = match &self.1 {
            Some(t) => t.clone(),
            None => sidecar::derived_type_of(rel).to_string(),
        };
        Some(Facts {
            uid,
            asset_type,
            recorded_path: self.2.clone().unwrap_or_else(|| rel.to_string()),
            hash,
            bytes: (self.6 & 4 != 0).then_some(self.4),
            license: self.5.clone(),
            has_tags: self.6 & 1 != 0,
            provenance_source: self.6 & 2 != 0,
            license_status: match self.6 & 24 {
                8 => Some(LicenseStatus::Verified),
                16 => Some(LicenseStatus::Pending),
                24 => Some(LicenseStatus::Rejected),
                _ => None,
            },
            has_attribution: self.6 & 32 != 0,
            fixable: self.7.clone(),
        })
    }
}

/// One asset's cached row (see [`StatCache::entry`]).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a>(&'a Row);

impl<'a> Entry<'a> {
    /// The cached hash of the asset if its stat is unchanged.
    pub fn file(self, stat: &FileStat) -> Option<&'a str> {
        let f = self.0 .1.as_ref()?;
        ((f.0, f.1, f.2, f.3) == key(stat)).then_some(f.4.as_str())
    }

    /// The cached facts of the asset's sidecar if the sidecar's stat is unchanged.
    pub fn sidecar(self, stat: &FileStat) -> Option<Facts> {
        let row = self.0;
        let s = row.2.as_ref()?;
        if (s.0, s.1, s.2, s.3) != key(stat) {
            return None;
        }
        s.4.facts(&row.0, row.1.as_ref().map(|f| f.4.as_str()))
    }
}

#[derive(Serialize, Deserialize)]
struct Doc {
    schema: u32,
    written_at: String,
    /// Sorted by path.
    rows: Vec<Row>,
}

/// The loaded cache, sorted by path. Lookups answer only for identical stats.
#[derive(Debug, Default)]
pub struct StatCache {
    rows: Vec<Row>,
    /// True when loaded from a valid file (otherwise the first audit always writes one).
    loaded: bool,
}

impl StatCache {
    /// Load `path`; missing, corrupt or foreign files give an empty cache.
    pub fn load(path: &Path) -> StatCache {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), error = %e, "audit cache unreadable; starting empty");
                }
                return StatCache::default();
            }
        };
        match parse(&bytes) {
            Ok(doc) if doc.schema == SCHEMA => {
                let mut rows = doc.rows;
                if !rows.is_sorted_by(|a, b| a.0 < b.0) {
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                    rows.dedup_by(|a, b| a.0 == b.0);
                }
                StatCache { rows, loaded: true }
            }
            Ok(doc) => {
                tracing::debug!(path = %path.display(), schema = doc.schema, "audit cache has another schema; ignored");
                StatCache::default()
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "audit cache is corrupt; ignored");
                StatCache::default()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `rel`, tried first at index `*next` (a scan asks in path order, so it is usually
    /// the row after the one it asked for before), else found by binary search; `*next` then points
    /// past it.
    pub fn entry(&self, rel: &str, next: &mut usize) -> Option<Entry<'_>> {
        let i = match self.rows.get(*next) {
            Some(r) if r.0 == rel => *next,
            _ => self.rows.binary_search_by(|r| r.0.as_str().cmp(rel)).ok()?,
        };
        *next = i + 1;
        Some(Entry(&self.rows[i]))
    }

    /// The cached hash of the asset at `rel` if its stat is unchanged.
    pub fn file(&self, rel: &str, stat: &FileStat) -> Option<&str> {
        self.entry(rel, &mut { usize::MAX })?.file(stat)
    }

    /// The cached facts of the sidecar of `rel` if its stat is unchanged.
    pub fn sidecar(&self, rel: &str, stat: &FileStat) -> Option<Facts> {
        self.entry(rel, &mut { usize::MAX })?.sidecar(stat)
    }

    /// The uids recorded for assets outside `scope` (a scoped `--fix` must not reuse them).
    pub fn uids_outside(&self, scope: Option<&RelPath>) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !in_scope(&r.0, scope))
            .filter_map(|r| r.2.as_ref().and_then(|s| s.4.facts(&r.0, r.1.as_ref().map(|f| f.4.as_str()))))
            .map(|f| f.uid)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Record what `scan` observed (rows of its scope are replaced, vanished ones dropped). Returns
    /// true when the cache changed and should be saved. Only settled values are stored: a stat whose
    /// mtime or ctime is within [`RACY_NS`] of the scan's start is not trusted next time.
    pub fn update(&mut self, scan: &Scan) -> bool {
        let current = self.is_current(scan);
        self.loaded = true;
        if current {
            return false;
        }
        let limit = scan.started_at_ns - RACY_NS;
        let expected = scan.assets.iter().filter(|a| !matches!(parts(a, limit), (None, None))).count();
        // Keep rows outside the scope that the scan did not see (a single-file scope sees the asset
        // of a sidecar outside its literal path).
        let seen = |rel: &str| scan.assets.binary_search_by(|a| a.rel.as_str().cmp(rel)).is_ok();
        let mut rows: Vec<Row> =
            std::mem::take(&mut self.rows).into_iter().filter(|r| !scan.covers(&r.0) && !seen(&r.0)).collect();
        rows.reserve(expected);
        for a in &scan.assets {
            let (file, side) = parts(a, limit);
            if file.is_none() && side.is_none() {
                continue;
            }
            let file_hash = file.map(|(_, h)| h);
            let file_part = file.map(|(s, h)| FilePart(s.size, s.mtime_ns, s.ino, s.ctime_ns, h.to_string()));
            let side_part = side
                .map(|(s, f)| SidecarPart(s.size, s.mtime_ns, s.ino, s.ctime_ns, Compact::of(f, &a.rel, file_hash)));
            rows.push(Row(a.rel.as_str().to_owned(), file_part, side_part));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        self.rows = rows;
        true
    }

    /// True when [`StatCache::update`] would change nothing: the cache was loaded from a valid file,
    /// every settled part the scan saw is on record as it is, and no other row is in the scan's
    /// scope. One pass over both lists, each sorted by path.
    pub fn is_current(&self, scan: &Scan) -> bool {
        if !self.loaded {
            return false;
        }
        let limit = scan.started_at_ns - RACY_NS;
        let mut expected = 0;
        let mut i = 0;
        for a in &scan.assets {
            let (file, side) = parts(a, limit);
            if file.is_none() && side.is_none() {
                continue;
            }
            expected += 1;
            let rel = a.rel.as_str();
            while self.rows.get(i).is_some_and(|r| r.0.as_str() < rel) {
                i += 1;
            }
            match self.rows.get(i) {
                Some(r) if r.0 == rel && row_matches(r, a, file, side) => i += 1,
                _ => return false,
            }
        }
        expected == self.rows.iter().filter(|r| scan.covers(&r.0)).count()
    }

    /// Write the cache (atomic, no fsync).
    pub fn save(&self, path: &Path) -> Result<()> {
        #[derive(Serialize)]
        struct DocRef<'a> {
            schema: u32,
            written_at: String,
            rows: &'a [Row],
        }
        let doc = DocRef { schema: SCHEMA, written_at: crate::time::iso_now(), rows: &self.rows };
        // About 250 bytes a row: sized up front, so the buffer is not regrown (copied) ~20 times.
        let mut bytes = Vec::with_capacity(64 + self.rows.len() * 256);
        // One row a line: what lets `load` parse the rows in parallel (see [`parse`]).
        doc.serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, crate::fs::ListsFormatter::default()))?;
        bytes.push(b'\n');
        crate::fs::write_atomic_nosync(path, &bytes)
    }
}

/// Parse a cache file. The layout [`StatCache::save`] writes (the header fields a line each, then one
/// row a line) is parsed a row at a time, on every core: 100,000 rows are 25 MB of JSON, the
/// longest step of a re-audit that finds nothing changed before the walk starts. Any other layout
/// (an older compact file, a hand-edited one) is parsed as one document; so is a file whose lines
/// do not each hold exactly one row, which then gives the same result or the same error.
fn parse(bytes: &[u8]) -> serde_json::Result<Doc> {
    match parse_lines(bytes) {
        Some(doc) => Ok(doc),
        None => serde_json::from_slice(bytes),
    }
}

/// The line-by-line parse of [`parse`], or `None` when the file is not laid out one row a line.
fn parse_lines(bytes: &[u8]) -> Option<Doc> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Deserialize)]
    struct Header {
        schema: u32,
        written_at: String,
    }
    const OPEN: &[u8] = b"\n  \"rows\": [\n";
    const CLOSE: &[u8] = b"\n  ]\n}";
    // The header is a line or two at the start: the search never scans a compact file's rows.
    let head = &bytes[..bytes.len().min(1024)];
    let at = head.windows(OPEN.len()).position(|w| w == OPEN)?;
    let mut header = bytes[..at].strip_suffix(b",")?.to_vec();
    header.extend_from_slice(b"\n}");
    let header: Header = serde_json::from_slice(&header).ok()?;
    if header.schema != SCHEMA {
        // Ignored whatever its rows hold.
        return Some(Doc { schema: header.schema, written_at: header.written_at, rows: Vec::new() });
    }
    let body = bytes[at + OPEN.len()..].trim_ascii_end().strip_suffix(CLOSE)?;
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    let failed = AtomicBool::new(false);
    let mut rows = Vec::new();
    lines
        .par_iter()
        .enumerate()
        .map(|(i, line)| {
            let line = line.trim_ascii_start();
            // Every row but the last ends with the comma that separates it from the next.
            let row = if i == last { Some(line) } else { line.strip_suffix(b",") };
            row.and_then(|r| serde_json::from_slice::<Row>(r).ok()).unwrap_or_else(|| {
                failed.store(true, Ordering::Relaxed);
                Row(String::new(), None, None)
            })
        })
        .collect_into_vec(&mut rows);
    (!failed.into_inner()).then_some(Doc { schema: header.schema, written_at: header.written_at, rows })
}

type FileView<'a> = Option<(&'a FileStat, &'a str)>;
type SidecarView<'a> = Option<(&'a FileStat, &'a Facts)>;

/// The settled parts of what the scan saw for one asset.
fn parts(a: &AssetState, limit: i64) -> (FileView<'_>, SidecarView<'_>) {
    let file = match &a.file {
        FileState::Hashed { hash, .. } if a.stat.changed_ns() < limit => Some((&a.stat, hash.as_str())),
        _ => None,
    };
    let side = match (&a.sidecar, &a.sidecar_stat) {
        (SidecarState::Valid(f), Some(s)) if s.changed_ns() < limit => Some((s, f)),
        _ => None,
    };
    (file, side)
}

fn row_matches(r: &Row, a: &AssetState, file: FileView, side: SidecarView) -> bool {
    let file_ok = match (&r.1, file) {
        (None, None) => true,
        (Some(f), Some((s, h))) => (f.0, f.1, f.2, f.3) == key(s) && f.4 == h,
        _ => false,
    };
    let side_ok = match (&r.2, side) {
        (None, None) => true,
        (Some(p), Some((s, facts))) => (p.0, p.1, p.2, p.3) == key(s) && p.4.is_of(facts, &a.rel, file.map(|(_, h)| h)),
        _ => false,
    };
    file_ok && side_ok
}

fn in_scope(rel: &str, scope: Option<&RelPath>) -> bool {
    match scope {
        None => true,
        Some(s) => rel == s.as_str() || rel.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AssetState;

    fn facts() -> Facts {
        Facts {
            uid: "u".into(),
            asset_type: "image".into(),
            recorded_path: "a.png".into(),
            hash: "h".into(),
            bytes: Some(1),
            license: None,
            has_tags: false,
            provenance_source: false,
            license_status: Some(LicenseStatus::Rejected),
            has_attribution: true,
            fixable: vec![],
        }
    }

    fn scan(mtime_ns: i64, started_at_ns: i64) -> Scan {
        let stat = FileStat { size: 1, mtime_ns, ino: 7, ctime_ns: mtime_ns };
        Scan {
            assets: vec![AssetState {
                rel: RelPath::parse("a.png").unwrap(),
                stat,
                file: FileState::Hashed { hash: "h".into(), bytes: 1 },
                file_cached: false,
                sidecar: SidecarState::Valid(facts()),
                sidecar_stat: Some(stat),
                sidecar_cached: false,
            }],
            started_at_ns,
            ..Scan::default()
        }
    }

    #[test]
    fn settled_entries_round_trip_and_racy_ones_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        let mut c = StatCache::load(&path);
        assert!(c.update(&scan(1_000, 10_000_000_000)));
        c.save(&path).unwrap();
        let c = StatCache::load(&path);
        let stat = FileStat { size: 1, mtime_ns: 1_000, ino: 7, ctime_ns: 1_000 };
        assert_eq!(c.file("a.png", &stat), Some("h"));
        assert_eq!(c.sidecar("a.png", &stat), Some(facts()));
        assert_eq!(c.file("a.png", &FileStat { ino: 8, ..stat }), None);
        let mut c = c;
        assert!(!c.update(&scan(1_000, 10_000_000_000)), "nothing changed");
        let mut racy = StatCache::default();
        racy.update(&scan(9_000_000_000, 10_000_000_000));
        assert!(racy.is_empty());
    }

    #[test]
    fn derivable_facts_are_elided_and_restored() {
        let hash = "ab".repeat(32);
        let rel = RelPath::parse("characters/hero.png").unwrap();
        let f = Facts {
            uid: hash[..16].to_string(),
            asset_type: "characters".into(),
            recorded_path: rel.to_string(),
            hash: hash.clone(),
            bytes: Some(9),
            license: Some("MIT".into()),
            has_tags: true,
            provenance_source: false,
            license_status: None,
            has_attribution: false,
            fixable: vec![],
        };
        let c = Compact::of(&f, &rel, Some(&hash));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"[null,null,null,null,9,"MIT",5]"#);
        assert_eq!(c.facts(rel.as_str(), Some(&hash)), Some(f.clone()));
        for (status, flags) in
            [(LicenseStatus::Verified, 8 + 32), (LicenseStatus::Pending, 16 + 32), (LicenseStatus::Rejected, 24 + 32)]
        {
            let g = Facts { license_status: Some(status), has_attribution: true, ..f.clone() };
            let c = Compact::of(&g, &rel, Some(&hash));
            assert_eq!(c.6, 5 + flags);
            assert_eq!(c.facts(rel.as_str(), Some(&hash)), Some(g));
        }
        // Without the file's hash the sidecar's own is kept.
        let alone = Compact::of(&f, &rel, None);
        assert_eq!(alone.facts(rel.as_str(), None), Some(f));
    }

    #[test]
    fn is_of_agrees_with_building_the_compact_form() {
        let hash = "cd".repeat(32);
        let rel = RelPath::parse("bg/a.png").unwrap();
        let base = Facts {
            uid: hash[..16].into(),
            asset_type: "bg".into(),
            recorded_path: rel.to_string(),
            hash: hash.clone(),
            ..facts()
        };
        let variants = [
            base.clone(),
            Facts { uid: "other".into(), ..base.clone() },
            Facts { asset_type: "image".into(), ..base.clone() },
            Facts { recorded_path: "old/a.png".into(), ..base.clone() },
            Facts { hash: "ef".repeat(32), ..base.clone() },
            Facts { bytes: None, ..base.clone() },
            Facts { license: Some("MIT".into()), ..base.clone() },
            Facts { has_tags: true, license_status: None, ..base.clone() },
            Facts { fixable: vec!["path: moved".into()], ..base.clone() },
        ];
        for (i, stored) in variants.iter().enumerate() {
            for file_hash in [Some(hash.as_str()), None] {
                let c = Compact::of(stored, &rel, file_hash);
                for (j, seen) in variants.iter().enumerate() {
                    assert_eq!(c.is_of(seen, &rel, file_hash), c == Compact::of(seen, &rel, file_hash), "{i} vs {j}");
                }
                assert!(c.is_of(stored, &rel, file_hash));
            }
        }
    }

    #[test]
    fn a_cache_is_current_only_when_loaded_and_every_row_is_what_the_scan_saw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        let seen = scan(1_000, 10_000_000_000);
        let mut c = StatCache::load(&path);
        assert!(!c.is_current(&seen), "nothing loaded");
        c.update(&seen);
        c.save(&path).unwrap();
        let c = StatCache::load(&path);
        assert!(c.is_current(&seen));
        let mut edited = scan(2_000, 10_000_000_000);
        assert!(!c.is_current(&edited), "another mtime");
        edited = scan(1_000, 10_000_000_000);
        edited.assets[0].sidecar = SidecarState::Valid(Facts { has_tags: true, ..facts() });
        assert!(!c.is_current(&edited), "other facts");
        let mut vanished = scan(1_000, 10_000_000_000);
        vanished.assets.clear();
        assert!(!c.is_current(&vanished), "a row the scan did not see");
        let mut added = scan(1_000, 10_000_000_000);
        let mut b = added.assets[0].clone();
        b.rel = RelPath::parse("b.png").unwrap();
        added.assets.push(b);
        assert!(!c.is_current(&added), "an asset without a row");
    }

    fn two_rows() -> StatCache {
        let mut c = StatCache::default();
        let mut seen = scan(1_000, 10_000_000_000);
        let mut b = seen.assets[0].clone();
        // A name whose JSON form has escapes and non-ASCII text.
        b.rel = RelPath::parse("b \"quoted\" \u{e9}t\u{e9}.png").unwrap();
        seen.assets.push(b);
        c.update(&seen);
        c
    }

    #[test]
    fn the_cache_is_written_one_row_a_line_and_read_back_a_line_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        let c = two_rows();
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "{");
        assert_eq!(lines[1], r#"  "schema": 2,"#);
        assert!(lines[2].starts_with(r#"  "written_at": ""#));
        assert_eq!(lines[3], r#"  "rows": ["#);
        assert!(
            lines[4].starts_with(r#"    ["a.png",[1,1000,7,1000,"h"],"#) && lines[4].ends_with(','),
            "{}",
            lines[4]
        );
        assert!(lines[5].starts_with(r#"    ["b"#) && lines[5].ends_with("]]"), "{}", lines[5]);
        assert_eq!(&lines[6..], ["  ]", "}"]);
        let by_lines = parse_lines(text.as_bytes()).expect("the layout save writes");
        let whole: Doc = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(by_lines.rows, whole.rows);
        assert_eq!(by_lines.rows, c.rows);
        assert_eq!(StatCache::load(&path).rows, c.rows);
    }

    #[test]
    fn other_layouts_are_read_as_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        let c = two_rows();
        let rows = serde_json::to_string(&c.rows).unwrap();
        // The compact file of earlier versions, and rows that do not keep to a line each.
        let compact = format!(r#"{{"schema":2,"written_at":"","rows":{rows}}}"#);
        let inner = rows.strip_prefix('[').unwrap().strip_suffix(']').unwrap();
        let shared = format!("{{\n  \"schema\": 2,\n  \"written_at\": \"\",\n  \"rows\": [\n    {inner}\n  ]\n}}\n");
        for text in [compact, shared] {
            assert!(parse_lines(text.as_bytes()).is_none(), "{text}");
            std::fs::write(&path, &text).unwrap();
            let loaded = StatCache::load(&path);
            assert!(loaded.loaded);
            assert_eq!(loaded.rows, c.rows, "{text}");
        }
        // A damaged row is a damaged file, however it is laid out.
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap().replacen(r#"[1,1000,7,1000,"h"]"#, r#"[1,1000,7,"h"]"#, 1);
        std::fs::write(&path, text).unwrap();
        assert!(!StatCache::load(&path).loaded);
    }

    #[test]
    fn corrupt_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(StatCache::load(&path).is_empty());
        std::fs::write(&path, br#"{"schema": 99, "written_at": "", "rows": []}"#).unwrap();
        assert!(!StatCache::load(&path).loaded);
    }

    #[test]
    fn scope_keeps_entries_outside() {
        let s = RelPath::parse("bg").unwrap();
        assert!(in_scope("bg/a.png", Some(&s)));
        assert!(!in_scope("bgx/a.png", Some(&s)));
        assert!(in_scope("anything", None));
    }
}
