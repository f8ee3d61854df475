//! The telemetry, crash, asset, webhook and provider route groups against the real binary: shapes,
//! status codes, bad input (malformed JSON, wrong types, limits out of range, unknown ids) and the bearer
//! token on state-changing routes. The full answers are pinned by the golden test (`http_golden`); these
//! tests check behaviour the golden scenario does not reach.

use serde_json::{json, Value};

use crate::http::{Resp, Served};
use crate::support::TestEnv;

const FLAG_ON: &str = r#"{"features": {"enable_observability": true, "enable_crash_uploader": true}}"#;

fn env_with(config: &str) -> TestEnv {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", config);
    env
}

fn post(srv: &Served, path: &str, body: Value) -> Resp {
    srv.post_json(path, &body, &[])
}

#[test]
fn telemetry_answers_200_without_consent_and_records_nothing() {
    let env = env_with(FLAG_ON);
    let srv = Served::start(&env);
    for path in ["health", "settings", "summary", "events", "features", "hooks", "crashes"] {
        let r = srv.get(&format!("/api/telemetry/{path}"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["feature_flag"], "enable_observability", "{path}");
    }
    let r = post(&srv, "/api/telemetry/features", json!({"feature": "f"}));
    assert_eq!(
        r.json(),
        json!({"ok": true, "recorded": false, "telemetry_active": false, "feature_flag": "enable_observability"})
    );
    let r = post(&srv, "/api/telemetry/events", json!({"event": "e", "payload": {"a": 1}}));
    assert_eq!(r.json()["recorded"], false);
    let v = srv.get("/api/telemetry/diagnostics").envelope(403, "http_403");
    assert_eq!(v["message"], "Diagnostics export requires opt-in (see /api/telemetry/settings).");
    assert!(!env.path("logs/telemetry/usage.json").exists());
    assert!(!env.path("logs/diagnostics").exists());
}

#[test]
fn the_feature_flag_off_keeps_everything_inactive_even_with_consent() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let r = post(&srv, "/api/telemetry/opt_in", json!({"diagnostics": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["settings"]["telemetry_opt_in"], true);
    assert_eq!((v["telemetry_active"].clone(), v["diagnostics_active"].clone()), (json!(false), json!(false)));
    assert_eq!(post(&srv, "/api/telemetry/events", json!({"event": "e"})).json()["recorded"], false);
    srv.get("/api/telemetry/diagnostics").envelope(403, "http_403");
}

#[test]
fn consent_routes_write_the_config_and_validate_their_bodies() {
    let env = env_with(r#"{"features": {"enable_observability": true}, "studio": {"name": "桜"}}"#);
    let srv = Served::start(&env);
    // No body at all: the defaults (everything false but telemetry_opt_in).
    let r = srv.request("POST", "/api/telemetry/opt_in", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["settings"],
        json!({"telemetry_opt_in": true, "crash_opt_in": false, "diagnostics_opt_in": false, "dry_run": false})
    );
    let cfg: Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    assert_eq!(cfg["studio"]["name"], "桜");
    assert_eq!(cfg["telemetry"]["telemetry_opt_in"], true);

    let r = post(&srv, "/api/telemetry/settings", json!({"diagnostics_opt_in": true, "dry_run": null}));
    assert_eq!(r.json()["settings"]["diagnostics_opt_in"], true);
    assert_eq!(r.json()["settings"]["dry_run"], false);
    assert_eq!(r.json()["health"]["ok"], true);
    // An empty body changes nothing.
    let r = srv.request("POST", "/api/telemetry/settings", &[], b"");
    assert_eq!(r.json()["settings"]["diagnostics_opt_in"], true);

    let v = post(&srv, "/api/telemetry/settings", json!({"dry_run": "yes"})).envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "dry_run");
    let v = post(&srv, "/api/telemetry/opt_in", json!({"diagnostics": 1})).envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "diagnostics");
    post(&srv, "/api/telemetry/opt_in", json!([true])).envelope(422, "validation_error");
    let ct = [("Content-Type", "application/json")];
    srv.request("POST", "/api/telemetry/settings", &ct, b"{\"dry_run\": tru").envelope(400, "http_400");
    srv.request("POST", "/api/telemetry/settings", &[("Content-Type", "text/plain")], b"{}").envelope(415, "http_415");
    // None of the refused requests touched the consent.
    let cfg: Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    assert_eq!(cfg["telemetry"]["dry_run"], false);
    assert_eq!(cfg["telemetry"]["diagnostics_opt_in"], true);
}

#[test]
fn consent_changed_by_another_process_is_seen_by_the_server() {
    let env = env_with(FLAG_ON);
    let srv = Served::start(&env);
    assert_eq!(srv.get("/api/telemetry/health").json()["telemetry_active"], false);
    env.run(&["telemetry", "opt-in", "--diagnostics"]).ok();
    let h = srv.get("/api/telemetry/health").json();
    assert_eq!((h["telemetry_active"].clone(), h["diagnostics_active"].clone()), (json!(true), json!(true)));
    assert_eq!(post(&srv, "/api/telemetry/features", json!({"feature": "f"})).json()["recorded"], true);
    assert_eq!(srv.get("/api/telemetry/diagnostics").status, 200);
    env.run(&["telemetry", "opt-out"]).ok();
    assert_eq!(post(&srv, "/api/telemetry/features", json!({"feature": "f"})).json()["recorded"], false);
    // A config file broken by hand: the server keeps the last good settings and keeps answering.
    env.write("config/comfyvn.json", "{broken");
    let r = srv.get("/api/telemetry/health");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["telemetry_active"], false);
}

#[test]
fn recording_validates_names_payloads_and_the_events_limit() {
    let env = env_with(FLAG_ON);
    let srv = Served::start(&env);
    post(&srv, "/api/telemetry/opt_in", json!({}));
    for (body, field) in [
        (json!({}), "event"),
        (json!({"event": "  "}), "event"),
        (json!({"event": 5}), "event"),
        (json!({"event": "e", "payload": "text"}), "payload"),
        (json!({"event": "e", "category": ["c"]}), "category"),
    ] {
        let v = post(&srv, "/api/telemetry/events", body.clone()).envelope(422, "validation_error");
        assert_eq!(v["details"][0]["field"], field, "{body}");
    }
    for (body, field) in [(json!({"feature": ""}), "feature"), (json!({"feature": "f", "variant": 3}), "variant")] {
        let v = post(&srv, "/api/telemetry/features", body.clone()).envelope(422, "validation_error");
        assert_eq!(v["details"][0]["field"], field, "{body}");
    }
    // A null payload is an empty one.
    assert_eq!(post(&srv, "/api/telemetry/events", json!({"event": "e", "payload": null})).json()["recorded"], true);
    for i in 0..24 {
        post(&srv, "/api/telemetry/events", json!({"event": format!("E{i}")}));
    }
    let names = |r: Resp| -> Vec<String> {
        r.json()["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
    };
    let default = names(srv.get("/api/telemetry/events"));
    assert_eq!(default.len(), 20);
    assert_eq!((default[0].as_str(), default[19].as_str()), ("e4", "e23"));
    assert_eq!(names(srv.get("/api/telemetry/events?limit=200")).len(), 25);
    assert_eq!(names(srv.get("/api/telemetry/events?limit=1")), ["e23"]);
    for bad in ["0", "201", "-1", "ten", "1.5"] {
        let v = srv.get(&format!("/api/telemetry/events?limit={bad}")).envelope(422, "validation_error");
        assert_eq!(v["details"][0]["field"], "limit", "{bad}");
    }
    let s = srv.get("/api/telemetry/summary").json();
    assert_eq!(s["events"], json!([]));
    assert_eq!(srv.get("/api/telemetry/summary?include_events=1").json()["events"].as_array().unwrap().len(), 25);
    let v = srv.get("/api/telemetry/summary?events=maybe").envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "events");
}

#[test]
fn emitted_hooks_are_sampled_by_telemetry() {
    let env = env_with(FLAG_ON);
    let srv = Served::start(&env);
    post(&srv, "/api/modder/hooks/emit", json!({"event": "on_scene_enter", "payload": {"scene_id": "s0"}}));
    assert_eq!(srv.get("/api/telemetry/hooks").json()["hooks"], json!({}));
    post(&srv, "/api/telemetry/opt_in", json!({}));
    for i in 0..7 {
        post(
            &srv,
            "/api/modder/hooks/emit",
            json!({"event": "on_scene_enter", "payload": {"scene_id": format!("s{i}"), "n": i}}),
        );
    }
    let hooks = srv.get("/api/telemetry/hooks").json()["hooks"].clone();
    let stat = &hooks["on_scene_enter"];
    assert_eq!(stat["total"], 7);
    let samples = stat["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    assert_eq!(samples[4]["payload"]["n"], 6);
    // `scene_id` is sensitive: hashed, never stored as given.
    assert_ne!(samples[4]["payload"]["scene_id"], "s6");
    assert_eq!(samples[4]["payload"]["scene_id"].as_str().unwrap().len(), 32);
}

#[test]
fn diagnostics_download_is_the_written_bundle() {
    let env = env_with(FLAG_ON);
    let srv = Served::start(&env);
    post(&srv, "/api/telemetry/opt_in", json!({"diagnostics": true}));
    let r = srv.get("/api/telemetry/diagnostics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let cd = r.header("content-disposition").unwrap();
    let name = cd.strip_prefix("attachment; filename=\"").and_then(|s| s.strip_suffix('"')).unwrap();
    assert!(name.starts_with("comfyvn-diagnostics-") && name.ends_with(".zip"), "{name}");
    let on_disk = std::fs::read(env.path("logs/diagnostics").join(name)).unwrap();
    assert_eq!(on_disk, r.body);
    assert!(r.body.starts_with(b"PK\x03\x04"));
}

#[test]
fn with_a_token_state_changing_telemetry_routes_need_the_bearer() {
    let env = env_with(FLAG_ON);
    let token = "t0ken-for-tests";
    let srv = Served::start_with(&env, &[], &[("COMFYVN_API_TOKEN", token)]);
    let before = env.read("config/comfyvn.json");
    for (path, body) in [
        ("/api/telemetry/opt_in", json!({"diagnostics": true})),
        ("/api/telemetry/settings", json!({"telemetry_opt_in": true})),
        ("/api/telemetry/features", json!({"feature": "f"})),
        ("/api/telemetry/events", json!({"event": "e"})),
    ] {
        srv.post_json(path, &body, &[]).envelope(401, "http_401");
        srv.post_json(path, &body, &[("Authorization", "Bearer nope")]).envelope(403, "http_403");
    }
    assert_eq!(env.read("config/comfyvn.json"), before);
    // The diagnostics export writes a bundle and hands out data: it needs the token too.
    srv.get("/api/telemetry/diagnostics").envelope(401, "http_401");
    let auth = format!("Bearer {token}");
    let r = srv.post_json("/api/telemetry/opt_in", &json!({"diagnostics": true}), &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = srv.request("GET", "/api/telemetry/diagnostics", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Reads stay open.
    for path in ["/api/telemetry/health", "/api/telemetry/summary", "/api/crashes"] {
        assert_eq!(srv.get(path).status, 200, "{path}");
    }
}

#[test]
fn crashes_are_listed_newest_first_and_fetched_by_id() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    assert_eq!(srv.get("/api/crashes").json(), json!({"ok": true, "crashes": [], "total": 0, "skipped": []}));
    let dump = |id: &str, ts: &str, msg: &str| {
        let doc = json!({"schema": 1, "event_id": id, "timestamp": ts, "exc_type": "RuntimeError", "message": msg,
            "fingerprint": "f", "context": {}});
        env.write(&format!("logs/crash/crash-20260101_000000-{id}.json"), doc.to_string());
    };
    dump("aaaaaaa1", "2026-01-01T00:00:01.000000Z", "older");
    dump("bbbbbbb2", "2026-01-01T00:00:03.000000Z", "newest");
    dump("ccccccc3", "2026-01-01T00:00:02.000000Z", "middle");
    env.write("logs/crash/crash-20260101_000000-broken00.json", "{not json");
    let v = srv.get("/api/crashes").json();
    let ids: Vec<&str> = v["crashes"].as_array().unwrap().iter().map(|c| c["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bbbbbbb2", "ccccccc3", "aaaaaaa1"]);
    assert_eq!(v["total"], 3);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    assert!(v["skipped"][0].as_str().unwrap().contains("broken00"), "{v}");
    let keys: Vec<&str> = v["crashes"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["event_id", "timestamp", "exc_type", "message", "fingerprint", "path"]);
    assert_eq!(srv.get("/api/crashes?limit=1").json()["crashes"].as_array().unwrap().len(), 1);
    srv.get("/api/crashes?limit=0").envelope(422, "validation_error");
    srv.get("/api/crashes?limit=x").envelope(422, "validation_error");

    let one = srv.get("/api/crashes/ccccccc3").json();
    assert_eq!((one["ok"].clone(), one["crash"]["message"].clone()), (json!(true), json!("middle")));
    // The file stem answers too; the trailing slash form as well.
    assert_eq!(srv.get("/api/crashes/crash-20260101_000000-aaaaaaa1/").json()["crash"]["event_id"], "aaaaaaa1");
    for missing in ["deadbeef", "..", "%2e%2e%2fconfig", "broken00"] {
        let v = srv.get(&format!("/api/crashes/{missing}")).envelope(404, "http_404");
        assert_eq!(v["message"], "Crash dump not found.", "{missing}");
    }
    srv.request("DELETE", "/api/crashes/aaaaaaa1", &[], b"").envelope(405, "http_405");
}

/// A one-shot HTTP receiver on a free loopback port: answers each request `200 {}` and hands over the
/// request head and body.
fn receiver() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut s = r.into_inner();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            if tx.send((head, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn a_webhook_registered_through_the_api_is_delivered_signed() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let (url, rx) = receiver();
    let hook = json!({"event": "on_scene_enter", "url": format!("{url}/hook"), "secret": "s3cr3t"});
    let r = post(&srv, "/api/modder/hooks/webhooks", hook.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["webhook"]["secret"], "******");
    // The file keeps the secret; listings never show it.
    assert!(env.read("data/webhooks.json").contains("s3cr3t"));
    assert!(!srv.get("/api/modder/hooks").text().contains("s3cr3t"));
    post(&srv, "/api/modder/hooks/emit", json!({"event": "on_scene_enter", "payload": {"scene_id": "intro"}}));
    let (head, body) = rx.recv_timeout(std::time::Duration::from_secs(15)).expect("a delivery");
    assert!(head.starts_with("POST /hook "), "{head}");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((sent["event"].clone(), sent["data"]["scene_id"].clone()), (json!("on_scene_enter"), json!("intro")));
    let sig = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Comfy-Signature: ").or_else(|| l.strip_prefix("x-comfy-signature: ")))
        .expect("signature header");
    assert_eq!(sig.trim().len(), 64);
    let r = srv.request(
        "DELETE",
        "/api/modder/hooks/webhooks",
        &[("Content-Type", "application/json")],
        hook.to_string().as_bytes(),
    );
    assert_eq!(r.json(), json!({"ok": true, "removed": true}));
    assert!(!env.read("data/webhooks.json").contains("s3cr3t"));
}

#[test]
fn webhook_registration_refuses_bad_bodies() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let ct = [("Content-Type", "application/json")];
    srv.request("POST", "/api/modder/hooks/webhooks", &ct, b"{\"event\": ").envelope(400, "http_400");
    srv.request("POST", "/api/modder/hooks/webhooks", &[], b"").envelope(422, "validation_error");
    post(&srv, "/api/modder/hooks/webhooks", json!(["x"])).envelope(422, "validation_error");
    let v = post(&srv, "/api/modder/hooks/webhooks", json!({"event": "on_nothing", "url": "http://x/"}))
        .envelope(400, "http_400");
    assert_eq!(v["message"], "unsupported event");
    let v = post(&srv, "/api/modder/hooks/webhooks", json!({"event": "on_scene_enter", "url": "  "}))
        .envelope(400, "http_400");
    assert_eq!(v["message"], "webhook url required");
    post(&srv, "/api/modder/hooks/webhooks", json!({"event": 5, "url": "http://x/"})).envelope(400, "http_400");
    post(&srv, "/api/modder/hooks/webhooks", json!({"event": "on_scene_enter", "url": "file:///etc/passwd"}))
        .envelope(400, "http_400");
    let v = srv
        .request("DELETE", "/api/modder/hooks/webhooks", &ct, br#"{"event": "on_scene_enter"}"#)
        .envelope(400, "http_400");
    assert_eq!(v["message"], "webhook url required");
    assert!(!env.path("data/webhooks.json").exists());
}

#[test]
fn providers_list_masked_probe_and_quota() {
    let env = TestEnv::new();
    let (up, rx) = receiver();
    // A port that was free a moment ago: nothing listens there.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    env.write(
        "config/settings/providers.json",
        json!({"schema": 1, "providers": [
            {"id": "up", "name": "Up", "kind": "comfyui", "base_url": up, "health_url": format!("{up}/system_stats"),
             "quota_url": format!("{up}/quota"), "config": {"api_token": "tok-123"}},
            {"id": "down", "name": "Down", "kind": "comfyui", "base_url": down}
        ]})
        .to_string(),
    );
    let srv = Served::start(&env);
    let list = srv.get("/api/providers").json();
    assert_eq!(list["providers"][0]["config"]["api_token"], "*******");
    assert!(!srv.get("/api/providers").text().contains("tok-123"));

    let all = srv.get("/api/providers/health").json();
    assert_eq!(all["ok"], true, "{all}");
    let results = all["results"].as_array().unwrap();
    let by_id = |id: &str| results.iter().find(|r| r["provider_id"] == id).unwrap().clone();
    assert_eq!((by_id("up")["ok"].clone(), by_id("up")["status_code"].clone()), (json!(true), json!(200)));
    assert_eq!((by_id("down")["ok"].clone(), by_id("down")["status"].clone()), (json!(false), json!("down")));
    let (head, _) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    assert!(head.starts_with("GET /system_stats "), "{head}");

    let one = srv.get("/api/providers/health?id=down").json();
    assert_eq!((one["ok"].clone(), one["status"]["provider_id"].clone()), (json!(false), json!("down")));
    srv.get("/api/providers/health?id=nope").envelope(404, "http_404");
    let q = srv.get("/api/providers/quota?id=up").json();
    assert_eq!((q["ok"].clone(), q["quota"].clone(), q["provider_id"].clone()), (json!(true), json!({}), json!("up")));
    let q = srv.get("/api/providers/quota?id=down").json();
    assert_eq!(q, json!({"ok": false, "error": "quota inspection not supported", "provider_id": "down"}));
    srv.get("/api/providers/quota").envelope(422, "validation_error");
    srv.get("/api/providers/quota?id=nope").envelope(404, "http_404");
}

#[test]
fn with_a_token_webhook_registration_needs_the_bearer() {
    let env = TestEnv::new();
    let srv = Served::start_with(&env, &[], &[("COMFYVN_API_TOKEN", "tok")]);
    let hook = json!({"event": "on_scene_enter", "url": "http://127.0.0.1:9/h"});
    srv.post_json("/api/modder/hooks/webhooks", &hook, &[]).envelope(401, "http_401");
    let ct = ("Content-Type", "application/json");
    srv.request("DELETE", "/api/modder/hooks/webhooks", &[ct], hook.to_string().as_bytes()).envelope(401, "http_401");
    assert!(!env.path("data/webhooks.json").exists());
    let ok = srv.post_json("/api/modder/hooks/webhooks", &hook, &[("Authorization", "Bearer tok")]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    for path in ["/api/providers", "/api/modder/hooks"] {
        assert_eq!(srv.get(path).status, 200, "{path}");
    }
}
