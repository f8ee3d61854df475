//! The telemetry routes `/api/telemetry/*` (DESIGN §4, `seed/api_shapes.md`): consent (settings,
//! opt_in), recording (features, events), reading (summary, events, features, hooks, crashes, health) and
//! the diagnostics zip. Every answer is the JSON the `telemetry` module builds; this file only parses
//! bodies and query parameters, maps refusals to status codes and documents the shapes.
//!
//! [`LiveTelemetry`] keeps the server's [`Telemetry`] in step with `config/comfyvn.json`: consent changed
//! by another process (`comfyvn-obs telemetry opt-in`) is seen on the next request, because the file is
//! the source of truth. It owns no files; the telemetry module writes them.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::Result;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::http::router::{schema_ref, Route};
use crate::http::{ApiError, AppState, Reply, Req};
use crate::paths::Paths;
use crate::telemetry::{store, OptIn, SettingsPatch, Telemetry, TelemetryError, EVENTS_LIMIT_DEFAULT};

/// What identifies a config file's version without reading it.
type Stamp = Option<(SystemTime, u64)>;

/// The server's telemetry, reloaded when a config file it was built from changes on disk.
pub struct LiveTelemetry {
    paths: Paths,
    /// The files `Config::load` reads, in its order.
    files: Vec<PathBuf>,
    inner: RwLock<(Telemetry, Vec<Stamp>)>,
}

impl LiveTelemetry {
    pub fn new(paths: &Paths, config: &Config) -> LiveTelemetry {
        let mut files = Vec::new();
        if let Ok(dir) = std::env::current_dir() {
            let f = dir.join("comfyvn.json");
            if f != paths.config_file() {
                files.push(f);
            }
        }
        files.push(paths.config_file());
        let stamps = stamps(&files);
        LiveTelemetry { paths: paths.clone(), files, inner: RwLock::new((Telemetry::new(paths, config), stamps)) }
    }

    /// Run `f` with the current telemetry (reloading the configuration first if a file changed).
    pub fn with<T>(&self, f: impl FnOnce(&Telemetry) -> Result<T>) -> Result<T> {
        self.refresh();
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(&guard.0)
    }

    /// Run `f` with exclusive access (consent changes rewrite the config and reload it).
    pub fn with_mut<T>(&self, f: impl FnOnce(&mut Telemetry) -> Result<T>) -> Result<T> {
        self.refresh();
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut guard.0);
        // The telemetry reloaded the config after its own write; remember the file as it is now.
        guard.1 = stamps(&self.files);
        out
    }

    /// Reload when a config file's mtime or size changed. A config that no longer parses keeps the last
    /// good one in use (with a warning): the server must not stop answering because of a typo.
    fn refresh(&self) {
        let now = stamps(&self.files);
        if self.inner.read().unwrap_or_else(PoisonError::into_inner).1 == now {
            return;
        }
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if guard.1 == now {
            return;
        }
        match Config::load(&self.paths) {
            Ok(config) => guard.0 = Telemetry::new(&self.paths, &config),
            Err(e) => tracing::warn!(error = %format!("{e:#}"),
                "the configuration changed but cannot be loaded; telemetry keeps the previous settings"),
        }
        guard.1 = now;
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())))
        .collect()
}

const EVENTS_MAX: i64 = store::EVENTS_KEEP as i64;

pub fn routes() -> Vec<Route> {
    let flag = json!({"const": crate::telemetry::FEATURE_FLAG});
    let consent = schema_ref("TelemetryConsent");
    let health = schema_ref("TelemetryHealth");
    let recorded = json!({
        "type": "object",
        "required": ["ok", "recorded", "telemetry_active", "feature_flag"],
        "properties": {
            "ok": {"const": true},
            "recorded": {"type": "boolean", "description": "False when telemetry is not active (flag off or no consent)."},
            "telemetry_active": {"type": "boolean"},
            "feature_flag": flag
        }
    });
    let settings_answer = json!({
        "type": "object",
        "required": ["settings", "features", "telemetry_active", "crash_uploads_active", "diagnostics_opt_in",
            "diagnostics_active", "health", "feature_flag"],
        "properties": {
            "settings": consent,
            "features": {"type": "object", "required": ["enable_observability", "enable_crash_uploader"],
                "description": "The feature flags of config/comfyvn.json (`features`), read only.",
                "properties": {"enable_observability": {"type": "boolean"}, "enable_crash_uploader": {"type": "boolean"}}},
            "telemetry_active": {"type": "boolean"},
            "crash_uploads_active": {"type": "boolean"},
            "diagnostics_opt_in": {"type": "boolean"},
            "diagnostics_active": {"type": "boolean"},
            "health": health,
            "feature_flag": flag
        }
    });
    let stat_map =
        |what: &str, item: Value| json!({"type": "object", "description": what, "additionalProperties": item});
    let feature_stat = json!({"type": "object", "properties": {
        "total": {"type": "integer"}, "last_ts": {"type": ["string", "null"]},
        "variants": {"type": "object", "additionalProperties": {"type": "integer"}}}});
    let hook_stat = json!({"type": "object", "properties": {
        "total": {"type": "integer"}, "last_ts": {"type": ["string", "null"]},
        "samples": {"type": "array", "maxItems": store::HOOK_SAMPLES_KEEP, "items": {"type": "object",
            "properties": {"ts": {"type": "string"}, "payload": {"type": "object"}}}}}});
    let crash_digest = json!({"type": "object", "required": ["report", "ts"], "properties": {
        "report": {"type": "string", "description": "Keyed hash of the dump's file name."},
        "ts": {"type": "string"}}});
    let event_record = json!({"type": "object", "required": ["event", "category", "ts", "payload"], "properties": {
        "event": {"type": "string"}, "category": {"type": "string"}, "ts": {"type": "string"},
        "payload": {"type": "object", "description": "Anonymised."}}});
    let t = |r: Route| r.tag("telemetry");
    vec![
        t(Route::get("/api/telemetry/health", |s, _| answer(s.telemetry.with(|t| t.health()))))
            .summary("Consent gates and the anonymous id preview")
            .ok(health.clone())
            .component("TelemetryHealth", health_schema())
            .component("TelemetryConsent", consent_schema()),
        t(Route::get("/api/telemetry/settings", |s, _| answer(s.telemetry.with(|t| t.settings()))))
            .summary("The consent settings")
            .ok(settings_answer.clone())
            .component("TelemetryHealth", health_schema())
            .component("TelemetryConsent", consent_schema()),
        t(Route::post("/api/telemetry/settings", update_settings))
            .summary("Change consent settings")
            .describe("Absent or null fields stay unchanged. Written to config/comfyvn.json, keeping unknown keys.")
            .json_body(consent_patch_schema(), false)
            .ok(settings_answer)
            .component("TelemetryHealth", health_schema())
            .component("TelemetryConsent", consent_schema()),
        t(Route::post("/api/telemetry/opt_in", opt_in))
            .summary("Opt in to telemetry")
            .describe(
                "`telemetry_opt_in` becomes true; `crash`, `diagnostics` and `dry_run` are written as given \
                (each defaults to false).",
            )
            .json_body(
                json!({"type": "object", "properties": {
                    "crash": {"type": ["boolean", "null"], "default": false},
                    "diagnostics": {"type": ["boolean", "null"], "default": false},
                    "dry_run": {"type": ["boolean", "null"], "default": false, "description": "Null is false."}}}),
                false,
            )
            .ok(json!({
                "type": "object",
                "required": ["ok", "settings", "telemetry_active", "crash_uploads_active", "diagnostics_active",
                    "health", "feature_flag"],
                "properties": {
                    "ok": {"const": true}, "settings": consent, "telemetry_active": {"type": "boolean"},
                    "crash_uploads_active": {"type": "boolean"}, "diagnostics_active": {"type": "boolean"},
                    "health": health, "feature_flag": flag
                }
            }))
            .component("TelemetryHealth", health_schema())
            .component("TelemetryConsent", consent_schema()),
        t(Route::get("/api/telemetry/features", |s, _| answer(s.telemetry.with(|t| t.features()))))
            .summary("Feature counters")
            .ok(json!({"type": "object", "required": ["features", "feature_flag"], "properties": {
                "features": stat_map("Feature name → counters.", feature_stat.clone()), "feature_flag": flag}})),
        t(Route::post("/api/telemetry/features", record_feature))
            .summary("Count a feature use")
            .json_body(
                json!({"type": "object", "required": ["feature"], "properties": {
                    "feature": {"type": "string", "pattern": "\\S", "description": "Not blank."},
                    "variant": {"type": ["string", "null"]}}}),
                true,
            )
            .ok(recorded.clone()),
        t(Route::get("/api/telemetry/events", events))
            .summary("The newest recorded events, oldest first")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": EVENTS_MAX, "default": EVENTS_LIMIT_DEFAULT}),
                "How many (1–200).",
            )
            .ok(json!({"type": "object", "required": ["events", "feature_flag"], "properties": {
                "events": {"type": "array", "items": event_record.clone()}, "feature_flag": flag}}))
            .error(422, "`limit` is not an integer in 1..200."),
        t(Route::post("/api/telemetry/events", record_event))
            .summary("Record a custom event")
            .describe("The event name is lower-cased; the payload is anonymised before it is stored.")
            .json_body(
                json!({"type": "object", "required": ["event"], "properties": {
                    "event": {"type": "string", "pattern": "\\S", "description": "Not blank."},
                    "payload": {"type": ["object", "null"], "default": {}},
                    "category": {"type": ["string", "null"], "default": "custom"}}}),
                true,
            )
            .ok(recorded),
        t(Route::get("/api/telemetry/hooks", |s, _| answer(s.telemetry.with(|t| t.hooks()))))
            .summary("Hook counters and the last samples per hook")
            .ok(json!({"type": "object", "required": ["hooks", "feature_flag"], "properties": {
                "hooks": stat_map("Hook name → counters and samples.", hook_stat.clone()), "feature_flag": flag}})),
        t(Route::get("/api/telemetry/crashes", |s, _| answer(s.telemetry.with(|t| t.crashes()))))
            .summary("Hashed crash digests")
            .ok(json!({"type": "object", "required": ["crashes", "feature_flag"], "properties": {
                "crashes": {"type": "array", "items": crash_digest.clone()}, "feature_flag": flag}})),
        t(Route::get("/api/telemetry/summary", summary))
            .summary("Everything recorded, with consent state")
            .query(
                "events",
                json!({"type": "boolean", "default": false}),
                "Include the events ring (`include_events` is an alias).",
            )
            .query("include_events", json!({"type": "boolean", "default": false}), "Alias of `events`.")
            .ok(json!({
                "type": "object",
                "required": ["anonymous_id", "app_version", "flag_enabled", "telemetry_active", "crash_uploads_active",
                    "diagnostics_opt_in", "diagnostics_active", "dry_run", "consent", "features", "hooks", "crashes",
                    "events", "meta", "feature_flag"],
                "properties": {
                    "anonymous_id": {"type": "string"}, "app_version": {"type": "string"},
                    "flag_enabled": {"type": "boolean"}, "telemetry_active": {"type": "boolean"},
                    "crash_uploads_active": {"type": "boolean"}, "diagnostics_opt_in": {"type": "boolean"},
                    "diagnostics_active": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                    "consent": consent,
                    "features": stat_map("Feature name → counters.", feature_stat),
                    "hooks": stat_map("Hook name → counters and samples.", hook_stat),
                    "crashes": {"type": "array", "items": crash_digest},
                    "events": {"type": "array", "items": event_record, "description": "Empty unless asked for."},
                    "meta": {"type": "object", "properties": {"created_at": {"type": ["string", "null"]},
                        "settings_updated_at": {"type": ["string", "null"]}}},
                    "feature_flag": flag
                }
            }))
            .error(422, "`events` is not a boolean.")
            .component("TelemetryConsent", consent_schema()),
        t(Route::get("/api/telemetry/diagnostics", diagnostics))
            .summary("Build and download a diagnostics bundle")
            .describe(
                "Writes logs/diagnostics/comfyvn-diagnostics-<stamp>-<anon8>.zip and answers it as an \
                attachment. Needs diagnostics consent. Counts as state-changing (it writes a file and exports \
                data), so it needs the bearer token when COMFYVN_API_TOKEN is set.",
            )
            .state_changing(true)
            .response(
                200,
                "The zip (manifest.json, telemetry.json, crashes.json, redactions.json); \
                 Content-Disposition: attachment; filename=\"<bundle name>\".",
                Some(("application/zip", json!({"type": "string", "contentMediaType": "application/zip"}))),
            )
            .error(403, "Diagnostics export requires opt-in (see /api/telemetry/settings)."),
    ]
}

fn consent_schema() -> Value {
    json!({
        "type": "object",
        "required": ["telemetry_opt_in", "crash_opt_in", "diagnostics_opt_in", "dry_run"],
        "properties": {
            "telemetry_opt_in": {"type": "boolean"},
            "crash_opt_in": {"type": "boolean"},
            "diagnostics_opt_in": {"type": "boolean"},
            "dry_run": {"type": "boolean", "description": "Record locally, never send."}
        }
    })
}

fn consent_patch_schema() -> Value {
    let b = json!({"type": ["boolean", "null"], "description": "Absent or null: unchanged."});
    json!({"type": "object", "properties": {
        "telemetry_opt_in": b, "crash_opt_in": b, "diagnostics_opt_in": b, "dry_run": b}})
}

fn health_schema() -> Value {
    json!({
        "type": "object",
        "required": ["ok", "flag_enabled", "telemetry_opt_in", "telemetry_active", "crash_opt_in", "crash_active",
            "diagnostics_opt_in", "diagnostics_active", "dry_run", "last_settings_update", "anonymous_preview",
            "feature_flag"],
        "properties": {
            "ok": {"const": true},
            "flag_enabled": {"type": "boolean", "description": "features.enable_observability"},
            "telemetry_opt_in": {"type": "boolean"},
            "telemetry_active": {"type": "boolean"},
            "crash_opt_in": {"type": "boolean"},
            "crash_active": {"type": "boolean"},
            "diagnostics_opt_in": {"type": "boolean"},
            "diagnostics_active": {"type": "boolean"},
            "dry_run": {"type": "boolean"},
            "last_settings_update": {"type": ["string", "null"]},
            "anonymous_preview": {"type": "string", "description": "The first 8 characters of the anonymous id."},
            "feature_flag": {"const": crate::telemetry::FEATURE_FLAG}
        }
    })
}

/// A telemetry answer as 200, or its refusal as the matching status.
fn answer(result: Result<Value>) -> Result<Reply, ApiError> {
    result.map(|v| Reply::json(&v)).map_err(refusal)
}

/// The status of a telemetry failure: consent refusals 403, bad input 422 naming the field, else 500.
fn refusal(err: anyhow::Error) -> ApiError {
    match err.downcast_ref::<TelemetryError>() {
        Some(TelemetryError::DiagnosticsRefused) => ApiError::forbidden(&err.to_string()),
        Some(TelemetryError::PayloadNotObject(kind)) => {
            ApiError::validation("payload", &format!("expected a JSON object, found {kind}"))
        }
        Some(TelemetryError::EmptyName(field)) => ApiError::validation(field, "must not be empty"),
        None => ApiError::internal(err),
    }
}

fn update_settings(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let patch: SettingsPatch = req.json_opt()?.unwrap_or_default();
    answer(state.telemetry.with_mut(|t| t.update_settings(&patch)))
}

fn opt_in(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: OptIn = req.json_opt()?.unwrap_or_default();
    answer(state.telemetry.with_mut(|t| t.opt_in(&body)))
}

#[derive(Debug, Deserialize)]
struct FeatureBody {
    feature: Option<String>,
    variant: Option<String>,
}

fn record_feature(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: FeatureBody = req.json()?;
    let feature = body.feature.ok_or_else(|| ApiError::validation("feature", "required"))?;
    answer(state.telemetry.with(|t| t.record_feature(&feature, body.variant.as_deref())))
}

#[derive(Debug, Deserialize)]
struct EventBody {
    event: Option<String>,
    payload: Option<Value>,
    category: Option<String>,
}

fn record_event(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: EventBody = req.json()?;
    let event = body.event.ok_or_else(|| ApiError::validation("event", "required"))?;
    let payload = body.payload.filter(|p| !p.is_null());
    answer(state.telemetry.with(|t| t.record_event(&event, payload.as_ref(), body.category.as_deref())))
}

fn events(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let limit = req.query_int_in("limit", EVENTS_LIMIT_DEFAULT as i64, 1, EVENTS_MAX)? as usize;
    answer(state.telemetry.with(|t| t.events(limit)))
}

fn summary(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    // Both are parsed: a bad alias is refused even when `events` already says yes.
    let (events, alias) = (req.query_bool("events")?, req.query_bool("include_events")?);
    answer(state.telemetry.with(|t| t.summary(events || alias)))
}

fn diagnostics(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let path = state.telemetry.with(|t| t.diagnostics()).map_err(refusal)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let file = std::fs::File::open(&path)
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context(format!("cannot open {}", path.display()))))?;
    let len = file.metadata().map(|m| m.len()).map_err(|e| ApiError::internal(e.into()))?;
    Ok(Reply::file(file, len, "application/zip")
        .with_header("Content-Disposition", &format!("attachment; filename=\"{name}\"")))
}
