//! `export run` and `export status` against a loopback stand-in for a collector's `/v1/logs`: the
//! protobuf records, the checkpoint, retries on 503 with Retry-After, a refused batch dropped.
//! (A real collector is in `scripts/e2e-forwarding.sh`.)

use serde_json::json;

use crate::support::TestEnv;
use crate::webhooks::{Answer, Server};

fn emit(env: &TestEnv, n: usize) {
    for i in 0..n {
        env.run(&[
            "hooks",
            "emit",
            "on_scene_enter",
            "--data",
            &json!({"scene_id": format!("s{i}"), "node": i}).to_string(),
        ])
        .ok();
    }
}

fn with_endpoint(env: &TestEnv, port: u16, batch_size: usize) {
    env.write(
        "config/comfyvn.json",
        json!({"obs": {"otlp": {"endpoint": format!("http://127.0.0.1:{port}"), "batch_size": batch_size,
                                "retry_schedule_ms": [100]}}})
        .to_string(),
    );
}

#[test]
fn export_sends_every_envelope_once_in_batches_and_resumes_from_its_checkpoint() {
    let server = Server::start(|_, _| Answer::status(200));
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 2);
    emit(&env, 5);
    let r = env
        .command(&["export", "run", "--once"])
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "5 records in batches of 2");
    let mut seqs = Vec::new();
    for req in &reqs {
        assert_eq!(req.path, "/v1/logs");
        assert_eq!(req.header("content-type"), "application/x-protobuf");
        let (resource, records) = comfyvn_obs::otlp::decode_summary(&req.body).unwrap();
        assert!(resource.contains(&("service.name".into(), "comfyvn-obs".into())), "{resource:?}");
        assert!(resource.contains(&("deployment.environment".into(), "ci".into())), "{resource:?}");
        assert!(resource.iter().any(|(k, _)| k == "host.name"));
        for (event, seq) in records {
            assert_eq!(event, "on_scene_enter");
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let status = env.run(&["export", "status", "--json"]).ok().json();
    assert_eq!((status["checkpoint_seq"].as_u64(), status["lag"].as_u64()), (Some(5), Some(0)));
    assert_eq!(status["exported"], 5);
    // A second run sends only what is new.
    emit(&env, 1);
    env.run(&["export", "run", "--once"]).ok();
    let last = comfyvn_obs::otlp::decode_summary(&server.requests()[3].body).unwrap().1;
    assert_eq!(server.requests().len(), 4);
    assert_eq!(last, [("on_scene_enter".to_string(), 6)]);
}

#[test]
fn a_503_with_retry_after_is_retried_and_a_400_batch_is_dropped() {
    let server = Server::start(|i, _| match i {
        0 => Answer { headers: vec![("Retry-After".into(), "1".into())], ..Answer::status(503) },
        1 => Answer::status(400),
        _ => Answer::status(200),
    });
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 1);
    emit(&env, 2);
    env.run(&["export", "run", "--once"]).ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "503, then the same batch refused with 400, then the next one");
    assert_eq!(reqs[0].body, reqs[1].body, "the batch is retried as it was");
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(waited >= std::time::Duration::from_millis(950), "Retry-After honoured: {waited:?}");
    let status = env.run(&["export", "status", "--json"]).ok().json();
    assert_eq!((status["exported"].as_u64(), status["dropped"].as_u64()), (Some(1), Some(1)), "{status}");
    assert_eq!(status["retries"], 1);
    assert_eq!(status["last_error"], "http 400");
}

#[test]
fn crash_dumps_are_exported_once_as_crash_records_only_under_crash_consent() {
    let server = Server::start(|_, _| Answer::status(200));
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 10);
    env.run(&["crash", "capture", "--message", "exported crash"]).ok();
    // Without the crash-upload consent the dump stays on the machine.
    env.run(&["export", "run", "--once"]).ok();
    assert!(server.requests().is_empty());
    let mut config: serde_json::Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    config["features"] = json!({"enable_observability": true, "enable_crash_uploader": true});
    config["telemetry"] = json!({"telemetry_opt_in": true, "crash_opt_in": true, "dry_run": false});
    env.write("config/comfyvn.json", config.to_string());
    env.write("logs/run-20260101_000000-1/run.log", "{\"event\":\"a log line\",\"level\":\"info\"}\n");
    let records = |server: &Server| -> Vec<(String, i64)> {
        server.requests().iter().flat_map(|r| comfyvn_obs::otlp::decode_summary(&r.body).unwrap().1).collect()
    };
    // One `--once` covers the dumps and the run logs after them.
    env.run(&["export", "run", "--once"]).ok();
    assert_eq!(records(&server), [("crash".to_string(), -1), (String::new(), -1)]);
    env.run(&["export", "run", "--once"]).ok();
    assert_eq!(records(&server).len(), 2, "one record for the dump, not sent again");
}

#[test]
fn run_log_records_are_exported_once_and_a_torn_last_line_waits() {
    let server = Server::start(|_, _| Answer::status(200));
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 10);
    let first =
        r#"{"component":"x","event":"one","level":"warning","logger":"l","timestamp":"2026-01-01T00:00:00.000000Z"}"#;
    let second = r#"{"component":"x","event":"two","level":"error","logger":"l","timestamp":"2026-01-01T00:00:01.000000Z","job":"j1"}"#;
    env.write("logs/run-20260101_000000-1/run.log", format!("{first}\n{second}\n{{\"event\":\"thr"));
    let count = |server: &Server| -> usize {
        server.requests().iter().map(|r| comfyvn_obs::otlp::decode_summary(&r.body).unwrap().1.len()).sum()
    };
    env.run(&["export", "run", "--once"]).ok();
    assert_eq!(count(&server), 2, "the torn line is not sent");
    env.run(&["export", "run", "--once"]).ok();
    assert_eq!(count(&server), 2, "nothing is sent twice");
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(env.path("logs/run-20260101_000000-1/run.log")).unwrap();
    f.write_all(b"ee\"}\n").unwrap();
    env.run(&["export", "run", "--once"]).ok();
    assert_eq!(count(&server), 3);
    assert_eq!(env.run(&["export", "status", "--json"]).ok().json()["exported"], 3);
}

#[test]
fn export_without_an_endpoint_says_how_to_set_one() {
    let env = TestEnv::new();
    let r = env.run(&["export", "run", "--once"]).code(2);
    assert!(
        r.stderr.contains("no OTLP endpoint is set") && r.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        r.stderr
    );
    let r = env.run(&["export", "status"]).ok();
    assert!(r.stdout.contains("(none: export is off)"), "{}", r.stdout);
}

#[test]
fn bodies_are_gzipped_when_asked_and_a_bad_compression_names_its_source() {
    let server = Server::start(|_, _| Answer::status(200));
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 10);
    emit(&env, 3);
    let r = env.command(&["export", "run", "--once"]).env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip").output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("content-encoding"), "gzip");
    assert_eq!(reqs[0].header("content-type"), "application/x-protobuf");
    assert!(comfyvn_obs::otlp::decode_summary(&reqs[0].body).is_err(), "the body on the wire is compressed");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&reqs[0].body[..]), &mut plain).unwrap();
    let seqs: Vec<i64> = comfyvn_obs::otlp::decode_summary(&plain).unwrap().1.into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, [1, 2, 3]);

    // The config key wins over the environment, and a value it cannot use is an error naming it.
    let mut config: serde_json::Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    config["obs"]["otlp"]["compression"] = json!("zstd");
    env.write("config/comfyvn.json", config.to_string());
    let r = env.command(&["export", "run", "--once"]).env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip").output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && stderr.contains("obs.otlp.compression") && stderr.contains("zstd"), "{stderr}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_crash_batch_the_collector_refuses_is_dropped_once_not_resent_on_every_run() {
    let server = Server::start(|i, _| if i == 0 { Answer::status(400) } else { Answer::status(200) });
    let env = TestEnv::new();
    with_endpoint(&env, server.port, 10);
    let mut config: serde_json::Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    config["features"] = json!({"enable_observability": true, "enable_crash_uploader": true});
    config["telemetry"] = json!({"telemetry_opt_in": true, "crash_opt_in": true, "dry_run": false});
    env.write("config/comfyvn.json", config.to_string());
    env.run(&["crash", "capture", "--message", "refused crash"]).ok();
    env.run(&["export", "run", "--once"]).ok();
    env.run(&["export", "run", "--once"]).ok();
    let crash_requests = server
        .requests()
        .iter()
        .filter(|r| comfyvn_obs::otlp::decode_summary(&r.body).unwrap().1.iter().any(|(e, _)| e == "crash"))
        .count();
    assert_eq!(crash_requests, 1, "refused for good: counted as dropped, not sent again");
    let status = env.run(&["export", "status", "--json"]).ok().json();
    assert_eq!(status["dropped"], 1, "{status}");
    assert!(status["last_error"].as_str().unwrap_or_default().contains("http 400"), "{status}");
}
