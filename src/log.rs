//! Structured logging on `tracing` (DESIGN §5): one JSON object per line with sorted keys in
//! `logs/run-<UTC stamp>-<pid>/run.log`, human lines on stderr, and an in-memory ring of this process's
//! recent records for crash dumps (`log_tail`).
//!
//! Owns the global `tracing` subscriber, the run folder of this process and the pruning of old run
//! folders. It must not touch any other file under the log folder, and it never writes to stdout.
//!
//! The run folder is created lazily, on the first record that is actually written: a read-only command
//! that logs nothing (`hooks tail`) pays for one `stat` of the log folder at start-up and nothing else
//! (no directory creation, no scan of old runs).

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::config::Config;
use crate::paths::Paths;

/// Rotated copies of `run.log` kept per run (`run.log.1` is the newest).
pub const ROTATED_KEEP: usize = 3;

/// Records of each kind (warnings/errors, everything else) the in-memory ring keeps.
pub const RING_CAPACITY: usize = 500;

/// The `tracing` target used by [`Logger`]; plain `tracing` macros use their module path instead.
const LOGGER_TARGET: &str = "comfyvn";

/// Everything [`init`] needs, resolved from flags, environment and config.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The level for both stderr and `run.log`.
    pub level: LevelFilter,
    /// The log folder; run folders are created inside it.
    pub log_dir: PathBuf,
    /// How many `run-*` folders to keep, this one included (at least 1).
    pub keep_runs: usize,
    /// Size at which `run.log` rotates to `run.log.1`.
    pub max_log_bytes: u64,
    /// Write human lines to stderr.
    pub stderr: bool,
}

impl LogSettings {
    /// Settings for a command: `-v`/`-q`, else `COMFYVN_LOG_LEVEL`, else info. Returns a warning when the
    /// environment variable holds something that is not a level.
    pub fn for_command(paths: &Paths, config: &Config, verbose: u8, quiet: u8) -> (LogSettings, Option<String>) {
        let env = std::env::var("COMFYVN_LOG_LEVEL").ok();
        let (level, warning) = level_from(verbose, quiet, env.as_deref());
        let settings = LogSettings {
            level,
            log_dir: paths.log_dir.clone(),
            keep_runs: config.obs.logging.keep_runs,
            max_log_bytes: config.obs.logging.max_log_bytes,
            stderr: true,
        };
        (settings, warning)
    }
}

/// The level from `-v`/`-q` counts, else the `COMFYVN_LOG_LEVEL` value, else info. An unrecognised
/// environment value falls back to info and comes back as a warning text.
pub fn level_from(verbose: u8, quiet: u8, env: Option<&str>) -> (LevelFilter, Option<String>) {
    match (verbose, quiet) {
        (0, 0) => {}
        (1, _) => return (LevelFilter::DEBUG, None),
        (_, 0) => return (LevelFilter::TRACE, None),
        (_, 1) => return (LevelFilter::WARN, None),
        _ => return (LevelFilter::ERROR, None),
    }
    match env.map(str::trim).filter(|s| !s.is_empty()) {
        None => (LevelFilter::INFO, None),
        Some(s) => match parse_level(s) {
            Some(level) => (level, None),
            None => (
                LevelFilter::INFO,
                Some(format!(
                    "COMFYVN_LOG_LEVEL={s:?} is not a level (expected trace, debug, info, warning, error or off); using info"
                )),
            ),
        },
    }
}

/// Parse a level name as the original (Python `logging`) and Rust spell them, in any case:
/// `DEBUG`, `info`, `WARNING`/`warn`, `ERROR`, `CRITICAL`/`fatal` (= error), `trace`, `off`, or the
/// Python numbers 10/20/30/40/50.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" | "notset" | "0" | "5" => LevelFilter::TRACE,
        "debug" | "10" => LevelFilter::DEBUG,
        "info" | "20" => LevelFilter::INFO,
        "warning" | "warn" | "30" => LevelFilter::WARN,
        "error" | "critical" | "fatal" | "40" | "50" => LevelFilter::ERROR,
        "off" | "none" | "quiet" => LevelFilter::OFF,
        _ => return None,
    })
}

/// The level word used in records: the original's (`warning`, not `warn`).
fn level_word(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// Cheap start-up check that the log folder can be used, creating nothing: the folder (or, when it does
/// not exist yet, its nearest existing ancestor) must be a directory that is not read-only.
///
/// Deliberately conservative: a folder with no write permission bits is refused even for root, because a
/// folder made read-only on purpose should not be written behind the user's back.
pub fn check_log_dir(dir: &Path) -> Result<()> {
    for candidate in dir.ancestors() {
        match std::fs::metadata(candidate) {
            Ok(meta) => {
                if !meta.is_dir() {
                    if candidate == dir {
                        bail!("log folder {} is not a directory", dir.display());
                    }
                    bail!("log folder {} cannot be created: {} is not a directory", dir.display(), candidate.display());
                }
                if meta.permissions().readonly() {
                    bail!("log folder {} is not writable: {} is read-only", dir.display(), candidate.display());
                }
                return Ok(());
            }
            // A missing folder is created later; under a file, the ancestor check names the file.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => continue,
            Err(e) => bail!("log folder {} is not usable: cannot inspect {}: {e}", dir.display(), candidate.display()),
        }
    }
    Ok(())
}

static CURRENT_SINK: OnceLock<Arc<RunSink>> = OnceLock::new();

/// Install the global subscriber (JSON file + stderr + ring) after checking the log folder. A second call
/// in the same process is a no-op (the first settings stay).
pub fn init(settings: LogSettings) -> Result<()> {
    check_log_dir(&settings.log_dir)?;
    if CURRENT_SINK.get().is_some() {
        return Ok(());
    }
    let sink = Arc::new(RunSink::new(&settings));
    let layer = JsonLayer { sink: Some(Arc::clone(&sink)), stderr: settings.stderr };
    let subscriber = tracing_subscriber::registry().with(settings.level).with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = CURRENT_SINK.set(sink);
    }
    Ok(())
}

/// Resolve the level for a command and install logging; an unrecognised `COMFYVN_LOG_LEVEL` is logged
/// as a warning (and info is used).
pub fn init_for_command(paths: &Paths, config: &Config, verbose: u8, quiet: u8) -> Result<()> {
    let (settings, warning) = LogSettings::for_command(paths, config, verbose, quiet);
    init(settings)?;
    if let Some(w) = warning {
        Logger::new("comfyvn.obs.log", "log").warn(&w, ());
    }
    Ok(())
}

/// The `run.log` of this process, once something has been written to it.
pub fn run_log_path() -> Option<PathBuf> {
    CURRENT_SINK.get().and_then(|s| s.path())
}

/// Why the log file could not be written, if that happened (the command then exits 2).
pub fn write_failure() -> Option<String> {
    CURRENT_SINK.get().and_then(|s| s.failure())
}

// ---------------------------------------------------------------------------------------------------
// The file sink: one run folder per process, created on the first write.

/// The run folder and `run.log` of one process.
pub struct RunSink {
    log_dir: PathBuf,
    keep_runs: usize,
    max_bytes: u64,
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    open: Option<OpenRun>,
    failed: Option<String>,
}

struct OpenRun {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RunSink {
    /// A sink that will create `log_dir/run-<stamp>-<pid>/run.log` when first written to.
    pub fn new(settings: &LogSettings) -> RunSink {
        RunSink {
            log_dir: settings.log_dir.clone(),
            keep_runs: settings.keep_runs.max(1),
            max_bytes: settings.max_log_bytes.max(1),
            state: Mutex::new(SinkState::default()),
        }
    }

    /// The `run.log` path once created.
    pub fn path(&self) -> Option<PathBuf> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open.as_ref().map(|o| o.path.clone())
    }

    fn failure(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).failed.clone()
    }

    /// Append one line. The first failure is reported once on stderr and turns file logging off.
    pub fn write(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.failed.is_some() {
            return;
        }
        if let Err(e) = self.write_locked(&mut state, line) {
            let text = format!("{e:#}");
            let _ = writeln!(std::io::stderr(), "error: structured log disabled: {text}");
            state.failed = Some(text);
        }
    }

    fn write_locked(&self, state: &mut SinkState, line: &str) -> Result<()> {
        if state.open.is_none() {
            state.open = Some(self.open_run()?);
        }
        let Some(open) = state.open.as_mut() else { return Ok(()) };
        let len = line.len() as u64 + 1;
        if open.size > 0 && open.size + len > self.max_bytes {
            rotate(&open.path)?;
            open.file = crate::fs::open_append(&open.path)?;
            open.size = 0;
        }
        crate::fs::write_line(&mut open.file, &open.path, line)?;
        open.size += len;
        Ok(())
    }

    fn open_run(&self) -> Result<OpenRun> {
        crate::fs::ensure_dir(&self.log_dir)?;
        let base = format!("run-{}-{}", crate::time::file_stamp(), std::process::id());
        let mut dir = self.log_dir.join(&base);
        let mut n = 1;
        // The pid makes the name unique among live processes; a reused pid in the same second gets a suffix.
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                    n += 1;
                    dir = self.log_dir.join(format!("{base}-{n}"));
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot create {}", dir.display()))),
            }
        }
        self.prune(&dir);
        let path = dir.join("run.log");
        let file = crate::fs::open_append(&path)?;
        Ok(OpenRun { path, file, size: 0 })
    }

    /// Remove the oldest `run-*` folders beyond `keep_runs`, never the current one. Failures are ignored:
    /// another process may be pruning at the same time.
    fn prune(&self, current: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.log_dir) else { return };
        let mut runs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .filter(|p| p != current)
            .collect();
        // Names start with the UTC stamp, so name order is age order.
        runs.sort();
        let keep_others = self.keep_runs - 1;
        if runs.len() > keep_others {
            for old in &runs[..runs.len() - keep_others] {
                let _ = std::fs::remove_dir_all(old);
            }
        }
    }
}

/// `run.log` → `run.log.1` → … → `run.log.<ROTATED_KEEP>` (the oldest is dropped).
fn rotate(path: &Path) -> Result<()> {
    let numbered = |i: usize| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    };
    let _ = std::fs::remove_file(numbered(ROTATED_KEEP));
    for i in (1..ROTATED_KEEP).rev() {
        let from = numbered(i);
        if from.exists() {
            std::fs::rename(&from, numbered(i + 1))
                .map_err(|e| anyhow::anyhow!("cannot rotate {}: {e}", from.display()))?;
        }
    }
    std::fs::rename(path, numbered(1)).map_err(|e| anyhow::anyhow!("cannot rotate {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------------
// The layer: turns tracing events into records.

/// The `tracing_subscriber` layer writing JSON lines to a [`RunSink`], human lines to stderr, and every
/// record into the in-memory ring.
pub struct JsonLayer {
    sink: Option<Arc<RunSink>>,
    stderr: bool,
}

impl JsonLayer {
    /// A layer with an optional file sink (tests and doctor build their own).
    pub fn new(sink: Option<Arc<RunSink>>, stderr: bool) -> JsonLayer {
        JsonLayer { sink, stderr }
    }
}

impl<S: Subscriber> Layer<S> for JsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let record = visitor.into_record(meta.target(), meta.level());
        let line = serde_json::to_string(&record).unwrap_or_default();
        if self.stderr {
            let _ = writeln!(std::io::stderr().lock(), "{}", human_line(&record));
        }
        if let Some(sink) = &self.sink {
            sink.write(&line);
        }
        ring_push(*meta.level(), record);
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    logger: Option<String>,
    component: Option<String>,
    json_fields: Option<String>,
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "obs_fields" => self.json_fields = value.as_str().map(str::to_string),
            "obs_logger" => self.logger = value.as_str().map(str::to_string),
            "obs_component" => self.component = value.as_str().map(str::to_string),
            "message" => self.message = Some(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())),
            name => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }

    /// The record: reserved keys plus extra fields, secrets masked, keys sorted at every depth.
    fn into_record(self, target: &str, level: &Level) -> Value {
        let mut fields = self.fields;
        if let Some(text) = self.json_fields {
            if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(&text) {
                fields.extend(extra);
            }
        }
        let mut fields = Value::Object(fields);
        crate::config::mask_secrets(&mut fields);
        let Value::Object(fields) = fields else { unreachable!("built as an object") };
        let component = self.component.unwrap_or_else(|| component_of(target));
        let mut record = Map::new();
        record.insert("event".into(), Value::String(self.message.unwrap_or_default()));
        record.insert("logger".into(), Value::String(self.logger.unwrap_or_else(|| target.to_string())));
        record.insert("component".into(), Value::String(component));
        record.insert("level".into(), Value::String(level_word(level).into()));
        record.insert("timestamp".into(), Value::String(crate::time::iso_now()));
        for (k, v) in fields {
            // Reserved keys win; a colliding extra field keeps its value under another name.
            let key = if record.contains_key(&k) { format!("field_{k}") } else { k };
            record.insert(key, v);
        }
        sorted(Value::Object(record))
    }
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

/// `comfyvn_obs::hooks::history` → `hooks`; other targets stay as they are.
fn component_of(target: &str) -> String {
    let mut parts = target.split("::");
    match (parts.next(), parts.next()) {
        (Some(_), Some(second)) => second.to_string(),
        _ => target.to_string(),
    }
}

/// Rebuild objects with their keys in sorted order, at every depth.
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `warning: event  key=value …` for people.
fn human_line(record: &Value) -> String {
    let get = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("");
    let mut line = format!("{}: {}", get("level"), get("event"));
    if let Some(map) = record.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "event" | "logger" | "component" | "level" | "timestamp") {
                continue;
            }
            let shown = match v {
                Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
                other => other.to_string(),
            };
            line.push_str(&format!("  {k}={shown}"));
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------------
// The ring of recent records (for crash dumps).

struct Ring {
    seq: u64,
    important: VecDeque<(u64, Value)>,
    other: VecDeque<(u64, Value)>,
}

static RING: Mutex<Ring> = Mutex::new(Ring { seq: 0, important: VecDeque::new(), other: VecDeque::new() });

fn ring_push(level: Level, record: Value) {
    let mut ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
    ring.seq += 1;
    let seq = ring.seq;
    let queue = if level <= Level::WARN { &mut ring.important } else { &mut ring.other };
    if queue.len() == RING_CAPACITY {
        queue.pop_front();
    }
    queue.push_back((seq, record));
}

/// Up to `n` of this process's most recent records, oldest first. Warnings and errors are kept first:
/// the newest of them fill the tail before any info/debug record does.
///
/// Never blocks: called from the panic hook, it returns nothing if the ring is busy.
pub fn log_tail(n: usize) -> Vec<Value> {
    let ring = match RING.try_lock() {
        Ok(r) => r,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Vec::new(),
    };
    let mut picked: Vec<(u64, Value)> = ring.important.iter().rev().take(n).cloned().collect();
    let rest = n - picked.len();
    picked.extend(ring.other.iter().rev().take(rest).cloned());
    picked.sort_by_key(|(seq, _)| *seq);
    picked.into_iter().map(|(_, v)| v).collect()
}

// ---------------------------------------------------------------------------------------------------
// The logger API (the original's `get_logger(name, component)` with `bind`/`unbind`).

/// A named logger with a component and bound context; `bind`/`unbind` return new loggers.
///
/// ```
/// use comfyvn_obs::log::Logger;
/// use serde_json::json;
/// let log = Logger::new("asset.registry", "asset-registry").bind("modder", "sprite-kit");
/// log.info("sidecar-updated", json!({"path": "characters/hero.png.asset.json"}));
/// ```
#[derive(Debug, Clone)]
pub struct Logger {
    name: Arc<str>,
    component: Arc<str>,
    bound: Map<String, Value>,
}

impl Logger {
    pub fn new(name: &str, component: &str) -> Logger {
        Logger { name: name.into(), component: component.into(), bound: Map::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// The bound context.
    pub fn context(&self) -> &Map<String, Value> {
        &self.bound
    }

    /// A logger with `key` bound to `value` in every record (values that do not serialise become their
    /// error text).
    pub fn bind(&self, key: &str, value: impl Serialize) -> Logger {
        let mut next = self.clone();
        next.bound.insert(key.to_string(), to_value(value));
        next
    }

    /// A logger without `key`.
    pub fn unbind(&self, key: &str) -> Logger {
        let mut next = self.clone();
        next.bound.shift_remove(key);
        next
    }

    pub fn trace(&self, event: &str, fields: impl Serialize) {
        self.log(Level::TRACE, event, fields)
    }
    pub fn debug(&self, event: &str, fields: impl Serialize) {
        self.log(Level::DEBUG, event, fields)
    }
    pub fn info(&self, event: &str, fields: impl Serialize) {
        self.log(Level::INFO, event, fields)
    }
    pub fn warn(&self, event: &str, fields: impl Serialize) {
        self.log(Level::WARN, event, fields)
    }
    pub fn error(&self, event: &str, fields: impl Serialize) {
        self.log(Level::ERROR, event, fields)
    }

    /// Emit one record. `fields` is usually a `json!({…})` object; `()` means none; any other value is
    /// stored under `value`. Extra fields override bound ones with the same key.
    pub fn log(&self, level: Level, event: &str, fields: impl Serialize) {
        if level > LevelFilter::current() {
            return;
        }
        let mut merged = self.bound.clone();
        match to_value(fields) {
            Value::Null => {}
            Value::Object(extra) => merged.extend(extra),
            other => {
                merged.insert("value".into(), other);
            }
        }
        let json = Value::Object(merged).to_string();
        let (name, component) = (&*self.name, &*self.component);
        match level {
            Level::ERROR => {
                tracing::error!(target: LOGGER_TARGET, obs_logger = name, obs_component = component, obs_fields = json.as_str(), "{event}")
            }
            Level::WARN => {
                tracing::warn!(target: LOGGER_TARGET, obs_logger = name, obs_component = component, obs_fields = json.as_str(), "{event}")
            }
            Level::INFO => {
                tracing::info!(target: LOGGER_TARGET, obs_logger = name, obs_component = component, obs_fields = json.as_str(), "{event}")
            }
            Level::DEBUG => {
                tracing::debug!(target: LOGGER_TARGET, obs_logger = name, obs_component = component, obs_fields = json.as_str(), "{event}")
            }
            Level::TRACE => {
                tracing::trace!(target: LOGGER_TARGET, obs_logger = name, obs_component = component, obs_fields = json.as_str(), "{event}")
            }
        }
    }
}

fn to_value(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| Value::String(format!("<unserialisable: {e}>")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(dir: &Path, keep: usize, max: u64) -> LogSettings {
        LogSettings {
            level: LevelFilter::DEBUG,
            log_dir: dir.to_path_buf(),
            keep_runs: keep,
            max_log_bytes: max,
            stderr: false,
        }
    }

    /// Run `f` with a thread-local subscriber writing to a fresh sink; returns the sink.
    fn with_sink(s: &LogSettings, f: impl FnOnce()) -> Arc<RunSink> {
        let sink = Arc::new(RunSink::new(s));
        let subscriber =
            tracing_subscriber::registry().with(s.level).with(JsonLayer::new(Some(Arc::clone(&sink)), false));
        tracing::subscriber::with_default(subscriber, f);
        sink
    }

    #[test]
    fn levels_from_flags_env_and_default() {
        assert_eq!(level_from(0, 0, None), (LevelFilter::INFO, None));
        assert_eq!(level_from(1, 0, Some("error")).0, LevelFilter::DEBUG);
        assert_eq!(level_from(2, 0, None).0, LevelFilter::TRACE);
        assert_eq!(level_from(0, 1, Some("debug")).0, LevelFilter::WARN);
        assert_eq!(level_from(0, 2, None).0, LevelFilter::ERROR);
        for (text, level) in [
            ("DEBUG", LevelFilter::DEBUG),
            ("debug", LevelFilter::DEBUG),
            ("INFO", LevelFilter::INFO),
            ("WARNING", LevelFilter::WARN),
            ("warn", LevelFilter::WARN),
            ("ERROR", LevelFilter::ERROR),
            ("CRITICAL", LevelFilter::ERROR),
            ("10", LevelFilter::DEBUG),
        ] {
            assert_eq!(level_from(0, 0, Some(text)), (level, None), "{text}");
        }
        let (level, warning) = level_from(0, 0, Some("loud"));
        assert_eq!(level, LevelFilter::INFO);
        assert!(warning.unwrap().contains("loud"));
    }

    #[test]
    fn nothing_is_created_until_a_record_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let s = settings(&logs, 5, 1 << 20);
        let sink = with_sink(&s, || {
            tracing::trace!("below the level");
        });
        assert!(!logs.exists());
        assert!(sink.path().is_none());
    }

    #[test]
    fn records_are_sorted_json_lines_with_bound_fields_and_masked_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 5, 1 << 20);
        let sink = with_sink(&s, || {
            let log = Logger::new("asset.registry", "asset-registry").bind("modder", "sprite-kit");
            log.info("sidecar-updated", json!({"path": "a/b.png", "zeta": {"b": 1, "a": 2}, "api_token": "abc"}));
            log.unbind("modder").warn("plain", ());
            tracing::info!(count = 3, "from a macro");
        });
        let path = sink.path().unwrap();
        let name = path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("run-") && name.ends_with(&format!("-{}", std::process::id())), "{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        assert_eq!(keys, sorted_keys);
        assert_eq!(first["event"], "sidecar-updated");
        assert_eq!(first["logger"], "asset.registry");
        assert_eq!(first["component"], "asset-registry");
        assert_eq!(first["level"], "info");
        assert_eq!(first["modder"], "sprite-kit");
        assert_eq!(first["api_token"], "***");
        assert!(lines[0].contains(r#""zeta":{"a":2,"b":1}"#), "{}", lines[0]);
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["level"], "warning");
        assert!(second.get("modder").is_none());
        let third: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(third["count"], 3);
        assert_eq!(third["component"], "log");
        assert_eq!(third["logger"], "comfyvn_obs::log::tests");
    }

    #[test]
    fn rotation_caps_the_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 5, 400);
        let sink = with_sink(&s, || {
            for i in 0..40 {
                tracing::info!(i, "rotating record");
            }
        });
        let path = sink.path().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 400);
        let run_dir = path.parent().unwrap();
        assert!(run_dir.join("run.log.1").exists());
        assert!(!run_dir.join(format!("run.log.{}", ROTATED_KEEP + 1)).exists());
    }

    #[test]
    fn old_run_folders_are_pruned_on_first_write() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            std::fs::create_dir_all(dir.path().join(format!("run-2020010{i}_000000-1"))).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("crash")).unwrap();
        let s = settings(dir.path(), 3, 1 << 20);
        with_sink(&s, || tracing::info!("hello"));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], "crash");
        assert_eq!(names[1], "run-20200104_000000-1");
        assert_eq!(names[2], "run-20200105_000000-1");
    }

    #[test]
    fn a_sink_that_cannot_create_its_folder_reports_once_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let sink = RunSink::new(&settings(&file.join("logs"), 5, 1 << 20));
        sink.write("{}");
        sink.write("{}");
        assert!(sink.path().is_none());
        assert!(sink.failure().unwrap().contains("cannot create directory"), "{:?}", sink.failure());
    }

    #[test]
    fn log_dir_checks() {
        let dir = tempfile::tempdir().unwrap();
        check_log_dir(&dir.path().join("not/yet/there")).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(check_log_dir(&file).unwrap_err().to_string().contains("not a directory"));
        assert!(check_log_dir(&file.join("sub")).unwrap_err().to_string().contains("not a directory"));
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let mut perms = std::fs::metadata(&ro).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&ro, perms).unwrap();
        assert!(check_log_dir(&ro.join("logs")).unwrap_err().to_string().contains("read-only"));
    }

    #[test]
    fn ring_keeps_warnings_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 5, 1 << 20);
        with_sink(&s, || {
            tracing::warn!("ring-test-warning");
            for i in 0..10 {
                tracing::info!(i, "ring-test-info");
            }
        });
        let tail = log_tail(3);
        assert_eq!(tail.len(), 3);
        // Other tests may log concurrently into the same ring, so only the warning's presence and the
        // chronological order are checked.
        assert!(tail.iter().any(|r| r["event"] == "ring-test-warning"), "{tail:?}");
    }
}
