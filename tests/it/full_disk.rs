//! A full disk, for real: a small tmpfs mounted over part of a temp runtime root (needs root; the
//! tests say they were skipped otherwise). While it is full, the watcher's sidecar writes and the
//! webhook worker's outbox writes fail with a clear logged error; nothing already written is lost
//! or torn; once space returns, both catch up by themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::TestEnv;
use crate::webhooks::{Answer, Server};

/// A tmpfs mounted at a folder; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (and a note) where mounting is not allowed.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            other => {
                eprintln!("skipped: cannot mount a tmpfs at {} (needs root): {other:?}", at.display());
                None
            }
        }
    }

    /// Fill it up: a hidden file grown until the disk refuses more. Returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.0.join(".filler");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&block[..1]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Proc(Child, PathBuf);

impl Proc {
    fn start(env: &TestEnv, args: &[&str], log: &str) -> Proc {
        let stderr = env.path(log);
        let child = env
            .command(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start comfyvn-obs");
        Proc(child, stderr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "exited with {status}: {}", self.stderr());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[track_caller]
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sidecar_hash(env: &TestEnv, rel: &str) -> Option<String> {
    let text = std::fs::read_to_string(env.path(&format!("assets/{rel}.asset.json"))).ok()?;
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("torn sidecar {rel} ({e}): {text}"));
    v["hash"].as_str().map(str::to_string)
}

/// Hidden temp files left in a folder (a failed atomic write must remove its own).
fn temps(dir: &Path) -> Vec<PathBuf> {
    crate::support::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
        .collect()
}

#[test]
fn the_watcher_on_a_full_disk_logs_why_and_writes_the_sidecars_when_space_returns() {
    let env = TestEnv::new();
    let Some(disk) = Tmpfs::mount(&env.path("assets"), "256k") else { return };
    env.write("assets/bg/a.png", "aaaa");
    env.write("assets/bg/b.png", "bbbb");
    let filler = disk.fill();
    let w = Proc::start(&env, &["watch", "--settle-ms", "200"], "watch.stderr");
    wait_for("the failure in the log", 20, || w.stderr().contains("No space left on device"));
    assert!(w.stderr().contains("retrying the failed actions in"), "{}", w.stderr());
    assert_eq!((sidecar_hash(&env, "bg/a.png"), sidecar_hash(&env, "bg/b.png")), (None, None));
    assert!(temps(&env.path("assets")).is_empty(), "{:?}", temps(&env.path("assets")));
    // Space returns: the retry registers both, without a restart or a new event on the files.
    std::fs::remove_file(&filler).unwrap();
    wait_for("both sidecars", 20, || {
        sidecar_hash(&env, "bg/a.png").is_some() && sidecar_hash(&env, "bg/b.png").is_some()
    });
    assert_eq!(sidecar_hash(&env, "bg/a.png").unwrap(), comfyvn_obs::digest::sha256_hex(b"aaaa"));

    // Full again while a file is edited in place: the old sidecar stays whole, and is brought up to
    // date once space returns.
    let filler = disk.fill();
    std::fs::write(env.path("assets/bg/a.png"), "AAAA").unwrap();
    let failures = w.stderr().matches("No space left on device").count();
    wait_for("the second failure", 20, || w.stderr().matches("No space left on device").count() > failures);
    assert_eq!(sidecar_hash(&env, "bg/a.png").unwrap(), comfyvn_obs::digest::sha256_hex(b"aaaa"));
    std::fs::remove_file(&filler).unwrap();
    wait_for("the updated sidecar", 30, || {
        sidecar_hash(&env, "bg/a.png") == Some(comfyvn_obs::digest::sha256_hex(b"AAAA"))
    });
    assert!(temps(&env.path("assets")).is_empty());
    w.stop();
}

#[test]
fn the_webhook_worker_on_a_full_disk_loses_nothing_and_delivers_when_space_returns() {
    let env = TestEnv::new();
    let cfg = json!({"obs": {"webhooks": {"timeout_ms": 2000, "retry_schedule_ms": [50, 100], "poll_ms": 10}}});
    env.write("config/comfyvn.json", cfg.to_string());
    let rx = Server::start(|_, _| Answer::status(204));
    let added = env.run(&["webhooks", "add", "--event", "*", "--url", &rx.url("/h"), "--secret", "s"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let Some(disk) = Tmpfs::mount(&env.path("data/webhooks"), "256k") else { return };
    let worker = Proc::start(&env, &["webhooks", "run"], "worker.stderr");
    let emit = |i: usize| {
        let out = env.run(&["hooks", "emit", "on_scene_enter", "--data", &json!({"i": i}).to_string()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    for i in 0..5 {
        emit(i);
    }
    wait_for("the first five", 20, || rx.requests().len() >= 5);
    let filler = disk.fill();
    for i in 5..25 {
        emit(i);
    }
    wait_for("the failure in the log", 20, || worker.stderr().contains("No space left on device"));
    assert!(worker.stderr().contains("restarting in 5 s"), "{}", worker.stderr());
    std::fs::remove_file(&filler).unwrap();
    wait_for("all 25 delivered", 30, || {
        let mut seen: Vec<String> = rx.requests().iter().map(|r| r.header("webhook-id").to_string()).collect();
        seen.sort();
        seen.dedup();
        seen.len() >= 25
    });
    std::thread::sleep(Duration::from_millis(300));
    worker.stop();
    let ids: Vec<String> = rx.requests().iter().map(|r| r.header("webhook-id").to_string()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "every event delivered");
    // Only a delivery in flight when the write failed may go twice (at-least-once); the outbox is
    // never torn, so acked ones never repeat.
    assert!(ids.len() <= 25 + 4, "{} requests for 25 events", ids.len());
    let outbox = std::fs::read_to_string(env.path("data/webhooks/outbox.jsonl")).unwrap_or_default();
    for line in outbox.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("torn outbox line ({e}): {line}"));
    }
}

/// `audit` on a full disk: the report is always printed; a `--fix` that could not write, or a report
/// that could not be saved, exits 2 (the tool failed), never 1 (findings), whatever `--fail-on` says.
#[test]
fn audit_on_a_full_disk_prints_its_report_and_exits_2() {
    let env = TestEnv::new();
    let Some(disk) = Tmpfs::mount(&env.path("assets"), "256k") else { return };
    env.write("assets/bg/a.png", "aaaa");
    let _filler = disk.fill();
    let fix = env.run(&["audit", "--fix", "--fail-on", "never"]);
    assert_eq!(fix.code, 2, "stdout:\n{}\nstderr:\n{}", fix.stdout, fix.stderr);
    assert!(fix.stdout.contains("bg/a.png"), "the report names the file: {}", fix.stdout);
    assert!(fix.stdout.contains("No space left on device"), "and why its write failed: {}", fix.stdout);

    let env = TestEnv::new();
    env.write("assets/bg/a.png", "aaaa");
    let Some(logs) = Tmpfs::mount(&env.path("logs/audit"), "64k") else { return };
    let _filler = logs.fill();
    let plain = env.run(&["audit"]);
    assert_eq!(plain.code, 2, "stdout:\n{}\nstderr:\n{}", plain.stdout, plain.stderr);
    assert!(plain.stdout.contains("missing-sidecar"), "the report is printed: {}", plain.stdout);
    assert!(plain.stderr.contains("latest.json") && plain.stderr.contains("could not be saved"), "{}", plain.stderr);
}

/// The API on a full disk answers 507 `insufficient_storage` naming the file, not an opaque 500, and
/// works again once space returns.
#[test]
fn the_api_on_a_full_disk_answers_507_and_recovers() {
    let env = TestEnv::new();
    let served = crate::http::Served::start(&env);
    let Some(disk) = Tmpfs::mount(&env.path("logs/hooks"), "64k") else { return };
    let body = json!({"event": "on_scene_enter", "payload": {"i": 1}});
    assert_eq!(served.post_json("/api/modder/hooks/emit", &body, &[]).status, 200);
    let filler = disk.fill();
    // Bigger than the free end of the history file's last page.
    let big = json!({"event": "on_scene_enter", "payload": {"pad": "x".repeat(16384)}});
    let full = served.post_json("/api/modder/hooks/emit", &big, &[]);
    assert_eq!(full.status, 507, "{full:?}");
    let v: Value = full.json();
    assert_eq!(v["code"], "insufficient_storage");
    assert!(v["message"].as_str().unwrap().contains("history.jsonl"), "{v}");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(served.post_json("/api/modder/hooks/emit", &body, &[]).status, 200);
    assert_eq!(served.get("/health").status, 200);
}
