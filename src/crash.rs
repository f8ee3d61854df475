//! Crash dumps (DESIGN §3): the panic hook, `capture_error`, supervision of a child program for
//! `comfyvn-obs run`, and reading dumps back (list, group, show).
//!
//! Owns `logs/crash/` and nothing else. A dump is one JSON document written atomically and fsynced before
//! the hook returns. The panic hook never panics itself: it takes no blocking locks that a panicking
//! thread might hold, uses no `unwrap`, and a panic raised while it runs (re-entrancy) skips the dump and
//! goes straight to the previous hook. Telemetry hears about dumps through a listener
//! ([`set_listener`]), so this module does not depend on it.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::paths::Paths;
use crate::telemetry::anonymise::{looks_like_secret_name, mask_secrets_in_text};

/// Version of the dump document.
pub const SCHEMA: u32 = 1;

/// In-app frames that make up a fingerprint.
const FINGERPRINT_FRAMES: usize = 5;

/// Log records in a dump when no configuration is loaded yet.
const DEFAULT_LOG_TAIL: usize = 50;

/// What went wrong, before the reporter adds the environment (pid, cwd, args, log tail …).
#[derive(Debug, Clone, Default)]
pub struct Incident {
    /// Panic, error kind, exception type (`panic`, `io::NotFound`, `ValueError` …).
    pub exc_type: String,
    pub message: String,
    /// Backtrace or traceback text.
    pub traceback: String,
    pub context: Map<String, Value>,
    /// Files that belong with the dump (made absolute).
    pub attachments: Vec<PathBuf>,
    /// Extra top-level fields (`location` for panics, `child` for `run`).
    pub extra: Map<String, Value>,
    /// What identifies the crash when the traceback has no in-app frames (a location, a program name).
    pub fingerprint_hint: String,
}

/// What listeners and callers learn about a written dump.
#[derive(Debug, Clone)]
pub struct DumpInfo {
    pub path: PathBuf,
    pub file_name: String,
    pub event_id: String,
    pub timestamp: String,
    pub exc_type: String,
    pub fingerprint: String,
}

/// Writes dumps into one crash folder.
#[derive(Debug, Clone)]
pub struct Reporter {
    crash_dir: PathBuf,
    log_tail_lines: usize,
}

impl Reporter {
    /// A reporter for `paths` (`config` gives the log tail size; defaults without it).
    pub fn new(paths: &Paths, config: Option<&Config>) -> Reporter {
        Reporter {
            crash_dir: paths.crash_dir(),
            log_tail_lines: config.map_or(DEFAULT_LOG_TAIL, |c| c.obs.crash.log_tail_lines),
        }
    }

    pub fn crash_dir(&self) -> &Path {
        &self.crash_dir
    }

    /// The file name and document of a dump for `incident` (no I/O besides reading the environment).
    pub fn build(&self, incident: Incident) -> (String, Value) {
        let event_id = event_id();
        let now = crate::time::now();
        let timestamp = crate::time::iso(now);
        let file_name = format!("crash-{}-{event_id}.json", now.format("%Y%m%d_%H%M%S"));
        let fingerprint = fingerprint(&incident.exc_type, &incident.traceback, &incident.fingerprint_hint);
        let mut context = Value::Object(incident.context);
        mask_value(&mut context);
        let attachments: Vec<String> = incident.attachments.iter().map(|p| absolute(p).display().to_string()).collect();
        let thread = std::thread::current();
        let thread = thread.name().map_or_else(|| format!("{:?}", thread.id()), str::to_string);
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        let mut dump = json!({
            "schema": SCHEMA,
            "event_id": event_id,
            "timestamp": timestamp,
            "exc_type": incident.exc_type,
            "message": mask_secrets_in_text(&incident.message).0,
            "traceback": mask_secrets_in_text(&incident.traceback).0,
            "cwd": cwd,
            "pid": std::process::id(),
            "context": context,
            "attachments": attachments,
            "app_version": crate::telemetry::APP_VERSION,
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "args": masked_args(std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect()),
            "thread": thread,
            "fingerprint": fingerprint,
            "log_tail": crate::log::log_tail(self.log_tail_lines),
        });
        if let Value::Object(map) = &mut dump {
            for (k, mut v) in incident.extra {
                mask_value(&mut v);
                map.entry(k).or_insert(v);
            }
        }
        (file_name, dump)
    }

    /// Write a dump (atomically, fsynced) and return what was written.
    pub fn write(&self, incident: Incident) -> Result<DumpInfo> {
        let exc_type = incident.exc_type.clone();
        let (file_name, dump) = self.build(incident);
        let path = self.crash_dir.join(&file_name);
        crate::fs::write_json_atomic(&path, &dump)?;
        let text = |k: &str| dump.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(DumpInfo {
            event_id: text("event_id"),
            timestamp: text("timestamp"),
            fingerprint: text("fingerprint"),
            exc_type,
            file_name,
            path,
        })
    }

    /// Write a dump for an error: its kind, its message chain and a backtrace (the error's own when it
    /// carries one, else the caller's).
    pub fn capture_error(
        &self,
        err: &anyhow::Error,
        context: Map<String, Value>,
        attachments: &[PathBuf],
    ) -> Result<DumpInfo> {
        self.write(error_incident(err, context, attachments))
    }
}

fn error_incident(err: &anyhow::Error, context: Map<String, Value>, attachments: &[PathBuf]) -> Incident {
    let mut traceback = format!("{err:?}");
    if err.backtrace().status() != BacktraceStatus::Captured {
        traceback.push_str("\n\nstack backtrace:\n");
        traceback.push_str(&Backtrace::force_capture().to_string());
    }
    let message = format!("{err:#}");
    Incident {
        exc_type: error_kind(err),
        fingerprint_hint: normalise(&message),
        message,
        traceback,
        context,
        attachments: attachments.to_vec(),
        ..Incident::default()
    }
}

/// The kind of an error, as `exc_type`: the io error kind, the parser, or `Error`.
pub fn error_kind(err: &anyhow::Error) -> String {
    let root = err.root_cause();
    if let Some(e) = root.downcast_ref::<std::io::Error>() {
        return format!("io::{:?}", e.kind());
    }
    if root.is::<serde_json::Error>() {
        return "serde_json::Error".into();
    }
    if root.is::<crate::exit_code::Hinted>() {
        return "Hinted".into();
    }
    "Error".into()
}

// ---------------------------------------------------------------------------------------------------
// The process-wide reporter, the panic hook and the listener.

type Listener = Arc<dyn Fn(&DumpInfo) -> Result<()> + Send + Sync>;

struct Global {
    reporter: Option<Reporter>,
    listener: Option<Listener>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global { reporter: None, listener: None });

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC_DUMP: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn global() -> std::sync::MutexGuard<'static, Global> {
    // The lock is only held to clone or replace the fields, never across a call that could panic.
    GLOBAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Install the panic hook (once per process) writing dumps under `paths`; the previous hook still runs
/// after the dump is written. Later calls only change the folder.
pub fn install_panic_hook(paths: &Paths) {
    global().reporter = Some(Reporter::new(paths, None));
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let reentered = IN_HOOK.try_with(|f| f.replace(true)).unwrap_or(true);
            let written = if reentered { None } else { write_panic_dump(info) };
            previous(info);
            if let Some(path) = written {
                let _ = writeln!(std::io::stderr(), "crash dump written to {}", path.display());
            }
            if !reentered {
                let _ = IN_HOOK.try_with(|f| f.set(false));
            }
        }));
    });
}

/// Use the loaded configuration (log tail size) from now on.
pub fn configure(paths: &Paths, config: &Config) {
    global().reporter = Some(Reporter::new(paths, Some(config)));
}

/// Call `f` after every dump the process-wide reporter writes (panic hook, [`capture`],
/// [`capture_error`]). Its errors are reported on stderr and otherwise ignored.
pub fn set_listener(f: impl Fn(&DumpInfo) -> Result<()> + Send + Sync + 'static) {
    global().listener = Some(Arc::new(f));
}

fn reporter_and_listener() -> (Option<Reporter>, Option<Listener>) {
    let g = global();
    (g.reporter.clone(), g.listener.clone())
}

/// Write a dump with the process-wide reporter (installed by [`install_panic_hook`]).
pub fn capture(incident: Incident) -> Result<DumpInfo> {
    let (reporter, listener) = reporter_and_listener();
    let reporter = reporter.context("the crash reporter is not installed (call crash::install_panic_hook first)")?;
    let info = reporter.write(incident)?;
    notify(listener, &info);
    Ok(info)
}

/// The library API of DESIGN §3: write a dump for `err` and return its path.
pub fn capture_error(err: &anyhow::Error, context: Map<String, Value>, attachments: &[PathBuf]) -> Result<PathBuf> {
    capture(error_incident(err, context, attachments)).map(|i| i.path)
}

/// The dump the panic hook wrote for the most recent panic on this thread, if any (taken once), so a
/// caller that caught the panic (an HTTP handler) can point at it.
pub fn take_panic_dump() -> Option<PathBuf> {
    LAST_PANIC_DUMP.try_with(|d| d.borrow_mut().take()).ok().flatten()
}

fn notify(listener: Option<Listener>, info: &DumpInfo) {
    if let Some(l) = listener {
        if let Err(e) = l(info) {
            let _ =
                writeln!(std::io::stderr(), "warning: crash dump {} not recorded in telemetry: {e:#}", info.file_name);
        }
    }
}

fn write_panic_dump(info: &std::panic::PanicHookInfo<'_>) -> Option<PathBuf> {
    let (reporter, listener) = reporter_and_listener();
    let reporter = reporter?;
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic payload>".to_string());
    let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let mut extra = Map::new();
    if let Some(loc) = &location {
        extra.insert("location".into(), Value::String(loc.clone()));
    }
    let file = info.location().map(|l| l.file().to_string()).unwrap_or_default();
    let incident = Incident {
        exc_type: "panic".into(),
        traceback: trim_panic_frames(&Backtrace::force_capture().to_string()),
        fingerprint_hint: format!("{file}\n{}", normalise(&message)),
        message,
        extra,
        ..Incident::default()
    };
    match reporter.write(incident) {
        Ok(dump) => {
            let _ = LAST_PANIC_DUMP.try_with(|d| *d.borrow_mut() = Some(dump.path.clone()));
            notify(listener, &dump);
            Some(dump.path)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write crash dump: {e:#}");
            None
        }
    }
}

/// A panic backtrace without the frames of the panic machinery (this hook, `std::panicking`) at the top
/// and the runtime's start-up frames at the bottom, as Rust's own short backtraces do.
fn trim_panic_frames(bt: &str) -> String {
    let lines: Vec<&str> = bt.lines().collect();
    let is_frame = |l: &str| {
        l.trim_start().split_once(": ").is_some_and(|(i, _)| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()))
    };
    let mut start = 0;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if !is_frame(l) {
            continue;
        }
        if l.contains("rust_begin_unwind")
            || l.contains("core::panicking::")
            || l.contains("std::panicking::begin_panic")
        {
            start = i + 1;
        } else if l.contains("__rust_begin_short_backtrace") {
            end = i;
            break;
        }
    }
    // Skip the location lines of the last machinery frame.
    while start < end && !is_frame(lines[start]) {
        start += 1;
    }
    if start >= end {
        return bt.to_string();
    }
    let mut out = lines[start..end].join("\n");
    out.push('\n');
    out
}

/// 8 lowercase hex characters; never panics (falls back to the clock and pid if the OS refuses).
fn event_id() -> String {
    let mut buf = [0u8; 4];
    if getrandom::getrandom(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        buf = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    crate::digest::hex(&buf)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Mask strings under secret-looking keys and secrets inside free text, at any depth.
fn mask_value(v: &mut Value) {
    crate::config::mask_secrets(v);
    fn text(v: &mut Value) {
        match v {
            Value::String(s) => *s = mask_secrets_in_text(s).0,
            Value::Object(m) => m.values_mut().for_each(text),
            Value::Array(a) => a.iter_mut().for_each(text),
            _ => {}
        }
    }
    text(v);
}

/// The command line with the home folder shown as `~` and secret values masked (`--token X`,
/// `--password=X`).
pub fn masked_args(args: Vec<String>) -> Vec<String> {
    let home = std::env::var("HOME").ok().filter(|h| h.len() > 1).map(|h| h.trim_end_matches('/').to_string());
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next = false;
    for arg in args {
        let arg = match &home {
            Some(h) => arg.replace(h.as_str(), "~"),
            None => arg,
        };
        if mask_next && !arg.starts_with('-') {
            out.push("*".repeat(arg.chars().count().min(16)));
            mask_next = false;
            continue;
        }
        mask_next = arg.starts_with('-') && !arg.contains('=') && looks_like_secret_name(&arg);
        out.push(mask_secrets_in_text(&arg).0);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Fingerprints.

/// A stable 16-hex hash of `exc_type` and the top in-app frames of `traceback` (Rust backtraces: the
/// innermost frames outside std and this reporter; Python tracebacks: the innermost frames outside the
/// standard library and site-packages). Line numbers and addresses are left out so repeats of the same
/// crash group together across builds. Without in-app frames, `hint` (normalised) stands in.
pub fn fingerprint(exc_type: &str, traceback: &str, hint: &str) -> String {
    let frames = in_app_frames(traceback);
    let basis = if frames.is_empty() { normalise(hint) } else { frames.join("\n") };
    crate::digest::sha256_hex(format!("{exc_type}\n{basis}").as_bytes())[..16].to_string()
}

/// The top in-app frames of a Rust backtrace or Python traceback, normalised.
pub fn in_app_frames(traceback: &str) -> Vec<String> {
    let mut rust = Vec::new();
    let mut python = Vec::new();
    for line in traceback.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("File \"") {
            if let Some((file, tail)) = rest.split_once('"') {
                if !is_python_library(file) {
                    let func = tail.rsplit_once(", in ").map_or("", |(_, f)| f.trim());
                    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
                    python.push(format!("{base}:{func}"));
                }
            }
            continue;
        }
        if let Some((index, symbol)) = t.split_once(": ") {
            if !index.is_empty() && index.chars().all(|c| c.is_ascii_digit()) {
                let symbol = strip_symbol_hash(symbol.trim());
                if is_rust_in_app(symbol) {
                    rust.push(normalise(symbol));
                }
            }
        }
    }
    if !python.is_empty() {
        // Python prints the innermost call last.
        python.iter().rev().take(FINGERPRINT_FRAMES).cloned().collect()
    } else {
        rust.into_iter().take(FINGERPRINT_FRAMES).collect()
    }
}

pub(crate) fn is_python_library(file: &str) -> bool {
    file.contains("site-packages")
        || file.contains("dist-packages")
        || file.contains("/lib/python")
        || file.starts_with('<')
}

pub(crate) fn strip_symbol_hash(symbol: &str) -> &str {
    match symbol.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => head,
        _ => symbol,
    }
}

pub(crate) fn is_rust_in_app(symbol: &str) -> bool {
    const RUNTIME: [&str; 16] = [
        "std::",
        "core::",
        "alloc::",
        "backtrace::",
        "<std::",
        "<core::",
        "<alloc::",
        "test::",
        "rust_begin_unwind",
        "rust_panic",
        "__rust",
        "__libc",
        "_start",
        "start_thread",
        "clone",
        "<unknown>",
    ];
    !symbol.is_empty()
        && symbol != "main"
        && !symbol.starts_with("0x")
        && !RUNTIME.iter().any(|p| symbol.starts_with(p))
        && !symbol.contains("comfyvn_obs::crash::")
}

/// Replace hex addresses and digit runs so that values that differ per run (ids, sizes, line numbers,
/// pointers) do not split a group.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '0' && chars.peek().is_some_and(|n| *n == 'x' || *n == 'X') {
            chars.next();
            while chars.peek().is_some_and(char::is_ascii_hexdigit) {
                chars.next();
            }
            out.push_str("0x#");
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// The exception type and message of the last Python traceback in `text` (`ValueError: boom` →
/// `("ValueError", "boom")`).
pub fn python_exception(text: &str) -> Option<(String, String)> {
    let start = text.rfind("Traceback (most recent call last):")?;
    let last =
        text[start..].lines().skip(1).filter(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace)).last()?;
    let (ty, msg) = last.split_once(':').map_or((last, ""), |(t, m)| (t, m.trim()));
    let ty = ty.trim();
    let is_name = !ty.is_empty() && ty.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    is_name.then(|| (ty.to_string(), msg.to_string()))
}

/// The Python traceback part of `text` (from its last `Traceback` line), if any.
fn python_traceback(text: &str) -> Option<&str> {
    text.rfind("Traceback (most recent call last):").map(|i| &text[i..])
}

// ---------------------------------------------------------------------------------------------------
// Supervising a child (`comfyvn-obs run`).

/// How a supervised child ended.
#[derive(Debug, Clone)]
pub struct ChildOutcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The last bytes of its stderr (lossy UTF-8, starting at a line boundary when cut).
    pub stderr_tail: String,
}

impl ChildOutcome {
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }

    /// The status to exit with: the child's code, or 128 + signal number.
    pub fn exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 1,
        }
    }
}

/// The child could not be started (the caller exits 127 for "not found", 126 otherwise, like a shell).
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program:?}: {error}")]
pub struct SpawnError {
    pub program: String,
    pub error: std::io::Error,
}

impl SpawnError {
    pub fn exit_code(&self) -> i32 {
        match self.error.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// Run `command` with stdin and stdout passed through and stderr tee'd (passed through as it arrives,
/// the last `tail_bytes` kept). While it runs, SIGINT/SIGQUIT are left to the child (the terminal sends
/// them to the whole process group) and SIGTERM/SIGHUP are forwarded to it.
pub fn run_child(command: &[OsString], tail_bytes: usize) -> Result<ChildOutcome> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let (program, args) = command.split_first().context("no command given")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| SpawnError { program: program.to_string_lossy().into_owned(), error })?;

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("cannot install signal handlers")?;
    let signal_handle = signals.handle();
    let child_done = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let (pid, done) = (child.id() as libc::pid_t, Arc::clone(&child_done));
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if (sig == SIGTERM || sig == SIGHUP) && !done.load(Ordering::SeqCst) {
                    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own unreaped child.
                    unsafe {
                        libc::kill(pid, sig);
                    }
                }
            }
        })
    };

    let stderr = child.stderr.take();
    let tee = std::thread::spawn(move || tee_stderr(stderr, tail_bytes));
    let status = child.wait();
    child_done.store(true, Ordering::SeqCst);
    signal_handle.close();
    let _ = forwarder.join();
    let tail = tee.join().unwrap_or_default();
    let status = status.context("cannot wait for the child process")?;
    use std::os::unix::process::ExitStatusExt;
    Ok(ChildOutcome { code: status.code(), signal: status.signal(), stderr_tail: tail })
}

/// Copy the child's stderr to ours as it arrives; return its last `keep` bytes.
fn tee_stderr(pipe: Option<std::process::ChildStderr>, keep: usize) -> String {
    let Some(mut pipe) = pipe else { return String::new() };
    let mut tail: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > keep.saturating_mul(2).max(8192) {
            let drop = tail.len() - keep;
            tail.drain(..drop);
            cut = true;
        }
    }
    if tail.len() > keep {
        let drop = tail.len() - keep;
        tail.drain(..drop);
        cut = true;
    }
    let mut text = String::from_utf8_lossy(&tail).into_owned();
    if cut {
        // Start at a line boundary rather than in the middle of a line.
        if let Some(nl) = text.find('\n') {
            if nl + 1 < text.len() {
                text.drain(..=nl);
            }
        }
    }
    text
}

/// `signal 9 (SIGKILL)`-style names for the common signals.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// A command line for people: arguments with spaces or quotes are single-quoted.
pub fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The incident for a child that failed: a Python exception in its stderr gives the type and message;
/// otherwise `NonZeroExit` / `KilledBySignal`. The `child` field carries the command, status and stderr
/// tail.
pub fn child_incident(command: &[OsString], outcome: &ChildOutcome, context: Map<String, Value>) -> Incident {
    let line = command_line(command);
    let program = command
        .first()
        .map(|p| p.to_string_lossy().rsplit('/').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let status_text = match (outcome.code, outcome.signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => match signal_name(s) {
            Some(name) => format!("was killed by signal {s} ({name})"),
            None => format!("was killed by signal {s}"),
        },
        (None, None) => "ended without a status".to_string(),
    };
    let (exc_type, message) = match python_exception(&outcome.stderr_tail) {
        Some((ty, msg)) => (ty, if msg.is_empty() { format!("{program} {status_text}") } else { msg }),
        None if outcome.code.is_none() => ("KilledBySignal".to_string(), format!("`{line}` {status_text}")),
        None => ("NonZeroExit".to_string(), format!("`{line}` {status_text}")),
    };
    let traceback = python_traceback(&outcome.stderr_tail).unwrap_or(&outcome.stderr_tail).to_string();
    let last_line = outcome.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let child = json!({
        "command": command.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "command_line": line,
        "exit_code": outcome.code,
        "signal": outcome.signal,
        "signal_name": outcome.signal.and_then(signal_name),
        "stderr_tail": outcome.stderr_tail,
    });
    let mut extra = Map::new();
    extra.insert("child".into(), child);
    Incident {
        exc_type,
        message,
        traceback,
        context,
        attachments: Vec::new(),
        extra,
        fingerprint_hint: format!("{program}\n{status_text}\n{}", normalise(last_line)),
    }
}

// ---------------------------------------------------------------------------------------------------
// Reading dumps back.

/// One dump file and its document.
#[derive(Debug, Clone)]
pub struct DumpEntry {
    pub path: PathBuf,
    pub dump: Value,
}

impl DumpEntry {
    fn text(&self, key: &str) -> &str {
        self.dump.get(key).and_then(Value::as_str).unwrap_or_default()
    }
    pub fn event_id(&self) -> &str {
        self.text("event_id")
    }
    pub fn timestamp(&self) -> &str {
        self.text("timestamp")
    }
    pub fn fingerprint(&self) -> &str {
        self.text("fingerprint")
    }

    /// `{event_id, timestamp, exc_type, message, fingerprint, path}` for listings.
    pub fn summary(&self) -> Value {
        json!({
            "event_id": self.event_id(),
            "timestamp": self.timestamp(),
            "exc_type": self.text("exc_type"),
            "message": self.text("message"),
            "fingerprint": self.fingerprint(),
            "path": self.path,
        })
    }
}

/// Every dump, newest first, plus the files that could not be read (reported, not fatal).
#[derive(Debug, Default)]
pub struct Listing {
    pub dumps: Vec<DumpEntry>,
    pub problems: Vec<String>,
}

fn is_dump_name(name: &str) -> bool {
    name.starts_with("crash-") && name.ends_with(".json")
}

fn read_entry(path: &Path) -> Result<DumpEntry> {
    let dump = crate::fs::read_json_opt(path)?.with_context(|| format!("{} disappeared", path.display()))?;
    if !dump.get("event_id").is_some_and(Value::is_string) {
        anyhow::bail!("{}: not a crash dump (no \"event_id\" string)", path.display());
    }
    Ok(DumpEntry { path: path.to_path_buf(), dump })
}

/// All dumps under `logs/crash/`, newest first. Malformed files land in `problems`.
pub fn list_dumps(paths: &Paths) -> Result<Listing> {
    let dir = paths.crash_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if !is_dump_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        match read_entry(&entry.path()) {
            Ok(d) => listing.dumps.push(d),
            Err(e) => listing.problems.push(format!("{e:#}")),
        }
    }
    listing.dumps.sort_by(|a, b| (b.timestamp(), &b.path).cmp(&(a.timestamp(), &a.path)));
    listing.problems.sort();
    Ok(listing)
}

/// The newest `n` readable dumps.
pub fn recent_dumps(paths: &Paths, n: usize) -> Result<Vec<DumpEntry>> {
    let mut dumps = list_dumps(paths)?.dumps;
    dumps.truncate(n);
    Ok(dumps)
}

/// A dump by event id, file name or file stem; `Ok(None)` when there is none.
pub fn load_dump(paths: &Paths, id: &str) -> Result<Option<DumpEntry>> {
    let id = id.trim();
    if id.is_empty() || id.contains(['/', '\\']) {
        return Ok(None);
    }
    let dir = paths.crash_dir();
    // The event id is part of the file name, so the common case reads one file.
    let by_name = [dir.join(id), dir.join(format!("{id}.json"))];
    for candidate in by_name {
        let name = candidate.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if is_dump_name(&name) && candidate.is_file() {
            return read_entry(&candidate).map(Some);
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_dump_name(&name) && name.ends_with(&format!("-{id}.json")) {
                if let Ok(d) = read_entry(&entry.path()) {
                    if d.event_id() == id {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }
    // A renamed file still answers to its event id.
    Ok(list_dumps(paths)?.dumps.into_iter().find(|d| d.event_id() == id))
}

/// Group dumps by fingerprint: `{fingerprint, exc_type, message, count, first_seen, last_seen,
/// latest_event_id, event_ids}`, most recently seen group first.
pub fn group_dumps(dumps: &[DumpEntry]) -> Vec<Value> {
    let mut groups: Vec<(String, Vec<&DumpEntry>)> = Vec::new();
    for d in dumps {
        match groups.iter_mut().find(|(fp, _)| fp == d.fingerprint()) {
            Some((_, members)) => members.push(d),
            None => groups.push((d.fingerprint().to_string(), vec![d])),
        }
    }
    let mut out: Vec<Value> = groups
        .into_iter()
        .map(|(fp, members)| {
            let latest = members.iter().max_by(|a, b| a.timestamp().cmp(b.timestamp())).copied().unwrap_or(members[0]);
            let first = members.iter().map(|d| d.timestamp()).min().unwrap_or_default();
            let last = members.iter().map(|d| d.timestamp()).max().unwrap_or_default();
            json!({
                "fingerprint": fp,
                "exc_type": latest.text("exc_type"),
                "message": latest.text("message"),
                "count": members.len(),
                "first_seen": first,
                "last_seen": last,
                "latest_event_id": latest.event_id(),
                "event_ids": members.iter().map(|d| d.event_id()).collect::<Vec<_>>(),
            })
        })
        .collect();
    out.sort_by(|a, b| b["last_seen"].as_str().cmp(&a["last_seen"].as_str()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUST_BT: &str = "   0: std::backtrace::Backtrace::force_capture
             at /rustc/abc/library/std/src/backtrace.rs:312:13
   1: comfyvn_obs::crash::write_panic_dump::h0123456789abcdef
   2: std::panicking::rust_panic_with_hook
   3: comfyvn_obs::commands::crash::simulate::h1111111111111111
             at ./src/commands/crash.rs:40:5
   4: comfyvn_obs::commands::crash::run
   5: main
   6: __libc_start_main";

    #[test]
    fn fingerprint_uses_in_app_frames_and_ignores_lines_and_hashes() {
        assert_eq!(
            in_app_frames(RUST_BT),
            ["comfyvn_obs::commands::crash::simulate", "comfyvn_obs::commands::crash::run"]
        );
        let moved = RUST_BT.replace(":40:5", ":97:1").replace("h1111111111111111", "h2222222222222222");
        assert_eq!(fingerprint("panic", RUST_BT, "a"), fingerprint("panic", &moved, "b"));
        assert_ne!(fingerprint("panic", RUST_BT, ""), fingerprint("other", RUST_BT, ""));
        assert_eq!(fingerprint("panic", RUST_BT, "").len(), 16);
    }

    #[test]
    fn panic_machinery_frames_are_trimmed() {
        let bt = "   0: comfyvn_obs::crash::write_panic_dump\n             at ./src/crash.rs:1:1\n   1: std::panicking::panic_with_hook\n   2: __rustc::rust_begin_unwind\n             at /rustc/x/panicking.rs:689:5\n   3: core::panicking::panic_fmt\n             at /rustc/x/panicking.rs:80:14\n   4: app::work\n             at ./src/lib.rs:3:5\n   5: app::main\n   6: std::sys::backtrace::__rust_begin_short_backtrace\n   7: main\n";
        assert_eq!(trim_panic_frames(bt), "   4: app::work\n             at ./src/lib.rs:3:5\n   5: app::main\n");
        assert_eq!(trim_panic_frames("disabled backtrace"), "disabled backtrace");
    }

    #[test]
    fn python_tracebacks_give_type_message_and_frames() {
        let tb = "noise\nTraceback (most recent call last):\n  File \"/app/studio.py\", line 12, in <module>\n    main()\n  File \"/usr/lib/python3.12/json/__init__.py\", line 3, in loads\n  File \"/app/scene.py\", line 40, in load\n    raise ValueError(\"bad scene 42\")\nValueError: bad scene 42\n";
        assert_eq!(python_exception(tb), Some(("ValueError".into(), "bad scene 42".into())));
        assert_eq!(in_app_frames(tb), ["scene.py:load", "studio.py:<module>"]);
        let elsewhere = tb.replace("line 40", "line 41");
        assert_eq!(fingerprint("ValueError", tb, ""), fingerprint("ValueError", &elsewhere, ""));
        assert_eq!(python_exception("no traceback here"), None);
    }

    #[test]
    fn normalise_drops_numbers_and_addresses() {
        assert_eq!(normalise("index 12 out of range at 0x7ffdeadbeef"), "index # out of range at 0x#");
    }

    #[test]
    fn args_mask_secrets_and_home() {
        let home = std::env::var("HOME").ok().filter(|h| h.len() > 1).unwrap_or_else(|| "/nonexistent-home".into());
        let out = masked_args(vec![
            format!("{home}/bin/x"),
            "--api-key".into(),
            "XYZ".into(),
            "--token=abc".into(),
            "--name".into(),
            "n".into(),
        ]);
        let first = if std::env::var("HOME").ok().is_some_and(|h| h.len() > 1) {
            "~/bin/x".to_string()
        } else {
            format!("{home}/bin/x")
        };
        assert_eq!(out, [first.as_str(), "--api-key", "***", "--token=***", "--name", "n"]);
    }

    #[test]
    fn dump_has_every_design_field_and_masks_context() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(&Paths::under(dir.path()), None);
        let mut context = Map::new();
        context.insert("plugin".into(), json!("asset_sync"));
        context.insert("api_token".into(), json!("abcd"));
        let incident = Incident {
            exc_type: "ValueError".into(),
            message: "failed with Bearer abcdefghijkl".into(),
            traceback: "Traceback".into(),
            context,
            attachments: vec![PathBuf::from("rel/file.txt")],
            ..Incident::default()
        };
        let info = reporter.write(incident).unwrap();
        let dump: Value = serde_json::from_str(&std::fs::read_to_string(&info.path).unwrap()).unwrap();
        let keys: Vec<_> = dump.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "schema",
                "event_id",
                "timestamp",
                "exc_type",
                "message",
                "traceback",
                "cwd",
                "pid",
                "context",
                "attachments",
                "app_version",
                "os",
                "arch",
                "args",
                "thread",
                "fingerprint",
                "log_tail"
            ]
        );
        let name = info.file_name.clone();
        assert!(name.starts_with("crash-") && name.ends_with(&format!("-{}.json", info.event_id)), "{name}");
        assert_eq!(info.event_id.len(), 8);
        assert!(dump["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(dump["context"]["api_token"], "****");
        assert_eq!(dump["context"]["plugin"], "asset_sync");
        assert_eq!(dump["message"], "failed with Bearer ************");
        assert!(Path::new(dump["attachments"][0].as_str().unwrap()).is_absolute());
        assert_eq!(dump["pid"], std::process::id());
    }

    #[test]
    fn capture_error_records_kind_chain_and_a_backtrace() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(&Paths::under(dir.path()), None);
        let err = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
            .context("cannot read scene.json");
        let mut context = Map::new();
        context.insert("job".into(), json!("j1"));
        let info = reporter.capture_error(&err, context, &[]).unwrap();
        let dump: Value = serde_json::from_str(&std::fs::read_to_string(&info.path).unwrap()).unwrap();
        assert_eq!(dump["exc_type"], "io::NotFound");
        assert_eq!(dump["message"], "cannot read scene.json: gone");
        assert_eq!(dump["context"]["job"], "j1");
        // The caller's frames are in the backtrace, and so in the fingerprint.
        let tb = dump["traceback"].as_str().unwrap();
        assert!(tb.contains("capture_error_records_kind_chain_and_a_backtrace"), "{tb}");
        let again = reporter.capture_error(&err, Map::new(), &[]).unwrap();
        assert_eq!(again.fingerprint, info.fingerprint);
    }

    #[test]
    fn listing_sorts_newest_first_skips_malformed_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let crash = paths.crash_dir();
        std::fs::create_dir_all(&crash).unwrap();
        let write = |name: &str, ts: &str, id: &str, fp: &str| {
            let doc = json!({"event_id": id, "timestamp": ts, "exc_type": "panic", "message": "m", "fingerprint": fp});
            std::fs::write(crash.join(name), doc.to_string()).unwrap();
        };
        write("crash-20260101_000000-aaaaaaaa.json", "2026-01-01T00:00:00.000000Z", "aaaaaaaa", "f1");
        write("crash-20260103_000000-cccccccc.json", "2026-01-03T00:00:00.000000Z", "cccccccc", "f1");
        write("crash-20260102_000000-bbbbbbbb.json", "2026-01-02T00:00:00.000000Z", "bbbbbbbb", "f2");
        std::fs::write(crash.join("crash-20260104_000000-dddddddd.json"), "{torn").unwrap();
        std::fs::write(crash.join("notes.txt"), "x").unwrap();
        let listing = list_dumps(&paths).unwrap();
        let ids: Vec<_> = listing.dumps.iter().map(|d| d.event_id().to_string()).collect();
        assert_eq!(ids, ["cccccccc", "bbbbbbbb", "aaaaaaaa"]);
        assert_eq!(listing.problems.len(), 1);
        assert!(listing.problems[0].contains("dddddddd"));
        let groups = group_dumps(&listing.dumps);
        assert_eq!(groups[0]["fingerprint"], "f1");
        assert_eq!(groups[0]["count"], 2);
        assert_eq!(groups[0]["first_seen"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(groups[0]["last_seen"], "2026-01-03T00:00:00.000000Z");
        assert_eq!(groups[1]["count"], 1);
        assert_eq!(load_dump(&paths, "bbbbbbbb").unwrap().unwrap().event_id(), "bbbbbbbb");
        assert!(load_dump(&paths, "crash-20260101_000000-aaaaaaaa").unwrap().is_some());
        assert!(load_dump(&paths, "ffffffff").unwrap().is_none());
        assert!(load_dump(&paths, "../x").unwrap().is_none());
        assert_eq!(recent_dumps(&paths, 2).unwrap().len(), 2);
    }

    #[test]
    fn child_incident_reads_python_and_plain_failures() {
        let cmd: Vec<OsString> = ["python3", "studio.py"].iter().map(OsString::from).collect();
        let py = ChildOutcome {
            code: Some(1),
            signal: None,
            stderr_tail:
                "Traceback (most recent call last):\n  File \"/a/studio.py\", line 3, in <module>\nKeyError: 'scene'\n"
                    .into(),
        };
        let inc = child_incident(&cmd, &py, Map::new());
        assert_eq!(inc.exc_type, "KeyError");
        assert_eq!(inc.message, "'scene'");
        assert_eq!(inc.extra["child"]["exit_code"], 1);
        let killed = ChildOutcome { code: None, signal: Some(9), stderr_tail: String::new() };
        assert_eq!(killed.exit_code(), 137);
        let inc = child_incident(&cmd, &killed, Map::new());
        assert_eq!(inc.exc_type, "KilledBySignal");
        assert!(inc.message.contains("SIGKILL"), "{}", inc.message);
        assert_eq!(
            command_line(&[OsString::from("sh"), OsString::from("-c"), OsString::from("echo 'x'")]),
            r"sh -c 'echo '\''x'\'''"
        );
    }
}
