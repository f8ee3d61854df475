//! `GET /health` and `GET /healthz`: liveness, with the original toolkit's two shapes.

use serde_json::json;

use crate::http::router::Route;
use crate::http::Reply;

pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/health", |_, _| Ok(Reply::json(&json!({"status": "ok"}))))
            .tag("health")
            .summary("Liveness probe")
            .ok(json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})),
        Route::get("/healthz", |_, _| Ok(Reply::json(&json!({"ok": true}))))
            .tag("health")
            .summary("Liveness probe (Kubernetes style)")
            .ok(json!({"type": "object", "required": ["ok"], "properties": {"ok": {"const": true}}})),
    ]
}
