//! OTLP/HTTP log export of the hook history: the only module that imports `opentelemetry-proto` and
//! `prost`.
//!
//! The exporter follows `logs/hooks/history.jsonl` from a durable checkpoint, as the webhook worker
//! does, and POSTs batches of log records (`ExportLogsServiceRequest`, protobuf) to the collector's
//! `/v1/logs`. Each hook envelope becomes one record: `event.name` = the hook name, `seq` and every
//! `data` field as attributes (`data.<key>`), the envelope's time. The resource carries
//! `service.name` (default `comfyvn-obs`), `service.version`, `host.name`, `process.pid` and
//! `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! Structured `run.log` records are exported too (severity mapped from `level`, `event` as the body, the
//! other keys as attributes), each file from the offset the collector last accepted, except this
//! module's own records. Crash dumps are exported too, only while the crash-upload consent gate holds
//! and `dry_run` is false (as for crash uploads), each as one record with `exception.type`, `exception.message` and
//! `exception.stacktrace` (severity `FATAL` for panics, else `ERROR`).
//!
//! Owns `data/otlp/`: `checkpoint.json` (the last `seq` the collector accepted), `crashes.txt` (the dumps
//! it accepted), `run-logs.json` (how far each `run.log` was accepted), `status.json` (counts, last error, for `export status`) and `exporter.lock` (one
//! exporter per runtime root).
//!
//! Invariants:
//! - At least once: the checkpoint moves only after the collector's 2xx for the batch that reaches it;
//!   a restart (even after `kill -9`) re-sends at most the batch in flight.
//! - Retries with backoff on no answer, 429, 502, 503 and 504 (`Retry-After` is a lower bound), holding
//!   one batch; the history is read again from the checkpoint, so a long outage costs disk, not memory.
//!   Any other refusal drops that batch (counted and logged) and goes on.
//! - Emitting never waits on the exporter: emitters only append to the history.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::hooks::{Bus, Envelope};
use crate::outbound::{next_delay, Client, Compression, Reply, Request, Sink, Verdict};
use crate::paths::Paths;

/// Version of `checkpoint.json` and `status.json`.
pub const SCHEMA: u64 = 1;

/// `SEVERITY_NUMBER_INFO`: hook events are facts, not problems.
const SEVERITY_INFO: i32 = 9;

/// The resolved exporter settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The full logs URL (`…/v1/logs`); `None` means export is off.
    pub endpoint: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Resource attributes, in order (`service.name` first).
    pub resource: Vec<(String, String)>,
    pub batch_size: usize,
    pub batch_latency: Duration,
    pub timeout: Duration,
    pub retry_schedule: Vec<u64>,
    pub compression: Compression,
}

impl Settings {
    /// From `obs.otlp.*` and the standard `OTEL_*` variables.
    pub fn resolve(config: &Config) -> Result<Settings> {
        Self::resolve_with(config, |k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` is used as given; `OTEL_EXPORTER_OTLP_ENDPOINT` and
    /// `obs.otlp.endpoint` are base URLs that get `/v1/logs` appended. The config key wins over the
    /// environment, as `obs.crash_upload.dsn` does over `SENTRY_DSN`.
    pub fn resolve_with(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let c = &config.obs.otlp;
        let base = |b: &str| format!("{}/v1/logs", b.trim().trim_end_matches('/'));
        let endpoint = if !c.endpoint.trim().is_empty() {
            Some(base(&c.endpoint))
        } else if let Some(e) = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
            Some(e.trim().to_string())
        } else {
            env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| base(&e))
        };
        if let Some(url) = &endpoint {
            crate::outbound::check_url(url).context("the OTLP logs endpoint")?;
        }
        let headers = env("OTEL_EXPORTER_OTLP_HEADERS").map(|h| key_values(&h)).unwrap_or_default();
        let mut resource = vec![("service.name".to_string(), "comfyvn-obs".to_string())];
        let mut set = |k: &str, v: String| match resource.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => resource.push((k.to_string(), v)),
        };
        set("service.version", crate::telemetry::APP_VERSION.to_string());
        set("host.name", host_name());
        set("process.pid", std::process::id().to_string());
        for (k, v) in env("OTEL_RESOURCE_ATTRIBUTES").map(|a| key_values(&a)).unwrap_or_default() {
            set(&k, v);
        }
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            set("service.name", name);
        }
        let compression = if !c.compression.trim().is_empty() {
            Compression::parse(&c.compression).context("obs.otlp.compression")?
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION") {
            Compression::parse(&v).context("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION")?
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_COMPRESSION") {
            Compression::parse(&v).context("OTEL_EXPORTER_OTLP_COMPRESSION")?
        } else {
            Compression::None
        };
        Ok(Settings {
            endpoint,
            compression,
            headers,
            resource,
            batch_size: c.batch_size.max(1),
            batch_latency: Duration::from_millis(c.batch_latency_ms),
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            retry_schedule: c.retry_schedule_ms.clone(),
        })
    }
}

/// `k1=v1,k2=v2` with percent-encoded values (the OTEL_* list format).
fn key_values(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn any_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(any_value::Value::IntValue(i)),
            None => Some(any_value::Value::DoubleValue(n.as_f64().unwrap_or_default())),
        },
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue { values: a.iter().map(any_value).collect() })),
        Value::Object(m) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| kv(k, any_value(v))).collect(),
        })),
    };
    AnyValue { value }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(value), ..Default::default() }
}

fn text(s: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s.to_string())) }
}

/// One log record for a hook envelope.
pub fn hook_record(env: &Envelope) -> LogRecord {
    let nanos = (env.ts * 1e9).max(0.0) as u64;
    let mut attributes = vec![
        kv("event.name", text(&env.event)),
        kv("seq", AnyValue { value: Some(any_value::Value::IntValue(env.seq as i64)) }),
    ];
    if let Value::Object(data) = &env.data {
        for (k, v) in data {
            attributes.push(kv(&format!("data.{k}"), any_value(v)));
        }
    }
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: SEVERITY_INFO,
        severity_text: "INFO".into(),
        body: Some(text(&env.event)),
        attributes,
        event_name: env.event.clone(),
        ..Default::default()
    }
}

/// One log record for a crash dump: severity `FATAL` for panics, else `ERROR`, with the OpenTelemetry
/// exception attributes and the dump's id, fingerprint and string context values.
pub fn crash_record(dump: &Value) -> LogRecord {
    let s = |k: &str| dump.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let nanos = chrono::DateTime::parse_from_rfc3339(&s("timestamp"))
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or(0, |n| n.max(0) as u64);
    let panic = s("exc_type") == "panic";
    let mut attributes = vec![
        kv("event.name", text("crash")),
        kv("exception.type", text(&s("exc_type"))),
        kv("exception.message", text(&s("message"))),
        kv("exception.stacktrace", text(&s("traceback"))),
        kv("crash.event_id", text(&s("event_id"))),
        kv("crash.fingerprint", text(&s("fingerprint"))),
    ];
    if let Some(Value::Object(context)) = dump.get("context") {
        for (k, v) in context {
            attributes.push(kv(&format!("context.{k}"), any_value(v)));
        }
    }
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: if panic { 21 } else { 17 },
        severity_text: if panic { "FATAL".into() } else { "ERROR".into() },
        body: Some(text(&s("message"))),
        attributes,
        event_name: "crash".into(),
        ..Default::default()
    }
}

/// One log record for a `run.log` line (`{event, logger, component, level, timestamp, …fields}`):
/// the level mapped to a severity, `event` as the body, every other key as an attribute.
pub fn run_log_record(line: &Value, run: &str) -> LogRecord {
    let s = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let nanos = chrono::DateTime::parse_from_rfc3339(&s("timestamp"))
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or(0, |n| n.max(0) as u64);
    let (number, text_level) = match s("level").as_str() {
        "trace" => (1, "TRACE"),
        "debug" => (5, "DEBUG"),
        "warning" | "warn" => (13, "WARN"),
        "error" => (17, "ERROR"),
        "critical" | "fatal" => (21, "FATAL"),
        _ => (9, "INFO"),
    };
    let mut attributes = vec![kv("log.run", text(run))];
    if let Value::Object(fields) = line {
        for (k, v) in fields {
            if !matches!(k.as_str(), "event" | "level" | "timestamp") {
                attributes.push(kv(k, any_value(v)));
            }
        }
    }
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: number,
        severity_text: text_level.into(),
        body: Some(text(&s("event"))),
        attributes,
        ..Default::default()
    }
}

/// The protobuf bytes of one export request holding `records` under `scope`.
fn encode_records(records: Vec<LogRecord>, scope: &str, resource: &[(String, String)]) -> Vec<u8> {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: resource_attributes(resource), ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: crate::telemetry::APP_VERSION.into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

fn resource_attributes(resource: &[(String, String)]) -> Vec<KeyValue> {
    resource
        .iter()
        .map(|(k, v)| match v.parse::<i64>() {
            Ok(n) if k == "process.pid" => kv(k, AnyValue { value: Some(any_value::Value::IntValue(n)) }),
            _ => kv(k, text(v)),
        })
        .collect()
}

/// The protobuf bytes of one export request holding `envelopes`.
pub fn encode(envelopes: &[Envelope], resource: &[(String, String)]) -> Vec<u8> {
    encode_records(envelopes.iter().map(hook_record).collect(), "comfyvn-obs.hooks", resource)
}

/// What [`decode_summary`] reads back: the resource's string attributes and `(event name, seq)` per record.
pub type Summary = (Vec<(String, String)>, Vec<(String, i64)>);

/// Decode an export request back to its [`Summary`] (tests and tools).
pub fn decode_summary(bytes: &[u8]) -> Result<Summary> {
    let req = ExportLogsServiceRequest::decode(bytes).context("not an ExportLogsServiceRequest")?;
    let mut resource = Vec::new();
    let mut records = Vec::new();
    for rl in req.resource_logs {
        for a in rl.resource.map(|r| r.attributes).unwrap_or_default() {
            if let Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) = a.value {
                resource.push((a.key, s));
            }
        }
        for sl in rl.scope_logs {
            for r in sl.log_records {
                let seq = r.attributes.iter().find(|a| a.key == "seq").and_then(|a| match &a.value {
                    Some(AnyValue { value: Some(any_value::Value::IntValue(i)) }) => Some(*i),
                    _ => None,
                });
                records.push((r.event_name, seq.unwrap_or(-1)));
            }
        }
    }
    Ok((resource, records))
}

/// The files of the exporter.
#[derive(Debug, Clone)]
pub struct ExportFiles {
    pub dir: PathBuf,
    pub checkpoint: PathBuf,
    pub status: PathBuf,
    pub lock: PathBuf,
    /// The event ids of the crash dumps the collector accepted, one per line.
    pub crashes: PathBuf,
    /// How far each run's `run.log` was accepted: `{schema, offsets: {run folder: bytes}}`.
    pub run_logs: PathBuf,
}

impl ExportFiles {
    pub fn new(paths: &Paths) -> ExportFiles {
        let dir = paths.data_dir.join("otlp");
        ExportFiles {
            checkpoint: dir.join("checkpoint.json"),
            status: dir.join("status.json"),
            lock: dir.join("exporter.lock"),
            crashes: dir.join("crashes.txt"),
            run_logs: dir.join("run-logs.json"),
            dir,
        }
    }
}

/// `status.json`: what `export status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub schema: u64,
    pub endpoint: Option<String>,
    /// The last `seq` the collector accepted.
    pub seq: u64,
    pub exported: u64,
    pub batches: u64,
    /// Records in batches the collector refused for good.
    pub dropped: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
    pub updated_at: String,
}

/// The last `seq` the collector accepted (0 when none yet).
pub fn read_checkpoint(files: &ExportFiles) -> Result<u64> {
    Ok(crate::outbound::checkpoint::read(&files.checkpoint)?.unwrap_or(0))
}

pub fn read_status(files: &ExportFiles) -> Result<Option<Status>> {
    Ok(crate::fs::read_json_opt(&files.status)?.and_then(|v| serde_json::from_value(v).ok()))
}

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Stopped,
    /// `once`: everything in the history was accepted.
    CaughtUp,
}

/// The OTLP sink of the outbound pipeline: protobuf `ExportLogsServiceRequest` bodies POSTed to the
/// logs endpoint with the configured headers, gzip-compressed when asked. Per the OTLP/HTTP
/// specification only no answer, 429, 502, 503 and 504 are retried; any other refusal drops the batch.
#[derive(Debug)]
pub struct OtlpSink {
    url: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    headers: Vec<(String, String)>,
    compression: Compression,
}

impl OtlpSink {
    pub fn new(url: &str, settings: &Settings) -> OtlpSink {
        OtlpSink { url: url.to_string(), headers: settings.headers.clone(), compression: settings.compression }
    }
}

impl Sink for OtlpSink {
    fn request<'a>(&'a self, _message_id: &str, body: &'a [u8]) -> Request<'a> {
        let (body, encoding) = self.compression.apply(body);
        let mut headers: Vec<(&'a str, String)> = vec![("Content-Type", "application/x-protobuf".to_string())];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
        headers.extend(encoding);
        Request { url: &self.url, headers, body }
    }

    fn judge(&self, reply: &Reply) -> Verdict {
        match Verdict::of(reply) {
            Verdict::Unavailable { retry_after } if matches!(reply.status, None | Some(429 | 502 | 503 | 504)) => {
                Verdict::Unavailable { retry_after }
            }
            Verdict::Unavailable { retry_after } => Verdict::Refused { retry_after },
            other => other,
        }
    }
}

/// What became of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The collector accepted it: move that stream's position past it.
    Accepted,
    /// The collector refused it for good: counted, logged, and the position moves past it too.
    Dropped,
    /// The collector is down or asked to wait: the position stays, and every stream waits.
    Held,
}

/// The exporter's sending half: one sink, one hold-back for all three streams (hook events, crash
/// dumps, `run.log` records), so a collector that is down is probed on the backoff schedule, not
/// once per stream.
struct Sender {
    sink: OtlpSink,
    client: Client,
    schedule: Vec<u64>,
    attempts: u32,
    held_until: Option<Instant>,
}

impl Sender {
    /// Whether the collector is being waited for.
    fn held(&self) -> bool {
        self.held_until.is_some_and(|t| Instant::now() < t)
    }

    fn post(&mut self, body: &[u8], records: usize, stream: &str, status: &mut Status) -> Sent {
        let attempt = crate::outbound::send(&self.client, &self.sink, "", body);
        let verdict = attempt.verdict;
        if verdict == Verdict::Accepted {
            self.attempts = 0;
            self.held_until = None;
            status.exported += records as u64;
            status.batches += u64::from(records > 0);
            status.last_success_at = Some(crate::time::iso_now());
            return Sent::Accepted;
        }
        let why = attempt.reply.describe();
        status.last_error = Some(why.clone());
        status.last_error_at = Some(crate::time::iso_now());
        let floor = match verdict {
            Verdict::Refused { .. } => {
                tracing::error!(error = %why, records, stream, "the collector refused a batch of log records; dropped");
                status.dropped += records as u64;
                return Sent::Dropped;
            }
            Verdict::Unavailable { retry_after } => retry_after,
            Verdict::Paused(wait) => Some(wait),
            Verdict::Accepted => unreachable!("handled above"),
        };
        self.attempts += 1;
        status.retries += 1;
        let delay = next_delay(&self.schedule, self.attempts, floor, true).unwrap_or(Duration::from_secs(1));
        tracing::warn!(
            error = %why,
            attempts = self.attempts,
            delay_ms = delay.as_millis() as u64,
            stream,
            "OTLP export failed; retrying"
        );
        self.held_until = Some(Instant::now() + delay);
        Sent::Held
    }
}

fn write_hook_checkpoint(files: &ExportFiles, seq: u64) -> Result<()> {
    crate::outbound::checkpoint::write(&files.checkpoint, seq)
}

/// Follow the history and export until `stop` (or, with `once`, until caught up).
pub fn run(paths: &Paths, config: &Config, stop: &AtomicBool, once: bool) -> Result<RunEnd> {
    let settings = Settings::resolve(config)?;
    let Some(url) = settings.endpoint.clone() else {
        anyhow::bail!(crate::exit_code::hinted(
            "no OTLP endpoint is set",
            "set obs.otlp.endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        ));
    };
    let files = ExportFiles::new(paths);
    let lock = crate::fs::open_append(&files.lock)?;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(RunEnd::Stopped),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", files.lock.display()))
            }
        }
    }
    let bus = Bus::open(paths, config)?;
    let mut seq = read_checkpoint(&files)?;
    let mut status = read_status(&files)?.unwrap_or_default();
    status.schema = SCHEMA;
    status.endpoint = Some(url.clone());
    status.seq = seq;
    let mut sender = Sender {
        sink: OtlpSink::new(&url, &settings),
        client: Client::new(settings.timeout, 1),
        schedule: settings.retry_schedule.clone(),
        attempts: 0,
        held_until: None,
    };
    let mut follower = bus.history.follow(seq)?;
    let mut buffer: std::collections::VecDeque<Envelope> = std::collections::VecDeque::new();
    let mut oldest_at: Option<Instant> = None;
    let mut last_status_write = Instant::now() - Duration::from_secs(10);
    let mut crashes_done: std::collections::HashSet<String> =
        crate::fs::read_string(&files.crashes).unwrap_or_default().lines().map(str::to_string).collect();
    let mut crashes_checked: Option<Instant> = None;
    let mut offsets: serde_json::Map<String, Value> = crate::fs::read_json_opt(&files.run_logs)?
        .and_then(|v| v.get("offsets").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    loop {
        if stop.load(Ordering::Relaxed) {
            write_status(&files, &mut status)?;
            return Ok(RunEnd::Stopped);
        }
        if sender.held() {
            // The collector is down: wait out the backoff (the backlog stays on disk, not in memory).
            if last_status_write.elapsed() >= Duration::from_secs(1) {
                write_status(&files, &mut status)?;
                last_status_write = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Crash dumps not exported yet, once a second (first, so `--once` covers them too).
        if crashes_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            crashes_checked = Some(Instant::now());
            // Dumps leave the machine only under the crash-upload consent, read again every time.
            let dumps: Vec<crate::crash::DumpEntry> =
                if crashes_allowed(paths) { crate::crash::list_dumps(paths)?.dumps } else { Vec::new() };
            let dumps: Vec<crate::crash::DumpEntry> =
                dumps.into_iter().filter(|d| !crashes_done.contains(d.event_id())).take(settings.batch_size).collect();
            if !dumps.is_empty() {
                let body = encode_records(
                    dumps.iter().map(|d| crash_record(&d.dump)).collect(),
                    "comfyvn-obs.crash",
                    &settings.resource,
                );
                if sender.post(&body, dumps.len(), "crash dumps", &mut status) != Sent::Held {
                    let mut f = crate::fs::open_append(&files.crashes)?;
                    let ids: Vec<&str> = dumps.iter().map(|d| d.event_id()).collect();
                    crate::fs::write_line_whole(&mut f, &files.crashes, &ids.join("\n"))?;
                    crashes_done.extend(ids.iter().map(|s| s.to_string()));
                    // Look again at once: more dumps, or the run logs, may be waiting.
                    crashes_checked = None;
                }
                continue;
            }
            // Structured records of `run.log` files, from where the collector stopped accepting.
            if let Some((run, start, end, records)) = next_run_log_batch(paths, &offsets, settings.batch_size)? {
                let n = records.len();
                // Lines with nothing to send (only this module's own) just move the offset.
                let sent = if records.is_empty() {
                    Sent::Accepted
                } else {
                    sender.post(
                        &encode_records(records, "comfyvn-obs.log", &settings.resource),
                        n,
                        "run.log",
                        &mut status,
                    )
                };
                if sent != Sent::Held {
                    offsets.insert(run, Value::from(end));
                    crate::fs::write_json_atomic(
                        &files.run_logs,
                        &serde_json::json!({"schema": SCHEMA, "offsets": offsets}),
                    )?;
                    crashes_checked = None;
                } else {
                    tracing::debug!(run = %run, from = start, "run.log batch not accepted; tried again later");
                }
                continue;
            }
        }
        // Read only while the buffer is short, so memory holds about two batches.
        if buffer.len() < settings.batch_size * 2 {
            // Bounded: after a long outage the backlog stays in the history, not in memory.
            let fresh = follower.poll_at_most(settings.batch_size * 2 - buffer.len())?;
            if !fresh.is_empty() && oldest_at.is_none() {
                oldest_at = Some(Instant::now());
            }
            buffer.extend(fresh);
        }
        let due = buffer.len() >= settings.batch_size
            || (!buffer.is_empty() && (once || oldest_at.is_some_and(|t| t.elapsed() >= settings.batch_latency)));
        if !due {
            if once && buffer.is_empty() {
                write_status(&files, &mut status)?;
                return Ok(RunEnd::CaughtUp);
            }
            if last_status_write.elapsed() >= Duration::from_secs(1) {
                write_status(&files, &mut status)?;
                last_status_write = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = buffer.len().min(settings.batch_size);
        let batch: Vec<Envelope> = buffer.iter().take(n).cloned().collect();
        let last = batch.last().map_or(seq, |e| e.seq);
        match sender.post(&encode(&batch, &settings.resource), n, "hook events", &mut status) {
            Sent::Accepted | Sent::Dropped => {
                seq = last;
                write_hook_checkpoint(&files, seq)?;
                buffer.drain(..n);
                oldest_at = if buffer.is_empty() { None } else { Some(Instant::now()) };
                status.seq = seq;
            }
            Sent::Held => {
                write_status(&files, &mut status)?;
                last_status_write = Instant::now();
                // Hold only the batch in flight while waiting: the rest is read again from the history.
                buffer.truncate(n);
                follower = bus.history.follow(last)?;
            }
        }
    }
}

/// Whether crash dumps may be exported now: the crash-upload gate holds and `dry_run` is false (the
/// configuration is read again, so a withdrawn consent stops the next dump).
fn crashes_allowed(paths: &Paths) -> bool {
    Config::load(paths).is_ok_and(|c| {
        crate::telemetry::Gates::compute(&c.features, &c.telemetry).crash_uploads_active && !c.telemetry.dry_run
    })
}

/// `(run folder, start offset, end offset, records)`.
type RunLogBatch = (String, u64, u64, Vec<LogRecord>);

/// Up to `max` records from the first `logs/run-*/run.log` with lines past its offset: `(run folder,
/// start, end offset, records)`. A file shorter than its offset was rotated, and is read from the start.
fn next_run_log_batch(
    paths: &Paths,
    offsets: &serde_json::Map<String, Value>,
    max: usize,
) -> Result<Option<RunLogBatch>> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(entries) = std::fs::read_dir(&paths.log_dir) else { return Ok(None) };
    let mut runs: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    runs.sort();
    for run in runs {
        let path = paths.log_dir.join(&run).join("run.log");
        let Ok(mut f) = std::fs::File::open(&path) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut start = offsets.get(&run).and_then(Value::as_u64).unwrap_or(0);
        if start > len {
            start = 0;
        }
        if start == len {
            continue;
        }
        f.seek(SeekFrom::Start(start)).with_context(|| format!("cannot read {}", path.display()))?;
        let mut buf = Vec::new();
        f.take((len - start).min(1 << 20))
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut records = Vec::new();
        let mut consumed = 0usize;
        for line in buf.split_inclusive(|&b| b == b'\n') {
            if !line.ends_with(b"\n") || records.len() >= max {
                break;
            }
            consumed += line.len();
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                // The exporter's own complaints stay local: exporting them would feed on itself.
                if v.get("logger").and_then(Value::as_str).is_some_and(|l| l.starts_with(module_path!())) {
                    continue;
                }
                records.push(run_log_record(&v, &run));
            }
        }
        if consumed > 0 {
            return Ok(Some((run, start, start + consumed as u64, records)));
        }
    }
    Ok(None)
}

fn write_status(files: &ExportFiles, status: &mut Status) -> Result<()> {
    status.updated_at = crate::time::iso_now();
    crate::fs::write_json_atomic(&files.status, status)
}

/// The exporter inside `serve`, when an endpoint is set (`None` otherwise).
pub fn spawn_service(
    paths: Paths,
    config: Config,
    stop: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    if Settings::resolve(&config)?.endpoint.is_none() {
        return Ok(None);
    }
    let handle = std::thread::Builder::new()
        .name("otlp-exporter".into())
        .spawn(move || {
            if let Err(e) = run(&paths, &config, &stop, false) {
                tracing::error!(error = %format!("{e:#}"), "the OTLP exporter stopped");
                // Stopping on its own lets `serve` restart it on its backoff.
                panic!("the OTLP exporter stopped: {e:#}");
            }
        })
        .context("cannot start the OTLP exporter thread")?;
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn only_the_otlp_retryable_answers_hold_the_exporter() {
        let settings = Settings::resolve_with(&Config::defaults(), |_| None).unwrap();
        let sink = OtlpSink::new("http://127.0.0.1:9/v1/logs", &settings);
        let reply = |status: Option<u16>| Reply { status, ..Reply::default() };
        assert_eq!(sink.judge(&reply(Some(200))), Verdict::Accepted);
        for held in [None, Some(429), Some(502), Some(503), Some(504)] {
            assert!(matches!(sink.judge(&reply(held)), Verdict::Unavailable { .. }), "{held:?}");
        }
        // The OTLP/HTTP specification: any other answer is not retryable.
        for dropped in [Some(400), Some(408), Some(413), Some(500), Some(501)] {
            assert!(matches!(sink.judge(&reply(dropped)), Verdict::Refused { .. }), "{dropped:?}");
        }
        let req = sink.request("", b"abc");
        assert_eq!(req.headers, [("Content-Type", "application/x-protobuf".to_string())]);
        assert_eq!(&req.body[..], b"abc");
    }

    #[test]
    fn endpoints_headers_and_resource_follow_the_otel_variables() {
        let c = Config::defaults();
        assert!(Settings::resolve_with(&c, env_of(&[])).unwrap().endpoint.is_none());
        let s = Settings::resolve_with(
            &c,
            env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=a%3Db,tenant=studio"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.name=ignored"),
                ("OTEL_SERVICE_NAME", "farm-node"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/logs"));
        assert_eq!(s.headers, [("x-token".to_string(), "a=b".to_string()), ("tenant".into(), "studio".into())]);
        let keys: Vec<&str> = s.resource.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["service.name", "service.version", "host.name", "process.pid", "deployment.environment"]);
        assert_eq!(s.resource[0].1, "farm-node");
        let logs = Settings::resolve_with(
            &c,
            env_of(&[
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://h:1/custom"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:2"),
            ]),
        )
        .unwrap();
        assert_eq!(logs.endpoint.as_deref(), Some("http://h:1/custom"));
        assert!(Settings::resolve_with(&c, env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")])).is_err());
    }

    #[test]
    fn crash_dumps_carry_the_exception_attributes() {
        let dump = json!({"event_id": "0a1b2c3d", "timestamp": "2026-01-02T03:04:05.000000Z", "exc_type": "panic",
                          "message": "boom", "traceback": "   0: app::main", "fingerprint": "ff00", "context": {"job": "j1"}});
        let r = crash_record(&dump);
        assert_eq!((r.severity_number, r.severity_text.as_str(), r.event_name.as_str()), (21, "FATAL", "crash"));
        assert_eq!(r.time_unix_nano, 1_767_323_045_000_000_000);
        let attr = |k: &str| match r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()) {
            Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) => s,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(attr("exception.type"), "panic");
        assert_eq!(attr("exception.message"), "boom");
        assert_eq!(attr("exception.stacktrace"), "   0: app::main");
        assert_eq!(attr("crash.fingerprint"), "ff00");
        assert_eq!(attr("context.job"), "j1");
        let mut error = dump.clone();
        error["exc_type"] = json!("ValueError");
        assert_eq!(crash_record(&error).severity_number, 17);
    }

    #[test]
    fn run_log_lines_map_level_body_and_fields() {
        let line = json!({"event": "cannot reach", "level": "warning", "logger": "comfyvn.obs.x", "component": "x",
                          "timestamp": "2026-01-02T03:04:05.000000Z", "attempts": 3});
        let r = run_log_record(&line, "run-1");
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        assert_eq!(r.body, Some(text("cannot reach")));
        assert_eq!(r.time_unix_nano, 1_767_323_045_000_000_000);
        let keys: Vec<&str> = r.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["log.run", "logger", "component", "attempts"]);
        assert_eq!(run_log_record(&json!({"level": "error"}), "r").severity_number, 17);
        assert_eq!(run_log_record(&json!({}), "r").severity_number, 9);
    }

    /// The exact protobuf bytes of a one-record request: a change to the encoding shows up here.
    #[test]
    fn protobuf_bytes_are_pinned() {
        let env = Envelope { seq: 7, event: "on_scene_saved".into(), ts: 1.5, data: json!({"scene": "s1", "n": 2}) };
        let bytes = encode(std::slice::from_ref(&env), &[("service.name".into(), "svc".into())]);
        let version = crate::telemetry::APP_VERSION;
        // Hand-assembled from the OTLP .proto field numbers.
        fn len(mut n: usize) -> Vec<u8> {
            let mut v = Vec::new();
            while n >= 0x80 {
                v.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            v.push(n as u8);
            v
        }
        fn field(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            v.extend(len(body.len()));
            v.extend_from_slice(body);
            v
        }
        let string_value = |s: &str| field(0x0a, s.as_bytes()); // AnyValue.string_value = 1
        let key_value = |k: &str, value: Vec<u8>| [field(0x0a, k.as_bytes()), field(0x12, &value)].concat();
        let resource = field(0x0a, &key_value("service.name", string_value("svc"))); // Resource.attributes = 1
        let scope = [field(0x0a, b"comfyvn-obs.hooks"), field(0x12, version.as_bytes())].concat();
        let nanos: u64 = 1_500_000_000;
        let record = [
            vec![0x09],
            nanos.to_le_bytes().to_vec(),                 // time_unix_nano = 1 (fixed64)
            vec![0x10, 9],                                // severity_number = 2
            field(0x1a, b"INFO"),                         // severity_text = 3
            field(0x2a, &string_value("on_scene_saved")), // body = 5
            field(0x32, &key_value("event.name", string_value("on_scene_saved"))), // attributes = 6
            field(0x32, &key_value("seq", vec![0x18, 7])), // int_value = 3
            field(0x32, &key_value("data.scene", string_value("s1"))),
            field(0x32, &key_value("data.n", vec![0x18, 2])),
            vec![0x59],
            nanos.to_le_bytes().to_vec(),   // observed_time_unix_nano = 11
            field(0x62, b"on_scene_saved"), // event_name = 12
        ]
        .concat();
        let scope_logs = [field(0x0a, &scope), field(0x12, &record)].concat();
        let resource_logs = [field(0x0a, &resource), field(0x12, &scope_logs)].concat();
        let expected = field(0x0a, &resource_logs);
        assert_eq!(crate::digest::hex(&bytes), crate::digest::hex(&expected));
        let (res, records) = decode_summary(&bytes).unwrap();
        assert_eq!(res, [("service.name".to_string(), "svc".to_string())]);
        assert_eq!(records, [("on_scene_saved".to_string(), 7)]);
    }
}
