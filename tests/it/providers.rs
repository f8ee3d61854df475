//! `providers list|health|quota` against loopback servers that answer fast, slow, 500, or not at all.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::TestEnv;
use crate::webhooks::{Answer, Server};

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A registry with four providers, each pointing at a different kind of server.
struct Setup {
    env: TestEnv,
    _servers: Vec<Server>,
}

fn setup() -> Setup {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", json!({"obs": {"providers": {"timeout_ms": 2000, "slow_ms": 150}}}).to_string());
    let fast = Server::start(|_, r| {
        if r.path == "/quota" {
            Answer::json(200, json!({"credits": 12.5, "api_token": "tok-secret"}))
        } else {
            Answer::json(200, json!({"ok": true}))
        }
    });
    let slow = Server::start(|_, _| Answer { delay: Duration::from_millis(400), ..Answer::status(200) });
    let broken = Server::start(|_, _| Answer::status(500));
    let providers = json!({"schema": 1, "providers": [
        {"id": "fast", "name": "Fast", "kind": "comfyui", "base_url": fast.url(""), "health_url": fast.url("/health"),
         "quota_url": fast.url("/quota"), "active": true,
         "config": {"api_key": "sk-live-1234", "nested": {"deep": {"secret": "hidden-value"}}, "region": "eu"}},
        {"id": "slow", "name": "Slow", "kind": "runpod", "base_url": slow.url("/"), "active": true, "config": {}},
        {"id": "broken", "name": "Broken", "kind": "runpod", "base_url": broken.url("/"), "active": true},
        {"id": "gone", "name": "Gone", "kind": "remote", "base_url": format!("http://127.0.0.1:{}/", closed_port())},
        {"id": "off", "name": "Off", "kind": "remote", "base_url": format!("http://127.0.0.1:{}/", closed_port()),
         "active": false},
    ]});
    env.write("config/settings/providers.json", providers.to_string());
    Setup { env, _servers: vec![fast, slow, broken] }
}

fn by_id(results: &Value) -> std::collections::HashMap<String, Value> {
    results.as_array().unwrap().iter().map(|r| (r["provider_id"].as_str().unwrap().to_string(), r.clone())).collect()
}

#[test]
fn health_probes_classify_fast_slow_500_and_closed_and_persist_the_last_result() {
    let s = setup();
    let out = s.env.run(&["providers", "health", "--json"]).code(1).json();
    assert_eq!(out["ok"], true, "any ok");
    let r = by_id(&out["results"]);
    assert_eq!(r.len(), 4, "inactive providers are not probed: {r:?}");
    assert_eq!((r["fast"]["status"].as_str(), r["fast"]["ok"].as_bool()), (Some("ok"), Some(true)));
    assert_eq!(r["fast"]["status_code"], 200);
    assert!(r["fast"].get("error").is_none());
    assert_eq!((r["slow"]["status"].as_str(), r["slow"]["ok"].as_bool()), (Some("slow"), Some(true)));
    assert!(r["slow"]["latency_ms"].as_u64().unwrap() >= 150);
    assert_eq!((r["broken"]["status"].as_str(), r["broken"]["status_code"].as_u64()), (Some("down"), Some(500)));
    assert_eq!(r["broken"]["error"], "http 500");
    assert_eq!(r["gone"]["status"], "down");
    assert!(r["gone"].get("status_code").is_none());
    assert!(r["gone"]["error"].as_str().unwrap().contains("refused"), "{}", r["gone"]);
    for v in r.values() {
        for key in ["provider_id", "provider_name", "ok", "latency_ms", "status"] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
    }
    let saved: Value = serde_json::from_str(&s.env.read("data/providers/health.json")).unwrap();
    assert_eq!(saved["schema"], 1);
    assert_eq!(saved["providers"]["broken"]["status"], "down");
    assert_eq!(saved["providers"].as_object().unwrap().len(), 4);

    // One provider: exit 0 when it is up, the `{ok, status}` shape.
    let one = s.env.run(&["providers", "health", "fast", "--json"]).ok().json();
    assert_eq!((one["ok"].as_bool(), one["status"]["provider_id"].as_str()), (Some(true), Some("fast")));
    s.env.run(&["providers", "health", "broken"]).code(1);
    let missing = s.env.run(&["providers", "health", "nope"]).code(1);
    assert!(missing.stderr.contains("provider not found"), "{}", missing.stderr);
    let human = s.env.run(&["providers", "health"]).code(1);
    assert!(human.stdout.contains("slow") && human.stdout.contains("down"), "{}", human.stdout);
}

#[test]
fn listings_mask_secrets_at_any_depth_and_show_the_last_health() {
    let s = setup();
    s.env.run(&["providers", "health", "fast"]).ok();
    let list = s.env.run(&["providers", "list", "--json"]).ok();
    assert!(!list.stdout.contains("sk-live-1234") && !list.stdout.contains("hidden-value"), "{}", list.stdout);
    let items = list.json();
    let fast = items.as_array().unwrap().iter().find(|p| p["id"] == "fast").unwrap();
    assert_eq!(fast["config"]["api_key"], "************");
    assert_eq!(fast["config"]["nested"]["deep"]["secret"], "************");
    assert_eq!(fast["config"]["region"], "eu");
    assert_eq!(fast["last_health"]["status"], "ok");
    let human = s.env.run(&["providers", "list"]).ok();
    assert!(human.stdout.contains("fast") && !human.stdout.contains("sk-live"), "{}", human.stdout);
}

#[test]
fn without_a_registry_the_builtin_local_comfyui_is_listed() {
    let env = TestEnv::new();
    let list = env.run(&["providers", "list", "--json"]).ok().json();
    assert_eq!(list[0]["id"], "local");
    assert_eq!(list[0]["base_url"], "http://127.0.0.1:8188");
}

#[test]
fn quota_answers_from_the_quota_url_or_says_unsupported() {
    let s = setup();
    let q = s.env.run(&["providers", "quota", "fast", "--json"]).ok().json();
    assert_eq!(q["ok"], true);
    assert_eq!(q["provider_id"], "fast");
    assert_eq!(q["quota"]["credits"], 12.5);
    assert_eq!(q["quota"]["api_token"], "**********", "secrets in the quota answer are masked too");
    assert!(q["endpoint"].as_str().unwrap().ends_with("/quota"));
    assert!(q["latency_ms"].is_u64());
    let none = s.env.run(&["providers", "quota", "slow", "--json"]).code(1).json();
    assert_eq!(none, json!({"ok": false, "error": "quota inspection not supported", "provider_id": "slow"}));
    let missing = s.env.run(&["providers", "quota", "nope"]).code(1);
    assert!(missing.stderr.contains("provider not found"), "{}", missing.stderr);
}

#[test]
fn a_malformed_registry_is_an_error_naming_the_field() {
    let env = TestEnv::new();
    env.write("config/settings/providers.json", r#"{"providers": [{"id": "x", "base_url": "file:///etc"}]}"#);
    let r = env.run(&["providers", "list"]).code(2);
    assert!(r.stderr.contains("providers.json") && r.stderr.contains("providers[0].base_url"), "{}", r.stderr);
}
