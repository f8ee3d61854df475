//! The dashboard without a browser: the served files, their headers (CSP, ETag, 304), the Host-header
//! defence on the page, cross-origin refusals, and the read routes the page is built on. The browser
//! suite (`tests/browser/dashboard.py`) drives the page itself.

use serde_json::json;

use crate::http::Served;
use crate::support::TestEnv;

#[test]
fn the_page_and_its_files_are_served_with_a_strict_policy_and_revalidate_with_etags() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let page = srv.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.contains("Debug Integrations") && html.contains("/ui/app.js"), "{html}");
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    for (file, ct) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")] {
        let r = srv.get(&format!("/ui/{file}"));
        assert_eq!(r.status, 200, "{file}");
        assert!(r.header("content-type").unwrap().starts_with(ct), "{file}: {:?}", r.header("content-type"));
        assert!(r.header("content-security-policy").is_some(), "{file}");
    }
    let etag = page.header("etag").unwrap().to_string();
    let again = srv.request("GET", "/", &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(srv.request("GET", "/", &[("If-None-Match", "\"other\"")], b"").status, 200);
    let v = srv.get("/ui/../config/comfyvn.json");
    assert_ne!(v.status, 200, "{}", v.text());
    srv.get("/ui/secret.txt").envelope(404, "http_404");
    // The page is listed in the OpenAPI document like every route.
    let doc = srv.get("/openapi.json").json();
    assert!(doc["paths"]["/"]["get"].is_object() && doc["paths"]["/ui/app.js"]["get"].is_object());
}

#[test]
fn the_page_is_behind_the_host_header_defence() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let r = srv.raw(b"GET / HTTP/1.1\r\nHost: rebind.example\r\nConnection: close\r\n\r\n");
    r.envelope(403, "http_403");
}

#[test]
fn writes_from_another_origin_are_refused_and_same_origin_ones_answered() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let own = format!("http://127.0.0.1:{}", srv.port());
    let body = json!({"event": "on_scene_enter"});
    for headers in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", "http://127.0.0.1:3000")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let v = srv.post_json("/api/modder/hooks/emit", &body, &headers).envelope(403, "http_403");
        assert!(v["message"].as_str().unwrap().contains("cross-origin"), "{v}");
    }
    assert!(!env.path("logs/hooks/history.jsonl").exists(), "a refused write was carried out");
    let ok = srv.post_json("/api/modder/hooks/emit", &body, &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Reads stay open to links from anywhere (the page itself, opened from another site).
    assert_eq!(srv.request("GET", "/", &[("Sec-Fetch-Site", "cross-site")], b"").status, 200);
    // A WebSocket upgrade from another site's page is refused (CORS does not protect WebSockets).
    let upgrade = |origin: &str| {
        srv.raw(
            format!(
                "GET /api/modder/hooks/ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n",
                srv.port()
            )
            .as_bytes(),
        )
    };
    upgrade("http://evil.example").envelope(403, "http_403");
    assert_eq!(upgrade(&own).status, 101);
}

#[test]
fn crash_groups_and_webhook_status_routes_answer_what_the_cli_prints() {
    let env = TestEnv::new();
    env.run(&["crash", "simulate"]);
    env.run(&["crash", "simulate"]);
    env.run(&["webhooks", "add", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/h", "--secret", "topsecret"])
        .ok();
    let srv = Served::start(&env);
    let g = srv.get("/api/crashes/groups").json();
    assert_eq!(g["total"], 2);
    assert_eq!(g["groups"].as_array().unwrap().len(), 1, "{g}");
    assert_eq!(g["groups"][0]["count"], 2);
    let cli: serde_json::Value =
        serde_json::from_str(&env.run(&["crash", "list", "--group", "--json"]).ok().stdout).unwrap();
    assert_eq!(g["groups"], cli);
    let w = srv.get("/api/modder/hooks/webhooks").json();
    let listed = &w["webhooks"][0];
    assert_eq!(listed["event"], "on_asset_*");
    assert_eq!(listed["pending"], 0);
    assert!(!w.to_string().contains("topsecret"), "{w}");
    let cli: serde_json::Value = serde_json::from_str(&env.run(&["webhooks", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(w["webhooks"], cli);
    let d = srv.get("/api/modder/hooks/webhooks/deliveries?limit=5").json();
    assert_eq!(d["deliveries"], json!([]));
    srv.get("/api/modder/hooks/webhooks/deliveries?limit=0").envelope(422, "validation_error");
    let s = srv.get("/api/telemetry/settings").json();
    assert_eq!(s["features"], json!({"enable_observability": false, "enable_crash_uploader": false}), "{s}");
}
