//! `POST|DELETE /api/modder/hooks/webhooks`: register (upsert by event + url) and remove webhook
//! registrations through `hooks::webhook` (which owns `data/webhooks.json`, validation and masking). The
//! delivery worker follows the hook history on its own; these routes only change registrations.
//! `GET /api/modder/hooks/webhooks` and `…/deliveries` read the registrations with their queue counts
//! and the delivery log, as `webhooks list --json` and `webhooks deliveries --json` print them.

use serde_json::{json, Value};

use crate::hooks::webhook::{self, WebhookError};
use crate::hooks::Catalogue;
use crate::http::router::Route;
use crate::http::{ApiError, AppState, Reply, Req};

/// Event patterns the document describes as globs: a `*` or `?` and none of the other glob syntax.
/// The server also takes `[…]` classes and `{a,b}` alternatives, and refuses globs that do not compile
/// (`a**`) with a 400; no regular expression states that exactly.
const GLOB_PATTERN: &str = r"^[^\[\]{}\\]*[*?][^\[\]{}\\]*$";

pub fn routes(catalogue: &Catalogue) -> Vec<Route> {
    let body = json!({
        "type": "object",
        "required": ["event", "url"],
        "properties": {
            "event": {"anyOf": [{"enum": super::hooks::event_names(catalogue)}, {"type": "string", "pattern": GLOB_PATTERN}],
                "description": "A catalogue event, `*`, or a glob such as `on_asset_*`."},
            "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]+([/?#]\\S*)?$",
                "description": "An absolute http:// or https:// URL."},
            "secret": {"type": ["string", "null"], "description": "Signs deliveries (X-Comfy-Signature and the \
                Standard Webhooks headers). Without one (or empty, or null), deliveries are unsigned. A `whsec_` \
                secret must be base64 after the prefix."}
        }
    });
    let remove_body = json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "event": {"type": ["string", "null"], "description": "The registration's event pattern."},
            "url": {"type": "string", "pattern": "\\S", "description": "The registration's URL."}
        }
    });
    let listing = json!({"type": "object", "description": "The registration with its secret masked.",
        "properties": {"event": {"type": "string"}, "url": {"type": "string"},
            "secret": {"type": ["string", "null"]}, "enabled": {"type": "boolean"}}});
    let status = json!({"type": "object", "required": ["event", "url", "enabled", "pending", "parked"],
        "properties": {"event": {"type": "string"}, "url": {"type": "string"},
            "secret": {"type": ["string", "null"], "description": "Masked, `*` per character."},
            "enabled": {"type": "boolean"}, "consecutive_failures": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "pending": {"type": "integer", "description": "Deliveries not yet acknowledged, parked ones included."},
            "parked": {"type": "integer", "description": "Kept while the registration is disabled."}}});
    vec![
        Route::get("/api/modder/hooks/webhooks", list)
            .tag("hooks")
            .summary("Registrations with their delivery queues")
            .describe("Secrets are masked. The same as `comfyvn-obs webhooks list --json`.")
            .ok(json!({"type": "object", "required": ["ok", "webhooks"], "properties": {
                "ok": {"const": true}, "webhooks": {"type": "array", "items": status}}})),
        Route::get("/api/modder/hooks/webhooks/deliveries", deliveries)
            .tag("hooks")
            .summary("The newest delivery log entries, oldest first")
            .describe(
                "Lines of data/webhooks/deliveries.jsonl (and its rotated file): `ts`, `outcome`, `attempt`, \
                `status_code`, `latency_ms`, `seq`, `event`, `url`, `error` or `reason`. The same as \
                `comfyvn-obs webhooks deliveries --json`.",
            )
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": DELIVERIES_MAX, "default": DELIVERIES_DEFAULT}),
                "How many of the newest.",
            )
            .ok(json!({"type": "object", "required": ["ok", "deliveries"], "properties": {
                "ok": {"const": true}, "deliveries": {"type": "array", "items": {"type": "object"}}}}))
            .error(422, "`limit` is not an integer in 1..1000."),
        Route::post("/api/modder/hooks/webhooks", register)
            .tag("hooks")
            .summary("Register a webhook (upsert by event and url)")
            .describe(
                "Deliveries start with the events after the registration. Registering a disabled \
                registration again enables it.",
            )
            .json_body(body.clone(), true)
            .ok(json!({"type": "object", "required": ["ok"], "properties": {
                "ok": {"const": true}, "created": {"type": "boolean"}, "webhook": listing}}))
            .error(400, "`unsupported event`, `webhook url required`, a URL that is not http(s), a bad secret."),
        Route::delete("/api/modder/hooks/webhooks", remove)
            .tag("hooks")
            .summary("Remove a webhook registration")
            .json_body(remove_body, true)
            .ok(json!({"type": "object", "required": ["ok", "removed"], "properties": {
                "ok": {"const": true}, "removed": {"type": "boolean", "description": "False when there was none."}}}))
            .error(400, "`webhook url required`, or a malformed body."),
    ]
}

fn refusal(e: WebhookError) -> ApiError {
    let status = e.status();
    let message = e.to_string();
    match e {
        WebhookError::UnsupportedEvent(event) => ApiError::new(status, &message)
            .with_details(json!({"event": event, "hint": "GET /api/modder/hooks lists the events"})),
        WebhookError::Io(err) => ApiError::internal(err),
        _ => ApiError::new(status, &message),
    }
}

const DELIVERIES_DEFAULT: i64 = 50;
const DELIVERIES_MAX: i64 = 1000;

fn list(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let read = || -> anyhow::Result<Vec<Value>> {
        let regs = webhook::WebhookStore::new(&state.paths).load()?;
        crate::hooks::delivery::status_listing(&state.paths, &regs)
    };
    let webhooks = read().map_err(|e| ApiError::new(500, &format!("{e:#}")))?;
    Ok(Reply::json(&json!({"ok": true, "webhooks": webhooks})))
}

fn deliveries(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let limit = req.query_int_in("limit", DELIVERIES_DEFAULT, 1, DELIVERIES_MAX)? as usize;
    let entries = crate::hooks::delivery::recent_deliveries(&state.paths, limit)?;
    Ok(Reply::json(&json!({"ok": true, "deliveries": entries})))
}

fn register(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: Value = req.json()?;
    let answer = webhook::api_register(&state.paths, &state.bus, &body).map_err(refusal)?;
    Ok(Reply::json(&answer))
}

fn remove(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: Value = req.json()?;
    let answer = webhook::api_remove(&state.paths, &body).map_err(refusal)?;
    Ok(Reply::json(&answer))
}
