//! Crash uploads to a Sentry-compatible server (Sentry, GlitchTip, Bugsink): the consent gate, the
//! durable outbox and the sender. The envelope itself comes from [`crate::sentry`].
//!
//! Owns `data/crash-upload/`: `outbox.jsonl` (the webhook worker's [`Outbox`]: the same append-only
//! `enqueue` / `retry` / `ack` records, the same compaction), `uploads.jsonl` (one line per final
//! state of a dump: `uploaded` with the server's event id, `failed`, `discarded`, `sampled_out`, or
//! `dry_run` with the envelope's file, which is not final), `dry-run/<dump>.envelope`, and
//! `uploader.lock`. Retries follow the webhook schedule rules ([`next_delay`], [`parse_retry_after`],
//! [`receiver_unavailable`]), plus `X-Sentry-Rate-Limits`.
//!
//! Invariants:
//! - Nothing is sent unless the crash-upload gate holds (flag && `enable_crash_uploader` &&
//!   `telemetry_opt_in` && `crash_opt_in`), `dry_run` is false and a DSN is set. The gate is read
//!   again before every pass; a pass that finds it closed discards what is queued (logged, never sent).
//! - The panic hook never sends: it writes the dump, and a later pass (`serve`, `crash upload`)
//!   enqueues and sends it.
//! - At least once: a dump's `uploaded` line is written (fsynced) after the server's 2xx and before
//!   the outbox ack; a pass finding a pending upload whose dump is already `uploaded` acks it without
//!   sending. Every attempt of one dump carries the same event id, which servers de-duplicate on.
//! - One uploader per runtime root (`uploader.lock`): only it writes the outbox and the upload log.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Config;
use crate::crash::DumpEntry;
use crate::outbound::{next_delay, Client, Outbox, Outcome, Pending, Reply, Request, Sink, Verdict};
use crate::paths::Paths;
use crate::sentry::{self, Dsn, EnvelopeOptions};

/// Version of the upload log lines.
pub const SCHEMA: u64 = 1;

/// The outbox's registration fields for crash uploads (one sink, one lane).
const SINK: &str = "sentry";

/// The files of the uploader.
#[derive(Debug, Clone)]
pub struct UploadFiles {
    pub dir: PathBuf,
    pub outbox: PathBuf,
    pub log: PathBuf,
    pub dry_run_dir: PathBuf,
    pub lock: PathBuf,
}

impl UploadFiles {
    pub fn new(paths: &Paths) -> UploadFiles {
        let dir = paths.crash_upload_dir();
        UploadFiles {
            outbox: dir.join("outbox.jsonl"),
            log: dir.join("uploads.jsonl"),
            dry_run_dir: dir.join("dry-run"),
            lock: dir.join("uploader.lock"),
            dir,
        }
    }
}

/// What the configuration and consent allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Nothing leaves the machine and nothing is written (the reason says which condition failed).
    Off(String),
    /// The gate holds but `dry_run` is true: the envelope is written locally, never sent.
    DryRun,
    /// Envelopes are sent to the DSN's server.
    Send,
}

/// The resolved crash-upload settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dsn: Option<Dsn>,
    /// Where the DSN came from: `obs.crash_upload.dsn` or `SENTRY_DSN`.
    pub dsn_source: Option<&'static str>,
    pub mode: Mode,
    pub environment: String,
    pub release: String,
    pub sample_rate: f64,
    pub timeout: Duration,
    pub retry_schedule: Vec<u64>,
    pub interval: Duration,
}

impl Settings {
    /// From the configuration and `$SENTRY_DSN` (a malformed DSN is an error naming its source).
    pub fn resolve(config: &Config) -> Result<Settings> {
        Self::resolve_with(config, std::env::var("SENTRY_DSN").ok())
    }

    pub fn resolve_with(config: &Config, env_dsn: Option<String>) -> Result<Settings> {
        let c = &config.obs.crash_upload;
        let (text, source) = if !c.dsn.trim().is_empty() {
            (Some(c.dsn.clone()), Some("obs.crash_upload.dsn"))
        } else {
            match env_dsn.filter(|d| !d.trim().is_empty()) {
                Some(d) => (Some(d), Some("SENTRY_DSN")),
                None => (None, None),
            }
        };
        let dsn = match (&text, source) {
            (Some(t), Some(src)) => Some(Dsn::parse(t).map_err(|e| {
                crate::exit_code::hinted(
                    format!("{src}: {e:#}"),
                    "copy the DSN from the project's settings on the server (Sentry, GlitchTip or Bugsink)",
                )
            })?),
            _ => None,
        };
        let gates = crate::telemetry::Gates::compute(&config.features, &config.telemetry);
        let mode = if !gates.crash_uploads_active {
            Mode::Off(gate_reason(config))
        } else if config.telemetry.dry_run {
            Mode::DryRun
        } else if dsn.is_none() {
            Mode::Off("no DSN is set (obs.crash_upload.dsn or SENTRY_DSN)".into())
        } else {
            Mode::Send
        };
        Ok(Settings {
            dsn,
            dsn_source: source,
            mode,
            environment: c.environment.clone(),
            release: if c.release.trim().is_empty() {
                format!("comfyvn-obs@{}", crate::telemetry::APP_VERSION)
            } else {
                c.release.clone()
            },
            sample_rate: c.sample_rate,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            retry_schedule: c.retry_schedule_ms.clone(),
            interval: Duration::from_millis(c.interval_ms.max(100)),
        })
    }

    /// One line for people: where uploads go, or why they do not.
    pub fn describe(&self) -> String {
        match (&self.mode, &self.dsn) {
            (Mode::Send, Some(d)) => {
                format!("active: crash dumps are uploaded to {} (project {})", d.server(), d.project_id())
            }
            (Mode::DryRun, _) => {
                "dry run: envelopes are written under data/crash-upload/dry-run/, nothing is sent".into()
            }
            (Mode::Off(why), _) => format!("off: {why}"),
            (Mode::Send, None) => "off: no DSN is set".into(),
        }
    }
}

/// Which part of the gate is closed.
fn gate_reason(config: &Config) -> String {
    let mut missing = Vec::new();
    if !config.features.enable_observability {
        missing.push("features.enable_observability");
    }
    if !config.features.enable_crash_uploader {
        missing.push("features.enable_crash_uploader");
    }
    if !config.telemetry.telemetry_opt_in {
        missing.push("telemetry.telemetry_opt_in");
    }
    if !config.telemetry.crash_opt_in {
        missing.push("telemetry.crash_opt_in");
    }
    format!("consent gate closed ({} false)", missing.join(", "))
}

/// A dump's upload state, as the upload log and the outbox say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateLine {
    pub schema: u64,
    /// The dump's own 8-hex event id.
    pub dump: String,
    /// `uploaded`, `failed`, `discarded`, `sampled_out` or `dry_run`.
    pub state: String,
    /// The event id sent in the envelope.
    pub sentry_event_id: String,
    /// The id the server answered with (`uploaded` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_event_id: Option<String>,
    /// The server (`scheme://host[:port]`) or the dry-run file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it failed or was discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: String,
}

impl StateLine {
    /// Final: the dump is not enqueued again by `--all` or `serve`.
    pub fn is_final(&self) -> bool {
        self.state != "dry_run"
    }
}

/// The latest state line per dump.
pub fn states(paths: &Paths) -> Result<HashMap<String, StateLine>> {
    let path = UploadFiles::new(paths).log;
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut out = HashMap::new();
    for line in BufReader::new(f).split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if let Ok(s) = serde_json::from_slice::<StateLine>(&line) {
            out.insert(s.dump.clone(), s);
        }
    }
    Ok(out)
}

/// A dump's state for listings: the upload log's line, else `queued` (with its attempts) when the
/// outbox holds it, else `not_sent`.
pub fn listing_state(dump_id: &str, states: &HashMap<String, StateLine>, outbox: Option<&Outbox>) -> Value {
    let queued = outbox.and_then(|o| o.get(&outbox_id(dump_id)));
    if let Some(s) = states.get(dump_id) {
        if s.is_final() || queued.is_none() {
            return json!({
                "state": s.state,
                "server_event_id": s.server_event_id,
                "sentry_event_id": s.sentry_event_id,
                "target": s.target,
                "detail": s.detail,
                "at": s.at,
            });
        }
    }
    match queued {
        Some(p) => json!({
            "state": "queued",
            "attempts": p.attempts,
            "next_attempt": (p.next_at_ms > now_ms())
                .then(|| chrono::DateTime::from_timestamp_millis(p.next_at_ms).map(crate::time::iso)),
            "sentry_event_id": p.webhook_id,
        }),
        None => json!({"state": "not_sent"}),
    }
}

/// Read the outbox for listings (nothing is written).
pub fn load_outbox(paths: &Paths) -> Result<Outbox> {
    Outbox::load(&UploadFiles::new(paths).outbox)
}

fn outbox_id(dump_id: &str) -> String {
    format!("crash_{dump_id}")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether a dump is in the sample: the same answer for the same dump every time.
pub fn sampled(dump_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let h = crate::digest::sha256_hex(dump_id.as_bytes());
    let n = u32::from_str_radix(&h[..8], 16).unwrap_or(0);
    f64::from(n) / f64::from(u32::MAX) < rate
}

/// The envelope options for this installation.
pub fn envelope_options(paths: &Paths, config: &Config, settings: &Settings) -> Result<EnvelopeOptions> {
    let anonymous_id = crate::telemetry::Telemetry::new(paths, config).anonymous_id()?;
    Ok(EnvelopeOptions {
        dsn: settings.dsn.clone(),
        release: settings.release.clone(),
        environment: settings.environment.clone(),
        anonymous_id,
    })
}

/// Which dumps a pass takes.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every dump without a final state (what `serve` and `crash upload --all` do).
    AllNew,
    /// These dumps (by their event id), even if they were discarded or failed before.
    Ids(Vec<String>),
}

/// What one pass did, per dump (by dump id).
#[derive(Debug, Default, Serialize)]
pub struct PassReport {
    /// The mode the pass ran in (`send`, `dry_run`, `off`).
    pub mode: String,
    pub enqueued: Vec<String>,
    pub uploaded: Vec<(String, Option<String>)>,
    pub dry_run: Vec<(String, PathBuf)>,
    pub failed: Vec<(String, String)>,
    pub discarded: Vec<String>,
    pub sampled_out: Vec<String>,
    /// Still queued after the pass, with the last error.
    pub waiting: Vec<(String, String)>,
    /// Another process holds the uploader lock: this pass did nothing.
    pub busy: bool,
}

/// The uploader lock, held for one pass.
struct Lock {
    _file: File,
}

fn try_lock(files: &UploadFiles) -> Result<Option<Lock>> {
    let f = crate::fs::open_append(&files.lock)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(Lock { _file: f })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", files.lock.display())),
    }
}

/// One pass: enqueue the selected dumps (or write their dry-run envelopes), then send what is due,
/// until `deadline` or `stop`. With the gate closed, whatever is queued is discarded.
pub fn pass(
    paths: &Paths,
    config: &Config,
    selection: &Selection,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<PassReport> {
    let settings = Settings::resolve(config)?;
    let files = UploadFiles::new(paths);
    let mut report = PassReport {
        mode: match settings.mode {
            Mode::Send => "send",
            Mode::DryRun => "dry_run",
            Mode::Off(_) => "off",
        }
        .into(),
        ..PassReport::default()
    };
    if matches!(settings.mode, Mode::Off(_)) && !files.outbox.exists() {
        return Ok(report);
    }
    let Some(_lock) = try_lock(&files)? else {
        report.busy = true;
        return Ok(report);
    };
    let mut outbox = Outbox::load(&files.outbox)?;
    let mut log = UploadLog::new(files.log.clone());
    let known = states(paths)?;

    if let Mode::Off(why) = &settings.mode {
        discard_all(&mut outbox, &mut log, why, &mut report)?;
        return Ok(report);
    }

    let opts = envelope_options(paths, config, &settings)?;
    let wanted: Vec<DumpEntry> = match selection {
        Selection::AllNew => crate::crash::list_dumps(paths)?
            .dumps
            .into_iter()
            .filter(|d| known.get(d.event_id()).is_none_or(|s| !s.is_final()))
            .collect(),
        Selection::Ids(ids) => {
            let mut v = Vec::new();
            for id in ids {
                match crate::crash::load_dump(paths, id)? {
                    Some(d) => v.push(d),
                    None => report.failed.push((id.clone(), "no such crash dump".into())),
                }
            }
            v
        }
    };
    // Oldest first, so a server sees crashes in the order they happened.
    let mut wanted = wanted;
    wanted.sort_by(|a, b| (a.timestamp(), &a.path).cmp(&(b.timestamp(), &b.path)));

    let mut fresh = Vec::new();
    for d in &wanted {
        let id = d.event_id().to_string();
        let sentry_id = sentry::event_id_of(&d.dump);
        if let Some(s) = known.get(&id) {
            if s.state == "uploaded" {
                report.uploaded.push((id, s.server_event_id.clone()));
                continue;
            }
        }
        if !sampled(&id, settings.sample_rate) {
            log.append(&StateLine::new(&id, "sampled_out", &sentry_id))?;
            report.sampled_out.push(id);
            continue;
        }
        let bytes = sentry::envelope(&d.dump, &opts)?;
        if settings.mode == Mode::DryRun {
            let stem = d.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| id.clone());
            let path = files.dry_run_dir.join(format!("{stem}.envelope"));
            crate::fs::write_atomic(&path, &bytes)?;
            let mut line = StateLine::new(&id, "dry_run", &sentry_id);
            line.target = Some(path.display().to_string());
            log.append(&line)?;
            report.dry_run.push((id, path));
            continue;
        }
        let url = settings.dsn.as_ref().map(Dsn::envelope_url).unwrap_or_default();
        if outbox.get(&outbox_id(&id)).is_some() {
            continue;
        }
        fresh.push(Pending {
            id: outbox_id(&id),
            webhook_id: sentry_id,
            seq: 0,
            event: id.clone(),
            reg_event: SINK.into(),
            url,
            body: String::from_utf8(bytes).context("the envelope is not UTF-8")?,
            attempts: 0,
            next_at_ms: 0,
            lane_down: false,
            parked: false,
        });
    }
    if !fresh.is_empty() {
        // A dump named again after a discard or failure gets a clean slate: an outbox compacted since
        // forgot it, and one not compacted yet is rewritten first.
        if fresh.iter().any(|p| outbox.knows(&p.id)) {
            outbox.compact()?;
        }
        let added = outbox.enqueue(fresh)?;
        outbox.sync()?;
        report.enqueued.extend(added.iter().map(|p| p.event.clone()));
    }

    if settings.mode == Mode::Send {
        send_due(paths, &settings, &mut outbox, &mut log, &known, deadline, stop, &mut report)?;
    }
    if outbox.wants_compaction() {
        outbox.compact()?;
    }
    Ok(report)
}

/// The mode now, reading the configuration again (`None` when it cannot be read: nothing is sent then,
/// and nothing discarded).
fn consent_now(paths: &Paths) -> Option<Mode> {
    Config::load(paths).and_then(|c| Settings::resolve(&c)).ok().map(|s| s.mode)
}

fn discard_all(outbox: &mut Outbox, log: &mut UploadLog, why: &str, report: &mut PassReport) -> Result<()> {
    let pending: Vec<Pending> = outbox.pending().into_iter().cloned().collect();
    if pending.is_empty() {
        return Ok(());
    }
    for p in &pending {
        let mut line = StateLine::new(&p.event, "discarded", &p.webhook_id);
        line.detail = Some(why.to_string());
        log.append(&line)?;
        report.discarded.push(p.event.clone());
    }
    log.sync()?;
    tracing::warn!(count = pending.len(), reason = why, "queued crash uploads discarded, never sent");
    let ids: Vec<String> = pending.into_iter().map(|p| p.id).collect();
    outbox.ack(&ids, Outcome::Dropped)?;
    outbox.sync()?;
    if outbox.wants_compaction() {
        outbox.compact()?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_due(
    paths: &Paths,
    settings: &Settings,
    outbox: &mut Outbox,
    log: &mut UploadLog,
    known: &HashMap<String, StateLine>,
    deadline: Instant,
    stop: &AtomicBool,
    report: &mut PassReport,
) -> Result<()> {
    let Some(dsn) = &settings.dsn else { return Ok(()) };
    let client = Client::new(settings.timeout, 1);
    let sink = SentrySink::new(dsn);
    let pending: Vec<Pending> = outbox.pending().into_iter().cloned().collect();
    let mut blocked: Option<(i64, String)> = None;
    for p in pending {
        if let Some((until, why)) = &blocked {
            // The server is down or rate limiting: the rest wait as long as the one that found out.
            if p.next_at_ms < *until {
                outbox.retry(&p.id, p.attempts, *until, true)?;
            }
            report.waiting.push((p.event.clone(), why.clone()));
            continue;
        }
        if known.get(&p.event).is_some_and(|s| s.state == "uploaded") {
            // Sent and logged by a pass that died before its ack.
            outbox.ack(std::slice::from_ref(&p.id), Outcome::Delivered)?;
            continue;
        }
        if p.next_at_ms > now_ms() || stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            report.waiting.push((p.event.clone(), "waiting for its next attempt".into()));
            continue;
        }
        // Consent is read again before every upload: withdrawn mid-pass, nothing more is sent and the
        // queue is discarded; `dry_run` switched on mid-pass only stops the sending.
        match consent_now(paths) {
            Some(Mode::Send) => {}
            Some(Mode::DryRun) | None => {
                report.waiting.push((p.event.clone(), "dry_run was switched on, or the config cannot be read".into()));
                continue;
            }
            Some(Mode::Off(why)) => {
                report.waiting.clear();
                discard_all(outbox, log, &why, report)?;
                return Ok(());
            }
        }
        let crate::outbound::Attempt { reply, verdict } =
            crate::outbound::send(&client, &sink, &p.webhook_id, p.body.as_bytes());
        let attempts = p.attempts + 1;
        let why = reply.describe();
        if verdict == Verdict::Accepted {
            let server_id = sentry::server_event_id(&reply.body);
            let mut line = StateLine::new(&p.event, "uploaded", &p.webhook_id);
            line.server_event_id = server_id.clone();
            line.target = Some(dsn.server());
            log.append(&line)?;
            log.sync()?;
            outbox.ack(std::slice::from_ref(&p.id), Outcome::Delivered)?;
            tracing::info!(dump = %p.event, server_event_id = server_id.as_deref().unwrap_or("-"), "crash dump uploaded");
            report.uploaded.push((p.event.clone(), server_id));
            continue;
        }
        if let Verdict::Paused(wait) = verdict {
            // Rate limited: not the dump's fault, so its attempt count stays.
            let until = now_ms() + wait.as_millis() as i64;
            outbox.retry(&p.id, p.attempts, until, true)?;
            tracing::warn!(dump = %p.event, wait_ms = wait.as_millis() as u64, "crash upload rate limited");
            let why = format!("rate limited for {}s ({why})", wait.as_secs());
            report.waiting.push((p.event.clone(), why.clone()));
            blocked = Some((until, why));
            continue;
        }
        if let Verdict::Unavailable { retry_after } = verdict {
            let delay = next_delay(&settings.retry_schedule, attempts, retry_after, true).unwrap_or(settings.interval);
            let until = now_ms() + delay.as_millis() as i64;
            outbox.retry(&p.id, attempts, until, true)?;
            tracing::warn!(dump = %p.event, error = %why, attempts, "crash upload failed; the server looks down");
            report.waiting.push((p.event.clone(), why.clone()));
            blocked = Some((until, why));
            continue;
        }
        // Refused (400, 401, 403, 413 …): retried on the schedule, then given up.
        let retry_after = match verdict {
            Verdict::Refused { retry_after } => retry_after,
            _ => None,
        };
        match next_delay(&settings.retry_schedule, attempts, retry_after, false) {
            Some(delay) => {
                outbox.retry(&p.id, attempts, now_ms() + delay.as_millis() as i64, false)?;
                report.waiting.push((p.event.clone(), why));
            }
            None => {
                let mut line = StateLine::new(&p.event, "failed", &p.webhook_id);
                line.detail = Some(why.clone());
                line.target = Some(dsn.server());
                log.append(&line)?;
                log.sync()?;
                outbox.ack(std::slice::from_ref(&p.id), Outcome::Failed)?;
                tracing::error!(dump = %p.event, error = %why, "crash upload refused by the server; given up");
                report.failed.push((p.event.clone(), why));
            }
        }
    }
    outbox.sync()
}

/// The Sentry sink of the outbound pipeline: an envelope POSTed to the DSN's envelope endpoint with
/// `X-Sentry-Auth`; a rate limit (`X-Sentry-Rate-Limits`, or a bare 429) pauses the sink instead of
/// counting against the dump.
#[derive(Debug)]
pub struct SentrySink {
    url: String,
    auth: String,
}

impl SentrySink {
    pub fn new(dsn: &Dsn) -> SentrySink {
        SentrySink { url: dsn.envelope_url(), auth: dsn.auth_header() }
    }
}

impl Sink for SentrySink {
    fn request<'a>(&'a self, _message_id: &str, body: &'a [u8]) -> Request<'a> {
        Request {
            url: &self.url,
            headers: vec![
                ("Content-Type", "application/x-sentry-envelope".to_string()),
                ("X-Sentry-Auth", self.auth.clone()),
            ],
            body: std::borrow::Cow::Borrowed(body),
        }
    }

    fn judge(&self, reply: &Reply) -> Verdict {
        let common = Verdict::of(reply);
        if common == Verdict::Accepted {
            return common;
        }
        let retry_after = crate::outbound::retry::retry_after_of(reply);
        match sentry::rate_limit_delay(reply.rate_limits.as_deref(), retry_after, reply.status) {
            Some(wait) => Verdict::Paused(wait),
            None => common,
        }
    }

    /// The answer's `{"id": …}` is the server's event id.
    fn answer_limit(&self) -> u64 {
        64 * 1024
    }
}

impl StateLine {
    fn new(dump: &str, state: &str, sentry_event_id: &str) -> StateLine {
        StateLine {
            schema: SCHEMA,
            dump: dump.to_string(),
            state: state.to_string(),
            sentry_event_id: sentry_event_id.to_string(),
            server_event_id: None,
            target: None,
            detail: None,
            at: crate::time::iso_now(),
        }
    }
}

/// `uploads.jsonl`, append-only.
struct UploadLog {
    path: PathBuf,
    file: Option<File>,
}

impl UploadLog {
    fn new(path: PathBuf) -> UploadLog {
        UploadLog { path, file: None }
    }

    fn append(&mut self, line: &StateLine) -> Result<()> {
        if self.file.is_none() {
            let mut f = crate::fs::open_append(&self.path)?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > 0 && !crate::fs::ends_with_newline(&self.path, len)? {
                crate::fs::write_line(&mut f, &self.path, "")?;
            }
            self.file = Some(f);
        }
        let text = serde_json::to_string(line)?;
        crate::fs::write_line_whole(self.file.as_mut().expect("opened above"), &self.path, &text)
    }

    fn sync(&self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// The uploader inside `serve`: a pass over new dumps every `obs.crash_upload.interval_ms`, reading
/// the configuration (consent) again each time, until `stop`.
pub fn spawn_service(paths: Paths, stop: std::sync::Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("crash-uploader".into())
        .spawn(move || {
            let mut interval = Duration::from_secs(2);
            while !stop.load(Ordering::Relaxed) {
                match Config::load(&paths) {
                    Ok(config) => {
                        if let Ok(s) = Settings::resolve(&config) {
                            interval = s.interval;
                        }
                        let deadline = Instant::now() + interval.max(Duration::from_secs(5));
                        if let Err(e) = pass(&paths, &config, &Selection::AllNew, deadline, &stop) {
                            tracing::warn!(error = %format!("{e:#}"), "crash upload pass failed; trying again later");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "crash uploader: cannot load the configuration")
                    }
                }
                let until = Instant::now() + interval;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .context("cannot start the crash uploader thread")
}

/// After a command: when uploads are on and a dump is waiting, start `comfyvn-obs crash upload --all`
/// detached (its output discarded; it logs to its own run log), so the command never waits on the
/// server. When uploads are off but some are still queued (consent was just withdrawn, e.g. by
/// `telemetry opt-out`), the same background pass discards them.
pub fn start_background_upload(paths: &Paths, config: &Config) {
    let Ok(settings) = Settings::resolve(config) else { return };
    let files = UploadFiles::new(paths);
    let wanted = match settings.mode {
        Mode::Send => has_unfinished(paths),
        // Consent withdrawn with uploads still queued: the background pass discards them.
        Mode::Off(_) => files.outbox.exists() && load_outbox(paths).is_ok_and(|o| !o.pending().is_empty()),
        Mode::DryRun => false,
    };
    if !wanted {
        return;
    }
    // A running uploader (serve) has it in hand.
    if matches!(try_lock(&files), Ok(None)) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let spawned = std::process::Command::new(exe)
        .args(["crash", "upload", "--all", "--timeout", "60"])
        .env("COMFYVN_RUNTIME_ROOT", &paths.root)
        .env("COMFYVN_LOG_DIR", &paths.log_dir)
        .env("COMFYVN_CONFIG_DIR", &paths.config_dir)
        .env("COMFYVN_DATA_DIR", &paths.data_dir)
        .env("COMFYVN_CACHE_DIR", &paths.cache_dir)
        .env("COMFYVN_ASSETS_ROOT", &paths.assets_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => tracing::debug!(pid = child.id(), "background crash upload started"),
        Err(e) => tracing::warn!(error = %e, "cannot start a background crash upload"),
    }
}

/// Whether a dump file exists that the uploader has not finished with (cheap: names and the log).
pub fn has_unfinished(paths: &Paths) -> bool {
    let Ok(listing) = crate::crash::list_dumps(paths) else { return false };
    let Ok(known) = states(paths) else { return false };
    listing.dumps.iter().any(|d| known.get(d.event_id()).is_none_or(|s| !s.is_final()))
        || load_outbox(paths).is_ok_and(|o| !o.pending().is_empty())
}

/// Where the dry-run envelope of `dump` would be written.
pub fn dry_run_path(paths: &Paths, dump: &Path) -> PathBuf {
    let stem = dump.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    UploadFiles::new(paths).dry_run_dir.join(format!("{stem}.envelope"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, json).unwrap();
        Config::load_files(&[f]).unwrap()
    }

    const OPEN: &str = r#"{"features": {"enable_observability": true, "enable_crash_uploader": true},
        "telemetry": {"telemetry_opt_in": true, "crash_opt_in": true, "dry_run": false}}"#;

    #[test]
    fn the_sentry_sink_pauses_on_rate_limits_and_authenticates_every_request() {
        let dsn = Dsn::parse("http://public@127.0.0.1:9/42").unwrap();
        let sink = SentrySink::new(&dsn);
        let reply = |status: u16, rate_limits: Option<&str>, retry_after: Option<&str>| Reply {
            status: Some(status),
            rate_limits: rate_limits.map(str::to_string),
            retry_after: retry_after.map(str::to_string),
            ..Reply::default()
        };
        assert_eq!(sink.judge(&reply(200, Some("60:error:key"), None)), Verdict::Accepted);
        assert_eq!(sink.judge(&reply(429, Some("30:error:key"), None)), Verdict::Paused(Duration::from_secs(30)));
        assert_eq!(sink.judge(&reply(429, None, Some("5"))), Verdict::Paused(Duration::from_secs(5)));
        assert_eq!(sink.judge(&reply(429, None, None)), Verdict::Paused(Duration::from_secs(60)));
        assert!(matches!(sink.judge(&reply(503, None, None)), Verdict::Unavailable { .. }));
        assert!(matches!(sink.judge(&reply(400, None, None)), Verdict::Refused { .. }));
        let req = sink.request("ignored", b"{}");
        assert_eq!(req.url, dsn.envelope_url());
        assert!(req.headers.iter().any(|(k, v)| *k == "X-Sentry-Auth" && v.contains("sentry_key=public")), "{req:?}");
        assert_eq!(sink.answer_limit(), 64 * 1024, "the answer carries the server's event id");
    }

    #[test]
    fn every_part_of_the_gate_and_dry_run_and_the_dsn_decide_the_mode() {
        let dsn = Some("http://k@127.0.0.1:9/1".to_string());
        assert_eq!(Settings::resolve_with(&config(OPEN), dsn.clone()).unwrap().mode, Mode::Send);
        for (section, key) in [
            ("features", "enable_observability"),
            ("features", "enable_crash_uploader"),
            ("telemetry", "telemetry_opt_in"),
            ("telemetry", "crash_opt_in"),
        ] {
            let mut v: Value = serde_json::from_str(OPEN).unwrap();
            v[section][key] = json!(false);
            let s = Settings::resolve_with(&config(&v.to_string()), dsn.clone()).unwrap();
            match s.mode {
                Mode::Off(why) => assert!(why.contains(key), "{why}"),
                other => panic!("{key} false gave {other:?}"),
            }
        }
        let mut v: Value = serde_json::from_str(OPEN).unwrap();
        v["telemetry"]["dry_run"] = json!(true);
        assert_eq!(Settings::resolve_with(&config(&v.to_string()), dsn.clone()).unwrap().mode, Mode::DryRun);
        assert!(matches!(Settings::resolve_with(&config(OPEN), None).unwrap().mode, Mode::Off(w) if w.contains("DSN")));
        // The configured DSN wins over the environment; a bad one names where it came from.
        let mut v: Value = serde_json::from_str(OPEN).unwrap();
        v["obs"] = json!({"crash_upload": {"dsn": "http://cfg@127.0.0.1:9/2"}});
        let s = Settings::resolve_with(&config(&v.to_string()), dsn.clone()).unwrap();
        assert_eq!((s.dsn_source, s.dsn.unwrap().project_id()), (Some("obs.crash_upload.dsn"), "2".to_string()));
        let err = Settings::resolve_with(&config(OPEN), Some("nonsense".into())).unwrap_err();
        assert!(format!("{err:#}").starts_with("SENTRY_DSN: "), "{err:#}");
        // The defaults: closed gate, a release naming this version.
        let s = Settings::resolve_with(&Config::defaults(), None).unwrap();
        assert!(matches!(s.mode, Mode::Off(_)));
        assert_eq!(s.release, format!("comfyvn-obs@{}", crate::telemetry::APP_VERSION));
    }

    /// A pass that died after the server's 2xx and the `uploaded` line but before the outbox ack:
    /// the next pass acks it without sending again (the DSN's port is closed, so a send would fail).
    #[test]
    fn an_upload_logged_but_not_acked_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut v: Value = serde_json::from_str(OPEN).unwrap();
        v["obs"] = json!({"crash_upload": {"dsn": format!("http://k@127.0.0.1:{port}/1")}});
        let config = config(&v.to_string());
        let reporter = crate::crash::Reporter::new(&paths, None);
        let info = reporter.write(crate::crash::Incident { exc_type: "E".into(), ..Default::default() }).unwrap();
        let files = UploadFiles::new(&paths);
        let mut outbox = Outbox::load(&files.outbox).unwrap();
        let pending = Pending {
            id: outbox_id(&info.event_id),
            webhook_id: "w".into(),
            seq: 0,
            event: info.event_id.clone(),
            reg_event: SINK.into(),
            url: String::new(),
            body: "x".into(),
            attempts: 0,
            next_at_ms: 0,
            lane_down: false,
            parked: false,
        };
        outbox.enqueue(vec![pending]).unwrap();
        outbox.sync().unwrap();
        let mut line = StateLine::new(&info.event_id, "uploaded", "w");
        line.server_event_id = Some("srv".into());
        UploadLog::new(files.log.clone()).append(&line).unwrap();
        let stop = AtomicBool::new(false);
        let report = pass(&paths, &config, &Selection::AllNew, Instant::now() + Duration::from_secs(5), &stop).unwrap();
        assert!(report.waiting.is_empty() && report.failed.is_empty(), "{report:?}");
        assert!(load_outbox(&paths).unwrap().pending().is_empty());
        assert_eq!(states(&paths).unwrap()[&info.event_id].server_event_id.as_deref(), Some("srv"));
    }

    #[test]
    fn sampling_is_stable_per_dump() {
        assert!(sampled("aaaaaaaa", 1.0) && !sampled("aaaaaaaa", 0.0));
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:08x}")).collect();
        let n = ids.iter().filter(|id| sampled(id, 0.25)).count();
        assert!((150..350).contains(&n), "{n}");
        assert!(ids.iter().all(|id| sampled(id, 0.25) == sampled(id, 0.25)));
    }
}
