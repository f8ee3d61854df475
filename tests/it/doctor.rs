//! `doctor` with and without a server, and with broken inputs.

use std::io::{Read, Write};
use std::net::TcpListener;

use crate::support::TestEnv;

fn names_and_status(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn passes_on_a_fresh_root_and_leaves_nothing_behind() {
    let env = TestEnv::new();
    let report = env.run(&["doctor", "--json"]).ok().json();
    assert_eq!(report["pass"], true);
    let checks = names_and_status(&report);
    assert!(checks.contains(&("http_health".into(), "skip".into())), "{checks:?}");
    for c in report["checks"].as_array().unwrap() {
        for key in ["name", "ok", "status", "detail"] {
            assert!(c.get(key).is_some(), "{c}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(env.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| n != "crash") && !env.path("logs/crash").exists(), "{left:?}");
}

#[test]
fn broken_config_is_reported_as_a_failed_check_with_exit_1() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", "{ nope");
    let run = env.run(&["doctor", "--json"]).code(1);
    let report = run.json();
    assert_eq!(report["pass"], false);
    assert_eq!(report["checks"][0]["name"], "config");
    assert_eq!(report["checks"][0]["ok"], false);
    assert!(report["checks"][0]["detail"].as_str().unwrap().contains("comfyvn.json"));
}

#[test]
fn base_with_nothing_listening_fails_and_a_live_server_passes() {
    let env = TestEnv::new();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run =
        env.run(&["doctor", "--json", "--timeout-ms", "1000", "--base", &format!("http://127.0.0.1:{port}")]).code(1);
    assert!(names_and_status(&run.json()).contains(&("http_health".into(), "fail".into())));

    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let body = r#"{"status": "ok"}"#;
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    });
    let report = env.run(&["doctor", "--json", "--base", &format!("http://{addr}")]).ok().json();
    assert!(names_and_status(&report).contains(&("http_health".into(), "pass".into())));
    handle.join().unwrap();
}

#[test]
fn malformed_webhook_url_fails_the_check() {
    let env = TestEnv::new();
    env.write("data/webhooks.json", r#"{"schema": 1, "webhooks": [{"event": "*", "url": "ftp://nope"}]}"#);
    let report = env.run(&["doctor", "--json"]).code(1).json();
    assert!(names_and_status(&report).contains(&("webhook_urls".into(), "fail".into())));
}

#[test]
fn passes_against_a_running_serve() {
    let env = TestEnv::new();
    let srv = crate::http::Served::start(&env);
    let report = env.run(&["doctor", "--json", "--base", &format!("http://{}", srv.addr)]).ok().json();
    assert!(names_and_status(&report).contains(&("http_health".into(), "pass".into())), "{report}");
    assert_eq!(report["pass"], true);
}
