//! The modder hook routes: the catalogue (`GET /api/modder/hooks`), the history read from the tail of
//! the JSONL file (`GET /api/modder/hooks/history`), and emitting (`POST /api/modder/hooks/emit`,
//! alias `/test`). Webhook registration is in `webhooks.rs`; the catalogue lists the registrations
//! (secrets masked) and the dev plugin host's status as the host last wrote it. The document lists the
//! catalogue's event names where a route takes one, so it is built from the catalogue the server loaded.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::hooks::{Catalogue, EmitError, Filter, HookSpec};
use crate::http::router::{schema_ref, Route};
use crate::http::{ApiError, AppState, Reply, Req};

/// How many envelopes `GET /api/modder/hooks` includes.
const CATALOGUE_HISTORY: usize = 15;
const HISTORY_DEFAULT: i64 = 25;
const HISTORY_MAX: i64 = 1000;

/// The catalogue's event names, in catalogue order: the values a route taking an event name accepts.
pub fn event_names(catalogue: &Catalogue) -> Vec<Value> {
    catalogue.specs().iter().map(|s| Value::String(s.name.clone())).collect()
}

pub fn routes(known: &Catalogue) -> Vec<Route> {
    let envelopes = json!({"type": "array", "items": schema_ref("HookEnvelope")});
    let mut event = event_names(known);
    event.extend([json!(""), Value::Null]);
    let emit_body = json!({
        "type": "object",
        "properties": {
            "event": {"enum": event, "default": "on_scene_enter",
                "description": "A hook name from the catalogue; empty or null means `on_scene_enter`."},
            "payload": {"type": ["object", "null"], "description": "The event data; absent or null means {}."}
        }
    });
    let emitted = json!({
        "type": "object",
        "required": ["ok", "event", "seq"],
        "properties": {"ok": {"const": true}, "event": {"type": "string"}, "seq": {"type": "integer"}}
    });
    let emit = |path: &str, summary: &str| {
        Route::post(path, emit)
            .tag("hooks")
            .summary(summary)
            .describe("Appends the event to the hook history; stream clients and webhooks see it from there.")
            .json_body(emit_body.clone(), false)
            .ok(emitted.clone())
            .error(400, "Unsupported event, or malformed JSON.")
    };
    vec![
        Route::get("/api/modder/hooks", catalogue)
            .tag("hooks")
            .summary("The hook catalogue, webhook registrations, plugin host and recent history")
            .ok(json!({
                "type": "object",
                "required": ["ok", "hooks", "webhooks", "plugin_host", "history"],
                "properties": {
                    "ok": {"const": true},
                    "hooks": {"type": "array", "items": schema_ref("HookSpec")},
                    "webhooks": {"type": "array", "items": {"type": "object", "properties": {
                        "event": {"type": "string"}, "url": {"type": "string"},
                        "secret": {"type": ["string", "null"], "description": "Masked."}}}},
                    "plugin_host": {"type": "object", "required": ["enabled", "root"], "properties": {
                        "enabled": {"type": "boolean"}, "root": {"type": "string"}}},
                    "history": {"type": "array", "items": schema_ref("HookEnvelope"), "maxItems": CATALOGUE_HISTORY}
                }
            }))
            .component(
                "HookSpec",
                json!({
                    "type": "object",
                    "required": ["name", "description", "ws_topic", "rest_event", "payload"],
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "ws_topic": {"type": "string"},
                        "rest_event": {"type": "string"},
                        "payload": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "Payload field → description."}
                    }
                }),
            )
            .component("HookEnvelope", crate::http::stream::hook_envelope_schema()),
        Route::get("/api/modder/hooks/history", history)
            .tag("hooks")
            .summary("The last hook envelopes, oldest first")
            .query(
                "limit",
                json!({"type": "integer", "default": HISTORY_DEFAULT, "maximum": HISTORY_MAX}),
                "How many, at most 1000; below 1 means 1 (as the original).",
            )
            .ok(json!({"type": "object", "required": ["ok", "items"],
                "properties": {"ok": {"const": true}, "items": envelopes}}))
            .error(422, "`limit` is not an integer, or above 1000.")
            .component("HookEnvelope", crate::http::stream::hook_envelope_schema()),
        emit("/api/modder/hooks/emit", "Emit a hook event"),
        emit("/api/modder/hooks/test", "Emit a hook event (alias of /emit, the original's name)"),
    ]
}

fn catalogue(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let hooks: Vec<Value> = state.bus.catalogue.specs().iter().map(spec_json).collect();
    let webhooks = webhook_listing(state)?;
    let history = state.bus.history.tail(CATALOGUE_HISTORY, &Filter::default())?;
    Ok(Reply::json(&json!({
        "ok": true,
        "hooks": hooks,
        "webhooks": webhooks,
        "plugin_host": crate::hooks::plugins::status_from_disk(&state.paths, &state.config)?,
        "history": history,
    })))
}

fn spec_json(s: &HookSpec) -> Value {
    let payload: Map<String, Value> =
        s.payload_fields.iter().map(|f| (f.clone(), Value::String(field_description(f)))).collect();
    json!({
        "name": s.name,
        "description": s.description,
        "ws_topic": s.ws_topic,
        "rest_event": s.name,
        "payload": payload,
    })
}

/// The registrations (`hooks::webhook` owns `data/webhooks.json`), secrets masked. A broken file is a
/// 500 naming it: the listing cannot be answered, and whoever reads the answer should see why.
fn webhook_listing(state: &AppState) -> Result<Value, ApiError> {
    crate::hooks::webhook::api_listing(&state.paths).map_err(|e| ApiError::new(500, &format!("{e:#}")))
}

fn history(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let limit = req.query_int_floored("limit", HISTORY_DEFAULT, 1, HISTORY_MAX)? as usize;
    let items = state.bus.history.tail(limit, &Filter::default())?;
    Ok(Reply::json(&json!({"ok": true, "items": items})))
}

/// The original's body: `event` and `payload`; other keys are ignored, as it ignored them.
#[derive(Debug, Default, Deserialize)]
struct EmitBody {
    event: Option<String>,
    payload: Option<Value>,
}

fn emit(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: EmitBody = req.json_opt()?.unwrap_or_default();
    let event = body.event.filter(|e| !e.is_empty()).unwrap_or_else(|| "on_scene_enter".to_string());
    let data = body.payload.filter(|p| !p.is_null()).unwrap_or_else(|| json!({}));
    state.bus.validate(&event, &data).map_err(|e| match e {
        EmitError::UnknownEvent(name) => ApiError::bad_request("unsupported event")
            .with_details(json!({"event": name, "hint": "GET /api/modder/hooks lists the events"})),
        EmitError::NotAnObject(kind) => {
            ApiError::validation("payload", &format!("expected a JSON object, found {kind}"))
        }
    })?;
    let envelope = state.bus.history.append(&event, data)?;
    // Telemetry samples explicitly emitted hooks (when opted in), as `hooks emit` does; a telemetry
    // failure never fails the emit.
    if let Err(e) = state.telemetry.with(|t| t.record_hook(&envelope.event, &envelope.data)) {
        tracing::warn!(error = %format!("{e:#}"), "telemetry.record_hook_failed");
    }
    Ok(Reply::json(&json!({"ok": true, "event": envelope.event, "seq": envelope.seq})))
}

/// A short description of a payload field. The catalogue carries field names only; common names get
/// a real description, the rest a readable one derived from the name.
fn field_description(field: &str) -> String {
    let known = match field {
        "timestamp" => "when the studio raised the event (epoch seconds)",
        "scene_id" => "id of the scene",
        "node" | "node_id" => "the scene graph node",
        "pov" => "the point-of-view character",
        "variables" => "scene variables at this point",
        "history" => "the dialogue history so far",
        "finished" => "whether the scene has ended",
        "choices" => "the choices offered",
        "uid" | "asset_uid" => "the asset's stable uid",
        "type" => "the asset type",
        "path" | "rel_path" | "asset_path" => "path relative to the assets root",
        "meta" | "metadata" => "the asset's free-form metadata",
        "sidecar" => "path of the `.asset.json` sidecar",
        "bytes" => "file size in bytes",
        "hook_event" => "the registry event that raised this hook",
        "provenance" => "where the asset came from (source, workflow, inputs)",
        "project_id" => "id of the project",
        "seed" => "random seed used",
        "source" => "where the data came from",
        "digest" | "checksum" | "hash" => "content digest",
        "reason" => "why it happened",
        "status" => "outcome status",
        "error" => "error message, if any",
        "warnings" => "warnings raised",
        "job_id" => "id of the background job",
        "run_id" => "id of the run",
        "session_id" => "id of the session",
        "provider" => "the compute/API provider",
        _ => "",
    };
    if known.is_empty() {
        field.replace('_', " ")
    } else {
        known.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_field_has_a_description() {
        let c = crate::hooks::Catalogue::builtin();
        for s in c.specs() {
            let v = spec_json(s);
            assert_eq!(v["rest_event"], s.name.as_str());
            for f in &s.payload_fields {
                assert!(!v["payload"][f].as_str().unwrap().is_empty(), "{} {f}", s.name);
            }
        }
        assert_eq!(field_description("voice_id"), "voice id");
    }
}
