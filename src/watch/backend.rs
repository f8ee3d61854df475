//! The event source: notify behind notify-debouncer-full, native (inotify) when the platform allows
//! it, polling otherwise. The only file that constructs notify watchers.
//!
//! The debouncer stitches rename halves and folds bursts of create/modify events per path; its tick
//! thread is the only thing an idle watcher runs, so the tick is long (50 ms). The events that say
//! something is *final* cannot wait for it: close-write (a writer is done: the latency target),
//! removals and paired renames (so a file written, closed and deleted or renamed within one debounce
//! window is never registered under a name that no longer exists). [`Tapped`] sends those straight
//! to the engine as well; their later debounced copies are harmless duplicates the planner
//! recognises (it looks at the disk, and skips a file whose size and mtime it already hashed).
//! Opens and read-closes (the watcher's own hashing produces them) are dropped at the tap.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{
    ErrorKind, Event, EventHandler, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind,
};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, DebouncedEvent, Debouncer, NoCache, RecommendedCache,
};
use serde::Serialize;

/// Native debounce and tick: idle cost is one wake-up per tick.
pub const NATIVE_DEBOUNCE: Duration = Duration::from_millis(50);
/// Polling debounce (events arrive once per poll anyway).
pub const POLL_DEBOUNCE: Duration = Duration::from_millis(50);

/// How events are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Native,
    Polling,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Polling => "polling",
        }
    }
}

/// A running event source. Dropping it stops its threads.
pub enum Backend {
    Native(Debouncer<Tapped, RecommendedCache>),
    Polling(Debouncer<PollWatcher, NoCache>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Native(_) => "Backend::Native",
            Backend::Polling(_) => "Backend::Polling",
        })
    }
}

impl Backend {
    pub fn mode(&self) -> Mode {
        match self {
            Backend::Native(_) => Mode::Native,
            Backend::Polling(_) => Mode::Polling,
        }
    }

    /// Stop without waiting for the debouncer thread's next tick.
    pub fn stop(self) {
        match self {
            Backend::Native(d) => d.stop_nonblocking(),
            Backend::Polling(d) => d.stop_nonblocking(),
        }
    }
}

/// Why native mode was given up, for the person (message + how to fix it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub message: String,
    pub hint: String,
}

/// Start watching `roots` recursively. Native unless `force_poll`; when the native watcher cannot
/// start for a reason polling avoids (watch or instance limits, no inotify at all), falls back to
/// polling and says why.
pub fn start(
    roots: &[PathBuf],
    force_poll: bool,
    poll_interval: Duration,
    tx: Sender<DebounceEventResult>,
) -> Result<(Backend, Option<Fallback>)> {
    if !force_poll {
        match start_native(roots, tx.clone()) {
            Ok(b) => return Ok((b, None)),
            Err(e) => match fallback_for(&e, poll_interval) {
                Some(fb) => return Ok((start_polling(roots, poll_interval, tx)?, Some(fb))),
                None => {
                    let path = e.paths.first().map(|p| format!(" {}", p.display())).unwrap_or_default();
                    return Err(anyhow::Error::new(e)).with_context(|| format!("cannot watch{path}"));
                }
            },
        }
    }
    Ok((start_polling(roots, poll_interval, tx)?, None))
}

fn start_native(roots: &[PathBuf], tx: Sender<DebounceEventResult>) -> notify::Result<Backend> {
    TAP.with(|t| *t.borrow_mut() = Some(tx.clone()));
    let built = new_debouncer_opt::<_, Tapped, RecommendedCache>(
        NATIVE_DEBOUNCE,
        Some(NATIVE_DEBOUNCE),
        tx,
        RecommendedCache::new(),
        notify::Config::default(),
    );
    TAP.with(|t| t.borrow_mut().take());
    let mut d = built?;
    for root in roots {
        d.watch(root, RecursiveMode::Recursive)?;
    }
    Ok(Backend::Native(d))
}

thread_local! {
    /// The engine's channel, handed to [`Tapped::new`]: notify's `Watcher::new` has no way to pass
    /// it, and the debouncer calls it synchronously on the thread that builds the debouncer.
    static TAP: RefCell<Option<Sender<DebounceEventResult>>> = const { RefCell::new(None) };
}

/// What the tap does with one raw event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to the engine, and not to the debouncer (close-write).
    Fast,
    /// Straight to the engine and also through the debouncer (removals, paired renames: the
    /// debouncer needs them to keep its per-path queues right).
    Both,
    /// Through the debouncer only.
    Debounce,
    /// Nowhere (opens, read-closes).
    Drop,
}

/// Where a raw event goes (see the module doc).
pub fn route(kind: &EventKind) -> Route {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Route::Fast,
        EventKind::Access(_) => Route::Drop,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Route::Both,
        _ => Route::Debounce,
    }
}

/// Recognises this process's own atomic writes at the source: every file the tool writes goes
/// through a hidden temp file `.<name>.tmp<pid>-<n>` renamed over the target (`crate::fs`). The temp
/// file's events, and the rename's halves (the `to` half is matched by its rename cookie), are
/// dropped before the debouncer, which would otherwise turn "temp created, renamed over the sidecar"
/// into a create of the sidecar. Another process's writes (its pid differs) are seen as usual.
#[derive(Debug)]
pub struct OwnWrites {
    marker: String,
    /// Rename cookies of our temp files' `from` halves still waiting for their `to` half.
    cookies: VecDeque<usize>,
}

impl OwnWrites {
    pub fn new(pid: u32) -> OwnWrites {
        OwnWrites { marker: format!(".tmp{pid}-"), cookies: VecDeque::new() }
    }

    fn is_own_temp(&self, path: &Path) -> bool {
        path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && n.contains(&self.marker))
    }

    /// True when `event` is part of one of this process's own writes (and so must be dropped).
    pub fn is_own(&mut self, event: &Event) -> bool {
        let tracker = event.attrs.tracker();
        match (&event.kind, event.paths.as_slice()) {
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), [from]) if self.is_own_temp(from) => {
                if let Some(t) = tracker {
                    if self.cookies.len() >= 1024 {
                        self.cookies.pop_front();
                    }
                    self.cookies.push_back(t);
                }
                true
            }
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), _) => {
                match tracker.and_then(|t| self.cookies.iter().position(|c| *c == t)) {
                    Some(i) => {
                        self.cookies.remove(i);
                        true
                    }
                    None => false,
                }
            }
            _ => event.paths.first().is_some_and(|p| self.is_own_temp(p)),
        }
    }
}

/// The platform's native watcher with the tap described in the module doc.
#[derive(Debug)]
pub struct Tapped(RecommendedWatcher);

impl Watcher for Tapped {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let tap = TAP.with(|t| t.borrow().clone());
        let mut own = OwnWrites::new(std::process::id());
        let inner = RecommendedWatcher::new(
            move |res: notify::Result<Event>| {
                let Ok(event) = &res else { return handler.handle_event(res) };
                if own.is_own(event) {
                    return;
                }
                let r = route(&event.kind);
                if matches!(r, Route::Fast | Route::Both) {
                    if let Some(tx) = &tap {
                        // A closed channel means the engine is gone; nothing to do.
                        let _ = tx.send(Ok(vec![DebouncedEvent::new(event.clone(), Instant::now())]));
                    }
                }
                if matches!(r, Route::Both | Route::Debounce) || (r == Route::Fast && tap.is_none()) {
                    handler.handle_event(res);
                }
            },
            config,
        )?;
        Ok(Tapped(inner))
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn configure(&mut self, option: notify::Config) -> notify::Result<bool> {
        self.0.configure(option)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// The polling backend (also used after a runtime fallback).
pub fn start_polling(roots: &[PathBuf], interval: Duration, tx: Sender<DebounceEventResult>) -> Result<Backend> {
    let config = notify::Config::default().with_poll_interval(interval);
    let mut d = new_debouncer_opt::<_, PollWatcher, NoCache>(POLL_DEBOUNCE, Some(POLL_DEBOUNCE), tx, NoCache, config)
        .context("cannot start the polling watcher")?;
    for root in roots {
        d.watch(root, RecursiveMode::Recursive).with_context(|| format!("cannot watch {}", root.display()))?;
    }
    Ok(Backend::Polling(d))
}

/// Read a number from `/proc/sys/fs/inotify/<name>` for messages ("unknown" elsewhere).
fn inotify_limit(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a native-watcher error is one polling avoids, and the message that says so.
pub fn fallback_for(err: &notify::Error, poll_interval: Duration) -> Option<Fallback> {
    let polling = format!("falling back to polling every {} ms", poll_interval.as_millis());
    let at = err.paths.first().map(|p| format!(" at {}", p.display())).unwrap_or_default();
    match &err.kind {
        ErrorKind::MaxFilesWatch => Some(Fallback {
            message: format!(
                "the inotify watch limit is used up{at} (fs.inotify.max_user_watches = {}, one watch per folder); {polling}",
                inotify_limit("max_user_watches")
            ),
            hint: "raise the limit: `sudo sysctl fs.inotify.max_user_watches=524288`, and make it permanent with \
                   `echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-inotify.conf`"
                .into(),
        }),
        ErrorKind::Io(io) if io.raw_os_error() == Some(24) => Some(Fallback {
            message: format!(
                "no inotify instance is left (fs.inotify.max_user_instances = {}); {polling}",
                inotify_limit("max_user_instances")
            ),
            hint: "raise the limit: `sudo sysctl fs.inotify.max_user_instances=1024` (or stop other watchers)".into(),
        }),
        ErrorKind::Io(io) if io.raw_os_error() == Some(38) => Some(Fallback {
            message: format!("this system has no native file events (inotify: {io}); {polling}"),
            hint: "nothing to fix: polling works everywhere; pass --poll to skip the attempt".into(),
        }),
        _ => None,
    }
}

/// True for a runtime error that means the native watcher stopped covering every folder.
pub fn is_limit_error(err: &notify::Error) -> bool {
    matches!(err.kind, ErrorKind::MaxFilesWatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_limit_names_the_sysctl_and_how_to_raise_it() {
        let e = notify::Error::new(ErrorKind::MaxFilesWatch).add_path(PathBuf::from("/r/assets/deep"));
        let fb = fallback_for(&e, Duration::from_millis(2000)).unwrap();
        assert!(fb.message.contains("fs.inotify.max_user_watches"), "{}", fb.message);
        assert!(
            fb.message.contains("/r/assets/deep") && fb.message.contains("polling every 2000 ms"),
            "{}",
            fb.message
        );
        assert!(fb.hint.contains("sudo sysctl fs.inotify.max_user_watches=") && fb.hint.contains("/etc/sysctl.d"));
        assert!(is_limit_error(&e));
    }

    #[test]
    fn instance_limit_and_missing_inotify_fall_back_too() {
        let emfile = notify::Error::io(std::io::Error::from_raw_os_error(24));
        assert!(fallback_for(&emfile, Duration::from_secs(1)).unwrap().message.contains("max_user_instances"));
        let enosys = notify::Error::io(std::io::Error::from_raw_os_error(38));
        assert!(fallback_for(&enosys, Duration::from_secs(1)).is_some());
    }

    #[test]
    fn other_errors_do_not_fall_back() {
        assert_eq!(fallback_for(&notify::Error::path_not_found(), Duration::from_secs(1)), None);
        let eacces = notify::Error::io(std::io::Error::from_raw_os_error(13));
        assert_eq!(fallback_for(&eacces, Duration::from_secs(1)), None);
        assert!(!is_limit_error(&eacces));
    }

    #[test]
    fn the_tap_routes_final_events_past_the_debouncer() {
        use notify::event::{CreateKind, DataChange, RemoveKind};
        assert_eq!(route(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Route::Fast);
        assert_eq!(route(&EventKind::Access(AccessKind::Close(AccessMode::Read))), Route::Drop);
        assert_eq!(route(&EventKind::Access(AccessKind::Open(AccessMode::Any))), Route::Drop);
        assert_eq!(route(&EventKind::Remove(RemoveKind::File)), Route::Both);
        assert_eq!(route(&EventKind::Modify(ModifyKind::Name(RenameMode::Both))), Route::Both);
        assert_eq!(route(&EventKind::Modify(ModifyKind::Name(RenameMode::From))), Route::Debounce);
        assert_eq!(route(&EventKind::Create(CreateKind::File)), Route::Debounce);
        assert_eq!(route(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Route::Debounce);
    }

    #[test]
    fn own_writes_are_dropped_at_the_source_and_others_are_not() {
        let mut own = OwnWrites::new(42);
        let ev = |kind, paths: &[&str], cookie: Option<usize>| {
            let mut e = Event::new(kind);
            for p in paths {
                e = e.add_path(PathBuf::from(p));
            }
            if let Some(c) = cookie {
                e = e.set_tracker(c);
            }
            e
        };
        use notify::event::CreateKind;
        let name = |m| EventKind::Modify(ModifyKind::Name(m));
        assert!(own.is_own(&ev(EventKind::Create(CreateKind::File), &["/a/.x.png.asset.json.tmp42-7"], None)));
        assert!(own.is_own(&ev(name(RenameMode::From), &["/a/.x.png.asset.json.tmp42-7"], Some(9))));
        assert!(own.is_own(&ev(name(RenameMode::To), &["/a/x.png.asset.json"], Some(9))));
        assert!(own.is_own(&ev(
            name(RenameMode::Both),
            &["/a/.x.png.asset.json.tmp42-7", "/a/x.png.asset.json"],
            Some(9)
        )));
        // The cookie is used up: a later rename with the same cookie value is someone else's.
        assert!(!own.is_own(&ev(name(RenameMode::To), &["/a/x.png.asset.json"], Some(9))));
        // Another process's write (pid 43), and ordinary files, are seen.
        assert!(!own.is_own(&ev(name(RenameMode::From), &["/a/.x.png.asset.json.tmp43-1"], Some(10))));
        assert!(!own.is_own(&ev(name(RenameMode::To), &["/a/x.png.asset.json"], Some(10))));
        assert!(!own.is_own(&ev(EventKind::Create(CreateKind::File), &["/a/x.png"], None)));
    }

    #[test]
    fn a_close_write_reaches_the_engine_without_the_debounce_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (b, _) = start(&[dir.path().to_path_buf()], false, Duration::from_millis(100), tx).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        // The first message is the tapped close-write: the debounced create comes a tick later.
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(first[0].kind, EventKind::Access(AccessKind::Close(AccessMode::Write)), "{first:?}");
        b.stop();
    }

    #[test]
    fn both_backends_start_on_a_real_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        let (b, fb) = start(&[dir.path().to_path_buf()], false, Duration::from_millis(100), tx.clone()).unwrap();
        assert_eq!((b.mode(), fb), (Mode::Native, None));
        b.stop();
        let (b, _) = start(&[dir.path().to_path_buf()], true, Duration::from_millis(100), tx).unwrap();
        assert_eq!(b.mode(), Mode::Polling);
        b.stop();
    }
}
