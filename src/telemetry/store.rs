//! The telemetry store `logs/telemetry/usage.json` (DESIGN §4): counters, the events ring, hook samples
//! and crash digests of this installation.
//!
//! Owns that file and its lock file `usage.lock`, nothing else. Every change is read-modify-write under
//! an exclusive lock and written atomically, so concurrent processes never lose each other's updates and
//! a reader never sees a torn file. Values arrive here already anonymised: this module does not hash.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::anonymise::Redactions;
use crate::paths::Paths;

pub const SCHEMA: u32 = 1;
/// Ring sizes (the original's).
pub const EVENTS_KEEP: usize = 200;
pub const HOOK_SAMPLES_KEEP: usize = 5;
pub const CRASHES_KEEP: usize = 50;

/// The whole document. Unknown top-level keys (from a newer version or the original) are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default = "schema_version")]
    pub schema: u32,
    #[serde(default)]
    pub anonymous_id: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub features: BTreeMap<String, FeatureStat>,
    #[serde(default)]
    pub events: VecDeque<EventRecord>,
    #[serde(default)]
    pub hooks: BTreeMap<String, HookStat>,
    #[serde(default)]
    pub crashes: VecDeque<CrashDigest>,
    /// Redactions applied to recorded payloads so far, by rule (reported in `redactions.json`).
    #[serde(default)]
    pub redactions: Redactions,
    #[serde(default)]
    pub meta: Meta,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn schema_version() -> u32 {
    SCHEMA
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FeatureStat {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub last_ts: Option<String>,
    #[serde(default)]
    pub variants: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub event: String,
    #[serde(default = "default_category")]
    pub category: String,
    pub ts: String,
    #[serde(default)]
    pub payload: Value,
}

fn default_category() -> String {
    "custom".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HookStat {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub last_ts: Option<String>,
    #[serde(default)]
    pub samples: VecDeque<HookSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookSample {
    pub ts: String,
    #[serde(default)]
    pub payload: Value,
}

/// A crash, as telemetry keeps it: only the hashed report name and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrashDigest {
    pub report: String,
    pub ts: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub settings_updated_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// An empty document created now.
    pub fn fresh() -> Usage {
        Usage {
            schema: SCHEMA,
            anonymous_id: String::new(),
            app_version: super::APP_VERSION.to_string(),
            features: BTreeMap::new(),
            events: VecDeque::new(),
            hooks: BTreeMap::new(),
            crashes: VecDeque::new(),
            redactions: Redactions::new(),
            meta: Meta { created_at: Some(crate::time::iso_now()), ..Meta::default() },
            extra: Map::new(),
        }
    }

    pub fn record_feature(&mut self, name: &str, variant: Option<&str>, ts: &str) {
        let stat = self.features.entry(name.to_string()).or_default();
        stat.total += 1;
        stat.last_ts = Some(ts.to_string());
        if let Some(v) = variant {
            *stat.variants.entry(v.to_string()).or_default() += 1;
        }
    }

    pub fn record_event(&mut self, record: EventRecord) {
        push_ring(&mut self.events, record, EVENTS_KEEP);
    }

    pub fn record_hook(&mut self, name: &str, payload: Value, ts: &str) {
        let stat = self.hooks.entry(name.to_string()).or_default();
        stat.total += 1;
        stat.last_ts = Some(ts.to_string());
        push_ring(&mut stat.samples, HookSample { ts: ts.to_string(), payload }, HOOK_SAMPLES_KEEP);
    }

    pub fn record_crash(&mut self, digest: CrashDigest) {
        push_ring(&mut self.crashes, digest, CRASHES_KEEP);
    }

    pub fn add_redactions(&mut self, counts: &Redactions) {
        super::anonymise::add_redactions(&mut self.redactions, counts);
    }
}

fn push_ring<T>(ring: &mut VecDeque<T>, item: T, keep: usize) {
    ring.push_back(item);
    while ring.len() > keep {
        ring.pop_front();
    }
}

/// A broken `usage.json` that was moved aside: where it went and why it was unusable.
#[derive(Debug, Clone)]
pub struct Recreated {
    pub file: PathBuf,
    pub moved_to: PathBuf,
    pub reason: String,
}

thread_local! {
    /// Set while this thread holds the store lock, so the panic hook does not try to take it again
    /// (a second `flock` from the same process on a new handle would wait forever).
    static HOLDING_LOCK: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside [`Store::update`].
pub fn lock_held_by_this_thread() -> bool {
    HOLDING_LOCK.try_with(Cell::get).unwrap_or(true)
}

/// The store file and its lock.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

struct LockGuard {
    _file: File,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = HOLDING_LOCK.try_with(|h| h.set(false));
    }
}

impl Store {
    pub fn new(paths: &Paths) -> Store {
        Store { path: paths.telemetry_file() }
    }

    pub fn at(path: PathBuf) -> Store {
        Store { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<LockGuard> {
        let lock_path = self.path.with_file_name("usage.lock");
        let file = crate::fs::open_append(&lock_path)?;
        file.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let _ = HOLDING_LOCK.try_with(|h| h.set(true));
        Ok(LockGuard { _file: file })
    }

    /// The current document without writing, unless the file is corrupt: then it is moved aside and a
    /// fresh one written (under the lock), and the second value says so. A missing file reads as a fresh,
    /// unsaved document.
    pub fn load(&self) -> Result<(Usage, Option<Recreated>)> {
        match read(&self.path) {
            Ok(Some(u)) => Ok((u, None)),
            Ok(None) => Ok((Usage::fresh(), None)),
            // Re-checked under the lock: another process may have repaired it meanwhile.
            Err(_) => self.update(|u| u.clone()),
        }
    }

    /// Read-modify-write under the lock. A corrupt file is moved aside and replaced by a fresh document
    /// before `edit` runs.
    pub fn update<T>(&self, edit: impl FnOnce(&mut Usage) -> T) -> Result<(T, Option<Recreated>)> {
        let _guard = self.lock()?;
        let mut recreated = None;
        let mut usage = match read(&self.path) {
            Ok(Some(u)) => u,
            Ok(None) => Usage::fresh(),
            Err(problem) => {
                let moved_to = crate::fs::quarantine(&self.path)?;
                recreated = Some(Recreated { file: self.path.clone(), moved_to, reason: format!("{problem:#}") });
                Usage::fresh()
            }
        };
        let out = edit(&mut usage);
        crate::fs::write_json_atomic(&self.path, &usage)?;
        Ok((out, recreated))
    }
}

/// `Ok(None)` when absent; an error when the file is not a usable document.
fn read(path: &Path) -> Result<Option<Usage>> {
    let Some(doc) = crate::fs::read_json_opt(path)? else { return Ok(None) };
    serde_path_to_error::deserialize(doc)
        .map(Some)
        .map_err(|e| anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn rings_are_bounded() {
        let mut u = Usage::fresh();
        for i in 0..(EVENTS_KEEP + 10) {
            u.record_event(EventRecord {
                event: format!("e{i}"),
                category: "custom".into(),
                ts: "t".into(),
                payload: json!({}),
            });
        }
        assert_eq!(u.events.len(), EVENTS_KEEP);
        assert_eq!(u.events.front().unwrap().event, "e10");
        for i in 0..8 {
            u.record_hook("on_x", json!({"i": i}), "t");
        }
        assert_eq!(u.hooks["on_x"].total, 8);
        assert_eq!(u.hooks["on_x"].samples.len(), HOOK_SAMPLES_KEEP);
        assert_eq!(u.hooks["on_x"].samples[0].payload["i"], 3);
        for i in 0..60 {
            u.record_crash(CrashDigest { report: format!("r{i}"), ts: "t".into() });
        }
        assert_eq!(u.crashes.len(), CRASHES_KEEP);
        u.record_feature("f", Some("a"), "t1");
        u.record_feature("f", None, "t2");
        assert_eq!(u.features["f"].total, 2);
        assert_eq!(u.features["f"].variants["a"], 1);
        assert_eq!(u.features["f"].last_ts.as_deref(), Some("t2"));
    }

    #[test]
    fn corrupt_file_is_quarantined_and_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("usage.json"));
        std::fs::write(store.path(), "{\"features\": 12}").unwrap();
        let (usage, recreated) = store.load().unwrap();
        let r = recreated.unwrap();
        assert!(r.reason.contains("features"), "{}", r.reason);
        assert_eq!(std::fs::read_to_string(&r.moved_to).unwrap(), "{\"features\": 12}");
        assert!(usage.features.is_empty());
        // The recreated file is valid now.
        assert!(store.load().unwrap().1.is_none());
    }

    #[test]
    fn unknown_keys_and_original_documents_survive_an_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("usage.json"));
        std::fs::write(store.path(), r#"{"features": {"toolkit.launch": {"total": 2}}, "legacy": [1]}"#).unwrap();
        store.update(|u| u.record_feature("toolkit.launch", None, "t")).unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(doc["features"]["toolkit.launch"]["total"], 3);
        assert_eq!(doc["legacy"], json!([1]));
        assert_eq!(doc["schema"], SCHEMA);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("usage.json"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        s.update(|u| u.record_feature("f", None, "t")).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(store.load().unwrap().0.features["f"].total, 100);
    }

    #[test]
    fn a_reader_never_sees_a_half_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("usage.json"));
        store.update(|_| ()).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (store.path().to_path_buf(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let doc: Usage = serde_json::from_str(&text).unwrap_or_else(|e| panic!("torn read ({e}): {text}"));
                    assert_eq!(doc.schema, SCHEMA);
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..150 {
            // Payloads of varying size make a torn write visible as invalid JSON.
            let payload = json!({"blob": "x".repeat(i * 37 % 2000)});
            store
                .update(|u| {
                    u.record_event(EventRecord {
                        event: "e".into(),
                        category: "custom".into(),
                        ts: "t".into(),
                        payload,
                    })
                })
                .unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
