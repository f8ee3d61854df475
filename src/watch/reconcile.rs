//! Reconcile: compare the files under the watched folders with their sidecars and plan the actions
//! that bring them in line, on start and after the event source lost events (queue overflow, watcher
//! error, switch to polling).
//!
//! Semantics follow `audit --fix` (a missing sidecar is written, stale machine fields are refreshed,
//! human fields are kept) plus what only a watcher can do: an orphan sidecar whose content reappeared
//! under another name (a rename while the watcher was down) moves to the new name, and any other
//! orphan goes to the trash as a removal. The plan is made of ordinary [`Action`]s so it runs through
//! the same journaled, batched path as live events.
//!
//! Cost: a sidecar written after its file's last modification, with the right `bytes`, is trusted
//! without hashing (the same shortcut as the audit's stat cache); everything else is hashed, in
//! parallel. Files modified within the settle window may still be being written: they are handed to
//! the settle tracker instead of being hashed now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;
use serde::Serialize;

use super::disk::{Disk, Stat};
use super::plan::{probe, Probe};
use super::rules::{sidecar_of, Class, Rules};
use super::sink::{Action, Known, Sink};

/// Counts published with `obs.watch_rescanned`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RescanCounts {
    pub registered: usize,
    pub updated: usize,
    pub moved: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Unreadable files or folders, invalid sidecars, failed actions.
    pub errors: usize,
}

/// What a reconcile should do.
#[derive(Debug, Default)]
pub struct Plan {
    /// In order: moves and removals of orphans, refreshes, registrations, invalid sidecars to report.
    pub actions: Vec<Action>,
    /// Assets whose sidecars are already right (the index starts from these).
    pub known: Vec<(PathBuf, Known)>,
    /// Files that may still be being written: settle them.
    pub busy: Vec<(PathBuf, Option<Stat>)>,
    /// `unchanged` and `errors` so far; the executor adds what the actions did.
    pub counts: RescanCounts,
    /// What the errors were, for the log.
    pub problems: Vec<String>,
}

/// Plan a reconcile of the watched folders. `wall_now_ns` is the wall-clock time (nanoseconds since
/// the epoch) that file mtimes are compared with; `settling` says which files the settle tracker
/// already follows.
pub fn plan(
    rules: &Rules,
    disk: &dyn Disk,
    sink: &dyn Sink,
    settle: Duration,
    wall_now_ns: i128,
    settling: &dyn Fn(&Path) -> bool,
) -> Plan {
    let mut out = Plan::default();
    let mut assets: BTreeMap<PathBuf, Stat> = BTreeMap::new();
    let mut sidecars: BTreeMap<PathBuf, Stat> = BTreeMap::new(); // keyed by asset path
    for root in rules.roots() {
        let (files, errors) = disk.walk(root, &|d| rules.is_watched_dir(d));
        if errors > 0 {
            out.counts.errors += errors;
            out.problems.push(format!("{errors} unreadable entries under {}", root.display()));
        }
        for (path, stat) in files {
            match rules.classify(&path, false) {
                Class::Asset => {
                    assets.insert(path, stat);
                }
                Class::Sidecar { asset } => {
                    sidecars.insert(asset, stat);
                }
                _ => {}
            }
        }
    }

    let settle_ns = settle.as_nanos() as i128;
    let mut to_hash: Vec<(PathBuf, Option<Known>)> = Vec::new();
    for (asset, stat) in &assets {
        if settling(asset) || wall_now_ns - stat.mtime_ns < settle_ns {
            out.busy.push((asset.clone(), Some(*stat)));
            continue;
        }
        let Some(sidecar_stat) = sidecars.get(asset) else {
            to_hash.push((asset.clone(), None));
            continue;
        };
        match sink.lookup(asset) {
            Err(e) => {
                // A person's broken sidecar: never rewritten; reported as invalid.
                out.problems.push(format!("{e:#}"));
                out.actions.push(Action::SidecarEdited { sidecar: sidecar_of(asset), asset: asset.clone() });
            }
            Ok(None) => to_hash.push((asset.clone(), None)),
            // Strictly older than its sidecar: timestamps are coarse (a kernel tick), so an edit in
            // the tick the sidecar was written in can carry the same mtime; that one is hashed.
            Ok(Some(k)) if k.bytes == stat.size && stat.mtime_ns < sidecar_stat.mtime_ns => {
                out.known.push((asset.clone(), k));
                out.counts.unchanged += 1;
            }
            Ok(Some(k)) => to_hash.push((asset.clone(), Some(k))),
        }
    }

    let probed: Vec<(PathBuf, Option<Known>, Probe)> = to_hash
        .into_par_iter()
        .map(|(asset, known)| {
            let p = probe(disk, &asset);
            (asset, known, p)
        })
        .collect();
    let mut refreshes = Vec::new();
    let mut new_by_hash: BTreeMap<String, Vec<(PathBuf, u64)>> = BTreeMap::new();
    for (asset, known, probe) in probed {
        match probe {
            Probe::Hashed { hash, bytes, .. } => match known {
                Some(k) if k.hash == hash => {
                    out.known.push((asset, k));
                    out.counts.unchanged += 1;
                }
                Some(k) => refreshes.push(Action::Refresh { path: asset, hash, bytes, previous_hash: k.hash }),
                None => new_by_hash.entry(hash).or_default().push((asset, bytes)),
            },
            Probe::Busy(stat) => out.busy.push((asset, stat)),
            Probe::Gone => {}
            Probe::Failed(e) => {
                out.counts.errors += 1;
                out.problems.push(e);
            }
        }
    }

    // Orphan sidecars: their file is gone. The same content under a new name is a rename made while
    // nobody watched; anything else is a removal.
    let mut orphans: Vec<(PathBuf, Known)> = Vec::new();
    for asset in sidecars.keys() {
        if assets.contains_key(asset) || disk.stat(asset).is_some() {
            continue;
        }
        match sink.lookup(asset) {
            Ok(Some(k)) => orphans.push((asset.clone(), k)),
            Ok(None) => {}
            Err(e) => {
                // Broken and orphaned: a person's file, left where it is for the audit to report.
                out.counts.errors += 1;
                out.problems.push(format!("{e:#}"));
            }
        }
    }
    let mut moves_and_removals = Vec::new();
    for (asset, known) in orphans {
        match new_by_hash.get_mut(&known.hash).and_then(Vec::pop) {
            Some((to, _)) => moves_and_removals.push(Action::Move { from: asset, to }),
            None => moves_and_removals.push(Action::Remove { path: asset, known, away: false }),
        }
    }
    let mut registrations: Vec<Action> = new_by_hash
        .into_iter()
        .flat_map(|(hash, files)| {
            files.into_iter().map(move |(path, bytes)| Action::Register { path, hash: hash.clone(), bytes })
        })
        .collect();
    registrations.sort_by(|a, b| a.path().cmp(b.path()));
    refreshes.sort_by(|a, b| a.path().cmp(b.path()));
    let edits = std::mem::take(&mut out.actions);
    out.actions = moves_and_removals.into_iter().chain(refreshes).chain(registrations).chain(edits).collect();
    out.busy.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::disk::fake::FakeDisk;
    use crate::watch::plan::tests::{describe, FakeSink};
    use std::sync::Arc;

    const SETTLE: Duration = Duration::from_millis(500);

    struct Case {
        disk: Arc<FakeDisk>,
        sink: FakeSink,
        rules: Rules,
    }

    impl Case {
        fn new() -> Case {
            let disk = Arc::new(FakeDisk::new());
            Case {
                sink: FakeSink { disk: Arc::clone(&disk) },
                disk,
                rules: Rules::new(Path::new("/w"), &[PathBuf::from("/w")], &[], &["*.part".into()]).unwrap(),
            }
        }
        /// A file and a sidecar written after it, as a previous watcher would have left them.
        fn registered(&self, path: &str, bytes: &[u8]) {
            self.disk.write(path, bytes);
            let action = Action::Register {
                path: path.into(),
                hash: crate::digest::sha256_hex(bytes),
                bytes: bytes.len() as u64,
            };
            self.sink.apply(&action).unwrap();
        }
        /// Plan with "now" far after every write unless `now` is given.
        fn plan_at(&self, now: i128) -> Plan {
            plan(&self.rules, &*self.disk, &self.sink, SETTLE, now, &|_| false)
        }
        fn plan(&self) -> Plan {
            self.plan_at(1 << 62)
        }
    }

    fn actions(p: &Plan) -> Vec<String> {
        p.actions.iter().map(describe).collect()
    }

    #[test]
    fn missing_sidecars_are_written_and_up_to_date_ones_are_trusted_without_hashing() {
        let c = Case::new();
        c.registered("/w/old.png", b"old");
        c.disk.write("/w/new.png", b"new");
        c.disk.write("/w/dl.part", b"partial download");
        let p = c.plan();
        assert_eq!(actions(&p), ["register /w/new.png"]);
        assert_eq!(p.counts.unchanged, 1);
        assert_eq!(p.known.len(), 1);
    }

    #[test]
    fn a_file_changed_while_nobody_watched_is_refreshed() {
        let c = Case::new();
        c.registered("/w/a.png", b"v1");
        c.disk.write("/w/a.png", b"v2 longer");
        let p = c.plan();
        assert_eq!(actions(&p), [format!("refresh /w/a.png (was {})", &crate::digest::sha256_hex(b"v1")[..8])]);
    }

    /// Timestamps are coarse (a kernel tick on tmpfs and ext4): a same-size edit right after the
    /// sidecar was written can carry the sidecar's very mtime, and must still be hashed.
    #[test]
    fn a_same_size_edit_in_the_sidecars_timestamp_tick_is_refreshed() {
        let c = Case::new();
        c.registered("/w/a.png", b"aaaa");
        let sidecar_mtime = c.disk.stat(Path::new("/w/a.png.asset.json")).unwrap().mtime_ns;
        c.disk.write_at("/w/a.png", b"AAAA", sidecar_mtime);
        let p = c.plan();
        assert_eq!(actions(&p), [format!("refresh /w/a.png (was {})", &crate::digest::sha256_hex(b"aaaa")[..8])]);
    }

    #[test]
    fn a_touched_file_with_the_same_content_is_unchanged() {
        let c = Case::new();
        c.registered("/w/a.png", b"v1");
        c.disk.write("/w/a.png", b"v1"); // newer mtime, same bytes: hashed, found equal
        let p = c.plan();
        assert!(p.actions.is_empty(), "{:?}", actions(&p));
        assert_eq!(p.counts.unchanged, 1);
    }

    #[test]
    fn a_rename_made_while_nobody_watched_is_a_move_and_other_orphans_are_removed() {
        let c = Case::new();
        c.registered("/w/a.png", b"moved content");
        c.registered("/w/gone.png", b"deleted content");
        c.disk.rename("/w/a.png", "/w/sub/b.png");
        c.disk.remove("/w/gone.png");
        let p = c.plan();
        assert_eq!(actions(&p), ["move /w/a.png -> /w/sub/b.png", "remove /w/gone.png"]);
    }

    #[test]
    fn files_written_within_the_settle_window_are_left_to_settle() {
        let c = Case::new();
        c.disk.write_at("/w/fresh.png", b"x", 1_000_000_000);
        c.disk.write_at("/w/old.png", b"y", 1);
        let p = c.plan_at(1_000_000_000 + 100_000_000); // 100 ms after the fresh write
        assert_eq!(actions(&p), ["register /w/old.png"]);
        assert_eq!(p.busy.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), [PathBuf::from("/w/fresh.png")]);
    }

    #[test]
    fn an_invalid_sidecar_is_reported_never_rewritten() {
        let c = Case::new();
        c.registered("/w/a.png", b"v1");
        c.disk.write("/w/a.png.asset.json", b"{ not json");
        let p = c.plan();
        assert_eq!(actions(&p), ["sidecar-edited /w/a.png.asset.json"]);
        assert!(c.disk.read(Path::new("/w/a.png.asset.json")).unwrap().starts_with(b"{ not"));
    }

    #[test]
    fn ignored_folders_are_not_entered() {
        let c = Case::new();
        c.disk.write("/w/.git/objects/aa", b"x");
        c.disk.write("/w/x.png", b"x");
        assert_eq!(actions(&c.plan()), ["register /w/x.png"]);
    }
}
