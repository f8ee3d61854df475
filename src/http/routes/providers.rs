//! `GET /api/providers`, `/api/providers/health[?id=]` and `/api/providers/quota?id=`: the compute/API
//! provider registry (`config/settings/providers.json`) through the `providers` module, which owns the
//! file, the probes and the masking. Probes block the worker for at most `obs.providers.timeout_ms`.

use serde_json::{json, Value};

use crate::http::router::Route;
use crate::http::{ApiError, AppState, Reply, Req};
use crate::providers::{self, ProviderError};

pub fn routes() -> Vec<Route> {
    let health = json!({
        "type": "object",
        "required": ["provider_id", "provider_name", "ok", "latency_ms", "status"],
        "properties": {
            "provider_id": {"type": "string"}, "provider_name": {"type": "string"}, "ok": {"type": "boolean"},
            "status_code": {"type": "integer"}, "error": {"type": "string"}, "latency_ms": {"type": "integer"},
            "status": {"enum": ["ok", "slow", "down"]},
            "endpoint": {"type": "string", "description": "The probed URL, masked."},
            "checked_at": {"type": "string"}
        }
    });
    let p = |r: Route| r.tag("providers");
    vec![
        p(Route::get("/api/providers", list))
            .summary("The provider registry, secrets masked")
            .ok(json!({"type": "object", "required": ["ok", "providers"], "properties": {
                "ok": {"const": true}, "providers": {"type": "array", "items": {"type": "object"}}}})),
        p(Route::get("/api/providers/health", health_route))
            .summary("Probe the active providers (or one, with ?id=)")
            .query("id", json!({"type": "string"}), "Probe only this provider (active or not).")
            .ok(json!({"type": "object", "required": ["ok"], "properties": {
                "ok": {"type": "boolean", "description": "Any probed provider answered."},
                "results": {"type": "array", "items": health.clone()},
                "status": health}}))
            .error(404, "provider not found"),
        p(Route::get("/api/providers/quota", quota))
            .summary("A provider's quota (its quota_url), masked")
            .query_required("id", json!({"type": "string", "pattern": "\\S"}), "The provider.")
            .ok(json!({"type": "object", "required": ["ok", "provider_id"], "properties": {
                "ok": {"type": "boolean"}, "quota": {"type": "object"}, "latency_ms": {"type": "integer"},
                "endpoint": {"type": "string"}, "provider_id": {"type": "string"}, "error": {"type": "string",
                    "description": "`quota inspection not supported` when the provider has no quota_url."}}}))
            .error(404, "provider not found")
            .error(422, "`id` missing."),
    ]
}

fn refusal(e: ProviderError) -> ApiError {
    match e {
        ProviderError::NotFound(id) => ApiError::not_found("provider not found").with_details(json!({"id": id})),
        ProviderError::Other(err) => ApiError::internal(err),
    }
}

fn list(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    Ok(Reply::json(&providers::api_list(&state.paths)?))
}

fn id_param(req: &Req<'_>) -> Option<String> {
    req.query("id").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

fn health_route(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let id = id_param(req);
    let answer: Value = providers::api_health(&state.paths, &state.config, id.as_deref()).map_err(refusal)?;
    Ok(Reply::json(&answer))
}

fn quota(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let id = id_param(req).ok_or_else(|| ApiError::validation("id", "required"))?;
    Ok(Reply::json(&providers::api_quota(&state.paths, &state.config, &id).map_err(refusal)?))
}
