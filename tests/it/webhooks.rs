//! `webhooks add|remove|list|deliveries|replay|run` against the real binary and loopback receivers
//! started by each test. Signatures are recomputed here with the `hmac`/`sha2` crates directly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::support::TestEnv;

/// One request a loopback server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str).unwrap_or("")
    }
}

/// What the server answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }
    pub fn json(status: u16, body: Value) -> Answer {
        Answer { body: body.to_string(), ..Answer::status(status) }
    }
}

type Responder = dyn Fn(usize, &Request) -> Answer + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 with keep-alive, answering via a closure that gets the
/// request's index (0-based, across connections).
pub struct Server {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(respond: impl Fn(usize, &Request) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Responder> = Arc::new(respond);
        let counter = Arc::new(AtomicUsize::new(0));
        let (reqs, stop2) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (reqs, respond, counter, stop) =
                            (Arc::clone(&reqs), Arc::clone(&respond), Arc::clone(&counter), Arc::clone(&stop2));
                        std::thread::spawn(move || serve_conn(stream, &reqs, &*respond, &counter, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server { port, requests, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived (panics after 10 s).
    pub fn wait_for(&self, n: usize) -> Vec<Request> {
        wait_until(&format!("{n} requests on port {}", self.port), || self.requests().len() >= n);
        self.requests()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_conn(
    stream: TcpStream,
    reqs: &Mutex<Vec<Request>>,
    respond: &Responder,
    counter: &AtomicUsize,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut req = Request { path, headers, body, at: Instant::now(), status: 0 };
        let idx = counter.fetch_add(1, Ordering::SeqCst);
        let answer = respond(idx, &req);
        req.status = answer.status;
        reqs.lock().unwrap().push(req);
        std::thread::sleep(answer.delay);
        let mut out = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\n", answer.status, answer.body.len());
        for (k, v) in &answer.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("Content-Type: application/json\r\n\r\n");
        out.push_str(&answer.body);
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Poll `f` every 20 ms; panic after 10 s.
#[track_caller]
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A runtime root with fast webhook settings; `disable_after` failed attempts disable at once
/// (`disable_after_secs: 0`).
fn env_with(schedule: &[u64], disable_after: u32) -> TestEnv {
    env_with_in_flight(schedule, disable_after, 4)
}

fn env_with_in_flight(schedule: &[u64], disable_after: u32, in_flight: usize) -> TestEnv {
    let env = TestEnv::new();
    let cfg = json!({"obs": {"webhooks": {
        "timeout_ms": 2000, "retry_schedule_ms": schedule, "disable_after_failures": disable_after, "poll_ms": 10,
        "in_flight_per_receiver": in_flight, "disable_after_secs": 0,
    }}});
    env.write("config/comfyvn.json", cfg.to_string());
    env
}

/// `webhooks run` in the background; killed on drop.
struct Worker(Child);

impl Worker {
    fn start(env: &TestEnv) -> Worker {
        Worker(env.command(&["webhooks", "run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
    }
    /// SIGKILL: no chance to flush anything.
    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "worker exited with {status}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emit(env: &TestEnv, event: &str, data: Value) -> u64 {
    env.run(&["hooks", "emit", event, "--data", &data.to_string()]).ok().json_lines()[0]["seq"].as_u64().unwrap()
}

fn add(env: &TestEnv, event: &str, url: &str, secret: Option<&str>) -> Value {
    let mut args = vec!["webhooks", "add", "--event", event, "--url", url, "--json"];
    if let Some(s) = secret {
        args.extend(["--secret", s]);
    }
    env.run(&args).ok().json()
}

fn deliveries(env: &TestEnv) -> Vec<Value> {
    env.run(&["webhooks", "deliveries", "-n", "1000", "--json"]).ok().json_lines()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a Standard Webhooks receiver does: derive the key from the whsec_ secret and compare.
fn standard_ok(secret: &str, r: &Request) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(rest) => base64::engine::general_purpose::STANDARD.decode(rest).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let signed =
        [r.header("webhook-id").as_bytes(), b".", r.header("webhook-timestamp").as_bytes(), b".", &r.body].concat();
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac(&key, &signed)));
    r.header("webhook-signature").split(' ').any(|s| s == expected)
}

fn comfy_ok(secret: &str, r: &Request) -> bool {
    r.header("x-comfy-signature") == hex(&hmac(secret.as_bytes(), &r.body))
}

#[test]
fn deliveries_carry_both_signatures_over_the_exact_body_and_secrets_stay_masked() {
    let env = env_with(&[50, 100, 200], 10);
    let rx = Server::start(|_, _| Answer::status(200));
    let generated = add(&env, "on_scene_*", &rx.url("/gen"), None);
    let secret = generated["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{generated}");
    assert_eq!(generated["webhook"]["secret"], "*".repeat(secret.len()));
    add(&env, "*", &rx.url("/plain"), Some("plain-s3cret"));
    let seq = emit(&env, "on_scene_enter", json!({"scene_id": "intro", "n": 1.5}));
    let worker = Worker::start(&env);
    let reqs = rx.wait_for(2);
    worker.stop();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for r in &reqs {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["event", "ts", "data"]);
        assert_eq!(body["event"], "on_scene_enter");
        assert_eq!(body["data"]["scene_id"], "intro");
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("webhook-id").starts_with(&format!("msg_{seq}_")), "{}", r.header("webhook-id"));
        let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
        assert!((now - ts).abs() < 300, "timestamp {ts} vs now {now}");
        let secret = if r.path == "/gen" { secret.as_str() } else { "plain-s3cret" };
        assert!(comfy_ok(secret, r), "X-Comfy-Signature mismatch on {}", r.path);
        assert!(standard_ok(secret, r), "webhook-signature mismatch on {}", r.path);
        // And a wrong secret does not verify.
        assert!(!comfy_ok("other", r) && !standard_ok("whsec_b3RoZXI=", r));
    }
    let mut paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/gen", "/plain"]);
    assert_ne!(reqs[0].header("webhook-id"), reqs[1].header("webhook-id"), "ids differ per registration");

    // Secrets appear in no listing, log or outbox; only in the registrations file itself.
    let listing = env.run(&["webhooks", "list", "--json"]).ok();
    let human = env.run(&["webhooks", "list"]).ok();
    for text in [listing.stdout.as_str(), human.stdout.as_str(), &env.read("data/webhooks/deliveries.jsonl")] {
        assert!(!text.contains(&secret) && !text.contains("plain-s3cret"), "secret leaked:\n{text}");
    }
    if env.path("data/webhooks/outbox.jsonl").exists() {
        let outbox = env.read("data/webhooks/outbox.jsonl");
        assert!(!outbox.contains(&secret) && !outbox.contains("plain-s3cret"));
    }
    assert_eq!(listing.json()[1]["secret"], "************");
    let doc: Value = serde_json::from_str(&env.read("data/webhooks.json")).unwrap();
    assert_eq!(doc["schema"], 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.path("data/webhooks.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file holding the secrets is owner-only");
    let checkpoint: Value = serde_json::from_str(&env.read("data/webhooks/checkpoint.json")).unwrap();
    assert_eq!((checkpoint["schema"].as_u64(), checkpoint["seq"].as_u64()), (Some(1), Some(seq)));
}

#[test]
fn a_failing_receiver_is_retried_with_the_same_id_until_it_answers_2xx() {
    let env = env_with(&[50, 100, 200], 10);
    let rx = Server::start(|i, _| Answer::status(if i < 2 { 500 } else { 204 }));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    add(&env, "on_asset_registered", &rx.url("/h"), Some(secret));
    emit(&env, "on_asset_registered", json!({"uid": "abc"}));
    let worker = Worker::start(&env);
    let reqs = rx.wait_for(3);
    wait_until("the delivered log line", || deliveries(&env).iter().any(|d| d["outcome"] == "delivered"));
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();
    assert_eq!(rx.requests().len(), 3, "no attempt after the 2xx");
    assert!(reqs.iter().all(|r| r.header("webhook-id") == reqs[0].header("webhook-id")));
    assert!(reqs.iter().all(|r| r.body == reqs[0].body), "every attempt sends the same bytes");
    assert!(reqs.iter().all(|r| standard_ok(secret, r) && comfy_ok(secret, r)), "each attempt is signed afresh");
    let log = deliveries(&env);
    let summary: Vec<(u64, &str)> =
        log.iter().map(|d| (d["attempt"].as_u64().unwrap(), d["outcome"].as_str().unwrap())).collect();
    assert_eq!(summary, [(1, "retry"), (2, "retry"), (3, "delivered")]);
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[0]["error"], "http 500");
    assert!(log[0]["next_attempt_in_ms"].as_u64().unwrap() >= 40);
    // The human listing works too.
    assert!(env.run(&["webhooks", "deliveries"]).ok().stdout.contains("delivered"));
    let listed = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert_eq!((listed[0]["consecutive_failures"].as_u64(), listed[0]["pending"].as_u64()), (Some(0), Some(0)));
}

#[test]
fn retry_after_is_a_lower_bound_on_the_next_attempt() {
    let env = env_with(&[50, 100, 200], 10);
    let rx = Server::start(|i, _| {
        if i == 0 {
            Answer { headers: vec![("Retry-After".into(), "1".into())], ..Answer::status(429) }
        } else {
            Answer::status(200)
        }
    });
    add(&env, "*", &rx.url("/h"), Some("s"));
    emit(&env, "on_scene_enter", json!({}));
    let worker = Worker::start(&env);
    let reqs = rx.wait_for(2);
    worker.stop();
    let gap = reqs[1].at.duration_since(reqs[0].at);
    // The schedule alone would retry after ~50 ms; Retry-After: 1 means at least a second.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    let log = deliveries(&env);
    assert_eq!(log[0]["retry_after"], "1");
    assert!(log[0]["next_attempt_in_ms"].as_u64().unwrap() >= 1000);
}

#[test]
fn repeated_failures_disable_the_registration_and_emit_obs_webhook_disabled() {
    // One request at a time per receiver, so the count of attempts before the disable is exact.
    let env = env_with_in_flight(&[20, 20, 20, 20, 20, 20], 3, 1);
    let up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&up);
    let bad = Server::start(move |_, _| Answer::status(if flag.load(Ordering::SeqCst) { 200 } else { 500 }));
    let good = Server::start(|_, _| Answer::status(200));
    add(&env, "*", &bad.url("/bad"), Some("s"));
    add(&env, "on_scene_enter", &good.url("/good"), Some("s"));
    emit(&env, "on_scene_enter", json!({"i": 1}));
    emit(&env, "on_scene_enter", json!({"i": 2}));
    let worker = Worker::start(&env);
    wait_until("the registration to be disabled", || {
        env.run(&["webhooks", "list", "--json"]).ok().json().as_array().unwrap().iter().any(|w| w["enabled"] == false)
    });
    wait_until("obs.webhook_disabled in the history", || {
        env.run(&["hooks", "tail", "-n", "50", "--json", "--event", "obs.webhook_disabled"])
            .ok()
            .stdout
            .contains("/bad")
    });
    // The healthy receiver was not held up by the failing one.
    good.wait_for(2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bad.requests().len(), 3, "no attempt after the registration was disabled");
    let ev = env.run(&["hooks", "tail", "-n", "50", "--json", "--event", "obs.webhook_disabled"]).ok().json_lines();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["url"], bad.url("/bad"));
    assert_eq!(ev[0]["data"]["failures"], 3);
    assert_eq!(ev[0]["data"]["last_error"], "http 500");
    // Both messages are kept in the outbox, not dropped or failed, and the listing says so.
    let listed = env.run(&["webhooks", "list"]).ok();
    assert!(listed.stderr.contains("keeps 2 deliveries"), "{}", listed.stderr);
    let list = env.run(&["webhooks", "list", "--json"]).ok().json();
    let bad_reg = list.as_array().unwrap().iter().find(|w| w["url"] == bad.url("/bad")).unwrap();
    assert_eq!(
        (bad_reg["enabled"].as_bool(), bad_reg["pending"].as_u64(), bad_reg["parked"].as_u64()),
        (Some(false), Some(2), Some(2))
    );
    let log = deliveries(&env);
    assert!(!log.iter().any(|d| d["outcome"] == "dropped" || d["outcome"] == "failed"), "{log:?}");
    assert_eq!(log.iter().filter(|d| d["outcome"] == "parked" && d["url"] == bad.url("/bad")).count(), 2, "{log:?}");
    // An event while disabled is not queued for it; re-adding says how to send it.
    emit(&env, "on_scene_enter", json!({"i": 3}));
    good.wait_for(3);
    up.store(true, Ordering::SeqCst);
    let readd = env.run(&["webhooks", "add", "--event", "*", "--url", &bad.url("/bad"), "--secret", "s"]).ok();
    assert!(readd.stdout.contains("enabled again"), "{}", readd.stdout);
    assert!(readd.stderr.contains("2 deliveries it kept"), "{}", readd.stderr);
    assert!(readd.stderr.contains("webhooks replay --since"), "{}", readd.stderr);
    // The kept deliveries go out, oldest first, with their original webhook-id.
    bad.wait_for(5);
    let sent: Vec<Value> =
        bad.requests()[3..].iter().map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"].clone()).collect();
    assert_eq!(sent, [json!({"i": 1}), json!({"i": 2})]);
    assert_eq!(bad.requests()[3].header("webhook-id"), bad.requests()[0].header("webhook-id"));
    std::thread::sleep(Duration::from_millis(200));
    worker.stop();
    assert_eq!(bad.requests().len(), 5, "the event emitted while disabled waits for a replay");
    let list = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert!(list.as_array().unwrap().iter().all(|w| w["enabled"] == true && w["pending"] == 0), "{list}");
}

/// `webhooks replay --url U` of a disabled registration enables it again and sends what it kept.
#[test]
fn replay_to_a_disabled_receiver_enables_it_and_sends_the_kept_deliveries() {
    let env = env_with_in_flight(&[20, 20], 2, 1);
    let up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&up);
    let rx = Server::start(move |_, _| Answer::status(if flag.load(Ordering::SeqCst) { 204 } else { 503 }));
    add(&env, "on_scene_*", &rx.url("/h"), Some("s"));
    let first = emit(&env, "on_scene_enter", json!({"i": 1}));
    let worker = Worker::start(&env);
    wait_until("the registration to be disabled", || {
        env.run(&["webhooks", "list", "--json"]).ok().json()[0]["enabled"] == false
    });
    let plain = env.run(&["webhooks", "replay", "--since", &(first - 1).to_string()]).ok();
    assert!(plain.stderr.contains("skipped the disabled webhook"), "{}", plain.stderr);
    let replays = env.path("data/webhooks/replay");
    wait_until("the worker to take the request", || std::fs::read_dir(&replays).unwrap().next().is_none());
    up.store(true, Ordering::SeqCst);
    let out = env.run(&["webhooks", "replay", "--since", &(first - 1).to_string(), "--url", &rx.url("/h")]).ok();
    assert!(out.stdout.contains("enabled webhook on_scene_* -> "), "{}", out.stdout);
    // The kept delivery and the replayed one: the same message twice, same webhook-id.
    wait_until("two deliveries", || rx.requests().iter().filter(|r| r.status == 204).count() == 2);
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();
    let ok: Vec<Request> = rx.requests().into_iter().filter(|r| r.status == 204).collect();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].header("webhook-id"), ok[1].header("webhook-id"));
    assert_eq!(env.run(&["webhooks", "list", "--json"]).ok().json()[0]["pending"], 0);
}

#[test]
fn pending_deliveries_survive_kill_9_and_acked_ones_are_never_sent_again() {
    let env = env_with(&[300, 300, 300, 300, 300, 300, 300, 300], 0);
    let up = Arc::new(AtomicBool::new(false));
    let up2 = Arc::clone(&up);
    let rx = Server::start(move |_, _| Answer::status(if up2.load(Ordering::SeqCst) { 200 } else { 503 }));
    // A second receiver that keeps its deliveries pending for the whole test, so the outbox is never
    // compacted and still holds the acks when the checkpoint is rolled back below.
    let stuck =
        Server::start(|_, _| Answer { headers: vec![("Retry-After".into(), "30".into())], ..Answer::status(503) });
    add(&env, "*", &rx.url("/h"), Some("whsec_c2VjcmV0LWtleS1ieXRlcw=="));
    add(&env, "*", &stuck.url("/stuck"), Some("s"));
    for i in 0..5 {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    // Phase 1: the receiver is down; its lane is probed one message at a time and everything waits
    // in the outbox.
    let worker = Worker::start(&env);
    wait_until("ten failed attempts", || deliveries(&env).iter().filter(|d| d["outcome"] == "retry").count() >= 10);
    worker.kill9();
    let listed = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert_eq!((listed[0]["pending"].as_u64(), listed[1]["pending"].as_u64()), (Some(5), Some(5)));
    // The stuck receiver got the first requests in flight, then its `Retry-After: 30` held its lane.
    let stuck_sent = stuck.requests().len();
    assert!((1..=4).contains(&stuck_sent), "{stuck_sent}");

    // Phase 2: the receiver is back; a new worker resumes from the outbox.
    up.store(true, Ordering::SeqCst);
    let worker = Worker::start(&env);
    let delivered = |env: &TestEnv| deliveries(env).iter().filter(|d| d["outcome"] == "delivered").count();
    wait_until("five deliveries", || delivered(&env) == 5);
    for i in 5..8 {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    wait_until("eight deliveries", || delivered(&env) == 8);
    worker.kill9();

    // Phase 3: as if the kill had come before the checkpoint moved: the new worker re-reads the whole
    // history, and the acks in the outbox keep it from sending anything twice.
    env.write("data/webhooks/checkpoint.json", r#"{"schema": 1, "seq": 0, "updated_at": "x"}"#);
    let worker = Worker::start(&env);
    emit(&env, "on_scene_enter", json!({"i": 8}));
    wait_until("nine deliveries", || delivered(&env) == 9);
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();

    let mut ok_per_id: HashMap<String, usize> = HashMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        *ok_per_id.entry(r.header("webhook-id").to_string()).or_default() += 1;
    }
    assert_eq!(ok_per_id.len(), 9, "every event delivered: {ok_per_id:?}");
    assert!(ok_per_id.values().all(|&n| n == 1), "an acked delivery was sent again: {ok_per_id:?}");
    let seqs: Vec<u64> = rx
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["i"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, (0..9).collect::<Vec<_>>());
    // The stuck receiver's lane still waits out its `Retry-After`, across both restarts, and all
    // nine are still pending.
    assert_eq!(stuck.requests().len(), stuck_sent);
    let listed = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert_eq!((listed[0]["pending"].as_u64(), listed[1]["pending"].as_u64()), (Some(0), Some(9)));
}

#[test]
fn an_all_acked_outbox_is_compacted_to_its_header() {
    let env = env_with(&[50], 10);
    let rx = Server::start(|_, _| Answer::status(200));
    add(&env, "on_scene_*", &rx.url("/h"), Some("s"));
    for i in 0..3 {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    let worker = Worker::start(&env);
    rx.wait_for(3);
    wait_until("compaction", || {
        std::fs::read_to_string(env.path("data/webhooks/outbox.jsonl")).is_ok_and(|t| t.lines().count() == 1)
    });
    worker.stop();
    let header: Value = serde_json::from_str(env.read("data/webhooks/outbox.jsonl").trim()).unwrap();
    assert_eq!(header, json!({"op": "header", "schema": 1}));
}

#[test]
fn events_emitted_while_no_worker_runs_are_delivered_and_replay_resends_with_the_same_id() {
    let env = env_with(&[50, 100], 10);
    let rx = Server::start(|_, _| Answer::status(200));
    emit(&env, "on_scene_enter", json!({"before": true}));
    add(&env, "on_scene_enter", &rx.url("/h"), Some("s"));
    emit(&env, "on_scene_enter", json!({"i": 1}));
    emit(&env, "on_choice_render", json!({"i": 2}));
    emit(&env, "on_scene_enter", json!({"i": 3}));
    let worker = Worker::start(&env);
    let first = rx.wait_for(2);
    let datas: Vec<Value> =
        first.iter().map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"].clone()).collect();
    assert!(datas.iter().all(|d| d["before"].is_null()), "events before the registration are not sent: {datas:?}");
    let plan = env.run(&["webhooks", "replay", "--since", "0", "--json"]).ok().json();
    assert_eq!((plan["events"].as_u64(), plan["deliveries"].as_u64()), (Some(3), Some(3)));
    let all = rx.wait_for(5);
    std::thread::sleep(Duration::from_millis(200));
    worker.stop();
    assert_eq!(all.len(), 5, "a replay covers only what was asked");
    let ids: Vec<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    for id in &ids[..2] {
        assert!(ids[2..].contains(id), "replayed message keeps its webhook-id: {ids:?}");
    }
    assert!(env.read("data/webhooks/deliveries.jsonl").contains(".replay-"));
}

#[test]
fn registrations_are_validated_upserted_and_removed() {
    let env = TestEnv::new();
    let r = env.run(&["webhooks", "add", "--event", "on_nothing", "--url", "http://127.0.0.1:9/"]).code(2);
    assert!(r.stderr.contains("unsupported event") && r.stderr.contains("hint:"), "{}", r.stderr);
    let r = env.run(&["webhooks", "add", "--event", "*", "--url", "ftp://x/y"]).code(2);
    assert!(r.stderr.contains("only http and https"), "{}", r.stderr);
    let r = env.run(&["webhooks", "add", "--event", "*", "--url", "http://x/", "--secret", "whsec_!!"]).code(2);
    assert!(r.stderr.contains("base64"), "{}", r.stderr);
    let out = env.run(&["webhooks", "add", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/a"]).ok();
    assert!(out.stdout.contains("added") && out.stdout.contains("secret: whsec_"), "{}", out.stdout);
    let again =
        env.run(&["webhooks", "add", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/a", "--secret", "x"]).ok();
    assert!(again.stdout.contains("updated"), "{}", again.stdout);
    let list = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["secret"], "*");
    env.run(&["webhooks", "remove", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/a"]).ok();
    let r = env.run(&["webhooks", "remove", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/a"]).code(1);
    assert!(r.stderr.contains("no webhook registered"), "{}", r.stderr);
    assert_eq!(env.run(&["webhooks", "list", "--json"]).ok().json(), json!([]));
}

#[test]
fn the_secret_can_come_from_a_file_or_stdin_instead_of_the_command_line() {
    let env = TestEnv::new();
    let stored = |env: &TestEnv| -> Vec<String> {
        let doc: Value = serde_json::from_str(&env.read("data/webhooks.json")).unwrap();
        doc["webhooks"].as_array().unwrap().iter().map(|w| w["secret"].as_str().unwrap().to_string()).collect()
    };
    let add = ["webhooks", "add", "--event", "*", "--url", "http://127.0.0.1:9/a", "--secret-file", "-"];
    let out = env.run_stdin(&add, b"from-stdin\n").ok();
    assert!(!out.stdout.contains("from-stdin"), "a given secret is not printed: {}", out.stdout);
    assert_eq!(stored(&env), ["from-stdin"], "one trailing newline dropped");
    std::fs::write(env.path("secret.txt"), "from-a-file\r\n").unwrap();
    let file = env.path("secret.txt").display().to_string();
    env.run(&["webhooks", "add", "--event", "*", "--url", "http://127.0.0.1:9/a", "--secret-file", &file]).ok();
    assert_eq!(stored(&env), ["from-a-file"]);
    let r = env.run_stdin(&add, b" \n").code(2);
    assert!(r.stderr.contains("the secret is empty"), "{}", r.stderr);
    let r = env.run_stdin(&add, b"two\nlines\n").code(2);
    assert!(r.stderr.contains("control characters"), "{}", r.stderr);
    let r = env.run_stdin(&add, &[b'k'; 5000]).code(2);
    assert!(r.stderr.contains("longer than 4096 bytes"), "{}", r.stderr);
    let r =
        env.run(&["webhooks", "add", "--event", "*", "--url", "http://x/", "--secret-file", "/nonexistent/s"]).code(2);
    assert!(r.stderr.contains("cannot read the secret from /nonexistent/s"), "{}", r.stderr);
    let both = ["webhooks", "add", "--event", "*", "--url", "http://x/", "--secret", "a", "--secret-file", "-"];
    env.run(&both).code(2);
    assert_eq!(stored(&env), ["from-a-file"], "failed adds change nothing");
}

#[test]
fn a_second_worker_waits_for_the_first_and_takes_over_when_it_dies() {
    let env = env_with(&[50, 100], 10);
    let rx = Server::start(|_, _| Answer::status(200));
    add(&env, "on_scene_*", &rx.url("/h"), Some("s"));
    emit(&env, "on_scene_enter", json!({"i": 0}));
    let first = Worker::start(&env);
    rx.wait_for(1); // the first worker holds the lock
    let second = Worker::start(&env);
    for i in 1..4 {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    rx.wait_for(4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), 4, "two workers never both deliver");
    first.kill9();
    emit(&env, "on_scene_enter", json!({"i": 4}));
    rx.wait_for(5);
    second.stop();
    let ids: std::collections::HashSet<String> =
        rx.requests().iter().map(|r| r.header("webhook-id").to_string()).collect();
    assert_eq!(ids.len(), 5);
}

#[test]
fn serve_runs_the_delivery_worker_for_events_from_any_process() {
    let env = env_with(&[50, 100, 200], 10);
    let receiver = Server::start(|_, _| Answer::status(200));
    add(&env, "on_scene_enter", &receiver.url("/hook"), Some("s3cret"));
    let _served = crate::http::Served::start_with(&env, &["--no-watch"], &[]);
    // Emitted by a separate process while the server runs: the server's worker follows the history.
    emit(&env, "on_scene_enter", json!({"scene_id": "from-cli"}));
    let got = receiver.wait_for(1);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["data"]["scene_id"], "from-cli");
    assert!(comfy_ok("s3cret", &got[0]));
}

/// A receiver down during a burst (issue: 10 failed attempts across different messages disabled the
/// registration within seconds and dropped every queued message). With the default time-based
/// policy it stays enabled, the lane is probed one message at a time past the schedule while it is
/// down, and every message arrives exactly once when it is back.
#[test]
fn a_receiver_down_during_a_burst_gets_every_message_exactly_once_when_it_returns() {
    let env = TestEnv::new();
    // Three retries, then the last interval again; at least 3 failed attempts *and* 5 days failing.
    let cfg = json!({"obs": {"webhooks": {
        "timeout_ms": 2000, "retry_schedule_ms": [50, 100, 200], "disable_after_failures": 3, "poll_ms": 10,
    }}});
    env.write("config/comfyvn.json", cfg.to_string());
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let rx = Server::start(move |_, _| Answer::status(if flag.load(Ordering::SeqCst) { 503 } else { 204 }));
    add(&env, "on_scene_*", &rx.url("/h"), Some("s"));
    let worker = Worker::start(&env);
    const N: usize = 200;
    for i in 0..N {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    // Down for longer than the whole retry schedule, over more failed attempts than the minimum.
    wait_until("probes past the schedule", || rx.requests().len() >= 8);
    std::thread::sleep(Duration::from_millis(600));
    let list = env.run(&["webhooks", "list", "--json"]).ok().json();
    assert_eq!(list[0]["enabled"], true, "disabled during a short outage: {list}");
    let while_down = rx.requests().len();
    assert!(while_down < 30, "{while_down} requests while down: the backlog was retried message by message");
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let ok: Vec<Request> = rx.requests().into_iter().filter(|r| r.status == 204).collect();
        if ok.len() >= N || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    worker.stop();
    let ok: Vec<Request> = rx.requests().into_iter().filter(|r| r.status == 204).collect();
    let ids: std::collections::HashSet<&str> = ok.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(delivered.len(), N, "delivered after the receiver returned");
    assert_eq!((ok.len(), ids.len()), (N, N), "each message exactly once after it was acknowledged");
    assert!(!deliveries(&env).iter().any(|d| d["outcome"] == "dropped" || d["outcome"] == "failed"));
}

fn seq_of(r: &Request) -> u64 {
    r.header("webhook-id").split('_').nth(1).unwrap().parse().unwrap()
}

/// When the receiver answers again, the backlog goes at once, in `seq` order, instead of each message
/// waiting for its own next attempt (before: up to the schedule's last interval, 10 minutes by
/// default, spread over ±20 % jitter).
#[test]
fn the_backlog_drains_at_full_speed_in_seq_order_when_the_receiver_returns() {
    // The last interval is long, so waiting per message would spread deliveries over 3.2–4.8 s.
    let env = env_with_in_flight(&[100, 100, 4000], 0, 1);
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let rx = Server::start(move |_, _| Answer::status(if flag.load(Ordering::SeqCst) { 503 } else { 204 }));
    add(&env, "*", &rx.url("/h"), Some("s"));
    const N: usize = 100;
    for i in 0..N {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    let worker = Worker::start(&env);
    // Three failed probes: the lane now waits the last interval.
    wait_until("three failed attempts", || rx.requests().len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), 3, "one probe at a time while the receiver is down");
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while rx.requests().iter().filter(|r| r.status == 204).count() < N {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.stop();
    let ok: Vec<Request> = rx.requests().into_iter().filter(|r| r.status == 204).collect();
    let spread = ok[N - 1].at - ok[0].at;
    eprintln!("backlog of {N} drained in {spread:?} after the first 2xx");
    assert!(spread < Duration::from_millis(1500), "drained over {spread:?}: messages waited for their own retry");
    let seqs: Vec<u64> = ok.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "not in seq order: {seqs:?}");
    assert_eq!(ok.len(), N);
    // Only the probe was ever retried; the others went once, when the receiver was back.
    let retried: std::collections::HashSet<u64> =
        deliveries(&env).iter().filter(|d| d["outcome"] == "retry").map(|d| d["seq"].as_u64().unwrap()).collect();
    assert_eq!(retried.len(), 1, "{retried:?}");
}

/// A backlog beyond `obs.webhooks.max_in_memory` waits on disk (so memory stays bounded however long
/// the receiver is down), survives `kill -9`, and drains in order, each message exactly once.
#[test]
fn a_backlog_beyond_the_memory_cap_waits_on_disk_and_drains_in_order() {
    let env = TestEnv::new();
    let cfg = json!({"obs": {"webhooks": {
        "timeout_ms": 2000, "retry_schedule_ms": [50, 100], "disable_after_failures": 0, "poll_ms": 10,
        "in_flight_per_receiver": 1, "max_in_memory": 10,
    }}});
    env.write("config/comfyvn.json", cfg.to_string());
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let rx = Server::start(move |_, _| Answer::status(if flag.load(Ordering::SeqCst) { 503 } else { 204 }));
    add(&env, "*", &rx.url("/h"), Some("s"));
    const N: usize = 150;
    for i in 0..N {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    let worker = Worker::start(&env);
    wait_until("the backlog queued", || {
        env.run(&["webhooks", "list", "--json"]).ok().json()[0]["pending"].as_u64() == Some(N as u64)
    });
    std::thread::sleep(Duration::from_millis(300));
    worker.kill9();
    let outbox = std::fs::read_to_string(env.path("data/webhooks/outbox.jsonl")).unwrap();
    let in_outbox = outbox.lines().filter(|l| l.contains("\"op\":\"enqueue\"")).count();
    assert_eq!(in_outbox, 10, "the outbox (held in memory) stops at the cap");
    let spill_lines: usize = std::fs::read_dir(env.path("data/webhooks/spill"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(spill_lines, N - 10, "the rest waits on disk");
    // Back up, with a restart in the middle of the drain.
    down.store(false, Ordering::SeqCst);
    let worker = Worker::start(&env);
    wait_until("some deliveries", || rx.requests().iter().filter(|r| r.status == 204).count() >= 40);
    worker.kill9();
    let worker = Worker::start(&env);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.requests().iter().filter(|r| r.status == 204).count() < N {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();
    let ok: Vec<Request> = rx.requests().into_iter().filter(|r| r.status == 204).collect();
    let mut ids: Vec<u64> = ok.iter().map(seq_of).collect();
    let in_order = ids.windows(2).filter(|w| w[0] < w[1]).count();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "every message delivered");
    // A kill -9 between a 2xx and its ack may resend that one message; nothing else repeats.
    assert!(ok.len() <= N + 1, "{} deliveries for {N} messages", ok.len());
    assert!(in_order >= ok.len() - 2, "delivered out of seq order");
    assert_eq!(env.run(&["webhooks", "list", "--json"]).ok().json()[0]["pending"], 0);
    assert_eq!(std::fs::read_dir(env.path("data/webhooks/spill")).unwrap().count(), 0, "the queue is removed");
}

/// `webhooks add` reads the history's end, then writes the registration: events emitted in between
/// may already be behind a running worker. It queues them when it sees the new registration (before,
/// they were skipped: the soak harness found the watcher's first event missing).
#[test]
fn events_emitted_while_a_registration_is_being_written_are_delivered() {
    let env = env_with(&[50], 0);
    let rx = Server::start(|_, _| Answer::status(204));
    let worker = Worker::start(&env);
    let first = emit(&env, "on_scene_enter", json!({"i": 1}));
    emit(&env, "on_scene_enter", json!({"i": 2}));
    wait_until("the worker's checkpoint past both", || {
        std::fs::read_to_string(env.path("data/webhooks/checkpoint.json"))
            .is_ok_and(|t| t.contains(&format!("\"seq\": {}", first + 1)))
    });
    // A registration written as `webhooks add` does, with the history's end read before the two.
    let reg = json!({"schema": 1, "webhooks": [{"event": "*", "url": rx.url("/h"), "secret": "s",
        "enabled": true, "since_seq": first - 1, "consecutive_failures": 0, "created_at": "x", "updated_at": "x"}]});
    env.write("data/webhooks.json", reg.to_string());
    rx.wait_for(2);
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();
    let mut got: Vec<u64> = rx
        .requests()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["i"].as_u64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, [1, 2], "both events, once each");
}

/// Deleting `logs/` used to start `seq` again at 1, and a worker whose checkpoint said 5 skipped every
/// new event without a word. `seq` now goes on after the last one issued, with `obs.history_reset`.
#[test]
fn deleting_the_logs_folder_does_not_make_the_worker_skip_new_events() {
    let env = env_with(&[50], 0);
    let rx = Server::start(|_, _| Answer::status(204));
    add(&env, "on_scene_*", &rx.url("/h"), Some("s"));
    let worker = Worker::start(&env);
    for i in 0..5 {
        emit(&env, "on_scene_enter", json!({"i": i}));
    }
    rx.wait_for(5);
    std::fs::remove_dir_all(env.path("logs")).unwrap();
    let seq = emit(&env, "on_scene_enter", json!({"i": 5}));
    assert!(seq > 5, "seq started again at {seq}");
    emit(&env, "on_scene_enter", json!({"i": 6}));
    rx.wait_for(7);
    worker.stop();
    let reset = env.run(&["hooks", "tail", "-n", "10", "--json", "--event", "obs.history_reset"]).ok().json_lines();
    assert_eq!(reset.len(), 1, "{reset:?}");
}
