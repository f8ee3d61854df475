//! `GET /api/audit/latest`: the last audit report (`logs/audit/latest.json`) as written by
//! `comfyvn-obs audit`, served byte for byte. Reads only.

use serde_json::json;

use crate::http::router::Route;
use crate::http::{ApiError, AppState, Reply, Req};

pub fn routes() -> Vec<Route> {
    vec![Route::get("/api/audit/latest", latest)
        .tag("audit")
        .summary("The last audit report")
        .describe("The JSON report the last `comfyvn-obs audit` run wrote to logs/audit/latest.json, unchanged.")
        .ok(json!({"type": "object", "description": "The audit report (see `comfyvn-obs audit --format json`)."}))
        .error(404, "No audit has run yet.")]
}

fn latest(state: &AppState, _req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let path = state.paths.audit_latest();
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Reply::bytes("application/json", bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found("no audit report yet")
            .with_details(json!({"path": path.display().to_string(), "hint": "run `comfyvn-obs audit`"}))),
        Err(e) => Err(ApiError::internal(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))),
    }
}
