//! `GET /api/crashes` (newest first) and `GET /api/crashes/{event_id}`: the crash dumps under
//! `logs/crash/`, read through the `crash` module. Reads only; dumps are already masked when written.

use serde_json::{json, Value};

use crate::http::router::{schema_ref, Route};
use crate::http::{ApiError, AppState, Reply, Req};

const LIST_DEFAULT: i64 = 100;
const LIST_MAX: i64 = 1000;

pub fn routes() -> Vec<Route> {
    let summary = json!({
        "type": "object",
        "required": ["event_id", "timestamp", "exc_type", "message", "fingerprint", "path"],
        "properties": {
            "event_id": {"type": "string", "description": "8 hex characters."},
            "timestamp": {"type": "string", "description": "UTC ISO-8601."},
            "exc_type": {"type": "string"},
            "message": {"type": "string"},
            "fingerprint": {"type": "string", "description": "Stable hash grouping repeats of one crash."},
            "path": {"type": "string", "description": "The dump file."}
        }
    });
    vec![
        Route::get("/api/crashes", list)
            .tag("crashes")
            .summary("Crash dumps, newest first")
            .describe(
                "The same summaries as `comfyvn-obs crash list --json`. Files that are not readable dumps \
                are skipped and named in `skipped`.",
            )
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": LIST_MAX, "default": LIST_DEFAULT}),
                "How many of the newest.",
            )
            .ok(json!({
                "type": "object",
                "required": ["ok", "crashes", "total", "skipped"],
                "properties": {
                    "ok": {"const": true},
                    "crashes": {"type": "array", "items": schema_ref("CrashSummary")},
                    "total": {"type": "integer", "description": "Readable dumps before `limit`."},
                    "skipped": {"type": "array", "items": {"type": "string"}}
                }
            }))
            .error(422, "`limit` is not an integer in 1..1000.")
            .component("CrashSummary", summary),
        Route::get("/api/crashes/groups", groups)
            .tag("crashes")
            .summary("Crash dumps grouped by fingerprint, most recently seen first")
            .describe("Repeats of one crash share a fingerprint. The same as `comfyvn-obs crash list --group --json`.")
            .ok(json!({
                "type": "object",
                "required": ["ok", "groups", "total", "skipped"],
                "properties": {
                    "ok": {"const": true},
                    "groups": {"type": "array", "items": {"type": "object",
                        "required": ["fingerprint", "exc_type", "message", "count", "first_seen", "last_seen", "latest_event_id", "event_ids"],
                        "properties": {
                            "fingerprint": {"type": "string"}, "exc_type": {"type": "string"},
                            "message": {"type": "string"}, "count": {"type": "integer"},
                            "first_seen": {"type": "string"}, "last_seen": {"type": "string"},
                            "latest_event_id": {"type": "string"},
                            "event_ids": {"type": "array", "items": {"type": "string"}}}}},
                    "total": {"type": "integer", "description": "Readable dumps."},
                    "skipped": {"type": "array", "items": {"type": "string"}}
                }
            })),
        Route::get("/api/crashes/{event_id}", detail)
            .tag("crashes")
            .summary("One crash dump")
            .path_param("event_id", "The dump's 8-hex event id (its file name or stem also work).")
            .ok(json!({
                "type": "object",
                "required": ["ok", "crash"],
                "properties": {"ok": {"const": true}, "crash": {"type": "object",
                    "description": "The whole dump (DESIGN §3 fields)."}}
            }))
            .error(404, "Crash dump not found."),
    ]
}

fn list(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let limit = req.query_int_in("limit", LIST_DEFAULT, 1, LIST_MAX)? as usize;
    let listing = crate::crash::list_dumps(&state.paths)?;
    let total = listing.dumps.len();
    let crashes: Vec<Value> = listing.dumps.iter().take(limit).map(|d| d.summary()).collect();
    Ok(Reply::json(&json!({"ok": true, "crashes": crashes, "total": total, "skipped": listing.problems})))
}

fn groups(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let listing = crate::crash::list_dumps(&state.paths)?;
    let groups = crate::crash::group_dumps(&listing.dumps);
    Ok(Reply::json(&json!({"ok": true, "groups": groups, "total": listing.dumps.len(), "skipped": listing.problems})))
}

fn detail(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let id = req.param("event_id").to_string();
    match crate::crash::load_dump(&state.paths, &id)? {
        Some(entry) => Ok(Reply::json(&json!({"ok": true, "crash": entry.dump}))),
        None => Err(ApiError::not_found("Crash dump not found.").with_details(json!({"event_id": id}))),
    }
}
