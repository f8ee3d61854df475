//! `crash upload` and `crash list` against a loopback stand-in for the envelope endpoint: the consent
//! gate, dry runs, the server's event id, retries on 429/503 and discarding on withdrawn consent.
//! (The real servers are in `scripts/e2e-forwarding.sh`.)

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::TestEnv;
use crate::webhooks::{Answer, Server};

const SCENE_TB: &str = "Traceback (most recent call last):\n  File \"/app/studio.py\", line 12, in <module>\n    main()\n  File \"/app/scene.py\", line 40, in load\n    raise ValueError(\"bad scene\")\nValueError: bad scene 42\n";

/// A root whose config opens the gate (or not), with `dry_run` and a DSN pointing at `port`.
fn root(open: bool, dry_run: bool, port: u16) -> TestEnv {
    let env = TestEnv::new();
    write_config(&env, open, dry_run, port);
    env
}

fn write_config(env: &TestEnv, open: bool, dry_run: bool, port: u16) {
    let config = json!({
        "features": {"enable_observability": true, "enable_crash_uploader": true},
        "telemetry": {"telemetry_opt_in": open, "crash_opt_in": true, "dry_run": dry_run},
        "obs": {"crash_upload": {"dsn": format!("http://pubkey@127.0.0.1:{port}/7"), "environment": "ci",
                                 "retry_schedule_ms": [200, 200]}}
    });
    env.write("config/comfyvn.json", config.to_string());
}

/// Write a Python crash dump; its event id.
fn capture(env: &TestEnv, message: &str) -> String {
    env.run_stdin(
        &["crash", "capture", "--message", message, "--context", "api_token=hunter2hunter2", "--traceback-file", "-"],
        SCENE_TB.as_bytes(),
    )
    .ok();
    let list = env.run(&["crash", "list", "--json"]).ok().json();
    list.as_array().unwrap().iter().find(|d| d["message"] == message).unwrap()["event_id"].as_str().unwrap().into()
}

fn upload_state(env: &TestEnv, id: &str) -> Value {
    let list = env.run(&["crash", "list", "--json"]).ok().json();
    list.as_array().unwrap().iter().find(|d| d["event_id"] == id).unwrap()["upload"].clone()
}

/// The event of an envelope (its third line).
fn event_of(body: &[u8]) -> Value {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let item: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(item["type"], "event");
    assert_eq!(item["length"], lines[2].len());
    serde_json::from_str(lines[2]).unwrap()
}

#[test]
fn nothing_is_sent_without_the_whole_gate_and_dry_run_only_writes_the_envelope() {
    let server = Server::start(|_, _| Answer::json(200, json!({"id": "x"})));
    let env = root(false, false, server.port);
    let id = capture(&env, "gate closed");
    let r = env.run(&["crash", "upload", "--all"]).code(1);
    assert!(
        r.stderr.contains("crash uploads are off") && r.stderr.contains("telemetry.telemetry_opt_in"),
        "{}",
        r.stderr
    );
    assert_eq!(upload_state(&env, &id)["state"], "not_sent");

    // `--dry-run` prints the exact envelope whatever the gate says, and sends or writes nothing.
    let printed = env.run(&["crash", "upload", "--dry-run", &id]).ok().stdout;
    let event = event_of(printed.as_bytes());
    let dump: Value = env.run(&["crash", "show", &id]).ok().json();
    assert_eq!(event["exception"]["values"][0]["type"], "ValueError");
    assert_eq!(event["exception"]["values"][0]["value"], "gate closed");
    assert_eq!(event["fingerprint"], json!([dump["fingerprint"]]));
    assert_eq!(event["environment"], "ci");
    assert_eq!(event["tags"]["dump_id"], id.as_str());
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!env.path("data/crash-upload").exists());

    // The gate open with `dry_run` true: the envelope is written locally, still nothing is sent.
    write_config(&env, true, true, server.port);
    env.run(&["crash", "upload", "--all"]).ok();
    let state = upload_state(&env, &id);
    assert_eq!(state["state"], "dry_run");
    let written = std::fs::read_to_string(state["target"].as_str().unwrap()).unwrap();
    assert_eq!(written, printed, "the dry-run file holds the bytes --dry-run prints");
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.requests().is_empty());
}

#[test]
fn each_dump_becomes_one_envelope_and_the_list_shows_the_server_event_id() {
    let server = Server::start(|i, _| Answer::json(200, json!({"id": format!("server-{i}")})));
    let env = root(true, false, server.port);
    let a = capture(&env, "first crash");
    let b = capture(&env, "second crash");
    // Every command hands waiting dumps to a background upload, which may hold the uploader lock
    // (then this `crash upload` says so and leaves the dumps to it); ask until both are in.
    crate::webhooks::wait_until("both uploads logged", || {
        let r = env.run(&["crash", "upload", "--all"]);
        assert!(r.code == 0 || r.stderr.contains("another crash uploader"), "{}", r.stderr);
        upload_state(&env, &a)["state"] == "uploaded" && upload_state(&env, &b)["state"] == "uploaded"
    });
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one request per dump");
    for req in &reqs {
        assert_eq!(req.path, "/api/7/envelope/");
        assert_eq!(req.header("content-type"), "application/x-sentry-envelope");
        assert!(
            req.header("x-sentry-auth").starts_with("Sentry sentry_key=pubkey, sentry_version=7"),
            "{:?}",
            req.headers
        );
    }
    let messages: Vec<Value> =
        reqs.iter().map(|r| event_of(&r.body)["exception"]["values"][0]["value"].clone()).collect();
    assert_eq!(messages, [json!("first crash"), json!("second crash")], "oldest first");
    let ids: Vec<Value> = [&a, &b].iter().map(|id| upload_state(&env, id)["server_event_id"].clone()).collect();
    assert_eq!(ids, [json!("server-0"), json!("server-1")]);
    let table = env.run(&["crash", "list"]).ok().stdout;
    assert!(table.contains("uploaded:server-0"), "{table}");
    // Uploaded dumps are not sent again.
    env.run(&["crash", "upload", "--all"]).ok();
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_429_with_retry_after_or_a_down_server_keeps_the_dump_queued_until_it_is_accepted() {
    let server = Server::start(|i, _| match i {
        0 => Answer { headers: vec![("Retry-After".into(), "1".into())], ..Answer::status(429) },
        1 => Answer::status(503),
        _ => Answer::json(200, json!({"id": "accepted"})),
    });
    let env = root(true, false, server.port);
    // Written with the gate closed, so no background upload races the commands below.
    write_config(&env, false, false, server.port);
    let id = capture(&env, "rate limited");
    write_config(&env, true, false, server.port);
    let r = env.run(&["crash", "upload", &id]).code(1);
    assert!(r.stdout.contains("queued") && r.stdout.contains("rate limited for 1s"), "{}", r.stdout);
    assert_eq!(upload_state(&env, &id)["state"], "queued");
    // Before the Retry-After has passed, nothing is sent.
    env.run(&["crash", "upload", "--all"]).code(1);
    assert_eq!(server.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    let r = env.run(&["crash", "upload", "--all"]).code(1);
    assert!(r.stdout.contains("http 503"), "{}", r.stdout);
    std::thread::sleep(Duration::from_millis(300));
    env.run(&["crash", "upload", "--all"]).ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    // Every attempt carried the same event.
    let ids: Vec<Value> = reqs.iter().map(|r| event_of(&r.body)["event_id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(upload_state(&env, &id)["server_event_id"], "accepted");
}

#[test]
fn withdrawing_consent_discards_queued_uploads_for_good() {
    let server =
        Server::start(|i, _| if i == 0 { Answer::status(503) } else { Answer::json(200, json!({"id": "late"})) });
    let env = root(false, false, server.port);
    let id = capture(&env, "queued then withdrawn");
    write_config(&env, true, false, server.port);
    env.run(&["crash", "upload", &id]).code(1);
    assert_eq!(upload_state(&env, &id)["state"], "queued");
    write_config(&env, false, false, server.port);
    let r = env.run(&["crash", "upload", "--all"]).code(1);
    assert!(
        r.stderr.contains(&format!("discarded queued upload of {id}")),
        "{}\n{:?}",
        r.stderr,
        std::fs::read_to_string(env.path("data/crash-upload/uploads.jsonl"))
    );
    let state = upload_state(&env, &id);
    assert_eq!(state["state"], "discarded");
    assert!(state["detail"].as_str().unwrap().contains("telemetry.telemetry_opt_in"), "{state}");
    // Consent given again later: the discarded dump stays unsent.
    write_config(&env, true, false, server.port);
    env.run(&["crash", "upload", "--all"]).ok();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_malformed_dsn_is_an_error_naming_its_source_and_doctor_checks_it() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", json!({"obs": {"crash_upload": {"dsn": "not-a-dsn"}}}).to_string());
    let r = env.run(&["crash", "upload", "--all"]).code(2);
    assert!(r.stderr.contains("obs.crash_upload.dsn: not a valid DSN"), "{}", r.stderr);
    let r = env.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let check = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "crash_upload").unwrap().clone();
    assert_eq!(check["ok"], false, "{check}");
    env.write(
        "config/comfyvn.json",
        json!({"obs": {"crash_upload": {"dsn": "https://k@errors.example.com/3"}}}).to_string(),
    );
    let r = env.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let check = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "crash_upload").unwrap().clone();
    assert_eq!(check["ok"], true, "{check}");
    assert!(check["detail"].as_str().unwrap().contains("https://errors.example.com"), "{check}");
    let r = env.run(&["telemetry", "status"]).ok();
    assert!(r.stderr.contains("crash uploads off: consent gate closed"), "{}", r.stderr);
}

#[test]
fn opting_out_discards_queued_uploads_in_the_background() {
    let server = Server::start(|_, _| Answer::status(503));
    let env = root(false, false, server.port);
    let id = capture(&env, "queued then opted out");
    write_config(&env, true, false, server.port);
    env.run(&["crash", "upload", &id]).code(1);
    assert_eq!(upload_state(&env, &id)["state"], "queued");
    // Consent withdrawn in the file: the next command, whatever it is, hands the queue to a background
    // pass, which discards it.
    write_config(&env, false, false, server.port);
    env.run(&["hooks", "list"]).ok();
    crate::webhooks::wait_until("the queued upload discarded", || upload_state(&env, &id)["state"] == "discarded");
    assert_eq!(server.requests().len(), 1);
    // `telemetry opt-out` does the same.
    let id = capture(&env, "queued then opted out, again");
    write_config(&env, true, false, server.port);
    env.run(&["crash", "upload", &id]).code(1);
    env.run(&["telemetry", "opt-out"]).ok();
    crate::webhooks::wait_until("the second upload discarded", || upload_state(&env, &id)["state"] == "discarded");
}
