//! The engine: one thread that drives the pipeline source → translate → plan → sink → history.
//!
//! It owns the event source ([`Backend`]), the [`Planner`], the journal and the lock, and nothing
//! else: sidecar writes happen in the [`Sink`], hook events go through [`Bus::emit_batch`] (one batch
//! per chunk of actions, so a burst becomes a few history appends, not thousands). The loop sleeps in
//! `recv_timeout` until an event arrives or the planner's next deadline; in native mode an idle
//! watcher wakes only to look at the stop flag.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use notify_debouncer_full::DebounceEventResult;
use serde_json::{json, Value};

use super::backend::{self, Backend, Fallback, Mode};
use super::change::{translate, Change};
use super::clock::{Clock, SystemClock};
use super::disk::RealDisk;
use super::journal::{Journal, WatchLock};
use super::plan::Planner;
use super::reconcile::{self, RescanCounts};
use super::rules::Rules;
use super::sink::{Action, Sink};
use crate::config::Config;
use crate::hooks::Bus;
use crate::paths::Paths;

/// How often an idle loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// At most this many actions per journal entry, registry batch and history append. A registry batch
/// ends with one durability barrier (`syncfs`), which also flushes whatever else is dirty on the
/// filesystem (during `cp -r`, the copy itself): fewer, larger chunks keep a burst fast.
const CHUNK: usize = 512;
/// Reconciles asked for by repeated watcher errors are at least this far apart.
const MIN_RESCAN_GAP: Duration = Duration::from_secs(2);
/// After actions fail (a full disk, a read-only folder), a reconcile retries them this much later;
/// the wait doubles while they keep failing, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often the watched folders themselves are looked at: deleted, created again, replaced or moved
/// away, which no event on the files inside them says.
const ROOT_CHECK: Duration = Duration::from_secs(1);

/// A folder's identity (device, inode); `None` when it is missing or not a folder.
fn folder_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

/// Everything the engine needs, resolved (no clap types, no config lookups later).
#[derive(Debug, Clone)]
pub struct Options {
    /// The assets root (sidecar paths are relative to it).
    pub assets_root: PathBuf,
    /// Watched folders: absolute, canonical, inside `assets_root`, none inside another.
    pub roots: Vec<PathBuf>,
    /// `obs.assets.ignore`.
    pub ignore: Vec<String>,
    /// The tool's own folders (never watched, whatever the roots).
    pub own_dirs: Vec<(PathBuf, &'static str)>,
    pub settle: Duration,
    pub force_poll: bool,
    pub poll_interval: Duration,
    /// `<data>/watch`: journal and lock.
    pub state_dir: PathBuf,
}

impl Options {
    /// Resolve from the runtime layout, the config and command-line overrides (`roots` relative to
    /// the current directory; `obs.watch.roots` relative to the assets root; none = the assets root).
    pub fn resolve(
        paths: &Paths,
        config: &Config,
        roots: &[PathBuf],
        settle_ms: Option<u64>,
        force_poll: bool,
    ) -> Result<Options> {
        let w = &config.obs.watch;
        crate::fs::ensure_dir(&paths.assets_root)?;
        let assets_root = canonical(&paths.assets_root);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let wanted: Vec<PathBuf> = if !roots.is_empty() {
            roots.iter().map(|r| cwd.join(r)).collect()
        } else if !w.roots.is_empty() {
            w.roots.iter().map(|r| paths.assets_root.join(r)).collect()
        } else {
            vec![paths.assets_root.clone()]
        };
        let mut resolved = Vec::new();
        for r in wanted {
            if !r.is_dir() {
                bail!("watched folder {} does not exist or is not a folder", r.display());
            }
            let c = canonical(&r);
            if !c.starts_with(&assets_root) {
                return Err(crate::exit_code::hinted(
                    format!("watched folder {} is not inside the assets root {}", c.display(), assets_root.display()),
                    "sidecar paths are relative to the assets root: set --assets-root or COMFYVN_ASSETS_ROOT to a \
                     folder that contains it",
                ));
            }
            resolved.push(c);
        }
        resolved.sort();
        resolved.dedup();
        let nested: Vec<PathBuf> =
            resolved.iter().filter(|r| resolved.iter().any(|o| o != *r && r.starts_with(o))).cloned().collect();
        resolved.retain(|r| !nested.contains(r));
        let own_dirs = vec![
            (canonical(&paths.log_dir), "log"),
            (canonical(&paths.data_dir), "data"),
            (canonical(&paths.cache_dir), "cache"),
            (canonical(&paths.config_dir), "config"),
        ];
        Ok(Options {
            assets_root,
            roots: resolved,
            ignore: config.obs.assets.ignore.clone(),
            own_dirs,
            settle: Duration::from_millis(settle_ms.unwrap_or(w.settle_ms)),
            force_poll: force_poll || w.poll,
            poll_interval: Duration::from_millis(w.poll_interval_ms.max(100)),
            state_dir: paths.data_dir.join("watch"),
        })
    }

    pub fn rules(&self) -> Result<Rules> {
        Rules::new(&self.assets_root, &self.roots, &self.own_dirs, &self.ignore)
    }

    /// How long a registered file may be missing before it counts as removed: the settle window, and
    /// in polling mode long enough for a rename's two halves to show up in different polls.
    fn grace(&self, mode: Mode) -> Duration {
        match mode {
            Mode::Native => self.settle,
            Mode::Polling => self.settle.max(self.poll_interval * 2 + backend::POLL_DEBOUNCE),
        }
    }
}

/// The canonical form of `p`, resolving symlinks of the longest existing prefix (the rest is kept as
/// written), so event paths from notify and paths given by a person compare equal.
pub fn canonical(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |acc, name| acc.join(name));
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// What a watcher did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub actions: u64,
    pub events: u64,
    pub errors: u64,
    pub rescans: u64,
}

/// A running watcher (see [`spawn`]).
#[derive(Debug)]
pub struct Watcher {
    mode: Mode,
    fallback: Option<Fallback>,
    roots: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Summary>>,
}

impl Watcher {
    /// The mode the watcher started in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why native mode was given up at start, if it was.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Ask the watcher to stop: it finishes the chunk in flight, appends its events and returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Wait for the watcher to stop (after [`Watcher::stop`] or the shared stop flag).
    pub fn join(self) -> Result<Summary> {
        self.thread.join().map_err(|_| anyhow!("the watcher thread panicked"))?
    }
}

/// Start a watcher on its own thread: takes the lock, starts the event source (native, else polling,
/// saying why), then, on the thread, replays an unfinished journal, emits `obs.watch_started`,
/// reconciles (`obs.watch_rescanned`) and follows events until `stop` is set. Setup errors (bad
/// folders, another watcher running, no event source) are returned here, before any thread runs.
pub fn spawn<S: Sink + Send + 'static>(options: Options, sink: S, bus: Bus, stop: Arc<AtomicBool>) -> Result<Watcher> {
    spawn_with_clock(options, sink, bus, stop, Arc::new(SystemClock::new()))
}

/// [`spawn`] with a chosen clock.
pub fn spawn_with_clock<S: Sink + Send + 'static>(
    options: Options,
    sink: S,
    bus: Bus,
    stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
) -> Result<Watcher> {
    let lock = WatchLock::acquire(&options.state_dir)?;
    let rules = options.rules()?;
    let (tx, rx) = channel();
    let (source, fallback) = backend::start(&options.roots, options.force_poll, options.poll_interval, tx.clone())?;
    let mode = source.mode();
    let mut planner = Planner::new(rules, options.settle, options.grace(mode));
    planner.set_remember_writes(mode == Mode::Polling);
    let roots = options.roots.clone();
    let root_ids = roots.iter().map(|r| folder_id(r)).collect();
    let stop2 = Arc::clone(&stop);
    let reason =
        fallback.as_ref().map(|f| f.message.clone()).or(options.force_poll.then(|| "polling was asked for".into()));
    let thread = std::thread::Builder::new()
        .name("comfyvn-watch".into())
        .spawn(move || {
            let mut engine = Engine {
                journal: Journal::new(&options.state_dir),
                options,
                sink,
                bus,
                disk: RealDisk,
                clock,
                planner,
                stop: stop2,
                source: Some(source),
                tx,
                rx,
                summary: Summary::default(),
                rescan: None,
                last_rescan: None,
                failed: 0,
                retry_at: None,
                retry_wait: RETRY_FIRST,
                root_ids,
                roots_checked: Duration::ZERO,
                others: None,
                own_seqs: std::collections::BTreeSet::new(),
                _lock: lock,
            };
            let result = engine.run(reason);
            if let Some(s) = engine.source.take() {
                s.stop();
            }
            if let Err(e) = &result {
                tracing::error!(error = %format!("{e:#}"), "the watcher stopped on an error");
            }
            result
        })
        .context("cannot start the watcher thread")?;
    Ok(Watcher { mode, fallback, roots, stop, thread })
}

struct Engine<S: Sink> {
    options: Options,
    sink: S,
    bus: Bus,
    disk: RealDisk,
    clock: Arc<dyn Clock>,
    planner: Planner,
    journal: Journal,
    stop: Arc<AtomicBool>,
    source: Option<Backend>,
    tx: Sender<DebounceEventResult>,
    rx: Receiver<DebounceEventResult>,
    summary: Summary,
    /// A reconcile asked for and not yet run (rate-limited).
    rescan: Option<String>,
    last_rescan: Option<Instant>,
    /// Actions that failed since the last retry was scheduled, and when (clock time) it runs.
    failed: u64,
    retry_at: Option<Duration>,
    retry_wait: Duration,
    /// Each watched folder's identity when last looked at (`None`: missing), and when that was.
    root_ids: Vec<Option<(u64, u64)>>,
    roots_checked: Duration,
    /// The hook history after this watcher started, for the asset events other processes publish.
    others: Option<crate::hooks::Follower>,
    /// `seq`s this watcher appended that the follower has not passed yet.
    own_seqs: std::collections::BTreeSet<u64>,
    _lock: WatchLock,
}

impl<S: Sink> Engine<S> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn mode(&self) -> Mode {
        self.source.as_ref().map(Backend::mode).unwrap_or(Mode::Polling)
    }

    fn run(&mut self, start_reason: Option<String>) -> Result<Summary> {
        match self.bus.history.last_seq().and_then(|seq| self.bus.history.follow(seq)) {
            Ok(f) => self.others = Some(f),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot follow the hook history; edits by other processes may be reported twice")
            }
        }
        self.replay_journal();
        let started = self.started_event(start_reason);
        self.emit(vec![started]).context("cannot append obs.watch_started to the hook history")?;
        self.reconcile("start");
        crate::memory::release_free(); // the start-up reconcile's walk of the whole tree
        while !self.stopped() {
            let now = self.clock.now();
            let mut wait = STOP_CHECK;
            if let Some(d) = self.planner.next_deadline(now) {
                wait = wait.min(d.saturating_sub(now));
            }
            match self.rx.recv_timeout(wait) {
                Ok(first) => {
                    self.take(first);
                    while let Ok(more) = self.rx.try_recv() {
                        self.take(more);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the file event source stopped unexpectedly"),
            }
            self.absorb_others();
            if let Some(reason) = self.planner.take_rescan() {
                self.rescan.get_or_insert(reason);
            }
            if let Some(reason) = self.rescan.take() {
                if self.last_rescan.is_some_and(|t| t.elapsed() < MIN_RESCAN_GAP) {
                    self.rescan = Some(reason);
                } else {
                    self.reconcile(&reason);
                }
            }
            let actions = self.planner.tick(self.clock.now(), &self.disk, &self.sink);
            self.execute(actions, &mut RescanCounts::default());
            self.schedule_retry();
            self.check_roots();
            for problem in self.planner.take_errors() {
                self.summary.errors += 1;
                tracing::warn!(problem = %problem, "watch: skipped a file");
            }
        }
        Ok(self.summary)
    }

    /// Take one message from the event source.
    fn take(&mut self, message: DebounceEventResult) {
        let now = self.clock.now();
        match message {
            Ok(events) => {
                for event in events {
                    let at = self.clock.at(event.time);
                    for change in translate(&event, self.planner.rules()) {
                        self.planner.observe_at(change, at, now, &self.disk, &self.sink);
                    }
                }
            }
            Err(errors) => {
                for e in errors {
                    if backend::is_limit_error(&e) && self.mode() == Mode::Native {
                        self.fall_back(&e);
                    } else {
                        tracing::error!(error = %e, "file watcher error; reconciling with the disk");
                        self.planner.observe(
                            Change::Rescan { reason: format!("watcher error: {e}") },
                            now,
                            &self.disk,
                            &self.sink,
                        );
                    }
                }
            }
        }
    }

    /// The native watcher ran out of watches while following new folders: switch to polling.
    fn fall_back(&mut self, err: &notify::Error) {
        let fb = backend::fallback_for(err, self.options.poll_interval).expect("limit errors fall back");
        tracing::error!(hint = %fb.hint, "{}", fb.message);
        if let Some(old) = self.source.take() {
            old.stop();
        }
        match backend::start_polling(&self.options.roots, self.options.poll_interval, self.tx.clone()) {
            Ok(b) => self.source = Some(b),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start the polling watcher either");
                self.stop.store(true, Ordering::SeqCst);
                return;
            }
        }
        self.planner.set_remember_writes(true);
        self.planner.set_grace(self.options.grace(Mode::Polling));
        let event = self.started_event(Some(fb.message.clone()));
        if let Err(e) = self.emit(vec![event]) {
            tracing::error!(error = %format!("{e:#}"), "cannot append obs.watch_started");
        }
        self.rescan = Some(format!("switched to polling: {}", fb.message));
    }

    fn started_event(&self, reason: Option<String>) -> (String, Value) {
        let roots: Vec<String> = self.options.roots.iter().map(|r| r.display().to_string()).collect();
        (
            "obs.watch_started".into(),
            json!({
                "mode": self.mode().as_str(),
                "roots": roots,
                "settle_ms": self.options.settle.as_millis() as u64,
                "reason": reason,
                "pid": std::process::id(),
            }),
        )
    }

    fn emit(&mut self, events: Vec<(String, Value)>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as u64;
        let appended = self.bus.emit_batch(events)?;
        if self.others.is_some() {
            self.own_seqs.extend(appended.iter().map(|e| e.seq));
        }
        self.summary.events += n;
        Ok(())
    }

    /// Asset events another process of this tool published (`assets tag`, `register`, `remove`, the
    /// API, `audit --fix`): that process already reported what it did to the files, so the planner
    /// takes its writes and removals as seen instead of reporting them a second time.
    fn absorb_others(&mut self) {
        let Some(follower) = self.others.as_mut() else { return };
        let envs = match follower.poll() {
            Ok(envs) => envs,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot read the hook history");
                return;
            }
        };
        let upto = follower.last_seq();
        let now = self.clock.now();
        for env in envs {
            if self.own_seqs.remove(&env.seq) {
                continue;
            }
            let Some(rel) = env.data.get("path").and_then(Value::as_str) else { continue };
            let asset = canonical(&self.options.assets_root.join(rel));
            match env.event.as_str() {
                "on_asset_registered" | "on_asset_saved" | "on_asset_meta_updated" | "on_asset_sidecar_written" => {
                    if let Some(prev) = env.data.get("previous_path").and_then(Value::as_str) {
                        self.planner.external_remove(&canonical(&self.options.assets_root.join(prev)));
                    }
                    self.planner.external_write(&asset, &self.disk, &self.sink, now);
                }
                "on_asset_removed" => self.planner.external_remove(&asset),
                _ => {}
            }
        }
        self.own_seqs = self.own_seqs.split_off(&(upto + 1));
    }

    /// Publish the events of actions that a killed watcher carried out but did not record.
    fn replay_journal(&mut self) {
        let actions = match self.journal.take() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the watch journal");
                return;
            }
        };
        if actions.is_empty() {
            return;
        }
        let mut events = Vec::new();
        for a in &actions {
            match self.sink.replay(a) {
                Ok(ev) => events.extend(ev),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot replay a journaled action"),
            }
        }
        tracing::info!(actions = actions.len(), events = events.len(), "replayed an unfinished watch journal");
        match self.emit(events) {
            Ok(()) => {
                if let Err(e) = self.journal.commit() {
                    tracing::error!(error = %format!("{e:#}"), "cannot clear the watch journal");
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot append replayed events; journal kept"),
        }
    }

    /// A watched folder that was deleted, moved away or replaced takes its watch with it (inotify
    /// watches inodes, not paths): say so (`obs.watch_root_lost`), and when a folder is at that path
    /// again, watch it again and reconcile (`obs.watch_root_restored`).
    fn check_roots(&mut self) {
        let now = self.clock.now();
        if now < self.roots_checked + ROOT_CHECK {
            return;
        }
        self.roots_checked = now;
        let mut events = Vec::new();
        let mut restored = Vec::new();
        for (i, root) in self.options.roots.iter().enumerate() {
            let id = folder_id(root);
            if id == self.root_ids[i] {
                continue;
            }
            let shown = root.display().to_string();
            if self.root_ids[i].is_some() {
                let reason = if id.is_some() { "replaced" } else { "missing" };
                tracing::warn!(root = %shown, reason, "a watched folder is gone; watching for it to come back");
                events.push(("obs.watch_root_lost".to_string(), json!({"root": shown, "reason": reason})));
            }
            if id.is_some() {
                restored.push(shown);
            }
            self.root_ids[i] = id;
        }
        if !restored.is_empty() {
            if let Err(e) = self.restart_source() {
                tracing::error!(error = %format!("{e:#}"), "cannot watch the folders again; retrying");
                // Look again at the next check.
                for (i, root) in self.options.roots.iter().enumerate() {
                    if restored.contains(&root.display().to_string()) {
                        self.root_ids[i] = None;
                    }
                }
                restored.clear();
            }
        }
        for root in &restored {
            tracing::info!(root = %root, "a watched folder is back; watching it again");
            events.push(("obs.watch_root_restored".to_string(), json!({"root": root, "mode": self.mode().as_str()})));
        }
        if let Err(e) = self.emit(events) {
            tracing::error!(error = %format!("{e:#}"), "cannot append to the hook history");
        }
        if !restored.is_empty() {
            self.rescan.get_or_insert(format!("watched folder back: {}", restored.join(", ")));
        }
    }

    /// Stop the event source and start a new one on the folders that exist now.
    fn restart_source(&mut self) -> Result<()> {
        if let Some(old) = self.source.take() {
            old.stop();
        }
        let present: Vec<PathBuf> = self.options.roots.iter().filter(|r| folder_id(r).is_some()).cloned().collect();
        let poll = self.options.force_poll;
        let (source, fallback) = backend::start(&present, poll, self.options.poll_interval, self.tx.clone())?;
        if let Some(fb) = fallback {
            tracing::error!(hint = %fb.hint, "{}", fb.message);
        }
        self.source = Some(source);
        Ok(())
    }

    /// Failed actions are retried by a reconcile (which plans them again from what is on disk), after
    /// a wait that doubles while they keep failing; a clean reconcile resets it.
    fn schedule_retry(&mut self) {
        let now = self.clock.now();
        match self.retry_at {
            None if self.failed > 0 => {
                self.retry_at = Some(now + self.retry_wait);
                tracing::warn!(failed = self.failed, "watch: retrying the failed actions in {:?}", self.retry_wait);
            }
            Some(at) if now >= at => {
                self.retry_at = None;
                let n = std::mem::take(&mut self.failed);
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                self.rescan.get_or_insert(format!("retrying {n} failed actions"));
            }
            _ => {}
        }
    }

    /// Bring sidecars in line with the disk and publish `obs.watch_rescanned`.
    fn reconcile(&mut self, reason: &str) {
        self.last_rescan = Some(Instant::now());
        self.summary.rescans += 1;
        let wall_now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let planner = &self.planner;
        let plan = reconcile::plan(planner.rules(), &self.disk, &self.sink, self.options.settle, wall_now_ns, &|p| {
            planner.is_settling(p)
        });
        for problem in &plan.problems {
            tracing::warn!(problem = %problem, "reconcile");
        }
        let mut counts = plan.counts;
        let now = self.clock.now();
        for (path, stat) in &plan.busy {
            self.planner.settle_file(path, *stat, now);
        }
        self.planner.set_index(plan.known);
        let failed_before = self.failed;
        self.execute(plan.actions, &mut counts);
        if self.failed == failed_before && self.retry_at.is_none() {
            self.retry_wait = RETRY_FIRST;
        }
        self.schedule_retry();
        let data = json!({
            "reason": reason,
            "registered": counts.registered,
            "updated": counts.updated,
            "moved": counts.moved,
            "removed": counts.removed,
            "unchanged": counts.unchanged,
            "errors": counts.errors,
            "settling": plan.busy.len(),
            "indexed": self.planner.indexed(),
        });
        tracing::info!(%reason, registered = counts.registered, updated = counts.updated, removed = counts.removed, "reconciled");
        if let Err(e) = self.emit(vec![("obs.watch_rescanned".into(), data)]) {
            tracing::error!(error = %format!("{e:#}"), "cannot append obs.watch_rescanned");
        }
    }

    /// Carry out actions in journaled chunks; consecutive registrations/refreshes run in parallel.
    /// Stops between chunks when asked to (the chunk in flight finishes and is recorded). Adds what
    /// happened to `counts`.
    fn execute(&mut self, actions: Vec<Action>, counts: &mut RescanCounts) {
        let mut ran = 0usize;
        let mut rest = actions.as_slice();
        while !rest.is_empty() {
            if self.stopped() && ran > 0 {
                break;
            }
            let n = chunk_len(rest);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            if let Err(e) = self.journal.begin(chunk) {
                tracing::error!(error = %format!("{e:#}"), "cannot write the watch journal; going on without it");
            }
            let sink = &self.sink;
            let results: Vec<Result<super::sink::Applied>> =
                if chunk.len() > 1 && chunk.iter().all(Action::is_independent) {
                    sink.apply_batch(chunk)
                } else {
                    chunk.iter().map(|a| sink.apply(a)).collect()
                };
            let now = self.clock.now();
            let mut events = Vec::new();
            for (action, result) in chunk.iter().zip(results) {
                match result {
                    Ok(applied) => {
                        self.planner.applied(action, &applied, now, &self.disk);
                        let invalid = applied.events.iter().any(|(name, _)| name == "obs.sidecar_invalid");
                        events.extend(applied.events);
                        self.summary.actions += 1;
                        count(counts, action, if invalid { Outcome::Invalid } else { Outcome::Done });
                    }
                    Err(e) => {
                        self.summary.errors += 1;
                        self.failed += 1;
                        self.planner.failed(action);
                        tracing::error!(path = %action.path().display(), error = %format!("{e:#}"), "watch action failed");
                        count(counts, action, Outcome::Failed);
                    }
                }
            }
            match self.emit(events) {
                Ok(()) => {
                    if let Err(e) = self.journal.commit() {
                        tracing::error!(error = %format!("{e:#}"), "cannot clear the watch journal");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot append to the hook history; the journal keeps the actions for replay")
                }
            }
            ran += chunk.len();
        }
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Ran, and found the sidecar invalid.
    Invalid,
    Failed,
}

/// The length of the next chunk: up to [`CHUNK`] actions, all independent or all in order.
fn chunk_len(actions: &[Action]) -> usize {
    let first = actions[0].is_independent();
    actions.iter().take(CHUNK).take_while(|a| a.is_independent() == first).count().max(1)
}

fn count(counts: &mut RescanCounts, action: &Action, outcome: Outcome) {
    match (action, outcome) {
        (_, Outcome::Failed) | (_, Outcome::Invalid) => counts.errors += 1,
        (Action::Register { .. }, _) => counts.registered += 1,
        (Action::Refresh { .. }, _) | (Action::SidecarEdited { .. }, _) => counts.updated += 1,
        (Action::Move { .. }, _) | (Action::Restore { .. }, _) => counts.moved += 1,
        (Action::Remove { .. }, _) => counts.removed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_independent_runs_together() {
        let reg = |p: &str| Action::Register { path: p.into(), hash: "h".into(), bytes: 1 };
        let mv = |a: &str, b: &str| Action::Move { from: a.into(), to: b.into() };
        let actions = vec![reg("/a"), reg("/b"), mv("/c", "/d"), mv("/e", "/f"), reg("/g")];
        assert_eq!(chunk_len(&actions), 2);
        assert_eq!(chunk_len(&actions[2..]), 2);
        assert_eq!(chunk_len(&actions[4..]), 1);
        let many: Vec<Action> = (0..CHUNK + 100).map(|i| reg(&format!("/{i}"))).collect();
        assert_eq!(chunk_len(&many), CHUNK);
    }

    #[test]
    fn canonical_resolves_the_existing_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(canonical(&dir.path().join("not/yet")), real.join("not/yet"));
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(canonical(&real.join("link/x")), real.join("x"));
    }
}

/// The engine against the real filesystem and real notify, with a minimal registry stand-in that
/// writes `{uid, hash, bytes}` sidecars (the real registry is wired in `registry_sink`).
#[cfg(test)]
mod live_tests {
    use super::*;
    use crate::watch::rules::sidecar_of;
    use crate::watch::sink::{Applied, HookEvent, Known};

    struct JsonSink;

    fn ev(name: &str, path: &Path) -> HookEvent {
        (name.to_string(), json!({ "path": path }))
    }

    impl JsonSink {
        fn write(&self, asset: &Path, k: &Known) -> Result<PathBuf> {
            let s = sidecar_of(asset);
            crate::fs::write_json_atomic(&s, &json!({"uid": k.uid, "hash": k.hash, "bytes": k.bytes}))?;
            Ok(s)
        }
    }

    impl Sink for JsonSink {
        fn lookup(&self, asset: &Path) -> Result<Option<Known>> {
            let Some(v) = crate::fs::read_json_opt(&sidecar_of(asset))? else { return Ok(None) };
            Ok(Some(serde_json::from_value(v)?))
        }
        fn apply(&self, action: &Action) -> Result<Applied> {
            match action {
                Action::Register { path, hash, bytes } => {
                    let known = Known { uid: hash[..16].into(), hash: hash.clone(), bytes: *bytes };
                    let s = self.write(path, &known)?;
                    Ok(Applied {
                        events: vec![ev("on_asset_sidecar_written", path), ev("on_asset_registered", path)],
                        known: Some(known),
                        sidecar: Some(s),
                        trashed: None,
                    })
                }
                Action::Move { from, to } => {
                    let known = self.lookup(from)?.context("no sidecar")?;
                    std::fs::remove_file(sidecar_of(from))?;
                    let s = self.write(to, &known)?;
                    Ok(Applied {
                        events: vec![ev("on_asset_meta_updated", to)],
                        known: Some(known),
                        sidecar: Some(s),
                        trashed: None,
                    })
                }
                Action::Remove { path, .. } => {
                    let _ = std::fs::remove_file(sidecar_of(path));
                    Ok(Applied { events: vec![ev("on_asset_removed", path)], ..Default::default() })
                }
                other => bail!("not used by these tests: {other:?}"),
            }
        }
        fn replay(&self, _action: &Action) -> Result<Vec<HookEvent>> {
            Ok(Vec::new())
        }
    }

    fn wait_for(bus: &Bus, what: &str, pred: impl Fn(&crate::hooks::Envelope) -> bool) -> crate::hooks::Envelope {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = bus.history.tail(10_000, &Default::default()).unwrap();
            if let Some(e) = all.into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn run_scenario(force_poll: bool) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(&dir.path().canonicalize().unwrap());
        let mut config = Config::defaults();
        config.obs.watch.poll_interval_ms = 100;
        std::fs::create_dir_all(&paths.assets_root).unwrap();
        std::fs::write(paths.assets_root.join("before.png"), b"there before the start").unwrap();
        let options = Options::resolve(&paths, &config, &[], Some(150), force_poll).unwrap();
        let bus = Bus::open(&paths, &config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let w = spawn(options, JsonSink, bus.clone(), Arc::clone(&stop)).unwrap();
        assert_eq!(w.mode(), if force_poll { Mode::Polling } else { Mode::Native });
        let started = wait_for(&bus, "started", |e| e.event == "obs.watch_started");
        assert_eq!(started.data["mode"], w.mode().as_str());
        let rescan = wait_for(&bus, "rescanned", |e| e.event == "obs.watch_rescanned");
        // The file from before the start is older than the settle window only by luck of timing: it
        // is either registered by the reconcile or settled and registered just after.
        let before = paths.assets_root.join("before.png");
        wait_for(&bus, "before.png", |e| e.event == "on_asset_registered" && e.data["path"] == json!(before));
        assert!(rescan.data["errors"] == 0, "{}", rescan.data);

        let a = paths.assets_root.join("a.png");
        std::fs::write(&a, b"dropped").unwrap();
        wait_for(&bus, "a.png registered", |e| e.event == "on_asset_registered" && e.data["path"] == json!(a));
        assert!(sidecar_of(&a).exists());

        let b = paths.assets_root.join("sub").join("b.png");
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::rename(&a, &b).unwrap();
        wait_for(&bus, "moved", |e| e.event == "on_asset_meta_updated" && e.data["path"] == json!(b));
        assert!(sidecar_of(&b).exists() && !sidecar_of(&a).exists());

        std::fs::remove_file(&b).unwrap();
        wait_for(&bus, "removed", |e| e.event == "on_asset_removed" && e.data["path"] == json!(b));

        w.stop();
        let summary = w.join().unwrap();
        assert!(summary.actions >= 4, "{summary:?}");
        let all = bus.history.tail(10_000, &Default::default()).unwrap();
        let registered = all.iter().filter(|e| e.event == "on_asset_registered").count();
        assert_eq!(registered, 2, "each file registered once: {all:#?}");
        assert!(!all.iter().any(|e| e.event == "obs.sidecar_invalid"), "no feedback from our own writes");
    }

    #[test]
    fn native_engine_follows_drop_rename_delete() {
        run_scenario(false);
    }

    #[test]
    fn polling_engine_follows_drop_rename_delete() {
        run_scenario(true);
    }
}
