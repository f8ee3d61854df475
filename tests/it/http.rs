//! `serve` against the real binary: routes, envelopes and status codes, request ids, shutdown, and the
//! OpenAPI document matching what the router answers. Also the helpers the other `http_*` tests use: a
//! served binary on `127.0.0.1:0` and a small std-only HTTP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::TestEnv;

/// A `comfyvn-obs serve` process listening on a free loopback port.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    /// stderr lines after the `listening on` line.
    pub stderr: mpsc::Receiver<String>,
}

impl Served {
    pub fn start(env: &TestEnv) -> Served {
        Served::start_with(env, &[], &[])
    }

    /// Start with extra `serve` arguments and environment variables, without the file watcher (its
    /// start-up events would shift the history these tests look at).
    pub fn start_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Served {
        Served::spawn(env, args, vars, false)
    }

    /// Start with the file watcher running, as `serve` does by default.
    pub fn start_watching(env: &TestEnv) -> Served {
        Served::spawn(env, &[], &[], true)
    }

    fn spawn(env: &TestEnv, args: &[&str], vars: &[(&str, &str)], watch: bool) -> Served {
        Served::from_command(Served::command(env, args, vars, watch))
    }

    /// The `serve` command `start_with` runs, for a test that wraps it (in `sh -c 'ulimit …'`).
    pub fn command(env: &TestEnv, args: &[&str], vars: &[(&str, &str)], watch: bool) -> std::process::Command {
        let mut cmd = env.command(&["serve", "--bind", "127.0.0.1:0"]);
        if !watch && !args.contains(&"--no-watch") {
            cmd.arg("--no-watch");
        }
        cmd.args(args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawn a prepared command that runs `serve` and wait for its `listening on` line.
    pub fn from_command(mut cmd: std::process::Command) -> Served {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on http://") {
                        let addr = addr.trim().parse().expect("address in the listening line");
                        return Served { child, addr, stderr: rx };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("serve did not print its address; exit: {:?}", child.wait());
                }
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Send raw request bytes on a fresh connection and parse the response.
    pub fn raw(&self, request: &[u8]) -> Resp {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        read_response(&mut s)
    }

    /// A request with `Connection: close`; `headers` are extra header lines.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", self.port());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        self.request("POST", path, &h, body.to_string().as_bytes())
    }

    /// Send SIGTERM (or another signal) and wait for the exit code.
    pub fn stop_with(&mut self, signal: &str) -> i32 {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "serve did not stop after {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Served {
    /// The stderr lines printed since the `listening on` line (after the process ended, all of them).
    pub fn stderr_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            out.push(l);
        }
        out
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Assert the status and that the body is the error envelope with this code; returns the body.
    #[track_caller]
    pub fn envelope(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let expected: &[&str] = if v.get("details").is_some() {
            &["ok", "code", "message", "details", "request_id"]
        } else {
            &["ok", "code", "message", "request_id"]
        };
        assert_eq!(keys, expected, "{v}");
        assert_eq!(v["ok"], false);
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(Some(v["request_id"].as_str().unwrap()), self.header("x-request-id"));
        v
    }
}

/// Read one response (status line, headers, body by Content-Length or to end of stream).
pub fn read_response(s: &mut impl Read) -> Resp {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => {
                panic!("connection ended inside the response head ({other:?}): {:?}", String::from_utf8_lossy(&buf))
            }
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.parse().unwrap());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).unwrap();
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    Resp { status, headers, body }
}

#[test]
fn health_routes_answer_with_and_without_trailing_slash_and_carry_request_ids() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let r = srv.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let generated = r.header("x-request-id").unwrap().to_string();
    assert!(generated.len() >= 8);
    assert_eq!(srv.get("/healthz").json(), json!({"ok": true}));
    assert_eq!(srv.get("/healthz/").json(), json!({"ok": true}));
    let echoed = srv.request("GET", "/health", &[("X-Request-ID", "trace-42.a:b")], b"");
    assert_eq!(echoed.header("x-request-id"), Some("trace-42.a:b"));
    let replaced = srv.request("GET", "/health", &[("X-Request-ID", "bad id with spaces")], b"");
    assert_ne!(replaced.header("x-request-id"), Some("bad id with spaces"));
    assert_ne!(replaced.header("x-request-id"), Some(generated.as_str()));
    // HEAD: the GET route's headers, no body.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("HEAD /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", srv.port()).as_bytes(),
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Request-ID:") && head.ends_with("\r\n\r\n"), "{head}");
}

#[test]
fn failures_use_the_error_envelope_with_the_right_status() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"max_json_bytes": 64}}}"#);
    let srv = Served::start(&env);
    let v = srv.get("/nope").envelope(404, "http_404");
    assert!(v["message"].as_str().unwrap().contains("/nope"));
    let r = srv.request("DELETE", "/health", &[], b"");
    r.envelope(405, "http_405");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let opts = srv.request("OPTIONS", "/api/modder/hooks/emit", &[], b"");
    assert_eq!((opts.status, opts.header("allow")), (204, Some("POST")));

    let big = json!({"event": "on_scene_enter", "payload": {"text": "x".repeat(100)}});
    let v = srv.post_json("/api/modder/hooks/emit", &big, &[]).envelope(413, "http_413");
    assert_eq!(v["details"]["limit_bytes"], 64);
    let r = srv.request("POST", "/api/modder/hooks/emit", &[("Content-Type", "text/plain")], b"{}");
    r.envelope(415, "http_415");
    let r = srv.request("POST", "/api/modder/hooks/emit", &[("Content-Type", "application/json")], b"{oops");
    r.envelope(400, "http_400");
    let v = srv.post_json("/api/modder/hooks/emit", &json!({"payload": [1, 2]}), &[]).envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "payload");
    let v = srv.post_json("/api/modder/hooks/emit", &json!([1]), &[]).envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "body");
    let v = srv.get("/api/modder/hooks/history?limit=ten").envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "limit");
    let v = srv.post_json("/api/modder/hooks/emit", &json!({"event": "on_nothing"}), &[]).envelope(400, "http_400");
    assert_eq!(v["message"], "unsupported event");
    srv.get("/api/modder/hooks/history?x=%ff").envelope(400, "http_400");
    // Nothing of the refused requests reached the history.
    assert!(!env.path("logs/hooks/history.jsonl").exists());
    assert_eq!(srv.get("/health").status, 200);
}

#[test]
fn a_panicking_handler_is_a_500_envelope_and_the_server_keeps_serving() {
    let env = TestEnv::new();
    let srv = Served::start_with(&env, &["--workers", "1"], &[("COMFYVN_TEST_PANIC_ROUTE", "1")]);
    for _ in 0..3 {
        let v = srv.get("/__test/panic").envelope(500, "internal_error");
        assert_eq!(v["details"]["error_id"].as_str().unwrap().len(), 8);
        // A crash dump was written for it, and the envelope names it.
        let dump = v["details"]["crash_dump"].as_str().expect("crash_dump in details").to_string();
        let text = std::fs::read_to_string(env.path("logs/crash").join(&dump)).unwrap();
        assert!(text.contains("deliberate"), "{text}");
        // One worker: it survived the panic to answer this.
        assert_eq!(srv.get("/health").status, 200);
    }
    drop(srv);
    let plain = Served::start(&env);
    plain.get("/__test/panic").envelope(404, "http_404");
}

#[test]
fn hook_catalogue_history_and_emit() {
    let env = TestEnv::new();
    env.write(
        "data/webhooks.json",
        r#"{"webhooks": [{"event": "on_asset_registered", "url": "http://127.0.0.1:9/h", "secret": "hunter2"}]}"#,
    );
    let srv = Served::start_with(&env, &[], &[("COMFYVN_DEV_MODE", "1")]);
    let ok = srv.post_json(
        "/api/modder/hooks/emit",
        &json!({"event": "on_scene_enter", "payload": {"scene_id": "s1"}}),
        &[],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), json!({"ok": true, "event": "on_scene_enter", "seq": 1}));
    let alias =
        srv.post_json("/api/modder/hooks/test", &json!({"event": "on_choice_render", "payload": {"n": 2}}), &[]);
    assert_eq!(alias.json()["event"], "on_choice_render");
    let defaults = srv.request("POST", "/api/modder/hooks/test", &[], b"");
    assert_eq!(defaults.json()["event"], "on_scene_enter", "{}", defaults.text());
    for i in 0..20 {
        srv.post_json("/api/modder/hooks/emit", &json!({"payload": {"i": i}}), &[]);
    }

    let cat = srv.get("/api/modder/hooks").json();
    assert_eq!(cat["ok"], true);
    let hooks = cat["hooks"].as_array().unwrap();
    let scene = hooks.iter().find(|h| h["name"] == "on_scene_enter").unwrap();
    let keys: Vec<&str> = scene.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "description", "ws_topic", "rest_event", "payload"]);
    assert_eq!(scene["ws_topic"], "modder.on_scene_enter");
    assert!(scene["payload"]["scene_id"].is_string());
    assert_eq!(hooks.iter().filter(|h| h["name"].as_str().unwrap().starts_with("on_")).count(), 63);
    // The original's bare registration is listed with the webhook module's fields, secret masked.
    let hook = &cat["webhooks"][0];
    assert_eq!(cat["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&hook["event"], &hook["url"], &hook["secret"], &hook["enabled"]),
        (&json!("on_asset_registered"), &json!("http://127.0.0.1:9/h"), &json!("*******"), &json!(true))
    );
    assert_eq!(cat["plugin_host"]["enabled"], true);
    assert!(cat["plugin_host"]["root"].as_str().unwrap().ends_with("modder_hooks"));
    let history = cat["history"].as_array().unwrap();
    assert_eq!(history.len(), 15);
    assert_eq!(history.last().unwrap()["seq"], 23);

    let h = srv.get("/api/modder/hooks/history").json();
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 23);
    assert_eq!(items[0]["seq"], 1);
    assert_eq!(items[0]["data"], json!({"scene_id": "s1"}));
    assert_eq!(items[1]["data"], json!({"n": 2}));
    let one = srv.get("/api/modder/hooks/history?limit=0").json();
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert_eq!(one["items"][0]["seq"], 23);
    let five = srv.get("/api/modder/hooks/history/?limit=5").json();
    let seqs: Vec<u64> = five["items"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [19, 20, 21, 22, 23]);
    assert_eq!(srv.get("/api/modder/hooks/history?limit=1000").json()["items"].as_array().unwrap().len(), 23);
    let far_below = srv.get("/api/modder/hooks/history?limit=-99999999999999999999").json();
    assert_eq!(far_below["items"].as_array().unwrap().len(), 1);
    // The file is the source of truth: the CLI sees what the API emitted.
    let tail = env.run(&["hooks", "tail", "-n", "1", "--json"]).ok().json_lines();
    assert_eq!(tail[0]["seq"], 23);
}

#[test]
fn a_broken_webhooks_file_is_a_clear_error() {
    let env = TestEnv::new();
    env.write("data/webhooks.json", "{not json");
    let srv = Served::start(&env);
    let v = srv.get("/api/modder/hooks").envelope(500, "http_500");
    assert!(v["message"].as_str().unwrap().contains("webhooks.json"), "{v}");
}

#[test]
fn audit_latest_serves_the_report_or_404() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    srv.get("/api/audit/latest").envelope(404, "http_404");
    let report = "{\n  \"schema\": 1,\n  \"findings\": []\n}\n";
    env.write("logs/audit/latest.json", report);
    let r = srv.get("/api/audit/latest");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), report);
}

#[test]
fn openapi_document_matches_the_router() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let doc = srv.get("/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            count += 1;
            // Fill parameters; a bad `topics` makes the stream routes answer at once (422) instead of
            // streaming.
            let concrete: String =
                path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
            let r = srv.request(&method.to_uppercase(), &format!("{concrete}?topics=__nope__"), &[], b"");
            let routed = !(r.status == 405
                || (r.status == 404 && r.json()["message"].as_str().unwrap().starts_with("no route")));
            assert!(routed, "{method} {path} is documented but not served: {}", r.text());
            let documented = item[method]["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&r.status.to_string()) || r.status == 200,
                "{method} {path}: status {} not documented",
                r.status
            );
        }
    }
    assert!(count >= 9, "{count}");
}

/// `GET /assets/register` answered 404 `Asset not found.` (the `/assets/{uid}` route took it, uid
/// `register`) and `OPTIONS /assets/register` listed `GET, HEAD, POST, DELETE`.
#[test]
fn a_literal_path_owns_its_methods_405_and_allow_do_not_come_from_a_uid_route() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let r = srv.get("/assets/register");
    let v = r.envelope(405, "http_405");
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(v["details"]["allowed"], json!(["POST"]));
    for path in ["/assets/register", "/assets/upload", "/assets/upload/"] {
        let o = srv.request("OPTIONS", path, &[], b"");
        assert_eq!((o.status, o.header("allow")), (204, Some("POST")), "{path}");
        srv.request("DELETE", path, &[], b"").envelope(405, "http_405");
    }
    // A path that is no literal is still a uid; the uid routes keep their methods.
    srv.get("/assets/registered").envelope(404, "http_404");
    let o = srv.request("OPTIONS", "/assets/registered", &[], b"");
    assert_eq!(o.header("allow"), Some("GET, HEAD, DELETE"));
}

/// `limit=1001` was clamped to 1000 although the document says at most 1000, and a bad
/// `include_events` passed when `events=true` came first. Every bound, enum and type the document
/// gives a query parameter is probed just outside it, on every route: a 422 naming the parameter.
#[test]
fn query_values_outside_what_the_document_allows_are_refused_naming_the_parameter() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let doc = srv.get("/openapi.json").json();
    // The WebSocket route checks its handshake first; with one, it gets to the parameters.
    let handshake = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
                let (name, schema) = (p["name"].as_str().unwrap(), &p["schema"]);
                let bound = |k: &str| schema[k].as_i64().map(i128::from).or(schema[k].as_u64().map(i128::from));
                let mut outside: Vec<String> = Vec::new();
                outside.extend(bound("maximum").map(|m| (m + 1).to_string()));
                outside.extend(bound("minimum").map(|m| (m - 1).to_string()));
                if schema["enum"].is_array() || schema["items"]["enum"].is_array() {
                    outside.push("__not_listed__".into());
                }
                match schema["type"].as_str() {
                    Some("integer") => outside.push("1.5".into()),
                    Some("boolean") => outside.push("maybe".into()),
                    _ => {}
                }
                for value in outside {
                    let target = format!("{path}?{name}={value}");
                    let head =
                        format!("{} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", method.to_uppercase(), srv.port());
                    let r = srv.raw(format!("{head}{handshake}\r\n").as_bytes());
                    let v = r.envelope(422, "validation_error");
                    assert_eq!(v["details"][0]["field"], name, "{method} {target}: {v}");
                    probed += 1;
                }
            }
        }
    }
    assert!(probed >= 20, "only {probed} probes: the document lost its bounds?");
    let v = srv.get("/api/telemetry/summary?events=true&include_events=maybe").envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "include_events");
    // The edges themselves are fine; an empty value is an absent one.
    for ok in ["/api/modder/hooks/history?limit=1000", "/assets?limit=1000&offset=0", "/api/telemetry/events?limit=200"]
    {
        assert_eq!(srv.get(ok).status, 200, "{ok}");
    }
    assert_eq!(srv.get("/assets?limit=&offset=").json()["ok"], true);
}

/// A header value with bytes outside ASCII made tiny_http close the connection without an answer.
/// Its own refusals are now the envelope, with a request id, like every other failure.
#[test]
fn a_request_tiny_http_cannot_read_is_a_400_envelope_not_a_dropped_connection() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let mut req = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Name: ", srv.port()).into_bytes();
    req.extend_from_slice(b"caf\xc3\xa9\r\nConnection: close\r\n\r\n");
    let r = srv.raw(&req);
    let v = r.envelope(400, "http_400");
    assert!(v["message"].as_str().unwrap().contains("ASCII"), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(srv.get("/health").status, 200);
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    let env = TestEnv::new();
    let mut srv = Served::start(&env);
    assert_eq!(srv.get("/health").status, 200);
    assert_eq!(srv.stop_with("-TERM"), 0);
    assert!(srv.stderr_lines().iter().any(|l| l == "shutting down"));
    let mut srv = Served::start(&env);
    assert_eq!(srv.stop_with("-INT"), 0);
}

#[test]
fn idle_keep_alive_connections_do_not_starve_other_clients() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        // One completed request each, then the connection stays open and idle.
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", srv.port()).as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_response(&mut s).status, 200);
        idle.push(s);
    }
    let r = srv.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    drop(idle);
}

#[test]
fn port_zero_prints_the_real_port_and_a_taken_port_is_a_clear_error() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    assert_ne!(srv.port(), 0);
    let taken = format!("127.0.0.1:{}", srv.port());
    let r = env.run(&["serve", "--bind", &taken]).code(2);
    assert!(r.stderr.contains("cannot listen on") && r.stderr.contains("hint:"), "{}", r.stderr);
}

#[test]
fn serve_runs_the_file_watcher_by_default() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("assets/bg")).unwrap();
    let srv = Served::start_watching(&env);
    env.write("assets/bg/dropped.png", b"pixels");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = std::fs::read_to_string(env.path("logs/hooks/history.jsonl")).unwrap_or_default();
        if history.contains("\"on_asset_registered\"") && env.path("assets/bg/dropped.png.asset.json").exists() {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher inside serve did not register the file:\n{history}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.get("/health").status, 200);
}
