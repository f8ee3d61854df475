//! Dev-mode hook plugins: with `COMFYVN_DEV_MODE=1` (and only then) every executable in
//! `dev/modder_hooks/` (or `$COMFYVN_MOD_PLUGIN_ROOT`, or `obs.plugins.root`) is started once and
//! receives every hook envelope as one JSON line on its stdin.
//!
//! The host follows the hook history (so events from any process reach plugins), keeps a bounded
//! queue per plugin (drop-oldest, counted) so a slow plugin never blocks the history reader or its
//! caller, restarts a plugin that exits with backoff (`obs.plugins.restart_backoff_ms`), and sends the
//! plugin's stderr (and stdout) lines to the structured log. Its status is kept in memory
//! ([`PluginHost::status`]) and written to `data/plugins/status.json` so `hooks plugins` in another
//! process can show it. This module never emits hook events and never touches webhooks.
//!
//! Invariants: one host per runtime root (`data/plugins/host.lock`); when `stop` is set every child
//! gets EOF on stdin, then is killed after a one-second grace period, so no plugin outlives its host.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::History;
use crate::config::{Config, PluginSettings};
use crate::paths::Paths;

/// Version of `data/plugins/status.json`.
pub const SCHEMA: u64 = 1;

/// How often the host polls the history and rescans the plugin folder.
const POLL: Duration = Duration::from_millis(50);
const RESCAN: Duration = Duration::from_secs(2);
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// A plugin that stayed up this long has its restart backoff reset.
const STABLE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(1);

/// True when `COMFYVN_DEV_MODE` is `1` (or `true`/`yes`/`on`).
pub fn dev_mode() -> bool {
    std::env::var("COMFYVN_DEV_MODE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The plugin folder: `$COMFYVN_MOD_PLUGIN_ROOT`, else `obs.plugins.root` under the runtime root.
pub fn plugin_root(paths: &Paths, settings: &PluginSettings) -> PathBuf {
    match std::env::var_os("COMFYVN_MOD_PLUGIN_ROOT").filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                p
            } else {
                paths.root.join(p)
            }
        }
        None if settings.root.is_absolute() => settings.root.clone(),
        None => paths.root.join(&settings.root),
    }
}

/// `data/plugins/status.json`.
pub fn status_file(paths: &Paths) -> PathBuf {
    paths.data_dir.join("plugins").join("status.json")
}

/// The executables in `root` (regular files with an execute bit, not hidden), sorted by name.
pub fn discover(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else { return Vec::new() };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// One plugin's status (`plugin_host.plugins[]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PluginStatus {
    pub name: String,
    pub path: PathBuf,
    pub pid: Option<u32>,
    pub running: bool,
    /// Times the plugin was started again after it exited.
    pub restarts: u64,
    /// Envelopes written to its stdin.
    pub delivered: u64,
    /// Envelopes dropped because its queue was full (or its pipe broke).
    pub dropped: u64,
    /// Envelopes waiting in its queue.
    pub queued: usize,
    pub last_error: Option<String>,
    /// The last line it wrote on stderr.
    pub last_stderr: Option<String>,
}

/// The host's status (`GET /api/modder/hooks` → `plugin_host`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostStatus {
    pub enabled: bool,
    pub root: PathBuf,
    pub plugins: Vec<PluginStatus>,
}

/// A bounded FIFO that drops its oldest entry when full.
#[derive(Debug)]
pub struct DropOldest<T> {
    items: VecDeque<T>,
    cap: usize,
    dropped: u64,
}

impl<T> DropOldest<T> {
    pub fn new(cap: usize) -> Self {
        DropOldest { items: VecDeque::new(), cap: cap.max(1), dropped: 0 }
    }
    pub fn push(&mut self, item: T) {
        if self.items.len() >= self.cap {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }
    pub fn push_front(&mut self, item: T) {
        if self.items.len() >= self.cap {
            self.dropped += 1;
            return;
        }
        self.items.push_front(item);
    }
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Shared between the host's reader thread and one plugin's supervisor.
struct Slot {
    name: String,
    path: PathBuf,
    queue: Mutex<DropOldest<String>>,
    wake: Condvar,
    status: Mutex<PluginStatus>,
    child: Mutex<Option<Child>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    fn snapshot(&self) -> PluginStatus {
        let mut s = lock(&self.status).clone();
        let q = lock(&self.queue);
        s.queued = q.len();
        s.dropped += q.dropped();
        s
    }
}

/// Runs the dev plugins. Cheap to clone (shares state).
#[derive(Clone)]
pub struct PluginHost {
    enabled: bool,
    root: PathBuf,
    settings: PluginSettings,
    history: History,
    status_path: PathBuf,
    lock_path: PathBuf,
    slots: Arc<Mutex<Vec<Arc<Slot>>>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").field("enabled", &self.enabled).field("root", &self.root).finish()
    }
}

impl PluginHost {
    /// A host for this runtime root; enabled only when `COMFYVN_DEV_MODE=1`.
    pub fn new(paths: &Paths, config: &Config) -> PluginHost {
        PluginHost::with_options(
            dev_mode(),
            plugin_root(paths, &config.obs.plugins),
            config.obs.plugins.clone(),
            History::new(paths, &config.obs.hooks),
            status_file(paths),
        )
    }

    /// A host with everything explicit (tests).
    pub fn with_options(
        enabled: bool,
        root: PathBuf,
        settings: PluginSettings,
        history: History,
        status_path: PathBuf,
    ) -> PluginHost {
        let lock_path = status_path.with_file_name("host.lock");
        PluginHost { enabled, root, settings, history, status_path, lock_path, slots: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Start the plugins and the history reader; returns the reader thread, which ends (after
    /// stopping every plugin) once `stop` is set. Does nothing (and returns `None`) outside dev mode.
    /// Events already in the history when the host starts are not sent.
    pub fn start(&self, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        if !self.enabled {
            return Ok(None);
        }
        let host_lock = crate::fs::open_append(&self.lock_path)?;
        match host_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!("another plugin host is already running for this runtime root ({})", self.lock_path.display())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", self.lock_path.display()))
            }
        }
        let follower = self.history.follow(self.history.last_seq()?)?;
        let host = self.clone();
        let handle = std::thread::Builder::new()
            .name("plugin-host".into())
            .spawn(move || host.reader_loop(follower, &stop, host_lock))
            .context("cannot start the plugin host thread")?;
        Ok(Some(handle))
    }

    /// The current status of every plugin.
    pub fn status(&self) -> HostStatus {
        let plugins = lock(&self.slots).iter().map(|s| s.snapshot()).collect();
        HostStatus { enabled: self.enabled, root: self.root.clone(), plugins }
    }

    /// [`status`](Self::status) as the API's `plugin_host` object.
    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.status()).unwrap_or(Value::Null)
    }

    fn reader_loop(&self, mut follower: super::Follower, stop: &Arc<AtomicBool>, _host_lock: File) {
        let mut supervisors: Vec<JoinHandle<()>> = Vec::new();
        let mut last_scan: Option<Instant> = None;
        let mut last_status = Instant::now() - STATUS_EVERY;
        let mut last_written: Option<HostStatus> = None;
        while !stop.load(Ordering::Relaxed) {
            if last_scan.is_none_or(|t| t.elapsed() >= RESCAN) {
                last_scan = Some(Instant::now());
                for path in discover(&self.root) {
                    if lock(&self.slots).iter().any(|s| s.path == path) {
                        continue;
                    }
                    let slot = Arc::new(Slot {
                        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                        status: Mutex::new(PluginStatus {
                            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                            path: path.clone(),
                            ..PluginStatus::default()
                        }),
                        path,
                        queue: Mutex::new(DropOldest::new(self.settings.queue)),
                        wake: Condvar::new(),
                        child: Mutex::new(None),
                    });
                    lock(&self.slots).push(Arc::clone(&slot));
                    let (settings, stop, root) = (self.settings.clone(), Arc::clone(stop), self.root.clone());
                    match std::thread::Builder::new()
                        .name(format!("plugin-{}", slot.name))
                        .spawn(move || supervise(&slot, &settings, &stop, &root))
                    {
                        Ok(h) => supervisors.push(h),
                        Err(e) => tracing::error!("cannot start a plugin supervisor thread: {e}"),
                    }
                }
            }
            match follower.poll() {
                Ok(envs) => {
                    if !envs.is_empty() {
                        let lines: Vec<String> = envs.iter().filter_map(|e| serde_json::to_string(e).ok()).collect();
                        for slot in lock(&self.slots).iter() {
                            let mut q = lock(&slot.queue);
                            for line in &lines {
                                q.push(line.clone());
                            }
                            drop(q);
                            slot.wake.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!("plugin host cannot read the hook history: {e:#}"),
            }
            if last_status.elapsed() >= STATUS_EVERY {
                last_status = Instant::now();
                self.write_status(&mut last_written);
            }
            std::thread::sleep(POLL);
        }
        for slot in lock(&self.slots).iter() {
            slot.wake.notify_all();
        }
        // Supervisors close stdin and wait GRACE; a supervisor stuck writing to a plugin that does not
        // read is freed by killing its child here.
        let deadline = Instant::now() + GRACE + Duration::from_millis(500);
        while supervisors.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for slot in lock(&self.slots).iter() {
            if let Some(child) = lock(&slot.child).as_mut() {
                let _ = child.kill();
            }
        }
        for h in supervisors {
            let _ = h.join();
        }
        self.write_status(&mut None);
    }

    fn write_status(&self, last: &mut Option<HostStatus>) {
        let status = self.status();
        if last.as_ref() == Some(&status) {
            return;
        }
        let doc = serde_json::json!({
            "schema": SCHEMA,
            "host_pid": std::process::id(),
            "updated_at": crate::time::iso_now(),
            "enabled": status.enabled,
            "root": status.root,
            "plugins": status.plugins,
        });
        if let Err(e) = crate::fs::write_json_atomic(&self.status_path, &doc) {
            tracing::warn!("cannot write the plugin status: {e:#}");
        }
        *last = Some(status);
    }
}

/// Start, feed and restart one plugin until `stop`.
fn supervise(slot: &Arc<Slot>, settings: &PluginSettings, stop: &AtomicBool, root: &Path) {
    let mut failures_in_a_row = 0usize;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            let delay = backoff(&settings.restart_backoff_ms, failures_in_a_row);
            let until = Instant::now() + delay;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
            }
            if stop.load(Ordering::Relaxed) || !slot.path.exists() {
                break;
            }
            lock(&slot.status).restarts += 1;
        }
        first = false;
        let started = Instant::now();
        match spawn(slot, root) {
            Ok(stdin) => {
                let exit = feed(slot, stdin, stop);
                let mut st = lock(&slot.status);
                st.running = false;
                st.pid = None;
                if let Some(why) = exit {
                    tracing::warn!(plugin = %slot.name, "plugin {why}");
                    st.last_error = Some(why);
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %slot.name, "cannot start plugin: {e:#}");
                lock(&slot.status).last_error = Some(format!("cannot start: {e:#}"));
            }
        }
        failures_in_a_row = if started.elapsed() >= STABLE { 0 } else { failures_in_a_row + 1 };
    }
    let mut st = lock(&slot.status);
    st.running = false;
    st.pid = None;
}

fn backoff(schedule: &[u64], n: usize) -> Duration {
    let i = n.saturating_sub(1).min(schedule.len().saturating_sub(1));
    Duration::from_millis(schedule.get(i).copied().unwrap_or(1000))
}

/// Start the child with piped stdio and the threads that log its output.
fn spawn(slot: &Arc<Slot>, root: &Path) -> Result<ChildStdin> {
    let mut child = Command::new(&slot.path)
        .current_dir(root)
        .env("COMFYVN_PLUGIN_NAME", &slot.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", slot.path.display()))?;
    let stdin = child.stdin.take().context("plugin stdin was not piped")?;
    let name = slot.name.clone();
    if let Some(out) = child.stdout.take() {
        let name = name.clone();
        let _ = std::thread::Builder::new().name(format!("plugin-{name}-out")).spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                tracing::info!(plugin = %name, stream = "stdout", "{line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let slot = Arc::clone(slot);
        let _ = std::thread::Builder::new().name(format!("plugin-{name}-err")).spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                tracing::warn!(plugin = %slot.name, stream = "stderr", "{line}");
                lock(&slot.status).last_stderr = Some(line);
            }
        });
    }
    {
        let mut st = lock(&slot.status);
        st.pid = Some(child.id());
        st.running = true;
    }
    *lock(&slot.child) = Some(child);
    Ok(stdin)
}

/// Write queued lines to the plugin until it exits or `stop`; returns why it ended (None on stop).
fn feed(slot: &Slot, mut stdin: ChildStdin, stop: &AtomicBool) -> Option<String> {
    loop {
        if stop.load(Ordering::Relaxed) {
            drop(stdin);
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline {
                if exited(slot).is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(child) = lock(&slot.child).as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return None;
        }
        if let Some(status) = exited(slot) {
            return Some(format!("exited with {status}"));
        }
        let line = {
            let mut q = lock(&slot.queue);
            if q.is_empty() {
                q = slot
                    .wake
                    .wait_timeout(q, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            q.pop()
        };
        let Some(line) = line else { continue };
        let mut buf = line.clone().into_bytes();
        buf.push(b'\n');
        match stdin.write_all(&buf).and_then(|_| stdin.flush()) {
            Ok(()) => lock(&slot.status).delivered += 1,
            Err(e) => {
                // Keep the line for the restarted plugin.
                lock(&slot.queue).push_front(line);
                let status = wait_exit(slot, Duration::from_millis(500));
                return Some(match status {
                    Some(s) => format!("exited with {s}"),
                    None => format!("stopped reading its stdin: {e}"),
                });
            }
        }
    }
}

fn exited(slot: &Slot) -> Option<std::process::ExitStatus> {
    let mut guard = lock(&slot.child);
    let child = guard.as_mut()?;
    match child.try_wait() {
        Ok(Some(status)) => {
            *guard = None;
            Some(status)
        }
        _ => None,
    }
}

fn wait_exit(slot: &Slot, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = exited(slot) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            if let Some(child) = lock(&slot.child).as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            *lock(&slot.child) = None;
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `hooks plugins` shows from another process: the status a running host wrote, or the
/// executables found in the plugin folder (not running) when no host is alive.
pub fn status_from_disk(paths: &Paths, config: &Config) -> Result<Value> {
    let root = plugin_root(paths, &config.obs.plugins);
    let enabled = dev_mode();
    if !enabled {
        return Ok(serde_json::json!({"enabled": false, "root": root, "host": null, "plugins": []}));
    }
    let file = status_file(paths);
    if let Some(doc) = crate::fs::read_json_opt(&file)? {
        let pid = doc.get("host_pid").and_then(Value::as_u64);
        if pid.is_some_and(process_alive) && doc.get("root").and_then(Value::as_str) == root.to_str() {
            return Ok(serde_json::json!({
                "enabled": true,
                "root": root,
                "host": {"pid": pid, "updated_at": doc.get("updated_at")},
                "plugins": doc.get("plugins").cloned().unwrap_or(Value::Array(Vec::new())),
            }));
        }
    }
    let plugins: Vec<PluginStatus> = discover(&root)
        .into_iter()
        .map(|path| PluginStatus {
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path,
            ..PluginStatus::default()
        })
        .collect();
    Ok(serde_json::json!({"enabled": true, "root": root, "host": null, "plugins": plugins}))
}

/// Whether a process with this pid exists (Linux: `/proc/<pid>`; elsewhere assumed alive).
fn process_alive(pid: u64) -> bool {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drop_oldest_counts_what_it_drops() {
        let mut q = DropOldest::new(2);
        q.push(1);
        q.push(2);
        q.push(3);
        assert_eq!((q.len(), q.dropped()), (2, 1));
        assert_eq!(q.pop(), Some(2));
        q.push_front(9);
        q.push_front(8);
        assert_eq!((q.pop(), q.pop(), q.dropped()), (Some(9), Some(3), 2));
    }

    fn settings(queue: usize) -> PluginSettings {
        PluginSettings { root: PathBuf::from("plugins"), queue, restart_backoff_ms: vec![20, 40] }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_plugin_that_never_reads_costs_a_bounded_queue_and_never_blocks_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugins");
        std::fs::create_dir_all(&root).unwrap();
        script(&root, "sleepy", "exec sleep 30");
        std::fs::write(root.join("README.md"), "not executable").unwrap();
        let history = History::at(dir.path().join("history.jsonl"), 1 << 30, 1);
        let host = PluginHost::with_options(true, root, settings(4), history.clone(), dir.path().join("status.json"));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = host.start(Arc::clone(&stop)).unwrap().unwrap();
        wait_for("the plugin to start", || host.status().plugins.first().is_some_and(|p| p.running));
        // Each line is ~20 KiB, so the pipe fills after a few; the rest must be dropped, not waited on.
        let big = "x".repeat(20_000);
        for i in 0..60 {
            history.append("on_scene_enter", json!({"i": i, "pad": big})).unwrap();
        }
        wait_for("drops", || host.status().plugins[0].dropped > 0);
        let st = host.status();
        assert_eq!(st.plugins.len(), 1, "only executables are plugins");
        assert!(st.plugins[0].queued <= 4);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(!host.status().plugins[0].running);
        let doc = crate::fs::read_json_opt(&dir.path().join("status.json")).unwrap().unwrap();
        assert_eq!(doc["schema"], 1);
        assert_eq!(doc["plugins"][0]["running"], false);
    }

    #[test]
    fn an_exiting_plugin_is_restarted_and_its_stderr_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugins");
        std::fs::create_dir_all(&root).unwrap();
        let out = dir.path().join("seen.txt");
        script(&root, "once", &format!("read line; echo \"$line\" >> '{}'; echo bye >&2; exit 3", out.display()));
        let history = History::at(dir.path().join("history.jsonl"), 1 << 30, 1);
        let host = PluginHost::with_options(true, root, settings(100), history.clone(), dir.path().join("status.json"));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = host.start(Arc::clone(&stop)).unwrap().unwrap();
        wait_for("the plugin to start", || host.status().plugins.first().is_some_and(|p| p.running));
        // Lines written to a plugin that is about to exit are lost with it, so feed one at a time.
        for i in 0..3u64 {
            wait_for("the plugin to be up", || {
                host.status().plugins[0].running && host.status().plugins[0].restarts >= i
            });
            history.append("on_scene_enter", json!({"i": i})).unwrap();
            wait_for("the line", || {
                std::fs::read_to_string(&out).map(|t| t.lines().count() as u64 > i).unwrap_or(false)
            });
        }
        let st = host.status().plugins[0].clone();
        assert!(st.restarts >= 2, "{st:?}");
        assert_eq!(st.last_stderr.as_deref(), Some("bye"));
        assert!(st.last_error.as_deref().unwrap_or("").contains("exit"), "{st:?}");
        let seen = std::fs::read_to_string(&out).unwrap();
        let first: Envelope = serde_json::from_str(seen.lines().next().unwrap()).unwrap();
        assert_eq!(first.data["i"], 0);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }

    use super::super::Envelope;

    #[test]
    fn outside_dev_mode_nothing_starts() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::at(dir.path().join("history.jsonl"), 1 << 30, 1);
        let host = PluginHost::with_options(false, dir.path().into(), settings(4), history, dir.path().join("s.json"));
        assert!(host.start(Arc::new(AtomicBool::new(false))).unwrap().is_none());
        assert_eq!(host.status_json()["enabled"], false);
    }
}
