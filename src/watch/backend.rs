//! The event source: notify behind notify-debouncer-full, native (inotify) when the platform allows
//! it, polling otherwise. The only file that constructs notify watchers.
//!
//! Native mode asks for a very short debounce: the debouncer is there to stitch rename pairs and drop
//! duplicates, not to wait for quiet (the settle tracker does that, per file), and inotify's
//! close-write must reach the planner within milliseconds. Polling mode compares mtimes at one-second
//! resolution every `poll_interval`, so its debounce can be longer.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{ErrorKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache};
use serde::Serialize;

/// Native debounce: long enough to pair a rename's two halves (they arrive in one inotify read),
/// short enough to keep close-to-event latency in single-digit milliseconds.
pub const NATIVE_DEBOUNCE: Duration = Duration::from_millis(5);
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
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
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
    let mut d = new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
        NATIVE_DEBOUNCE,
        Some(NATIVE_DEBOUNCE),
        tx,
        RecommendedCache::new(),
        notify::Config::default(),
    )?;
    for root in roots {
        d.watch(root, RecursiveMode::Recursive)?;
    }
    Ok(Backend::Native(d))
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
