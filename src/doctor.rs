//! The doctor: health checks of an installation (DESIGN §10). Each check returns a [`Check`]; the
//! report passes when every required check passes. Checks leave nothing behind: probes write into
//! temp files that are removed, and round-trips run in a scratch runtime root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::paths::Paths;

/// The state of one check.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A failed required check fails the report; optional ones only warn.
    pub required: bool,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, ok: true, status: Status::Pass, detail: detail.into(), hint: None, required: true }
    }
    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check { name, ok: false, status: Status::Fail, detail: detail.into(), hint: Some(hint.into()), required: true }
    }
    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check { name, ok: true, status: Status::Warn, detail: detail.into(), hint: Some(hint.into()), required: false }
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, ok: true, status: Status::Skip, detail: detail.into(), hint: None, required: false }
    }
    fn optional(mut self) -> Check {
        self.required = false;
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub pass: bool,
}

/// What the doctor is asked to check.
pub struct Options {
    /// Base URL of a running server (`http://127.0.0.1:8001`); the HTTP probe is skipped without it.
    pub base: Option<String>,
    pub timeout: Duration,
}

/// Run every check. `config` is the result of loading the configuration, so a broken config is a
/// failed check rather than an abort.
pub fn run(paths: &Paths, config: &anyhow::Result<Config>, opts: &Options) -> Report {
    let mut checks = vec![check_config(config)];
    let defaults = Config::defaults();
    let cfg = config.as_ref().unwrap_or(&defaults);
    checks.push(check_dirs(paths));
    checks.push(check_crash_roundtrip(cfg));
    checks.push(check_log_roundtrip(cfg));
    checks.push(check_anonymizer(paths));
    checks.push(check_http(opts));
    checks.push(check_inotify(paths, cfg));
    checks.push(check_disk(paths));
    checks.push(check_webhooks(paths));
    checks.push(check_crash_upload(cfg, opts));
    let pass = checks.iter().all(|c| c.ok || !c.required);
    Report { checks, pass }
}

fn check_config(config: &anyhow::Result<Config>) -> Check {
    match config {
        Ok(c) if c.sources.is_empty() => Check::pass("config", "no config file; compiled-in defaults apply"),
        Ok(c) => {
            let files: Vec<String> = c.sources.iter().map(|p| p.display().to_string()).collect();
            Check::pass("config", format!("parsed {}", files.join(", ")))
        }
        Err(e) => Check::fail(
            "config",
            format!("{e:#}"),
            "fix the file at the position shown, then run `comfyvn-obs config check`",
        ),
    }
}

/// The nearest existing ancestor of `p` (itself when it exists).
fn existing_ancestor(p: &Path) -> Option<&Path> {
    p.ancestors().find(|a| a.exists())
}

/// Can we create a file in `dir` (or, when it does not exist yet, in the folder it would be made in)?
fn probe_writable(dir: &Path) -> Result<(), String> {
    let at = existing_ancestor(dir).ok_or_else(|| format!("{} has no existing parent", dir.display()))?;
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    let probe = at.join(format!(".comfyvn-doctor-{}-{}", std::process::id(), crate::digest::random_hex8()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("cannot create files in {}: {e}", at.display())),
    }
}

fn check_dirs(paths: &Paths) -> Check {
    let dirs = [
        ("logs", &paths.log_dir),
        ("config", &paths.config_dir),
        ("data", &paths.data_dir),
        ("cache", &paths.cache_dir),
        ("assets", &paths.assets_root),
    ];
    let problems: Vec<String> = dirs.iter().filter_map(|(_, d)| probe_writable(d).err()).collect();
    if problems.is_empty() {
        Check::pass("runtime_dirs", format!("writable under {}", paths.root.display()))
    } else {
        Check::fail(
            "runtime_dirs",
            problems.join("; "),
            "fix the permissions, or point COMFYVN_RUNTIME_ROOT (or COMFYVN_LOG_DIR etc.) at a writable folder",
        )
    }
}

/// A scratch runtime root under the system temp folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "comfyvn-doctor-{}-{}",
            std::process::id(),
            crate::digest::random_hex8()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write a crash dump into a scratch root and read it back, so the real crash folder stays clean.
fn check_crash_roundtrip(config: &Config) -> Check {
    const NAME: &str = "crash_capture";
    let result = (|| -> anyhow::Result<String> {
        let scratch = Scratch::new()?;
        let paths = Paths::under(&scratch.0);
        let reporter = crate::crash::Reporter::new(&paths, Some(config));
        let probe = anyhow::anyhow!("doctor probe: crash capture round-trip");
        let info = reporter.capture_error(&probe, serde_json::Map::new(), &[])?;
        let back = crate::fs::read_json_opt(&info.path)?.ok_or_else(|| anyhow::anyhow!("dump vanished"))?;
        for field in ["event_id", "timestamp", "exc_type", "message", "traceback", "pid", "fingerprint"] {
            if back.get(field).is_none() {
                anyhow::bail!("{}: missing field {field}", info.path.display());
            }
        }
        Ok(format!("wrote and read back a dump ({} bytes of JSON)", crate::fs::read_string(&info.path)?.len()))
    })();
    match result {
        Ok(detail) => Check::pass(NAME, detail),
        Err(e) => {
            Check::fail(NAME, format!("{e:#}"), "crash dumps need a writable log folder; run with -v for details")
        }
    }
}

/// Emit one structured record through a private JSON layer into a scratch log folder and read it back.
fn check_log_roundtrip(config: &Config) -> Check {
    const NAME: &str = "log_emission";
    use tracing_subscriber::layer::SubscriberExt as _;
    let result = (|| -> anyhow::Result<String> {
        let scratch = Scratch::new()?;
        let settings = crate::log::LogSettings {
            level: tracing::level_filters::LevelFilter::INFO,
            log_dir: scratch.0.join("logs"),
            keep_runs: 1,
            max_log_bytes: config.obs.logging.max_log_bytes,
            stderr: false,
        };
        let sink = std::sync::Arc::new(crate::log::RunSink::new(&settings));
        let subscriber = tracing_subscriber::registry().with(crate::log::JsonLayer::new(Some(sink.clone()), false));
        let marker = crate::digest::random_hex8();
        tracing::subscriber::with_default(subscriber, || tracing::info!(probe = %marker, "doctor.log_probe"));
        let path = sink.path().ok_or_else(|| anyhow::anyhow!("the log line was not written"))?;
        let text = crate::fs::read_string(&path)?;
        let line = text.lines().last().unwrap_or_default();
        let record: Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        if record.get("probe").and_then(Value::as_str) != Some(marker.as_str()) {
            anyhow::bail!("{}: the probe line did not come back: {line}", path.display());
        }
        Ok("a JSON log line was written and read back".to_string())
    })();
    match result {
        Ok(detail) => Check::pass(NAME, detail),
        Err(e) => Check::fail(NAME, format!("{e:#}"), "structured logs need a writable log folder"),
    }
}

fn check_anonymizer(paths: &Paths) -> Check {
    let file = paths.anonymizer_file();
    let doc = match crate::fs::read_json_opt(&file) {
        Ok(None) => return Check::pass("anonymizer_secret", "not created yet (made on first telemetry use)"),
        Ok(Some(doc)) => doc,
        Err(e) => {
            return Check::fail(
                "anonymizer_secret",
                format!("{e:#}"),
                "it will be moved aside and recreated on next telemetry use; the anonymous id then changes",
            )
        }
    };
    use base64::Engine as _;
    let secret = doc.get("secret").and_then(Value::as_str).unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(secret) {
        Ok(bytes) if bytes.len() == 32 => {
            Check::pass("anonymizer_secret", format!("{} holds a 32-byte secret", file.display()))
        }
        _ => Check::fail(
            "anonymizer_secret",
            format!("{}: secret: expected base64 of 32 bytes", file.display()),
            "it will be moved aside and recreated on next telemetry use; the anonymous id then changes",
        ),
    }
}

fn check_http(opts: &Options) -> Check {
    let Some(base) = &opts.base else {
        return Check::skip("http_health", "no --base given; pass --base http://127.0.0.1:8001 to probe a server");
    };
    let url = format!("{}/health", base.trim_end_matches('/'));
    if let Err(e) = crate::outbound::check_url(&url) {
        return Check::fail("http_health", format!("{e:#}"), "pass --base like http://127.0.0.1:8001");
    }
    let reply = crate::outbound::Client::new(opts.timeout, 1).get(&url, 64 * 1024);
    let ms = reply.latency.as_millis();
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let healthy = body.as_ref().and_then(|b| b.get("status")).and_then(Value::as_str) == Some("ok");
    match reply.status {
        Some(200) if healthy => Check::pass("http_health", format!("{url} answered ok in {ms} ms")),
        Some(status) => Check::fail(
            "http_health",
            format!("{url} answered {status}"),
            "check the server's log under logs/run-*/run.log",
        ),
        None => Check::fail(
            "http_health",
            format!("{url}: {}", reply.describe()),
            "start the server with `comfyvn-obs serve`, or check the address given to --base",
        ),
    }
}

/// The crash-upload DSN is well formed; with `--base` (network probes asked for), its server answers.
fn check_crash_upload(config: &Config, opts: &Options) -> Check {
    let settings = match crate::crash_upload::Settings::resolve(config) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                "crash_upload",
                format!("{e:#}"),
                "copy the DSN from the project's settings on the server, or empty obs.crash_upload.dsn",
            )
        }
    };
    let Some(dsn) = &settings.dsn else {
        return Check::skip("crash_upload", format!("no DSN set; crash uploads {}", settings.describe()));
    };
    let source = settings.dsn_source.unwrap_or("the DSN");
    let detail = format!(
        "{source} is well formed (server {}, project {}); crash uploads {}",
        dsn.server(),
        dsn.project_id(),
        settings.describe()
    );
    if opts.base.is_none() {
        return Check::pass("crash_upload", format!("{detail}; pass --base to probe the server too"));
    }
    // Any HTTP answer (a GET on the envelope endpoint is refused) shows the server is there.
    let reply = crate::outbound::Client::new(opts.timeout, 1).get(&dsn.envelope_url(), 1024);
    match reply.status {
        Some(status) => Check::pass("crash_upload", format!("{detail}; the server answered ({status})")),
        None => Check::fail(
            "crash_upload",
            format!("{detail}; {}: {}", dsn.server(), reply.describe()),
            "start the server or fix the DSN's host; queued dumps are sent once it answers",
        )
        .optional(),
    }
}

fn count_dirs(root: &Path, limit: usize) -> usize {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .take(limit)
        .count()
}

fn check_inotify(paths: &Paths, config: &Config) -> Check {
    let roots: Vec<PathBuf> = if config.obs.watch.roots.is_empty() {
        vec![paths.assets_root.clone()]
    } else {
        config.obs.watch.roots.clone()
    };
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let Some(limit) = limit else {
        return Check::skip(
            "inotify_watches",
            "no inotify on this platform; the watcher uses its native backend or polls",
        );
    };
    let dirs: usize = roots.iter().filter(|r| r.exists()).map(|r| count_dirs(r, limit + 1)).sum();
    let detail = format!("{dirs} folders to watch, limit {limit} (fs.inotify.max_user_watches)");
    if dirs > limit {
        Check::fail(
            "inotify_watches",
            detail,
            "raise it: sudo sysctl fs.inotify.max_user_watches=524288 (the watcher falls back to polling meanwhile)",
        )
        .optional()
    } else if dirs * 5 > limit * 4 {
        Check::warn("inotify_watches", detail, "close to the limit: sudo sysctl fs.inotify.max_user_watches=524288")
    } else {
        Check::pass("inotify_watches", detail)
    }
}

fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn check_disk(paths: &Paths) -> Check {
    let at = existing_ancestor(&paths.root).unwrap_or(Path::new("/"));
    let Some(free) = free_bytes(at) else { return Check::skip("disk_space", "cannot read free space") };
    let mib = free / (1024 * 1024);
    let detail = format!("{mib} MiB free at {}", at.display());
    if mib < 100 {
        Check::fail("disk_space", detail, "free some space: crash dumps, logs and sidecars need room to be written")
    } else if mib < 1024 {
        Check::warn("disk_space", detail, "less than 1 GiB free")
    } else {
        Check::pass("disk_space", detail)
    }
}

/// `http://` or `https://` with a host.
pub fn url_is_well_formed(url: &str) -> bool {
    crate::outbound::check_url(url).is_ok()
}

fn check_webhooks(paths: &Paths) -> Check {
    let file = paths.webhooks_file();
    let doc = match crate::fs::read_json_opt(&file) {
        Ok(None) => return Check::pass("webhook_urls", "no webhooks registered"),
        Ok(Some(d)) => d,
        Err(e) => return Check::fail("webhook_urls", format!("{e:#}"), "fix or remove the file"),
    };
    let list = doc.get("webhooks").cloned().unwrap_or(doc);
    let Some(items) = list.as_array() else {
        return Check::fail(
            "webhook_urls",
            format!("{}: webhooks: expected an array", file.display()),
            "fix or remove the file",
        );
    };
    let bad: Vec<String> = items
        .iter()
        .filter_map(|w| {
            let url = w.get("url").and_then(Value::as_str).unwrap_or("");
            (!url_is_well_formed(url)).then(|| format!("{url:?}"))
        })
        .collect();
    if bad.is_empty() {
        Check::pass("webhook_urls", format!("{} registration(s), all http(s) URLs", items.len()))
    } else {
        Check::fail(
            "webhook_urls",
            format!("malformed URL(s): {}", bad.join(", ")),
            "remove them with `comfyvn-obs webhooks remove --event E --url U` and add a correct one",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks() {
        assert!(url_is_well_formed("http://127.0.0.1:9/hook"));
        assert!(url_is_well_formed("https://example.org"));
        assert!(!url_is_well_formed("ftp://x"));
        assert!(!url_is_well_formed("http://"));
        assert!(!url_is_well_formed("http://a b"));
    }

    #[test]
    fn broken_config_is_a_failed_check_not_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let report = run(
            &paths,
            &Err(anyhow::anyhow!("x.json: invalid JSON")),
            &Options { base: None, timeout: Duration::from_millis(200) },
        );
        assert!(!report.pass);
        assert_eq!(report.checks[0].name, "config");
        assert!(!report.checks[0].ok);
        // The HTTP probe is skipped without a base.
        assert!(report.checks.iter().any(|c| c.name == "http_health" && c.status == Status::Skip));
        // Nothing was created under the root.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
