//! The stat cache `cache/audit-state.json`: what the last audits learned about each file, so a
//! re-audit of an unchanged tree only `stat`s (DESIGN §7).
//!
//! Per asset it keeps the file's (size, mtime ns, inode) with its hash, and the sidecar's (size,
//! mtime ns, inode) with the facts the rules need. A cached value is used only when all three stat
//! values are equal. Entries whose mtime is within 2 s of the start of the audit that observed them
//! are never stored ("racy": a second write in the same timestamp tick could leave size and mtime
//! unchanged, and some filesystems have 2 s granularity), so they are re-read next time.
//!
//! Safe to delete; a corrupt or foreign file is ignored with a debug note. Written with
//! `fs::write_atomic_nosync` (a rebuildable cache needs no fsync) and only when something changed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Facts, FileState, Scan, SidecarState};
use crate::registry::{FileStat, RelPath};

pub const SCHEMA: u32 = 1;

/// How close to the observing audit's start an mtime may be before the entry is not trusted.
pub const RACY_NS: i64 = 2_000_000_000;

/// (size, mtime ns, inode): compact on disk.
type Key = (u64, i64, u64);

fn key(s: &FileStat) -> Key {
    (s.size, s.mtime_ns, s.ino)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct Entry {
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    file: Option<(Key, String)>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    sidecar: Option<(Key, Facts)>,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    schema: u32,
    written_at: String,
    entries: HashMap<String, Entry>,
}

/// The loaded cache. Lookups answer only for identical stats.
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<String, Entry>,
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
        match serde_json::from_slice::<Doc>(&bytes) {
            Ok(doc) if doc.schema == SCHEMA => StatCache { entries: doc.entries, loaded: true },
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
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached hash of the asset at `rel` if its stat is unchanged.
    pub fn file(&self, rel: &str, stat: &FileStat) -> Option<&str> {
        self.entries.get(rel)?.file.as_ref().filter(|(k, _)| *k == key(stat)).map(|(_, h)| h.as_str())
    }

    /// The cached facts of the sidecar of `rel` if its stat is unchanged.
    pub fn sidecar(&self, rel: &str, stat: &FileStat) -> Option<&Facts> {
        self.entries.get(rel)?.sidecar.as_ref().filter(|(k, _)| *k == key(stat)).map(|(_, f)| f)
    }

    /// The uids recorded for assets outside `scope` (a scoped `--fix` must not reuse them).
    pub fn uids_outside(&self, scope: Option<&RelPath>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(rel, _)| !in_scope(rel, scope))
            .filter_map(|(_, e)| e.sidecar.as_ref().map(|(_, f)| f.uid.clone()))
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Record what `scan` observed (entries of its scope are replaced, vanished ones dropped).
    /// Returns true when the cache differs from what was loaded and should be saved.
    pub fn update(&mut self, scan: &Scan) -> bool {
        let mut changed = !self.loaded;
        let limit = scan.started_at_ns - RACY_NS;
        let settled = |s: &FileStat| s.mtime_ns < limit;
        let mut seen = std::collections::HashSet::with_capacity(scan.assets.len());
        for a in &scan.assets {
            let file = match &a.file {
                FileState::Hashed { hash, .. } if settled(&a.stat) => Some((key(&a.stat), hash.clone())),
                _ => None,
            };
            let sidecar = match (&a.sidecar, &a.sidecar_stat) {
                (SidecarState::Valid(f), Some(s)) if settled(s) => Some((key(s), f.clone())),
                _ => None,
            };
            let entry = Entry { file, sidecar };
            seen.insert(a.rel.as_str());
            match self.entries.get(a.rel.as_str()) {
                Some(old) if *old == entry => {}
                _ => {
                    changed = true;
                    if entry.file.is_none() && entry.sidecar.is_none() {
                        self.entries.remove(a.rel.as_str());
                    } else {
                        self.entries.insert(a.rel.to_string(), entry);
                    }
                }
            }
        }
        let before = self.entries.len();
        self.entries.retain(|rel, _| seen.contains(rel.as_str()) || !in_scope(rel, scan.scope.as_ref()));
        // From here on the caller is expected to save what it was told to.
        self.loaded = true;
        changed || self.entries.len() != before
    }

    /// Write the cache (atomic, no fsync).
    pub fn save(&self, path: &Path) -> Result<()> {
        let doc = Doc { schema: SCHEMA, written_at: crate::time::iso_now(), entries: self.entries.clone() };
        let bytes = serde_json::to_vec(&doc)?;
        crate::fs::write_atomic_nosync(path, &bytes)
    }
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
            fixable: vec![],
        }
    }

    fn scan(mtime_ns: i64, started_at_ns: i64) -> Scan {
        let stat = FileStat { size: 1, mtime_ns, ino: 7 };
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
        let stat = FileStat { size: 1, mtime_ns: 1_000, ino: 7 };
        assert_eq!(c.file("a.png", &stat), Some("h"));
        assert_eq!(c.sidecar("a.png", &stat), Some(&facts()));
        assert_eq!(c.file("a.png", &FileStat { ino: 8, ..stat }), None);
        let mut c = c;
        assert!(!c.update(&scan(1_000, 10_000_000_000)), "nothing changed");
        let mut racy = StatCache::default();
        racy.update(&scan(9_000_000_000, 10_000_000_000));
        assert!(racy.is_empty());
    }

    #[test]
    fn corrupt_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(StatCache::load(&path).is_empty());
        std::fs::write(&path, br#"{"schema": 99, "written_at": "", "entries": {}}"#).unwrap();
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
