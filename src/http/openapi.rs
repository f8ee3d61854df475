//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route table the router serves, so
//! it always matches. Each operation lists its parameters, request body and responses; the error
//! responses the server adds on its own (413/415/422 for bodies, 401/403 for the token, 500) are
//! added here from the route's properties, all pointing at the one `ErrorEnvelope` schema.

use serde_json::{json, Map, Value};

use super::router::{BodyLimit, ParamIn, Route};
use super::{ApiError, AppState, Reply, Req};

pub fn routes() -> Vec<Route> {
    vec![Route::get("/openapi.json", serve)
        .tag("meta")
        .summary("This API's OpenAPI 3.1 document")
        .ok(json!({"type": "object", "description": "An OpenAPI 3.1 document."}))]
}

fn serve(_: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    Ok(Reply::bytes("application/json", req.shared.openapi.clone()))
}

/// The error envelope every failure uses.
pub fn error_envelope_schema() -> Value {
    json!({
        "type": "object",
        "required": ["ok", "code", "message", "request_id"],
        "properties": {
            "ok": {"const": false},
            "code": {"type": "string", "description": "`http_<status>`, `validation_error`, `internal_error`, `insufficient_storage` or `storage_unavailable`.",
                "examples": ["http_404", "validation_error", "internal_error"]},
            "message": {"type": "string"},
            "details": {"type": ["object", "array"],
                "description": "validation_error: [{field, message}]; internal_error: {error_id}."},
            "request_id": {"type": "string", "description": "Same as the X-Request-ID response header."}
        }
    })
}

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("ErrorEnvelope".into(), error_envelope_schema());
    let mut tags: Vec<String> = Vec::new();
    for route in routes {
        for (name, schema) in &route.components {
            schemas.entry(name.clone()).or_insert_with(|| schema.clone());
        }
        if !route.tag.is_empty() && !tags.contains(&route.tag) {
            tags.push(route.tag.clone());
        }
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "comfyvn-obs API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-mostly API over the ComfyVN observability toolkit: health, hook catalogue, \
                history and live stream, audit report. Every response carries X-Request-ID; every error is the \
                ErrorEnvelope. Paths also answer with one trailing slash. When COMFYVN_API_TOKEN is set, \
                state-changing operations need `Authorization: Bearer <token>`."
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "http://127.0.0.1:8001"}],
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                "description": "The value of COMFYVN_API_TOKEN; required only when it is set."}}
        }
    })
}

fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for seg in route.path.split('/') {
        let clean: String = seg.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let clean = clean.trim_matches('_');
        if !clean.is_empty() {
            id.push('_');
            id.push_str(clean);
        }
    }
    id
}

fn operation(route: &Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(route)));
    if !route.summary.is_empty() {
        op.insert("summary".into(), json!(route.summary));
    }
    if !route.description.is_empty() {
        op.insert("description".into(), json!(route.description));
    }
    if !route.tag.is_empty() {
        op.insert("tags".into(), json!([route.tag]));
    }
    let params: Vec<Value> = route
        .params
        .iter()
        .map(|p| {
            let mut v = json!({"name": p.name, "in": p.location.as_str(), "required": p.required, "schema": p.schema});
            // `Req` reads an empty optional query value (`?limit=`) as an absent one.
            if p.location == ParamIn::Query && !p.required {
                v["allowEmptyValue"] = json!(true);
            }
            if !p.description.is_empty() {
                v["description"] = json!(p.description);
            }
            v
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    let mut responses = Map::new();
    for r in &route.responses {
        let mut v = json!({"description": r.description});
        if let Some((ct, schema)) = &r.content {
            v["content"] = json!({ct.as_str(): {"schema": schema}});
        }
        responses.insert(r.status.to_string(), v);
    }
    let mut add_error = |status: u16, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| {
            json!({"description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}})
        });
    };
    if let Some(body) = &route.body {
        op.insert(
            "requestBody".into(),
            json!({"required": body.required, "content": {body.content_type.as_str(): {"schema": body.schema}}}),
        );
        add_error(400, "Malformed body.");
        match body.limit {
            BodyLimit::Json => add_error(413, "Body larger than obs.server.max_json_bytes."),
            BodyLimit::Upload => add_error(413, "Body larger than obs.server.max_upload_bytes."),
        }
        if body.content_type == "application/json" {
            add_error(415, "Content-Type is not application/json.");
        }
        add_error(422, "validation_error: details names the fields.");
    }
    if route.params.iter().any(|p| p.location == ParamIn::Path) {
        add_error(404, "Not found.");
    }
    if route.state_changing {
        add_error(401, "COMFYVN_API_TOKEN is set and no bearer token was sent.");
        add_error(
            403,
            "Wrong bearer token, Host header not allowed, or a cross-origin request (Origin, Sec-Fetch-Site).",
        );
        op.insert("security".into(), json!([{}, {"bearerAuth": []}]));
    }
    add_error(500, "internal_error: details.error_id matches the server log.");
    if route.state_changing {
        add_error(503, "storage_unavailable: a folder the server writes is read-only or refused (Retry-After).");
        add_error(507, "insufficient_storage: the server's disk is full; the message names the file.");
    }
    responses.insert(
        "default".into(),
        json!({"description": "Any other error (403 Host not allowed, 404, 405, 413 …).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ServeSettings;
    use std::collections::BTreeSet;

    fn all_routes() -> Vec<Route> {
        let mut s = ServeSettings::from_config(&crate::config::Config::defaults().obs.server).unwrap();
        s.test_panic_route = true;
        crate::http::routes::table(&s, &crate::hooks::Catalogue::builtin())
    }

    #[test]
    fn every_route_is_documented_and_every_operation_is_a_route() {
        let routes = all_routes();
        let router = crate::http::router::Router::new(routes.clone()).unwrap();
        let doc = document(router.routes());
        let from_table: BTreeSet<(String, String)> =
            routes.iter().map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.clone())).collect();
        let mut from_doc = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                from_doc.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(from_table, from_doc);
        assert_eq!(from_table.len(), routes.len());
    }

    /// Walk every `$ref` and check it resolves inside the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn document_is_structurally_valid_openapi_3_1() {
        let doc = document(&all_routes());
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(path.starts_with('/'), "{path}");
            let template_params: BTreeSet<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            for (method, op) in item.as_object().unwrap() {
                assert!(["get", "post", "put", "patch", "delete"].contains(&method.as_str()));
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "duplicate operationId");
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|p| p["in"] == "path")
                            .inspect(|p| assert_eq!(p["required"], true))
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(template_params, declared, "{method} {path}");
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.contains_key("default"));
                for (status, r) in responses {
                    assert!(status == "default" || (status.len() == 3 && status.parse::<u16>().is_ok()), "{status}");
                    assert!(r["description"].is_string());
                }
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").expect("local schema ref");
            assert!(doc["components"]["schemas"][name].is_object(), "unresolved {r}");
        }
    }

    #[test]
    fn body_routes_document_their_errors_and_security() {
        let doc = document(&all_routes());
        let emit = &doc["paths"]["/api/modder/hooks/emit"]["post"];
        for s in ["400", "401", "403", "413", "415", "422", "500"] {
            assert!(emit["responses"][s].is_object(), "{s}");
        }
        assert_eq!(emit["security"][1]["bearerAuth"], json!([]));
        assert!(doc["paths"]["/health"]["get"]["security"].is_null());
        let health = all_routes().into_iter().find(|r| r.path == "/health").unwrap();
        assert_eq!(operation_id(&health), "get_health");
    }
}
