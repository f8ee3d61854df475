//! The watcher's small durable state under `<data>/watch/`: the pending-actions journal and the lock
//! that keeps two watchers off one runtime root.
//!
//! Why a journal: a sidecar is written before its hook events are appended to the history, so a
//! watcher killed between the two leaves a correct sidecar whose registration never reached the
//! history, and a reconcile would find nothing to do. The journal lists the actions of a chunk before
//! they run and is removed once their events are in the history; a watcher that starts and finds it
//! replays the events of every action whose effect is on disk. A crash therefore costs at most a
//! duplicate event, never a missing one.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::sink::Action;

const SCHEMA: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    schema: u32,
    pid: u32,
    actions: Vec<Action>,
}

/// `<data>/watch/pending.json`.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal { path: state_dir.join("pending.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record the actions about to run. Atomic but not fsynced: it protects against a killed process
    /// (the page cache survives), and the history it guards is not fsynced either.
    pub fn begin(&self, actions: &[Action]) -> Result<()> {
        let doc = Doc { schema: SCHEMA, pid: std::process::id(), actions: actions.to_vec() };
        crate::fs::write_atomic_nosync(&self.path, &crate::fs::to_pretty_json(&doc)?)
    }

    /// The actions' events are in the history: forget them.
    pub fn commit(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.path.display())),
        }
    }

    /// The actions left by a watcher that did not finish (empty when none). A journal that cannot be
    /// read is moved aside (never silently dropped) and treated as empty; the reconcile that follows
    /// brings the sidecars in line anyway.
    pub fn take(&self) -> Result<Vec<Action>> {
        let value = match crate::fs::read_json_opt(&self.path) {
            Ok(None) => return Ok(Vec::new()),
            Ok(Some(v)) => v,
            Err(e) => {
                let moved = crate::fs::quarantine(&self.path)?;
                tracing::warn!(error = %format!("{e:#}"), moved = %moved.display(), "unreadable watch journal moved aside");
                return Ok(Vec::new());
            }
        };
        match serde_json::from_value::<Doc>(value) {
            Ok(doc) if doc.schema == SCHEMA => Ok(doc.actions),
            Ok(doc) => bail!("{}: unsupported schema {} (expected {SCHEMA})", self.path.display(), doc.schema),
            Err(e) => {
                let moved = crate::fs::quarantine(&self.path)?;
                tracing::warn!(error = %e, moved = %moved.display(), "malformed watch journal moved aside");
                Ok(Vec::new())
            }
        }
    }
}

/// An exclusive lock on `<data>/watch/lock`, held while a watcher runs on this runtime root. Two
/// watchers on one root would register every file twice.
#[derive(Debug)]
pub struct WatchLock {
    _file: File,
}

impl WatchLock {
    pub fn acquire(state_dir: &Path) -> Result<WatchLock> {
        let path = state_dir.join("lock");
        let file = crate::fs::open_append(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(WatchLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(crate::exit_code::hinted(
                format!("another watcher is already running on this runtime root (it holds {})", path.display()),
                "stop it first (`comfyvn-obs serve` runs one too, unless started with --no-watch)",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::sink::Known;

    #[test]
    fn journal_round_trips_and_commit_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        assert!(j.take().unwrap().is_empty());
        let actions = vec![
            Action::Register { path: "/a/x.png".into(), hash: "ab".into(), bytes: 2 },
            Action::Remove {
                path: "/a/y.png".into(),
                known: Known { uid: "u".into(), hash: "h".into(), bytes: 1 },
                away: false,
            },
        ];
        j.begin(&actions).unwrap();
        assert_eq!(j.take().unwrap(), actions);
        j.commit().unwrap();
        assert!(j.take().unwrap().is_empty());
        j.commit().unwrap();
    }

    #[test]
    fn a_torn_journal_is_kept_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        std::fs::write(j.path(), "{\"schema\": 1, \"act").unwrap();
        assert!(j.take().unwrap().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("pending.json.corrupt-")), "{names:?}");
    }

    #[test]
    fn the_lock_refuses_a_second_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let first = WatchLock::acquire(dir.path()).unwrap();
        let err = WatchLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another watcher"), "{err}");
        drop(first);
        WatchLock::acquire(dir.path()).unwrap();
    }
}
