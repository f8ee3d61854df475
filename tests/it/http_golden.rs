//! Golden contract tests: one fixed scenario driven through the real server (consent, telemetry
//! recording, hook emits and history, crashes, the diagnostics zip, error envelopes, asset register,
//! upload, listing with filters, download and delete, providers, webhook registration), each response
//! normalised (timestamps, ids, paths, ports, versions → placeholders) and compared with the checked-in
//! `tests/golden/<section>.json`. Existing scripts parse these answers with `jq`, so any change in a key,
//! its order, a status code or a content type shows up here as a diff.
//!
//! After an intended change, regenerate and review the diff:
//!
//! ```text
//! COMFYVN_UPDATE_GOLDEN=1 cargo test --test it http_golden
//! ```

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::http::{Resp, Served};
use crate::support::TestEnv;

/// The anonymiser secret of DESIGN §4's test vector: with it, anonymous ids and payload hashes are the
/// same on every run, so they stay in the golden files as real values.
const FIXED_SECRET: &str = "+6NTLtoMohNPd6aPkTkAfRxpjmEcKh7SzpspPLxuf58=";

const REGENERATE: &str = "COMFYVN_UPDATE_GOLDEN=1 cargo test --test it http_golden";

/// Keys whose values are times.
const TIME_KEYS: &[&str] = &[
    "ts",
    "last_ts",
    "timestamp",
    "created_at",
    "updated_at",
    "generated_at",
    "settings_updated_at",
    "last_settings_update",
    "first_seen",
    "last_seen",
];

/// Replaces what differs between runs and machines with placeholders.
struct Normaliser {
    /// `(text, placeholder)`, longest text first.
    literals: Vec<(String, String)>,
}

impl Normaliser {
    fn new(env: &TestEnv, port: u16) -> Normaliser {
        let mut n = Normaliser { literals: Vec::new() };
        n.learn(&env.root().display().to_string(), "<root>");
        if let Ok(c) = env.root().canonicalize() {
            n.learn(&c.display().to_string(), "<root>");
        }
        let bin = crate::support::bin();
        n.learn(&bin.display().to_string(), "<bin>");
        n.learn(&format!("127.0.0.1:{port}"), "127.0.0.1:<port>");
        n
    }

    /// Replace `text` wherever it appears (e.g. an id learned from an earlier answer).
    fn learn(&mut self, text: &str, placeholder: &str) {
        if !text.is_empty() && !self.literals.iter().any(|(t, _)| t == text) {
            self.literals.push((text.to_string(), placeholder.to_string()));
            self.literals.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        }
    }

    fn value(&self, key: Option<&str>, v: Value) -> Value {
        if let Some(k) = key {
            let placeholder = match k {
                _ if TIME_KEYS.contains(&k) && !v.is_null() => Some("<ts>"),
                "pid" => Some("<pid>"),
                "os" => Some("<os>"),
                "arch" => Some("<arch>"),
                "app_version" | "version" if v.is_string() => Some("<version>"),
                "report" => Some("<hash>"),
                "error_id" => Some("<error_id>"),
                "request_id" => Some("<request_id>"),
                "duration_ms" | "latency_ms" => Some("<ms>"),
                _ => None,
            };
            if let Some(p) = placeholder {
                return Value::String(p.to_string());
            }
        }
        match v {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|i| self.value(None, i)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = self.value(Some(&k), v);
                        (self.text(&k), v)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    fn text(&self, s: &str) -> String {
        if is_iso_time(s) {
            return "<ts>".into();
        }
        let mut out = s.to_string();
        for (t, p) in &self.literals {
            if out.contains(t.as_str()) {
                out = out.replace(t.as_str(), p);
            }
        }
        replace_stamps(&out)
    }
}

/// `2026-11-28T04:17:39.716801Z` (the whole string).
fn is_iso_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
}

/// `YYYYmmdd_HHMMSS` file stamps → `<stamp>`.
fn replace_stamps(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let window = b.get(i..i + 15);
        let is_stamp = window.is_some_and(|w| {
            w[..8].iter().all(u8::is_ascii_digit) && w[8] == b'_' && w[9..].iter().all(u8::is_ascii_digit)
        });
        if is_stamp {
            out.push_str("<stamp>");
            i += 15;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// One golden file: the recorded steps of one section of the scenario.
struct Section {
    name: &'static str,
    steps: Vec<Value>,
}

/// The scenario's driver: sends requests, records normalised exchanges per section, compares at the end.
struct Scenario<'a> {
    srv: &'a Served,
    norm: Normaliser,
    sections: Vec<Section>,
    count: usize,
}

impl<'a> Scenario<'a> {
    fn new(env: &TestEnv, srv: &'a Served) -> Scenario<'a> {
        Scenario { srv, norm: Normaliser::new(env, srv.port()), sections: Vec::new(), count: 0 }
    }

    fn section(&mut self, name: &'static str) {
        self.sections.push(Section { name, steps: Vec::new() });
    }

    /// Send a request and record it; `body` is sent as JSON when given.
    fn call(&mut self, step: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(step, method, path, body, |v| v)
    }

    /// As [`Scenario::call`], recording `project(body)` instead of the whole JSON body.
    fn call_with(
        &mut self,
        step: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        project: impl FnOnce(Value) -> Value,
    ) -> Resp {
        self.count += 1;
        let rid = format!("golden-{}", self.count);
        let mut headers = vec![("X-Request-ID", rid.as_str())];
        let bytes = match &body {
            Some(b) => {
                headers.push(("Content-Type", "application/json"));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let resp = self.srv.request(method, path, &headers, &bytes);
        assert_eq!(resp.header("x-request-id"), Some(rid.as_str()), "{step}: request id not echoed");
        let recorded_body = if resp.header("content-type") == Some("application/json") {
            project(resp.json())
        } else {
            json!({"bytes": "<binary>"})
        };
        let mut request = json!({"method": method, "path": path});
        if let Some(b) = body {
            request["body"] = b;
        }
        let mut response = json!({"status": resp.status, "content_type": resp.header("content-type")});
        for h in ["content-disposition", "allow", "www-authenticate"] {
            if let Some(v) = resp.header(h) {
                response[h] = json!(v);
            }
        }
        response["body"] = recorded_body;
        self.record(json!({"step": step, "request": request, "response": response}));
        resp
    }

    /// Record something observed outside a request (e.g. the contents of a downloaded zip).
    fn note(&mut self, step: &str, observed: Value) {
        self.record(json!({"step": step, "observed": observed}));
    }

    /// Kept raw: normalised in [`Scenario::finish`], once every id learned later is known.
    fn record(&mut self, raw: Value) {
        self.sections.last_mut().expect("a section is open").steps.push(raw);
    }

    /// Compare every section with its golden file (or rewrite them with COMFYVN_UPDATE_GOLDEN=1).
    fn finish(self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let update = std::env::var("COMFYVN_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
        let mut problems = Vec::new();
        for section in self.sections {
            let doc = json!({
                "schema": 1,
                "section": section.name,
                "regenerate": REGENERATE,
                "steps": section.steps.into_iter().map(|v| self.norm.value(None, v)).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            let file = dir.join(format!("{}.json", section.name));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&file, &text).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&file).unwrap_or_default();
            if expected != text {
                let actual_file = actual_dir().join(format!("{}.json", section.name));
                std::fs::write(&actual_file, &text).unwrap();
                problems.push(describe_mismatch(&file, &actual_file, &expected, &doc));
            }
        }
        assert!(problems.is_empty(), "{}\n\nIf the change is intended: {REGENERATE}", problems.join("\n\n"));
    }
}

fn actual_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-actual");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Which steps differ, and where inside them.
fn describe_mismatch(golden: &Path, actual_file: &Path, expected: &str, actual: &Value) -> String {
    let mut out = format!("{} differs (actual answers in {}):", golden.display(), actual_file.display());
    let Ok(expected) = serde_json::from_str::<Value>(expected) else {
        return format!("{out}\n  the golden file is missing or not JSON");
    };
    let mut diffs = Vec::new();
    diff("", &expected, actual, &mut diffs);
    for d in diffs.iter().take(15) {
        out.push_str(&format!("\n  {d}"));
    }
    if diffs.is_empty() {
        out.push_str("\n  same values, different key order or formatting");
    } else if diffs.len() > 15 {
        out.push_str(&format!("\n  … and {} more", diffs.len() - 15));
    }
    out
}

fn diff(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: Vec<&String> = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))).collect();
            for k in keys {
                let here = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&here, p, q, out),
                    (Some(p), None) => out.push(format!("{here}: expected {p}, missing now")),
                    (None, Some(q)) => out.push(format!("{here}: new, {q}")),
                    (None, None) => {}
                }
            }
            let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
            if kx != ky && kx.len() == ky.len() {
                out.push(format!("{at}: key order {kx:?} → {ky:?}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let here = format!("{at}/{i}");
                match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => diff(&here, p, q, out),
                    (Some(p), None) => out.push(format!("{here}: expected {p}, missing now")),
                    (None, Some(q)) => out.push(format!("{here}: new, {q}")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{at}: expected {a}, now {b}")),
        _ => {}
    }
}

/// Keep only these keys of an object (in the given order).
fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            m.insert((*k).to_string(), x.clone());
        }
    }
    Value::Object(m)
}

#[test]
fn http_golden_scenario() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"features": {"enable_observability": true, "enable_crash_uploader": true}}"#);
    env.write("config/telemetry/anonymizer.json", format!(r#"{{"schema": 1, "secret": "{FIXED_SECRET}"}}"#));
    env.write(
        "config/settings/providers.json",
        r#"{"schema": 1, "providers": [
            {"id": "local", "name": "Local ComfyUI", "kind": "comfyui", "base_url": "http://127.0.0.1:9",
             "active": true, "config": {}},
            {"id": "cloud", "name": "Cloud GPU", "kind": "runpod", "base_url": "https://api.example/v2",
             "quota_url": "https://api.example/v2/credits", "active": false,
             "config": {"api_key": "sk-live-123456", "region": "eu"}}
        ]}"#,
    );
    let srv = Served::start(&env);
    let mut s = Scenario::new(&env, &srv);

    s.section("telemetry");
    s.call("health before consent", "GET", "/api/telemetry/health", None);
    s.call(
        "feature without consent is not recorded",
        "POST",
        "/api/telemetry/features",
        Some(json!({"feature": "toolkit.launch"})),
    );
    s.call("diagnostics without consent", "GET", "/api/telemetry/diagnostics", None);
    s.call(
        "opt in",
        "POST",
        "/api/telemetry/opt_in",
        Some(json!({"crash": true, "diagnostics": true, "dry_run": true})),
    );
    s.call("settings", "GET", "/api/telemetry/settings", None);
    s.call(
        "settings: dry_run off, others unchanged",
        "POST",
        "/api/telemetry/settings",
        Some(json!({"dry_run": false, "crash_opt_in": null})),
    );
    for (feature, variant) in
        [("toolkit.launch", Some("cli")), ("toolkit.launch", Some("cli")), ("assets.upload", None)]
    {
        let mut body = json!({"feature": feature});
        if let Some(v) = variant {
            body["variant"] = json!(v);
        }
        s.call("record a feature", "POST", "/api/telemetry/features", Some(body));
    }
    s.call(
        "record an event (name lower-cased, sensitive keys hashed)",
        "POST",
        "/api/telemetry/events",
        Some(json!({"event": "Modder.Asset.Packaged", "payload": {"uid": "abc123", "path": "mods/hero.png", "count": 2}})),
    );
    s.call(
        "record an event with a category",
        "POST",
        "/api/telemetry/events",
        Some(json!({"event": "scene.render", "category": "render", "payload": {"scene_id": "intro", "frames": 24}})),
    );
    s.call("the newest event", "GET", "/api/telemetry/events?limit=1", None);
    s.call("events, oldest first", "GET", "/api/telemetry/events", None);
    s.call("feature counters", "GET", "/api/telemetry/features", None);
    s.call("events: limit out of range", "GET", "/api/telemetry/events?limit=201", None);
    s.call(
        "events: payload not an object",
        "POST",
        "/api/telemetry/events",
        Some(json!({"event": "x", "payload": [1]})),
    );
    s.call("features: feature missing", "POST", "/api/telemetry/features", Some(json!({"variant": "a"})));
    s.call("opt_in: wrong type", "POST", "/api/telemetry/opt_in", Some(json!({"crash": "yes"})));
    s.call("health after consent", "GET", "/api/telemetry/health", None);

    s.section("hooks");
    s.call(
        "emit",
        "POST",
        "/api/modder/hooks/emit",
        Some(json!({"event": "on_scene_enter", "payload": {"scene_id": "intro", "pov": "hero"}})),
    );
    s.call(
        "emit through the /test alias",
        "POST",
        "/api/modder/hooks/test",
        Some(json!({"event": "on_choice_render", "payload": {"choices": ["left", "right"]}})),
    );
    s.call("emit an unknown event", "POST", "/api/modder/hooks/emit", Some(json!({"event": "on_nothing"})));
    s.call("history", "GET", "/api/modder/hooks/history?limit=5", None);
    s.call_with("catalogue", "GET", "/api/modder/hooks", None, |mut v| {
        // The 63 specs are pinned by the hook tests: keep their count and the first; the rest whole.
        let hooks = v["hooks"].as_array().cloned().unwrap_or_default();
        v["hooks"] = json!({"count": hooks.len(), "first": hooks.first()});
        v
    });
    s.call("telemetry samples the emitted hooks", "GET", "/api/telemetry/hooks", None);

    s.section("crashes");
    s.call("no crashes yet", "GET", "/api/crashes", None);
    let run = env.run(&[
        "crash",
        "capture",
        "--message",
        "renderer failed: out of memory",
        "--type",
        "RuntimeError",
        "--context",
        "scene=intro",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed = s.call("one crash", "GET", "/api/crashes", None).json();
    let id = listed["crashes"][0]["event_id"].as_str().expect("an event id").to_string();
    s.norm.learn(&id, "<event_id>");
    s.call_with("the dump", "GET", &format!("/api/crashes/{id}"), None, |v| {
        let crash = &v["crash"];
        let keys: Vec<&String> = crash.as_object().map(|m| m.keys().collect()).unwrap_or_default();
        json!({
            "ok": v["ok"],
            "crash_keys": keys,
            "crash": pick(crash, &["schema", "event_id", "timestamp", "exc_type", "message", "context", "attachments"]),
        })
    });
    s.call("unknown dump", "GET", "/api/crashes/deadbeef", None);
    s.call("crash digests in telemetry", "GET", "/api/telemetry/crashes", None);
    s.call("summary with events", "GET", "/api/telemetry/summary?events=true", None);

    s.section("diagnostics");
    let zip = s.call("diagnostics bundle", "GET", "/api/telemetry/diagnostics", None);
    assert_eq!(zip.status, 200, "{}", zip.text());
    let file = env.path("downloaded.zip");
    std::fs::write(&file, &zip.body).unwrap();
    let entries = comfyvn_obs::telemetry::bundle::read_entries(&file).expect("a readable zip");
    let mut docs = Map::new();
    for (name, bytes) in entries {
        docs.insert(name, serde_json::from_slice(&bytes).expect("JSON entry"));
    }
    s.note("bundle entries", Value::Object(docs));

    s.section("errors");
    s.call("unknown route", "GET", "/api/nothing", None);
    s.call("wrong method", "DELETE", "/api/telemetry/health", None);
    s.call("no body", "POST", "/api/telemetry/events", None);
    let r = s.srv.request(
        "POST",
        "/api/telemetry/events",
        &[("X-Request-ID", "golden-raw"), ("Content-Type", "application/json")],
        b"{\"event\": ",
    );
    s.note("truncated JSON body", json!({"status": r.status, "body": r.json()}));
    let r = s.srv.request(
        "POST",
        "/api/telemetry/events",
        &[("X-Request-ID", "golden-raw"), ("Content-Type", "text/plain")],
        b"{}",
    );
    s.note("not JSON content type", json!({"status": r.status, "body": r.json()}));

    s.section("assets");
    let hero = env.write("incoming/hero.png", "golden hero bytes");
    s.call(
        "register (copied into the assets root)",
        "POST",
        "/assets/register",
        Some(json!({"path": hero, "asset_type": "characters",
            "metadata": {"tags": ["Hero", "main"], "license": "CC-BY-4.0", "mood": "brave"}})),
    );
    let form = crate::http_assets::multipart(&[
        ("file", Some("sky.png"), b"golden sky bytes"),
        ("asset_type", None, b"backgrounds"),
        ("dest_path", None, b"backgrounds/day/sky.png"),
        ("metadata", None, br#"{"tags": ["sky", "Main"], "license": "CC0-1.0", "provenance": {"source": "studio"}}"#),
    ]);
    let r = crate::http_assets::upload(s.srv, &form, &[("X-Request-ID", "golden-upload")]);
    s.note("upload (multipart)", json!({"status": r.status, "body": r.json()}));
    let sky = r.json()["asset"]["uid"].as_str().unwrap_or_default().to_string();
    let r = crate::http_assets::upload(
        s.srv,
        &crate::http_assets::multipart(&[("file", Some("x.png"), b"x"), ("metadata", None, b"{oops")]),
        &[("X-Request-ID", "golden-upload")],
    );
    s.note("upload with bad metadata JSON", json!({"status": r.status, "body": r.json()}));
    s.call("list", "GET", "/assets", None);
    s.call("list with tags (all of, case-insensitive)", "GET", "/assets/?tags=MAIN,sky", None);
    s.call("list by license", "GET", "/assets?license=cc-by-4.0", None);
    s.call("list by type and q, paged", "GET", "/assets?type=characters&q=HERO&limit=1&offset=0", None);
    s.call("limit out of range", "GET", "/assets?limit=1001", None);
    s.call("detail", "GET", &format!("/assets/{sky}"), None);
    s.call("sidecar", "GET", &format!("/assets/{sky}/sidecar"), None);
    let dl = s.call("download", "GET", &format!("/assets/{sky}/download"), None);
    s.note("downloaded bytes", json!(String::from_utf8_lossy(&dl.body)));
    s.call("unknown uid", "GET", "/assets/0000000000000000", None);
    s.call(
        "register with a traversing dest_path",
        "POST",
        "/assets/register",
        Some(json!({"path": hero, "dest_path": "../outside.png"})),
    );
    s.call(
        "register a missing file",
        "POST",
        "/assets/register",
        Some(json!({"path": env.path("incoming/missing.png")})),
    );
    s.call("delete", "DELETE", &format!("/assets/{sky}"), None);
    s.call("list after the delete", "GET", "/assets", None);
    s.call("the hook events of these writes", "GET", "/api/modder/hooks/history?limit=7", None);

    s.section("providers");
    s.call("provider registry, secrets masked", "GET", "/api/providers", None);
    s.call("quota of a provider without quota_url", "GET", "/api/providers/quota?id=local", None);
    s.call("quota of an unknown provider", "GET", "/api/providers/quota?id=nope", None);
    s.call("quota without an id", "GET", "/api/providers/quota", None);
    s.call("health of an unknown provider", "GET", "/api/providers/health?id=nope", None);

    // Last: a registration made before other events would see deliveries (and failures) in between.
    s.section("webhooks");
    let hook = json!({"event": "on_asset_registered", "url": "http://127.0.0.1:9/hooks", "secret": "hunter2-secret"});
    s.call("register a webhook", "POST", "/api/modder/hooks/webhooks", Some(hook.clone()));
    s.call("register it again (upsert)", "POST", "/api/modder/hooks/webhooks", Some(hook.clone()));
    s.call(
        "a glob event, no secret",
        "POST",
        "/api/modder/hooks/webhooks",
        Some(json!({"event": "on_asset_*", "url": "https://studio.example/hooks"})),
    );
    s.call(
        "unsupported event",
        "POST",
        "/api/modder/hooks/webhooks",
        Some(json!({"event": "on_nothing", "url": "http://127.0.0.1:9/h"})),
    );
    s.call("url required", "POST", "/api/modder/hooks/webhooks", Some(json!({"event": "on_asset_registered"})));
    s.call(
        "not an http url",
        "POST",
        "/api/modder/hooks/webhooks",
        Some(json!({"event": "on_asset_registered", "url": "ftp://x/y"})),
    );
    s.call_with(
        "catalogue lists the registrations masked",
        "GET",
        "/api/modder/hooks",
        None,
        |v| json!({"webhooks": v["webhooks"], "plugin_host": v["plugin_host"]}),
    );
    s.call("remove", "DELETE", "/api/modder/hooks/webhooks", Some(hook.clone()));
    s.call("remove again", "DELETE", "/api/modder/hooks/webhooks", Some(hook));

    s.finish();
}
