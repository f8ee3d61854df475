//! `serve`'s background services (watcher, webhook worker, plugin host) are supervised: one that
//! stops on its own is restarted after `obs.server.restart_backoff_ms`, and one that keeps stopping
//! ends `serve` with exit code 2 instead of leaving it half alive. Failures are injected with
//! `COMFYVN_TEST_FAIL_SERVICE=<name>:<n>` (the first n runs of that service die at once).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::Served;
use crate::support::TestEnv;

fn env_with_backoff(backoff: &[u64]) -> TestEnv {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", json!({"obs": {"server": {"restart_backoff_ms": backoff}}}).to_string());
    env
}

/// Wait up to 10 s for `serve` to exit; its code.
fn exit_code(served: &mut Served) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = served.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_watcher_that_dies_is_restarted_and_keeps_working() {
    let env = env_with_backoff(&[50, 50, 50]);
    let cmd = Served::command(&env, &[], &[("COMFYVN_TEST_FAIL_SERVICE", "watcher:2")], true);
    let mut served = Served::from_command(cmd);
    // It was restarted twice, then runs for real: a dropped file gets its sidecar.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("watching ")) {
        assert!(Instant::now() < deadline, "the watcher never started: {lines:?}");
        if let Ok(l) = served.stderr.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    assert_eq!(lines.iter().filter(|l| l.contains("background service stopped; restarting")).count(), 2, "{lines:?}");
    std::thread::sleep(Duration::from_millis(500));
    env.write("assets/bg/room.png", "png bytes");
    let sidecar = env.path("assets/bg/room.png.asset.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.exists() {
        assert!(Instant::now() < deadline, "the restarted watcher made no sidecar");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served.get("/health").status, 200);
    assert_eq!(served.stop_with("-TERM"), 0);
}

#[test]
fn a_service_that_keeps_dying_ends_serve_with_exit_code_2_and_says_why() {
    let env = env_with_backoff(&[50, 50]);
    let cmd = Served::command(&env, &[], &[("COMFYVN_TEST_FAIL_SERVICE", "webhook worker:99")], false);
    let mut served = Served::from_command(cmd);
    assert_eq!(exit_code(&mut served), Some(2), "serve went on with a dead webhook worker");
    let err = served.stderr_lines().join("\n");
    assert!(err.contains("error: the webhook worker stopped and could not be kept running: it panicked"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(err.matches("restarting in").count(), 2, "{err}");
}
