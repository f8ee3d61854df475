//! Configuration: `config/comfyvn.json` (and `./comfyvn.json` for compatibility) layered over the
//! compiled-in defaults, which are the repo's `config/comfyvn.json` (DESIGN §2).
//!
//! Loading never rewrites anything; a malformed file is an error naming the file and the JSON position
//! or the field path, never a silent reset. [`update_file`] is the only writer: it edits the user's file
//! in place, keeping unknown keys, key order and non-ASCII text.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::paths::Paths;

/// The defaults, compiled in from the repo's `config/comfyvn.json`.
pub const DEFAULTS_JSON: &str = include_str!("../config/comfyvn.json");

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The merged document (defaults, then `./comfyvn.json`, then `config/comfyvn.json`).
    pub raw: Value,
    /// The files that contributed, in the order applied.
    pub sources: Vec<PathBuf>,
    pub features: Features,
    pub telemetry: Consent,
    pub obs: ObsSettings,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Features {
    pub enable_observability: bool,
    pub enable_crash_uploader: bool,
}

/// Telemetry consent as stored in the `telemetry` block.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consent {
    pub telemetry_opt_in: bool,
    pub crash_opt_in: bool,
    pub diagnostics_opt_in: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObsSettings {
    pub logging: LoggingSettings,
    pub crash: CrashSettings,
    pub crash_upload: CrashUploadSettings,
    pub otlp: OtlpSettings,
    pub telemetry: TelemetrySettings,
    pub assets: AssetSettings,
    pub audit: AuditSettings,
    pub hooks: HookSettings,
    pub watch: WatchSettings,
    pub server: ServerSettings,
    pub webhooks: WebhookSettings,
    pub providers: ProviderSettings,
    pub plugins: PluginSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggingSettings {
    /// How many `logs/run-*` folders to keep (newest first).
    pub keep_runs: usize,
    /// Size at which `run.log` rotates to `run.log.1`.
    pub max_log_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashSettings {
    pub log_tail_lines: usize,
    pub stderr_tail_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetrySettings {
    /// Key names that are never hashed by payload anonymisation.
    pub allow_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetSettings {
    /// Glob patterns (file names or relative paths; a trailing `/` means a folder) that are not assets.
    pub ignore: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditSettings {
    pub fail_on: String,
    /// Hashing threads; 0 = all cores.
    pub jobs: usize,
    pub licenses: LicensePolicy,
    pub require_provenance: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicensePolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// A missing license is an error rather than a warning.
    pub require: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookSettings {
    pub history_max_bytes: u64,
    pub history_keep: usize,
    /// Extra hook events declared by the studio: `{"name", "ws_topic"?, "payload_fields"?, "description"?}`.
    pub events: Vec<Value>,
}

/// `obs.watch`: the file watcher (docs/watch.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchSettings {
    /// Folders to watch, relative to the assets root; empty = the whole assets root.
    pub roots: Vec<PathBuf>,
    /// A file whose writer never reports a close is ready once its size and mtime were stable this long.
    pub settle_ms: u64,
    /// Poll every this many milliseconds in polling mode.
    pub poll_interval_ms: u64,
    /// Always poll instead of using native events (network mounts, which send no events).
    pub poll: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub allowed_hosts: Vec<String>,
    pub max_json_bytes: u64,
    pub max_upload_bytes: u64,
    /// Read/write timeout of every connection: ends idle keep-alive and stalled clients.
    pub io_timeout_ms: u64,
    /// Concurrent SSE + WebSocket clients; more get 503.
    pub max_stream_clients: usize,
    /// Events buffered per stream client (and kept for `since` resumes) before `resync_required`.
    pub stream_buffer: usize,
    /// SSE comment keepalive after this many idle seconds.
    pub sse_keepalive_secs: u64,
    /// WebSocket `{"ping": true}` after this many idle seconds.
    pub ws_ping_secs: u64,
    /// A background service of `serve` (watcher, webhook worker, plugin host) that stops on its own
    /// is started again after each of these delays in turn; stopping once more after the last one
    /// (without a minute of running in between) ends `serve` with exit code 2.
    pub restart_backoff_ms: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub timeout_ms: u64,
    /// Delay before retry 1, 2, …; past the last entry a delivery is retried at that interval while
    /// the receiver is unavailable, and given up after a refusal (another 4xx).
    pub retry_schedule_ms: Vec<u64>,
    /// A registration is disabled only when it has failed continuously for `disable_after_secs` and
    /// over at least this many attempts (0 = never disable).
    pub disable_after_failures: u32,
    /// How long a registration must have failed continuously (no 2xx) before it is disabled
    /// (default 5 days; 0 = as soon as `disable_after_failures` attempts failed).
    pub disable_after_secs: u64,
    /// Delivery threads shared by all receivers.
    pub workers: usize,
    /// Requests in flight to one registration at once, so a slow receiver cannot take every thread.
    pub in_flight_per_receiver: usize,
    /// How often the worker looks for new history entries.
    pub poll_ms: u64,
    /// Size at which `deliveries.jsonl` rotates to `deliveries.jsonl.1`.
    pub deliveries_max_bytes: u64,
    /// Undelivered messages per registration held in memory; the rest of a backlog waits on disk
    /// (`data/webhooks/spill/`).
    pub max_in_memory: usize,
}

/// Crash uploads to a Sentry-compatible server (only while the crash-upload gate holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashUploadSettings {
    /// The project's DSN; empty means `$SENTRY_DSN`, and without either nothing is sent.
    pub dsn: String,
    /// The event's `environment`.
    pub environment: String,
    /// The event's `release`; empty means `comfyvn-obs@<version>`.
    pub release: String,
    /// Share of dumps uploaded, from 0.0 to 1.0 (decided per dump, the same way every time).
    pub sample_rate: f64,
    /// Timeout of one upload request.
    pub timeout_ms: u64,
    /// Delay before retry 1, 2, …; the last entry repeats while the server is unavailable, and a
    /// refused upload (a 4xx other than 408 and 429) is given up after the last.
    pub retry_schedule_ms: Vec<u64>,
    /// How often `serve` looks for new dumps and due retries.
    pub interval_ms: u64,
}

/// OTLP/HTTP log export of the hook history (off while no endpoint is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtlpSettings {
    /// The collector's base URL (`/v1/logs` is appended); empty means the `OTEL_EXPORTER_OTLP_*`
    /// variables, and without them export is off.
    pub endpoint: String,
    /// Records per request at most.
    pub batch_size: usize,
    /// A shorter batch is sent once its oldest record has waited this long.
    pub batch_latency_ms: u64,
    pub timeout_ms: u64,
    /// Backoff after no answer, 429, 502, 503 or 504 (the last repeats; `Retry-After` is a lower bound).
    pub retry_schedule_ms: Vec<u64>,
    /// Request-body compression: `gzip` or `none`; empty means `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION`,
    /// then `OTEL_EXPORTER_OTLP_COMPRESSION`, then none.
    #[serde(default)]
    pub compression: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderSettings {
    pub timeout_ms: u64,
    pub slow_ms: u64,
}

/// Dev-mode hook plugins (only with `COMFYVN_DEV_MODE=1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginSettings {
    /// Plugin folder, relative to the runtime root unless absolute; `$COMFYVN_MOD_PLUGIN_ROOT` wins.
    pub root: PathBuf,
    /// Envelopes buffered per plugin; beyond this the oldest are dropped (and counted).
    pub queue: usize,
    /// Delay before restart 1, 2, …; the last entry repeats.
    pub restart_backoff_ms: Vec<u64>,
}

impl Config {
    /// Load for a runtime root: defaults, then `./comfyvn.json`, then `config/comfyvn.json`.
    pub fn load(paths: &Paths) -> Result<Config> {
        let mut files = Vec::new();
        let cwd_file = std::env::current_dir().map(|d| d.join("comfyvn.json")).ok();
        if let Some(f) = cwd_file {
            if f != paths.config_file() {
                files.push(f);
            }
        }
        files.push(paths.config_file());
        Self::load_files(&files)
    }

    /// The compiled-in defaults alone.
    pub fn defaults() -> Config {
        Self::load_files(&[]).expect("compiled-in defaults are valid")
    }

    /// Merge the defaults with each existing file in `files`, later files winning per key.
    pub fn load_files(files: &[PathBuf]) -> Result<Config> {
        let mut raw: Value = serde_json::from_str(DEFAULTS_JSON).context("compiled-in defaults are not valid JSON")?;
        let mut sources = Vec::new();
        for file in files {
            let Some(mut doc) = crate::fs::read_json_opt(file)? else { continue };
            if !doc.is_object() {
                bail!("{}: the top level must be a JSON object", file.display());
            }
            apply_legacy_aliases(&mut doc);
            check_types(file, &doc)?;
            merge(&mut raw, doc);
            sources.push(file.clone());
        }
        let origin = sources.last().map(|p| p.display().to_string()).unwrap_or_else(|| "compiled-in defaults".into());
        let section = |key: &str| raw.get(key).cloned().unwrap_or(Value::Null);
        let features = typed(&origin, "features", section("features"))?;
        let telemetry = typed(&origin, "telemetry", section("telemetry"))?;
        let obs: ObsSettings = typed(&origin, "obs", section("obs"))?;
        validate_obs(&origin, &obs)?;
        Ok(Config { raw, sources, features, telemetry, obs })
    }

    /// The merged document with secret-looking values masked, for `config show`.
    pub fn masked(&self) -> Value {
        let mut v = self.raw.clone();
        mask_secrets(&mut v);
        v
    }
}

fn typed<T: serde::de::DeserializeOwned>(origin: &str, section: &str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow!("{origin}: {section}.{path}: {}", e.inner())
    })
}

/// `enable_privacy_telemetry` is the original's name for `enable_observability`.
fn apply_legacy_aliases(doc: &mut Value) {
    if let Some(features) = doc.get_mut("features").and_then(Value::as_object_mut) {
        if !features.contains_key("enable_observability") {
            if let Some(v) = features.get("enable_privacy_telemetry").cloned() {
                features.insert("enable_observability".into(), v);
            }
        }
    }
}

/// Flags and consent must be real JSON booleans in each file: a string `"false"` is not `true`.
fn check_types(file: &Path, doc: &Value) -> Result<()> {
    for (section, keys) in [
        ("features", &["enable_observability", "enable_privacy_telemetry", "enable_crash_uploader"][..]),
        ("telemetry", &["telemetry_opt_in", "crash_opt_in", "diagnostics_opt_in", "dry_run"][..]),
    ] {
        let Some(block) = doc.get(section) else { continue };
        let Some(block) = block.as_object() else {
            bail!("{}: {section}: expected an object, found {}", file.display(), kind(block));
        };
        for key in keys {
            if let Some(v) = block.get(*key) {
                if !v.is_boolean() {
                    bail!("{}: {section}.{key}: expected true or false, found {} {v}", file.display(), kind(v));
                }
            }
        }
    }
    Ok(())
}

fn validate_obs(origin: &str, obs: &ObsSettings) -> Result<()> {
    if !["error", "warning", "never"].contains(&obs.audit.fail_on.as_str()) {
        bail!(
            "{origin}: obs.audit.fail_on: expected \"error\", \"warning\" or \"never\", found {:?}",
            obs.audit.fail_on
        );
    }
    for pattern in &obs.assets.ignore {
        globset::Glob::new(pattern.trim_end_matches('/'))
            .map_err(|e| anyhow!("{origin}: obs.assets.ignore: bad glob {pattern:?}: {e}"))?;
    }
    if !(0.0..=1.0).contains(&obs.crash_upload.sample_rate) {
        bail!(
            "{origin}: obs.crash_upload.sample_rate: expected a number from 0.0 to 1.0, found {}",
            obs.crash_upload.sample_rate
        );
    }
    if obs.server.bind.parse::<std::net::SocketAddr>().is_err() {
        bail!("{origin}: obs.server.bind: expected host:port, found {:?}", obs.server.bind);
    }
    Ok(())
}

/// The JSON type name of a value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deep-merge `over` into `base`: objects merge per key, anything else replaces.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// True for key names whose values must never be shown: they contain key, secret, token or password.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "secret", "token", "password"].iter().any(|w| k.contains(w))
}

/// Replace every string under a secret-looking key, at any depth, with `*` repeated to its length
/// (the original's listing mask).
pub fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if is_secret_key(k) {
                    mask_all_strings(child);
                } else {
                    mask_secrets(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

fn mask_all_strings(v: &mut Value) {
    match v {
        Value::String(s) => *s = "*".repeat(s.chars().count()),
        Value::Object(map) => map.values_mut().for_each(mask_all_strings),
        Value::Array(items) => items.iter_mut().for_each(mask_all_strings),
        _ => {}
    }
}

/// Edit the user's `config/comfyvn.json` in place (created when absent), keeping every key the edit
/// does not touch. The file is re-read here so concurrent edits of other keys are not lost.
pub fn update_file(paths: &Paths, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    let file = paths.config_file();
    let mut doc = match crate::fs::read_json_opt(&file)? {
        Some(Value::Object(map)) => map,
        Some(_) => bail!("{}: the top level must be a JSON object", file.display()),
        None => Map::new(),
    };
    edit(&mut doc);
    let doc = Value::Object(doc);
    // Refuse to write something the loader would reject.
    check_types(&file, &doc)?;
    crate::fs::write_json_atomic(&file, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn defaults_parse_and_have_documented_values() {
        let c = Config::defaults();
        assert!(!c.features.enable_observability);
        assert_eq!(
            c.telemetry,
            Consent { telemetry_opt_in: false, crash_opt_in: false, diagnostics_opt_in: false, dry_run: true }
        );
        assert_eq!(c.obs.server.bind, "127.0.0.1:8001");
        assert_eq!(c.obs.hooks.history_max_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn later_file_wins_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", r#"{"telemetry": {"telemetry_opt_in": true, "dry_run": false}}"#);
        let b = write(dir.path(), "b.json", r#"{"telemetry": {"dry_run": true}, "obs": {"watch": {"settle_ms": 9}}}"#);
        let c = Config::load_files(&[a, b]).unwrap();
        assert!(c.telemetry.telemetry_opt_in);
        assert!(c.telemetry.dry_run);
        assert_eq!(c.obs.watch.settle_ms, 9);
        assert_eq!(c.obs.watch.poll_interval_ms, 2000);
    }

    #[test]
    fn string_false_is_an_error_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "cfg.json", r#"{"features": {"enable_observability": "false"}}"#);
        let err = Config::load_files(&[a]).unwrap_err().to_string();
        assert!(err.contains("cfg.json") && err.contains("features.enable_observability"), "{err}");
    }

    #[test]
    fn malformed_json_reports_position() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "cfg.json", "{\n \"features\": {\n}");
        let err = Config::load_files(&[a]).unwrap_err().to_string();
        assert!(err.contains("cfg.json") && err.contains("line"), "{err}");
    }

    #[test]
    fn wrong_type_in_obs_names_the_field_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "cfg.json", r#"{"obs": {"watch": {"settle_ms": "soon"}}}"#);
        let err = Config::load_files(&[a]).unwrap_err().to_string();
        assert!(err.contains("obs.watch.settle_ms"), "{err}");
    }

    #[test]
    fn legacy_alias_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "cfg.json", r#"{"features": {"enable_privacy_telemetry": true}}"#);
        assert!(Config::load_files(&[a]).unwrap().features.enable_observability);
    }

    #[test]
    fn masking_reaches_any_depth() {
        let mut v = json!({"providers": [{"name": "x", "auth": {"api_key": "abcd", "nested": {"token": "xy"}}}]});
        mask_secrets(&mut v);
        assert_eq!(v["providers"][0]["auth"]["api_key"], "****");
        assert_eq!(v["providers"][0]["auth"]["nested"]["token"], "**");
        assert_eq!(v["providers"][0]["name"], "x");
    }

    #[test]
    fn update_keeps_unknown_keys_and_unicode() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.config_file(), r#"{"studio": {"title": "Sakura – 桜"}, "telemetry": {"dry_run": true}}"#)
            .unwrap();
        update_file(&paths, |doc| {
            doc.entry("telemetry").or_insert_with(|| json!({}))["telemetry_opt_in"] = json!(true);
        })
        .unwrap();
        let text = std::fs::read_to_string(paths.config_file()).unwrap();
        assert!(text.contains("Sakura – 桜"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["telemetry"]["telemetry_opt_in"], true);
        assert_eq!(v["telemetry"]["dry_run"], true);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["studio", "telemetry"]);
    }
}
