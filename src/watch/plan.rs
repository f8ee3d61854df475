//! The planner: turns [`Change`]s into registry [`Action`]s, holding the little state that needs time
//! to resolve. It decides; the [`Sink`] acts; the engine publishes.
//!
//! What it keeps and why:
//! - the settle tracker (a file is hashed only once its writer closed it or it stopped changing);
//! - pending removals: a registered file that disappears is removed only after a grace period, so an
//!   editor's save-by-rename (the original renamed away, a new file written in its place) is one
//!   modification, and a poller's delete+create of a renamed file is one move;
//! - recently removed assets by content hash, so a file that reappears elsewhere with the content of
//!   an asset removed minutes ago gets that asset's sidecar back (same uid, human fields kept);
//! - the last bytes seen of each sidecar (written by the tool or checked by it), so the tool's own
//!   sidecar writes never come back as edits: no feedback loops;
//! - an index of registered assets by path, because a deleted folder takes its sidecars with it and
//!   the removals must still be published.
//!
//! The planner never writes. Disk reads go through [`Disk`], time comes in as an argument.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;

use super::change::Change;
use super::disk::{Disk, Stat};
use super::rules::{asset_of_sidecar, sidecar_of, Class, Rules};
use super::settle::Settle;
use super::sink::{Action, Applied, Known, Sink};

/// How long a removed asset is remembered for re-association by content.
pub const REMEMBER_REMOVED: Duration = Duration::from_secs(600);
/// At most this many removed assets are remembered (oldest forgotten first).
pub const REMEMBER_REMOVED_MAX: usize = 10_000;
/// Settle windows a refresh waits at most while the tree stays busy (see `Planner::refresh_waits`).
const MAX_REFRESH_WAITS: u32 = 8;
/// How long the planner remembers the sidecar bytes it wrote and the stat of files it hashed: long
/// enough for the echo of a write (or the debounced duplicate of a tapped event) to come back, also
/// in polling mode; short enough that an idle watcher holds no per-file memory beyond its index.
pub const ECHO_TTL: Duration = Duration::from_secs(120);

/// The result of hashing a ready file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `key` is the size and mtime the file had while it was hashed.
    Hashed {
        hash: String,
        bytes: u64,
        key: (u64, i128),
    },
    /// The file changed while it was being hashed: not ready after all.
    Busy(Option<Stat>),
    Gone,
    Failed(String),
}

/// Hash `path` only if it does not change underneath: stat, hash, stat again. A file still being
/// written never yields a hash.
pub fn probe(disk: &dyn Disk, path: &Path) -> Probe {
    let Some(before) = disk.stat(path) else { return Probe::Gone };
    if before.is_dir {
        return Probe::Gone;
    }
    match disk.hash(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Gone,
        Err(e) => Probe::Failed(format!("cannot hash {}: {e}", path.display())),
        Ok((hash, bytes)) => {
            let after = disk.stat(path);
            if after.map(|s| s.key()) == Some(before.key()) && bytes == before.size {
                Probe::Hashed { hash, bytes, key: before.key() }
            } else {
                Probe::Busy(after)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct PendingRemoval {
    known: Known,
    at: Duration,
    /// Moved out of the watched tree, not deleted.
    away: bool,
}

/// An asset removed recently, remembered by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub path: PathBuf,
    pub known: Known,
    /// Its sidecar in the trash, if it still existed when the asset was removed.
    pub trashed: Option<PathBuf>,
    pub at: Duration,
}

/// The planner's state; see the module doc.
#[derive(Debug)]
pub struct Planner {
    rules: Rules,
    settle: Settle,
    grace: Duration,
    index: BTreeMap<PathBuf, Known>,
    pending_removals: BTreeMap<PathBuf, PendingRemoval>,
    sidecar_checks: BTreeMap<PathBuf, Duration>,
    removed: VecDeque<Removed>,
    /// Sidecar → digest of the bytes the watcher last wrote or checked, and when.
    seen_sidecars: HashMap<PathBuf, (String, Duration)>,
    /// File → size and mtime when it was last hashed and decided on, and when.
    probed: HashMap<PathBuf, ((u64, i128), Duration)>,
    /// Sidecar → digest of bytes that did not parse, seen once: it may have been caught half-written
    /// by another program (`git checkout` writes in place), so it is looked at again after the settle
    /// window and reported invalid only when the same bytes are still there.
    suspect_sidecars: HashMap<PathBuf, String>,
    /// Registered files whose content changed, waiting one settle window before their sidecar is
    /// refreshed: whoever changed the file may be about to write its sidecar too (`git checkout`
    /// writes the branch's file, then the branch's sidecar), and writing it at the same moment would
    /// fight them.
    refresh_waits: HashMap<PathBuf, (String, u32)>,
    /// The settle window, and when the last change of any file was observed: a refresh also waits
    /// (up to [`MAX_REFRESH_WAITS`] windows) while the tree is busy, as during a checkout or a sync.
    window: Duration,
    last_change: Duration,
    /// Remember the bytes of every sidecar an action wrote (polling mode: the poller reports the
    /// tool's own writes like anyone's; the native tap drops them at the source).
    remember_writes: bool,
    last_prune: Duration,
    queued: Vec<Action>,
    rescan: Option<String>,
    errors: Vec<String>,
}

impl Planner {
    /// `settle` is the settle window; `grace` how long a registered file may be missing before it
    /// counts as removed.
    pub fn new(rules: Rules, settle: Duration, grace: Duration) -> Planner {
        Planner {
            rules,
            settle: Settle::new(settle),
            grace,
            index: BTreeMap::new(),
            pending_removals: BTreeMap::new(),
            sidecar_checks: BTreeMap::new(),
            removed: VecDeque::new(),
            seen_sidecars: HashMap::new(),
            probed: HashMap::new(),
            suspect_sidecars: HashMap::new(),
            refresh_waits: HashMap::new(),
            window: settle,
            last_change: Duration::ZERO,
            remember_writes: true,
            last_prune: Duration::ZERO,
            queued: Vec::new(),
            rescan: None,
            errors: Vec::new(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Replace the index (after a reconcile).
    pub fn set_index(&mut self, known: Vec<(PathBuf, Known)>) {
        self.index = known.into_iter().collect();
    }

    pub fn indexed(&self) -> usize {
        self.index.len()
    }

    /// True while `path` waits to settle (a reconcile must leave it alone).
    pub fn is_settling(&self, path: &Path) -> bool {
        self.settle.contains(path)
    }

    /// Start settling a file found by a scan (a reconcile skipped it because it looked busy).
    pub fn settle_file(&mut self, path: &Path, stat: Option<Stat>, now: Duration) {
        self.settle.touch(path, stat, now);
    }

    /// Another process of this tool (the CLI, the API, `audit --fix`) wrote the sidecar of `asset`
    /// and published its own events for it: take the sidecar's bytes and the file's stat as seen,
    /// so the writes it made do not come back from this watcher as a second event.
    pub fn external_write(&mut self, asset: &Path, disk: &dyn Disk, sink: &dyn Sink, now: Duration) {
        let sidecar = sidecar_of(asset);
        self.sidecar_checks.remove(&sidecar);
        if let Some(bytes) = disk.read(&sidecar) {
            self.seen_sidecars.insert(sidecar.clone(), (crate::digest::sha256_hex(&bytes), now));
            self.settle.forget(&sidecar);
        }
        if let Ok(Some(known)) = sink.lookup(asset) {
            if let Some(stat) = disk.stat(asset).filter(|s| !s.is_dir && s.size == known.bytes) {
                self.probed.insert(asset.to_path_buf(), (stat.key(), now));
                self.settle.forget(asset);
            }
            self.pending_removals.remove(asset);
            self.index.insert(asset.to_path_buf(), known);
        }
    }

    /// Another process of this tool removed `asset` (its sidecar to the trash) and published
    /// `on_asset_removed`: forget it, so its deletion is not reported a second time.
    pub fn external_remove(&mut self, asset: &Path) {
        let sidecar = sidecar_of(asset);
        self.index.remove(asset);
        self.pending_removals.remove(asset);
        self.sidecar_checks.remove(&sidecar);
        self.seen_sidecars.remove(&sidecar);
        self.probed.remove(asset);
        self.settle.forget(asset);
        self.settle.forget(&sidecar);
    }

    /// Remember the current bytes of a sidecar the tool wrote.
    pub fn wrote_sidecar(&mut self, sidecar: &Path, disk: &dyn Disk, now: Duration) {
        if let Some(bytes) = disk.read(sidecar) {
            self.seen_sidecars.insert(sidecar.to_path_buf(), (crate::digest::sha256_hex(&bytes), now));
        }
    }

    /// Change the removal grace (the engine switched to polling).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Whether [`Planner::applied`] remembers the sidecar bytes actions wrote (see the field).
    pub fn set_remember_writes(&mut self, on: bool) {
        self.remember_writes = on;
    }

    /// An action failed: forget that its file was hashed, so the next event about it is looked at.
    pub fn failed(&mut self, action: &Action) {
        self.probed.remove(action.path());
    }

    /// A rescan was asked for (queue overflow); taken once.
    pub fn take_rescan(&mut self) -> Option<String> {
        self.rescan.take()
    }

    /// Problems met while planning (unhashable files), taken once, for the log.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// When the planner next needs a [`Planner::tick`] (`None`: only a new change can wake it).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        if !self.queued.is_empty() {
            return Some(now);
        }
        [
            self.settle.next_deadline(),
            self.pending_removals.values().map(|p| p.at).min(),
            self.sidecar_checks.values().copied().min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Take in one change, observed now.
    pub fn observe(&mut self, change: Change, now: Duration, disk: &dyn Disk, sink: &dyn Sink) {
        self.observe_at(change, now, now, disk, sink)
    }

    /// Take in one change that happened at `at` (≤ `now`): events arrive out of order (the tapped
    /// close-write before the debounced create), and a change made before a close must not undo it.
    pub fn observe_at(&mut self, change: Change, at: Duration, now: Duration, disk: &dyn Disk, sink: &dyn Sink) {
        if !matches!(change, Change::Rescan { .. }) {
            self.last_change = self.last_change.max(now);
        }
        match change {
            Change::Written { path } | Change::Arrived { path } => self.look(&path, None, at, now, disk, sink),
            Change::Closed { path } => self.look(&path, Some(at), at, now, disk, sink),
            Change::FolderCreated { path } => self.scan_folder(&path, now, disk),
            Change::Moved { from, to } => self.moved(&from, &to, now, disk, sink),
            Change::Removed { path } => self.removed(&path, now, disk, sink),
            Change::Left { path } => {
                self.removed(&path, now, disk, sink);
                for (p, r) in self.pending_removals.range_mut(path.clone()..) {
                    if !p.starts_with(&path) {
                        break;
                    }
                    r.away = true;
                }
            }
            Change::Rescan { reason } => self.rescan = Some(reason),
        }
    }

    /// `closed`: when the writer closed the file, for a close-write.
    fn look(
        &mut self,
        path: &Path,
        closed: Option<Duration>,
        at: Duration,
        now: Duration,
        disk: &dyn Disk,
        sink: &dyn Sink,
    ) {
        let Some(stat) = disk.stat(path) else {
            // Already gone again (a temp file, or a removal whose own event follows).
            return self.removed(path, now, disk, sink);
        };
        if stat.is_dir {
            return self.scan_folder(path, now, disk);
        }
        match self.rules.classify(path, false) {
            Class::Asset => {
                if self.probed.get(path).is_some_and(|(key, _)| *key == stat.key()) {
                    // Already hashed exactly as it is (a late duplicate event): nothing to do.
                    return;
                }
            }
            Class::Sidecar { .. } => {
                self.sidecar_checks.remove(path);
                if self.is_seen_sidecar(path, disk) {
                    self.settle.forget(path);
                    return;
                }
            }
            Class::Folder | Class::Ignored => return,
        }
        match closed {
            Some(when) => self.settle.closed_at(path, when, now),
            None => self.settle.touch_at(path, Some(stat), at, now),
        }
    }

    fn is_seen_sidecar(&self, sidecar: &Path, disk: &dyn Disk) -> bool {
        match (self.seen_sidecars.get(sidecar), disk.read(sidecar)) {
            (Some((seen, _)), Some(bytes)) => *seen == crate::digest::sha256_hex(&bytes),
            _ => false,
        }
    }

    /// Files inside a folder that appeared produced no events of their own if they were written before
    /// the folder's watch existed: look at each. Sidecars found this way are read with their file (a
    /// pack copied in with its sidecars keeps them; an invalid one is reported then), not as edits:
    /// the folder may hold sidecars the watcher itself just wrote.
    fn scan_folder(&mut self, dir: &Path, now: Duration, disk: &dyn Disk) {
        if !self.rules.is_watched_dir(dir) {
            return;
        }
        for f in disk.files_under(dir) {
            if self.settle.contains(&f) {
                continue;
            }
            if self.rules.classify(&f, false) == Class::Asset {
                let stat = disk.stat(&f);
                if stat.is_some_and(|s| self.probed.get(&f).is_some_and(|(key, _)| *key == s.key())) {
                    continue; // hashed already, exactly as it is
                }
                self.settle.touch(&f, stat, now);
            }
        }
    }

    fn removed(&mut self, path: &Path, now: Duration, _disk: &dyn Disk, sink: &dyn Sink) {
        self.settle.forget_under(path);
        self.probed.retain(|p, _| !p.starts_with(path));
        if let Class::Sidecar { .. } = self.rules.classify(path, false) {
            // Maybe an editor's save of the sidecar (renamed away, rewritten); look again after the grace.
            self.sidecar_checks.insert(path.to_path_buf(), now + self.grace);
            return;
        }
        let mut gone: Vec<(PathBuf, Known)> = self
            .index
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, k)| (p.clone(), k.clone()))
            .collect();
        if gone.is_empty() {
            // Registered by another process since our index was built: its sidecar is still there.
            if let Ok(Some(k)) = sink.lookup(path) {
                gone.push((path.to_path_buf(), k));
            }
        }
        for (p, known) in gone {
            self.pending_removals.entry(p).or_insert(PendingRemoval { known, at: now + self.grace, away: false });
        }
    }

    fn moved(&mut self, from: &Path, to: &Path, now: Duration, disk: &dyn Disk, sink: &dyn Sink) {
        let Some(stat) = disk.stat(to) else {
            // Moved on again before we looked: `from` is gone, the next name reports itself.
            return self.removed(from, now, disk, sink);
        };
        if stat.is_dir {
            self.settle.rename(from, to);
            let inside: Vec<(PathBuf, Known)> = self
                .index
                .range(from.to_path_buf()..)
                .take_while(|(p, _)| p.starts_with(from))
                .map(|(p, k)| (p.clone(), k.clone()))
                .collect();
            for (p, _) in &inside {
                self.pending_removals.remove(p);
                let target = to.join(p.strip_prefix(from).expect("range is under from"));
                self.queued.push(Action::Move { from: p.clone(), to: target });
            }
            // Files in the folder we did not know: look at them like new arrivals.
            let moved: Vec<PathBuf> =
                inside.iter().map(|(p, _)| to.join(p.strip_prefix(from).expect("under from"))).collect();
            for f in disk.files_under(to) {
                if moved.contains(&f) || self.settle.contains(&f) {
                    continue;
                }
                if self.rules.classify(&f, false) == Class::Asset {
                    self.settle.touch(&f, disk.stat(&f), now);
                }
            }
            return;
        }
        if self.settle.rename(from, to) {
            return; // still being written: it settles under its new name
        }
        let known_from = self.index.get(from).cloned().or_else(|| sink.lookup(from).ok().flatten());
        if known_from.is_none() {
            return self.settle.touch(to, Some(stat), now);
        }
        self.pending_removals.remove(from);
        let known_to = self.index.get(to).cloned().or_else(|| sink.lookup(to).ok().flatten());
        if let Some(known) = known_to {
            // `mv a b` over a registered `b`: b's sidecar goes to the trash first.
            self.queued.push(Action::Remove { path: to.to_path_buf(), known, away: false });
        }
        self.queued.push(Action::Move { from: from.to_path_buf(), to: to.to_path_buf() });
    }

    /// Decide what is due at `now`: moves found by `observe`, settled files (hashed in parallel),
    /// expired removal graces.
    pub fn tick(&mut self, now: Duration, disk: &dyn Disk, sink: &dyn Sink) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.queued);
        let ready = self.settle.due(now, |p| disk.stat(p));
        let (sidecars, assets): (Vec<PathBuf>, Vec<PathBuf>) =
            ready.into_iter().partition(|p| matches!(self.rules.classify(p, false), Class::Sidecar { .. }));
        let probes: Vec<(PathBuf, Probe)> = assets.into_par_iter().map(|p| (p.clone(), probe(disk, &p))).collect();
        for (path, probe) in probes {
            if let Some(a) = self.decide_asset(&path, probe, now, disk, sink) {
                actions.push(a);
            }
        }
        for sidecar in sidecars {
            if let Some(a) = self.decide_sidecar(&sidecar, now, disk) {
                actions.push(a);
            }
        }
        actions.extend(self.expire(now, disk));
        actions
    }

    fn decide_asset(
        &mut self,
        path: &Path,
        probe: Probe,
        now: Duration,
        disk: &dyn Disk,
        sink: &dyn Sink,
    ) -> Option<Action> {
        let (hash, bytes) = match probe {
            Probe::Hashed { hash, bytes, key } => {
                self.probed.insert(path.to_path_buf(), (key, now));
                (hash, bytes)
            }
            Probe::Busy(stat) => {
                self.settle.touch(path, stat, now);
                return None;
            }
            Probe::Gone => return None,
            Probe::Failed(e) => {
                self.errors.push(e);
                return None;
            }
        };
        // It is here: whatever removal was pending for this path was the first half of a save.
        self.pending_removals.remove(path);
        match sink.lookup(path) {
            Err(_) => {
                // A sidecar a person broke (or copied in broken): never rewritten; validated and
                // reported once per content.
                let sidecar = sidecar_of(path);
                if self.is_seen_sidecar(&sidecar, disk) {
                    return None;
                }
                let digest = disk.read(&sidecar).map(|bytes| crate::digest::sha256_hex(&bytes));
                if let Some(d) = &digest {
                    if self.suspect_sidecars.get(&sidecar) != Some(d) {
                        self.suspect_sidecars.insert(sidecar.clone(), d.clone());
                        self.look_again(path, now, disk);
                        return None;
                    }
                }
                self.suspect_sidecars.remove(&sidecar);
                if let Some(d) = digest {
                    self.seen_sidecars.insert(sidecar.clone(), (d, now));
                }
                Some(Action::SidecarEdited { sidecar, asset: path.to_path_buf() })
            }
            Ok(Some(k)) if k.hash == hash => {
                self.refresh_waits.remove(path);
                self.index.insert(path.to_path_buf(), k);
                None
            }
            Ok(Some(k)) => {
                // Its sidecar being written by someone else right now, or the tree still busy (a
                // checkout writes the file, then its sidecar): let them finish first.
                let busy =
                    self.settle.contains(&sidecar_of(path)) || now.saturating_sub(self.last_change) < self.window / 2;
                if self.wait_for_other_writer(path, &hash, true, busy, now, disk) {
                    return None;
                }
                Some(Action::Refresh { path: path.to_path_buf(), hash, bytes, previous_hash: k.hash })
            }
            Ok(None) => {
                // Its sidecar was deleted or changed moments ago: someone may be putting one back
                // (`git checkout` deletes, then writes the branch's sidecar). Wait like a refresh.
                let sidecar = sidecar_of(path);
                let busy = self.sidecar_checks.contains_key(&sidecar) || self.settle.contains(&sidecar);
                if self.wait_for_other_writer(path, &hash, false, busy, now, disk) {
                    return None;
                }
                // The same content disappeared from elsewhere moments ago: a move (a poller sees a
                // rename as a delete and a create).
                let from = self
                    .pending_removals
                    .iter()
                    .filter(|(p, r)| r.known.hash == hash && disk.stat(p).is_none())
                    .max_by_key(|(_, r)| r.at)
                    .map(|(p, _)| p.clone());
                if let Some(from) = from {
                    self.pending_removals.remove(&from);
                    return Some(Action::Move { from, to: path.to_path_buf() });
                }
                if let Some(i) = self.removed.iter().rposition(|r| r.known.hash == hash) {
                    let r = self.removed.remove(i).expect("index from rposition");
                    if let Some(trashed) = r.trashed.filter(|t| disk.stat(t).is_some()) {
                        return Some(Action::Restore {
                            path: path.to_path_buf(),
                            hash,
                            bytes,
                            trashed,
                            previous_path: r.path,
                        });
                    }
                }
                Some(Action::Register { path: path.to_path_buf(), hash, bytes })
            }
        }
    }

    /// Hash `path` again after one more settle window.
    fn look_again(&mut self, path: &Path, now: Duration, disk: &dyn Disk) {
        self.probed.remove(path);
        self.settle.touch(path, disk.stat(path), now);
    }

    /// Whether the sidecar write for `path` (content `hash`) waits one more settle window for another
    /// writer (see `refresh_waits`): once in any case when `once`, then while `busy`, at most
    /// [`MAX_REFRESH_WAITS`] windows in all. Forgets the count when it does not wait.
    fn wait_for_other_writer(
        &mut self,
        path: &Path,
        hash: &str,
        once: bool,
        busy: bool,
        now: Duration,
        disk: &dyn Disk,
    ) -> bool {
        let waited = self.refresh_waits.get(path).filter(|(h, _)| h == hash).map_or(0, |(_, n)| *n);
        if (once && waited == 0) || (busy && waited < MAX_REFRESH_WAITS) {
            self.refresh_waits.insert(path.to_path_buf(), (hash.to_string(), waited + 1));
            self.look_again(path, now, disk);
            return true;
        }
        self.refresh_waits.remove(path);
        false
    }

    fn decide_sidecar(&mut self, sidecar: &Path, now: Duration, disk: &dyn Disk) -> Option<Action> {
        let bytes = disk.read(sidecar)?;
        let digest = crate::digest::sha256_hex(&bytes);
        if self.seen_sidecars.get(sidecar).is_some_and(|(seen, _)| *seen == digest) {
            return None;
        }
        let asset = asset_of_sidecar(sidecar)?;
        // A sidecar without its file (copied in ahead of it, or an orphan): the file's own arrival,
        // or the next reconcile, deals with it.
        disk.stat(&asset)?;
        self.seen_sidecars.insert(sidecar.to_path_buf(), (digest, now));
        Some(Action::SidecarEdited { sidecar: sidecar.to_path_buf(), asset })
    }

    fn expire(&mut self, now: Duration, disk: &dyn Disk) -> Vec<Action> {
        let mut out = Vec::new();
        let due: Vec<PathBuf> =
            self.pending_removals.iter().filter(|(_, r)| r.at <= now).map(|(p, _)| p.clone()).collect();
        for p in due {
            let r = self.pending_removals.remove(&p).expect("listed above");
            if let Some(stat) = disk.stat(&p) {
                // Back without an event we understood: look at it again.
                if !self.settle.contains(&p) && !stat.is_dir {
                    self.settle.touch(&p, Some(stat), now);
                }
                continue;
            }
            out.push(Action::Remove { path: p, known: r.known, away: r.away });
        }
        let checks: Vec<PathBuf> =
            self.sidecar_checks.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
        for s in checks {
            self.sidecar_checks.remove(&s);
            let Some(asset) = asset_of_sidecar(&s) else { continue };
            if disk.stat(&s).is_some() {
                if !self.is_seen_sidecar(&s, disk) {
                    self.settle.closed(&s, now);
                }
            } else if disk.stat(&asset).is_some_and(|st| !st.is_dir) && !self.settle.contains(&asset) {
                // A person deleted the sidecar of a file that is still here: write it again
                // (`audit --fix` semantics).
                self.settle.closed(&asset, now);
            }
        }
        while self.removed.front().is_some_and(|r| now.saturating_sub(r.at) > REMEMBER_REMOVED) {
            self.removed.pop_front();
        }
        if now.saturating_sub(self.last_prune) >= Duration::from_secs(1) {
            self.last_prune = now;
            self.seen_sidecars.retain(|_, (_, at)| now.saturating_sub(*at) <= ECHO_TTL);
            self.probed.retain(|_, (_, at)| now.saturating_sub(*at) <= ECHO_TTL);
        }
        out
    }

    /// Record what an action did: index, removed-asset memory, the sidecar bytes the tool wrote.
    pub fn applied(&mut self, action: &Action, applied: &Applied, now: Duration, disk: &dyn Disk) {
        match action {
            Action::Register { path, .. } | Action::Refresh { path, .. } | Action::Restore { path, .. } => {
                if let Some(k) = &applied.known {
                    self.index.insert(path.clone(), k.clone());
                }
            }
            Action::Move { from, to } => {
                self.index.remove(from);
                self.probed.remove(from);
                self.seen_sidecars.remove(&sidecar_of(from));
                if let Some(k) = &applied.known {
                    self.index.insert(to.clone(), k.clone());
                }
            }
            Action::Remove { path, known, .. } => {
                self.index.remove(path);
                self.probed.remove(path);
                self.seen_sidecars.remove(&sidecar_of(path));
                self.removed.push_back(Removed {
                    path: path.clone(),
                    known: known.clone(),
                    trashed: applied.trashed.clone(),
                    at: now,
                });
                while self.removed.len() > REMEMBER_REMOVED_MAX {
                    self.removed.pop_front();
                }
            }
            Action::SidecarEdited { asset, .. } => match &applied.known {
                Some(k) => {
                    self.index.insert(asset.clone(), k.clone());
                }
                None => {
                    self.index.remove(asset);
                }
            },
        }
        if let Some(s) = applied.sidecar.as_ref().filter(|_| self.remember_writes) {
            self.wrote_sidecar(s, disk, now);
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::watch::disk::fake::FakeDisk;
    use crate::watch::sink::HookEvent;
    use anyhow::{bail, Result};
    use serde_json::{json, Value};
    use std::sync::Arc;

    const SETTLE: Duration = Duration::from_millis(500);
    const GRACE: Duration = Duration::from_millis(500);

    /// An in-memory registry over the fake disk: sidecars are JSON files `{uid, hash, bytes, path}`.
    pub struct FakeSink {
        pub disk: Arc<FakeDisk>,
    }

    impl FakeSink {
        fn write_sidecar(&self, asset: &Path, k: &Known) -> PathBuf {
            let s = sidecar_of(asset);
            let doc = json!({"uid": k.uid, "hash": k.hash, "bytes": k.bytes, "path": asset});
            self.disk.write(s.to_str().unwrap(), doc.to_string().as_bytes());
            s
        }
        fn read_known(&self, sidecar: &Path) -> Result<Option<Known>> {
            let Some(bytes) = self.disk.read(sidecar) else { return Ok(None) };
            let v: Value = serde_json::from_slice(&bytes)?;
            match (v["uid"].as_str(), v["hash"].as_str(), v["bytes"].as_u64()) {
                (Some(uid), Some(hash), Some(bytes)) => Ok(Some(Known { uid: uid.into(), hash: hash.into(), bytes })),
                _ => bail!("{}: bad sidecar", sidecar.display()),
            }
        }
        fn ev(name: &str, path: &Path) -> HookEvent {
            (name.to_string(), json!({"path": path}))
        }
    }

    impl Sink for FakeSink {
        fn lookup(&self, asset: &Path) -> Result<Option<Known>> {
            self.read_known(&sidecar_of(asset))
        }
        fn apply(&self, action: &Action) -> Result<Applied> {
            Ok(match action {
                Action::Register { path, hash, bytes } => {
                    let k = Known { uid: hash[..16].to_string(), hash: hash.clone(), bytes: *bytes };
                    let s = self.write_sidecar(path, &k);
                    Applied {
                        events: vec![
                            Self::ev("on_asset_sidecar_written", path),
                            Self::ev("on_asset_saved", path),
                            Self::ev("on_asset_registered", path),
                        ],
                        known: Some(k),
                        sidecar: Some(s),
                        trashed: None,
                    }
                }
                Action::Refresh { path, hash, bytes, .. } => {
                    let old = self.lookup(path)?.unwrap();
                    let k = Known { uid: old.uid, hash: hash.clone(), bytes: *bytes };
                    let s = self.write_sidecar(path, &k);
                    Applied {
                        events: vec![
                            Self::ev("on_asset_sidecar_written", path),
                            Self::ev("on_asset_meta_updated", path),
                        ],
                        known: Some(k),
                        sidecar: Some(s),
                        trashed: None,
                    }
                }
                Action::Move { from, to } => {
                    let k = match self.lookup(from)? {
                        Some(k) => {
                            self.disk.remove(sidecar_of(from).to_str().unwrap());
                            k
                        }
                        None => self.lookup(to)?.unwrap(),
                    };
                    let s = self.write_sidecar(to, &k);
                    Applied {
                        events: vec![Self::ev("on_asset_meta_updated", to)],
                        known: Some(k),
                        sidecar: Some(s),
                        trashed: None,
                    }
                }
                Action::Restore { path, hash, bytes, trashed, .. } => {
                    let old = self.read_known(trashed)?.unwrap();
                    self.disk.remove(trashed.to_str().unwrap());
                    let k = Known { uid: old.uid, hash: hash.clone(), bytes: *bytes };
                    let s = self.write_sidecar(path, &k);
                    Applied {
                        events: vec![Self::ev("on_asset_meta_updated", path)],
                        known: Some(k),
                        sidecar: Some(s),
                        trashed: None,
                    }
                }
                Action::Remove { path, .. } => {
                    let s = sidecar_of(path);
                    let trashed = self.disk.read(&s).map(|b| {
                        let t = format!("/trash/{}", s.file_name().unwrap().to_str().unwrap());
                        self.disk.write(&t, &b);
                        self.disk.remove(s.to_str().unwrap());
                        PathBuf::from(t)
                    });
                    Applied { events: vec![Self::ev("on_asset_removed", path)], trashed, ..Default::default() }
                }
                Action::SidecarEdited { sidecar, asset } => match self.read_known(sidecar) {
                    Ok(k) => Applied {
                        events: vec![Self::ev("on_asset_meta_updated", asset)],
                        known: k,
                        ..Default::default()
                    },
                    Err(_) => Applied { events: vec![Self::ev("obs.sidecar_invalid", sidecar)], ..Default::default() },
                },
            })
        }
        fn replay(&self, _action: &Action) -> Result<Vec<HookEvent>> {
            Ok(Vec::new())
        }
    }

    /// A planner, a fake disk and a fake registry, driven step by step with a fake clock.
    pub struct World {
        pub disk: Arc<FakeDisk>,
        pub sink: FakeSink,
        pub planner: Planner,
        pub now: Duration,
        pub log: Vec<String>,
    }

    impl Default for World {
        fn default() -> World {
            World::new()
        }
    }

    impl World {
        pub fn new() -> World {
            let disk = Arc::new(FakeDisk::new());
            let rules =
                Rules::new(Path::new("/w"), &[PathBuf::from("/w")], &[], &["*~".into(), "*.part".into()]).unwrap();
            World {
                sink: FakeSink { disk: Arc::clone(&disk) },
                disk,
                planner: Planner::new(rules, SETTLE, GRACE),
                now: Duration::ZERO,
                log: Vec::new(),
            }
        }
        pub fn write(&mut self, path: &str, bytes: &[u8]) {
            self.disk.write(path, bytes);
        }
        pub fn change(&mut self, c: Change) {
            self.planner.observe(c, self.now, &*self.disk, &self.sink);
        }
        /// Advance the clock by `ms`, tick, apply what was decided; returns the actions as text.
        pub fn run(&mut self, ms: u64) -> Vec<String> {
            self.now += Duration::from_millis(ms);
            let actions = self.planner.tick(self.now, &*self.disk, &self.sink);
            let mut out = Vec::new();
            for a in actions {
                let applied = self.sink.apply(&a).unwrap();
                self.planner.applied(&a, &applied, self.now, &*self.disk);
                let line = describe(&a);
                self.log.push(line.clone());
                out.push(line);
            }
            out
        }
    }

    pub fn describe(a: &Action) -> String {
        match a {
            Action::Register { path, .. } => format!("register {}", path.display()),
            Action::Refresh { path, previous_hash, .. } => {
                format!("refresh {} (was {})", path.display(), &previous_hash[..8])
            }
            Action::Move { from, to } => format!("move {} -> {}", from.display(), to.display()),
            Action::Restore { path, previous_path, .. } => {
                format!("restore {} (was {})", path.display(), previous_path.display())
            }
            Action::Remove { path, .. } => format!("remove {}", path.display()),
            Action::SidecarEdited { sidecar, .. } => format!("sidecar-edited {}", sidecar.display()),
        }
    }

    fn w(p: &str) -> PathBuf {
        PathBuf::from(p)
    }

    fn h8(bytes: &[u8]) -> String {
        crate::digest::sha256_hex(bytes)[..8].to_string()
    }

    /// A registered asset `/w/a.png` with content `v1`.
    fn world_with_a() -> World {
        let mut world = World::new();
        world.write("/w/a.png", b"v1");
        world.change(Change::Written { path: w("/w/a.png") });
        world.change(Change::Closed { path: w("/w/a.png") });
        assert_eq!(world.run(5), ["register /w/a.png"]);
        // The tool's own sidecar write comes back as an event: it must be ignored.
        world.change(Change::Arrived { path: w("/w/a.png.asset.json") });
        assert!(world.run(5).is_empty());
        assert!(world.run(2000).is_empty(), "nothing left to do");
        world
    }

    #[test]
    fn a_dropped_file_is_registered_once_its_writer_closes_it() {
        let mut world = World::new();
        world.write("/w/a.png", b"par");
        world.change(Change::Written { path: w("/w/a.png") });
        // The writer keeps writing, well inside the settle window each time: nothing happens.
        for chunk in 0..10 {
            world.write("/w/a.png", format!("partial-{chunk}").as_bytes());
            assert!(world.run(100).is_empty(), "registered while still being written");
        }
        world.write("/w/a.png", b"complete");
        world.change(Change::Closed { path: w("/w/a.png") });
        assert_eq!(world.run(1), ["register /w/a.png"]);
        assert_eq!(
            world.sink.lookup(Path::new("/w/a.png")).unwrap().unwrap().hash,
            crate::digest::sha256_hex(b"complete")
        );
    }

    #[test]
    fn without_close_write_a_file_is_ready_after_a_quiet_window() {
        let mut world = World::new();
        world.write("/w/a.png", b"x");
        world.change(Change::Written { path: w("/w/a.png") });
        assert!(world.run(499).is_empty());
        assert_eq!(world.run(1), ["register /w/a.png"]);
    }

    #[test]
    fn a_file_that_changes_while_hashed_is_not_registered() {
        /// A disk whose file grows every time it is hashed (a writer racing the hash).
        struct Growing(FakeDisk, std::sync::Mutex<u8>);
        impl Disk for Growing {
            fn stat(&self, p: &Path) -> Option<Stat> {
                self.0.stat(p)
            }
            fn hash(&self, p: &Path) -> std::io::Result<(String, u64)> {
                let r = self.0.hash(p);
                let mut n = self.1.lock().unwrap();
                *n += 1;
                self.0.write(p.to_str().unwrap(), &vec![b'x'; 10 + *n as usize]);
                r
            }
            fn read(&self, p: &Path) -> Option<Vec<u8>> {
                self.0.read(p)
            }
            fn walk(&self, d: &Path, enter: &dyn Fn(&Path) -> bool) -> (Vec<(PathBuf, Stat)>, usize) {
                self.0.walk(d, enter)
            }
        }
        let disk = Growing(FakeDisk::new(), Default::default());
        disk.0.write("/w/a", b"abc");
        assert_eq!(probe(&disk, Path::new("/w/a")), Probe::Busy(disk.stat(Path::new("/w/a"))));
        assert_eq!(probe(&disk, Path::new("/w/none")), Probe::Gone);
        let plain = FakeDisk::new();
        plain.write("/w/a", b"abc");
        assert_eq!(
            probe(&plain, Path::new("/w/a")),
            Probe::Hashed {
                hash: crate::digest::sha256_hex(b"abc"),
                bytes: 3,
                key: plain.stat(Path::new("/w/a")).unwrap().key()
            }
        );
    }

    #[test]
    fn editor_save_by_rename_is_one_modification() {
        let mut world = world_with_a();
        // vim: rename the original to a backup name, write a new file, delete the backup.
        world.disk.rename("/w/a.png", "/w/a.png~");
        world.change(Change::Removed { path: w("/w/a.png") }); // the translation of a.png -> a.png~
        assert!(world.run(10).is_empty());
        world.write("/w/a.png", b"v2");
        world.change(Change::Written { path: w("/w/a.png") });
        world.change(Change::Closed { path: w("/w/a.png") });
        world.disk.remove("/w/a.png~");
        // A refresh waits one settle window (the writer may be writing the sidecar too).
        assert!(world.run(10).is_empty());
        assert_eq!(world.run(600), [format!("refresh /w/a.png (was {})", h8(b"v1"))]);
        assert!(world.run(5000).is_empty(), "no removal after the grace: {:?}", world.log);
        assert_eq!(
            world.sink.lookup(Path::new("/w/a.png")).unwrap().unwrap().uid,
            crate::digest::sha256_hex(b"v1")[..16]
        );
    }

    #[test]
    fn temp_file_renamed_over_the_asset_is_one_modification() {
        let mut world = world_with_a();
        world.write("/w/a.png", b"v2"); // the rename replaced the inode in one step
        world.change(Change::Arrived { path: w("/w/a.png") });
        assert!(world.run(100).is_empty(), "a renamed-in file settles first");
        assert!(world.run(400).is_empty(), "then a refresh waits one more settle window");
        assert_eq!(world.run(600), [format!("refresh /w/a.png (was {})", h8(b"v1"))]);
    }

    #[test]
    fn same_content_rewritten_changes_nothing() {
        let mut world = world_with_a();
        world.write("/w/a.png", b"v1");
        world.change(Change::Closed { path: w("/w/a.png") });
        assert!(world.run(1).is_empty());
    }

    #[test]
    fn rename_moves_the_sidecar_and_ignores_its_own_echo() {
        let mut world = world_with_a();
        world.disk.rename("/w/a.png", "/w/b.png");
        world.change(Change::Moved { from: w("/w/a.png"), to: w("/w/b.png") });
        assert_eq!(world.run(1), ["move /w/a.png -> /w/b.png"]);
        // The sidecar move comes back as two events; neither is a person's edit.
        world.change(Change::Removed { path: w("/w/a.png.asset.json") });
        world.change(Change::Arrived { path: w("/w/b.png.asset.json") });
        assert!(world.run(5000).is_empty(), "{:?}", world.log);
        assert!(world.disk.read(Path::new("/w/a.png.asset.json")).is_none());
        assert!(world.disk.read(Path::new("/w/b.png.asset.json")).is_some());
    }

    #[test]
    fn rename_over_a_registered_file_trashes_the_replaced_sidecar_first() {
        let mut world = world_with_a();
        world.write("/w/b.png", b"other");
        world.change(Change::Closed { path: w("/w/b.png") });
        assert_eq!(world.run(1), ["register /w/b.png"]);
        world.disk.remove("/w/b.png");
        world.disk.rename("/w/a.png", "/w/b.png");
        world.change(Change::Moved { from: w("/w/a.png"), to: w("/w/b.png") });
        assert_eq!(world.run(1), ["remove /w/b.png", "move /w/a.png -> /w/b.png"]);
    }

    #[test]
    fn a_poller_sees_a_rename_as_delete_plus_create_and_it_is_still_a_move() {
        let mut world = world_with_a();
        world.disk.rename("/w/a.png", "/w/sub/b.png");
        world.change(Change::Removed { path: w("/w/a.png") });
        world.change(Change::Written { path: w("/w/sub/b.png") });
        assert!(world.run(499).is_empty());
        assert_eq!(world.run(1), ["move /w/a.png -> /w/sub/b.png"]);
        assert!(world.run(5000).is_empty(), "{:?}", world.log);
    }

    #[test]
    fn delete_waits_for_the_grace_then_trashes() {
        let mut world = world_with_a();
        world.disk.remove("/w/a.png");
        world.change(Change::Removed { path: w("/w/a.png") });
        assert!(world.run(499).is_empty());
        assert_eq!(world.run(1), ["remove /w/a.png"]);
        assert!(world.disk.read(Path::new("/trash/a.png.asset.json")).is_some());
        // The sidecar's disappearance (our own trash move) is not an event.
        world.change(Change::Removed { path: w("/w/a.png.asset.json") });
        assert!(world.run(5000).is_empty(), "{:?}", world.log);
    }

    #[test]
    fn content_of_a_recently_removed_asset_reappearing_gets_its_sidecar_back() {
        let mut world = world_with_a();
        // Edit the content so the uid no longer equals the hash prefix: re-association must keep it.
        world.write("/w/a.png", b"v2");
        world.change(Change::Closed { path: w("/w/a.png") });
        world.run(1);
        world.run(600);
        let uid = world.sink.lookup(Path::new("/w/a.png")).unwrap().unwrap().uid;
        world.disk.remove("/w/a.png");
        world.change(Change::Removed { path: w("/w/a.png") });
        assert_eq!(world.run(600), ["remove /w/a.png"]);
        // Minutes later the same bytes show up elsewhere (restored from a backup, say).
        world.now += Duration::from_secs(120);
        world.write("/w/restored/a-copy.png", b"v2");
        world.change(Change::Closed { path: w("/w/restored/a-copy.png") });
        assert_eq!(world.run(1), ["restore /w/restored/a-copy.png (was /w/a.png)"]);
        assert_eq!(world.sink.lookup(Path::new("/w/restored/a-copy.png")).unwrap().unwrap().uid, uid);
        assert!(world.disk.read(Path::new("/trash/a.png.asset.json")).is_none(), "taken out of the trash");
    }

    #[test]
    fn the_removed_memory_forgets_after_its_time() {
        let mut world = world_with_a();
        world.disk.remove("/w/a.png");
        world.change(Change::Removed { path: w("/w/a.png") });
        assert_eq!(world.run(600), ["remove /w/a.png"]);
        world.now += REMEMBER_REMOVED + Duration::from_secs(1);
        world.run(0);
        world.write("/w/b.png", b"v1");
        world.change(Change::Closed { path: w("/w/b.png") });
        assert_eq!(world.run(1), ["register /w/b.png"]);
    }

    #[test]
    fn a_person_editing_a_sidecar_is_published_once() {
        let mut world = world_with_a();
        let edited = r#"{"uid": "x", "hash": "y", "bytes": 2, "tags": ["hero"]}"#;
        world.write("/w/a.png.asset.json", edited.as_bytes());
        world.change(Change::Written { path: w("/w/a.png.asset.json") });
        world.change(Change::Closed { path: w("/w/a.png.asset.json") });
        assert_eq!(world.run(1), ["sidecar-edited /w/a.png.asset.json"]);
        // Another close of the same bytes (an editor re-saving) is not a new edit.
        world.change(Change::Closed { path: w("/w/a.png.asset.json") });
        assert!(world.run(1).is_empty());
    }

    #[test]
    fn a_sidecar_saved_by_rename_is_one_edit() {
        let mut world = world_with_a();
        world.disk.rename("/w/a.png.asset.json", "/w/a.png.asset.json~");
        world.change(Change::Removed { path: w("/w/a.png.asset.json") });
        world.write("/w/a.png.asset.json", b"{\"broken\": ");
        world.change(Change::Written { path: w("/w/a.png.asset.json") });
        world.change(Change::Closed { path: w("/w/a.png.asset.json") });
        assert_eq!(world.run(1), ["sidecar-edited /w/a.png.asset.json"]);
        assert!(world.run(5000).is_empty(), "{:?}", world.log);
        // The invalid file was not overwritten.
        assert_eq!(world.disk.read(Path::new("/w/a.png.asset.json")).unwrap(), b"{\"broken\": ");
    }

    #[test]
    fn a_deleted_sidecar_of_a_present_file_is_written_again() {
        let mut world = world_with_a();
        world.disk.remove("/w/a.png.asset.json");
        world.change(Change::Removed { path: w("/w/a.png.asset.json") });
        assert!(world.run(499).is_empty());
        world.run(1);
        assert_eq!(world.run(1), ["register /w/a.png"]);
    }

    #[test]
    fn removing_a_folder_removes_every_asset_it_held() {
        let mut world = World::new();
        for name in ["/w/pack/a.png", "/w/pack/b.png", "/w/pack/sub/c.png", "/w/other.png"] {
            world.write(name, name.as_bytes());
            world.change(Change::Closed { path: w(name) });
        }
        assert_eq!(world.run(1).len(), 4);
        for name in ["/w/pack/a.png", "/w/pack/b.png", "/w/pack/sub/c.png"] {
            world.disk.remove(name);
            world.disk.remove(&format!("{name}.asset.json"));
        }
        world.change(Change::Removed { path: w("/w/pack") });
        assert_eq!(world.run(500), ["remove /w/pack/a.png", "remove /w/pack/b.png", "remove /w/pack/sub/c.png"]);
    }

    #[test]
    fn renaming_a_folder_moves_every_asset_and_looks_at_unknown_files() {
        let mut world = World::new();
        for name in ["/w/pack/a.png", "/w/pack/sub/c.png"] {
            world.write(name, name.as_bytes());
            world.change(Change::Closed { path: w(name) });
        }
        assert_eq!(world.run(1).len(), 2);
        world.write("/w/pack/new.png", b"never seen");
        world.disk.rename("/w/pack", "/w/pack2");
        world.change(Change::Moved { from: w("/w/pack"), to: w("/w/pack2") });
        assert_eq!(
            world.run(1),
            ["move /w/pack/a.png -> /w/pack2/a.png", "move /w/pack/sub/c.png -> /w/pack2/sub/c.png"]
        );
        assert_eq!(world.run(500), ["register /w/pack2/new.png"]);
    }

    #[test]
    fn a_folder_copied_in_is_scanned() {
        let mut world = World::new();
        world.disk.mkdir("/w/pack");
        world.write("/w/pack/a.png", b"a");
        world.write("/w/pack/.hidden", b"h");
        world.write("/w/pack/b.png.part", b"p");
        world.change(Change::FolderCreated { path: w("/w/pack") });
        assert_eq!(world.run(500), ["register /w/pack/a.png"]);
    }

    #[test]
    fn a_temp_file_that_vanishes_leaves_no_trace() {
        let mut world = World::new();
        world.write("/w/scratch.png", b"x");
        world.change(Change::Written { path: w("/w/scratch.png") });
        world.disk.remove("/w/scratch.png");
        world.change(Change::Removed { path: w("/w/scratch.png") });
        assert!(world.run(5000).is_empty());
        assert_eq!(world.planner.next_deadline(world.now), None, "nothing left pending");
    }

    #[test]
    fn a_late_duplicate_event_for_a_file_already_hashed_costs_nothing() {
        let mut world = world_with_a();
        // The debounced copy of the create arrives after the tapped close-write did the work.
        world.change(Change::Written { path: w("/w/a.png") });
        assert_eq!(world.planner.next_deadline(world.now), None, "nothing to settle");
        // After a failed action the same event is looked at again.
        let action = Action::Register { path: w("/w/a.png"), hash: String::new(), bytes: 0 };
        world.planner.failed(&action);
        world.change(Change::Written { path: w("/w/a.png") });
        assert!(world.planner.next_deadline(world.now).is_some());
        // And a real change is never skipped.
        let mut world = world_with_a();
        world.write("/w/a.png", b"v2");
        world.change(Change::Written { path: w("/w/a.png") });
        assert!(world.run(500).is_empty());
        assert_eq!(world.run(600), [format!("refresh /w/a.png (was {})", h8(b"v1"))]);
    }

    #[test]
    fn a_file_whose_sidecar_is_broken_is_reported_once_and_the_sidecar_left_alone() {
        let mut world = world_with_a();
        world.write("/w/a.png.asset.json", b"{ broken");
        world.write("/w/a.png", b"v2");
        world.change(Change::Closed { path: w("/w/a.png") });
        // Maybe caught half-written by another program: looked at again after the settle window.
        assert!(world.run(1).is_empty());
        assert_eq!(world.run(600), ["sidecar-edited /w/a.png.asset.json"]);
        world.write("/w/a.png", b"v3");
        world.change(Change::Closed { path: w("/w/a.png") });
        assert!(world.run(1).is_empty(), "the same broken sidecar is not reported again");
        assert_eq!(world.disk.read(Path::new("/w/a.png.asset.json")).unwrap(), b"{ broken");
    }

    #[test]
    fn a_sidecar_caught_half_written_is_not_reported_when_it_is_whole_at_the_second_look() {
        let mut world = world_with_a();
        world.write("/w/a.png.asset.json", b"{\"schema\": 1, \"uid\"");
        world.write("/w/a.png", b"v2");
        world.change(Change::Closed { path: w("/w/a.png") });
        assert!(world.run(1).is_empty());
        // The writer goes on writing it.
        world.write("/w/a.png.asset.json", b"{ still broken, but other bytes");
        let out = world.run(600);
        assert!(out.is_empty(), "different bytes at the second look: looked at again, not reported: {out:?}");
        assert_eq!(world.run(600), ["sidecar-edited /w/a.png.asset.json"], "the same bytes twice are reported");
    }

    #[test]
    fn a_refresh_waits_a_settle_window_and_a_matching_sidecar_written_meanwhile_ends_it() {
        let mut world = world_with_a();
        // A branch checkout: the file changes; its sidecar for the new content follows.
        world.write("/w/a.png", b"v2");
        world.change(Change::Closed { path: w("/w/a.png") });
        assert!(world.run(1).is_empty());
        let mut sidecar: Value =
            serde_json::from_slice(&world.disk.read(Path::new("/w/a.png.asset.json")).unwrap()).unwrap();
        sidecar["hash"] = json!(crate::digest::sha256_hex(b"v2"));
        sidecar["bytes"] = json!(2);
        let bytes = serde_json::to_vec_pretty(&sidecar).unwrap();
        world.write("/w/a.png.asset.json", &bytes);
        assert!(world.run(600).is_empty(), "the sidecar on disk already describes it: {:?}", world.log);
        assert_eq!(world.disk.read(Path::new("/w/a.png.asset.json")).unwrap(), bytes, "left as written");
    }

    #[test]
    fn deadlines_are_reported_so_the_engine_can_sleep() {
        let mut world = World::new();
        assert_eq!(world.planner.next_deadline(world.now), None);
        world.write("/w/a.png", b"x");
        world.change(Change::Written { path: w("/w/a.png") });
        assert_eq!(world.planner.next_deadline(world.now), Some(SETTLE));
    }
}
