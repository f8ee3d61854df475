//! Crash dumps from a real panic (`crash simulate`), from `run -- CMD`, and `crash capture|list|show`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::TestEnv;

/// Every dump file under `logs/crash/`, sorted by name.
fn dumps(env: &TestEnv) -> Vec<PathBuf> {
    let dir = env.path("logs/crash");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn only_dump(env: &TestEnv) -> Value {
    let files = dumps(env);
    assert_eq!(files.len(), 1, "{files:?}");
    read_json(&files[0])
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[test]
fn crash_simulate_panics_and_leaves_a_dump_with_every_field() {
    let env = TestEnv::new();
    let run = env.run(&["crash", "simulate"]).code(101);
    let files = dumps(&env);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(run.stderr.contains(&format!("crash dump written to {}", files[0].display())), "{}", run.stderr);
    // The previous hook still ran.
    assert!(run.stderr.contains("panicked at"), "{}", run.stderr);

    let d = read_json(&files[0]);
    assert_eq!(d["schema"], 1);
    let id = d["event_id"].as_str().unwrap();
    assert!(is_hex(id, 8), "{id}");
    // crash-YYYYmmdd_HHMMSS-<id>.json
    assert_eq!(name.len(), "crash-20260101_000000-".len() + 8 + ".json".len(), "{name}");
    assert!(name.starts_with("crash-") && name.ends_with(&format!("-{id}.json")), "{name}");
    let ts = d["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(d["exc_type"], "panic");
    assert!(d["message"].as_str().unwrap().contains("simulated crash"));
    assert!(d["traceback"].as_str().unwrap().contains("comfyvn_obs::commands::crash::simulate"), "{}", d["traceback"]);
    let cwd = PathBuf::from(d["cwd"].as_str().unwrap());
    assert_eq!(cwd.canonicalize().unwrap(), env.root().canonicalize().unwrap());
    assert!(d["pid"].as_u64().unwrap() > 0);
    assert_eq!(d["context"], serde_json::json!({}));
    assert_eq!(d["attachments"], serde_json::json!([]));
    assert_eq!(d["app_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["os"], std::env::consts::OS);
    assert_eq!(d["arch"], std::env::consts::ARCH);
    let args: Vec<&str> = d["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(&args[1..], ["crash", "simulate"]);
    assert_eq!(d["thread"], "main");
    assert!(is_hex(d["fingerprint"].as_str().unwrap(), 16));
    // The warning logged just before the panic is in the tail.
    let tail = d["log_tail"].as_array().unwrap();
    assert!(tail.iter().any(|r| r["event"] == "simulating a crash on purpose" && r["level"] == "warning"), "{tail:?}");
}

#[test]
fn repeated_panics_share_a_fingerprint_and_group() {
    let env = TestEnv::new();
    env.run(&["crash", "simulate"]).code(101);
    env.run(&["crash", "simulate"]).code(101);
    let files = dumps(&env);
    assert_eq!(files.len(), 2);
    assert_eq!(read_json(&files[0])["fingerprint"], read_json(&files[1])["fingerprint"]);
    let groups = env.run(&["crash", "list", "--group", "--json"]).ok().json();
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["count"], 2);
    assert!(groups[0]["first_seen"].as_str() <= groups[0]["last_seen"].as_str());
    let list = env.run(&["crash", "list", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0]["timestamp"].as_str() >= list[1]["timestamp"].as_str(), "newest first");
}

#[test]
fn run_false_writes_a_dump_and_exits_with_its_status() {
    let env = TestEnv::new();
    let run = env.run(&["run", "--", "false"]).code(1);
    let d = only_dump(&env);
    assert!(run.stderr.contains("crash dump written to"), "{}", run.stderr);
    assert_eq!(d["exc_type"], "NonZeroExit");
    assert_eq!(d["child"]["exit_code"], 1);
    assert_eq!(d["child"]["command_line"], "false");
    assert_eq!(d["child"]["signal"], Value::Null);
    assert!(d["message"].as_str().unwrap().contains("exited with status 1"));
}

#[test]
fn run_passes_output_through_and_keeps_the_stderr_tail() {
    let env = TestEnv::new();
    let run = env.run(&["run", "--context", "job=42", "--", "sh", "-c", "echo out; echo boom >&2; exit 3"]).code(3);
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    let d = only_dump(&env);
    assert!(d["child"]["stderr_tail"].as_str().unwrap().contains("boom"));
    assert_eq!(d["child"]["command"], serde_json::json!(["sh", "-c", "echo out; echo boom >&2; exit 3"]));
    assert_eq!(d["context"]["job"], "42");
}

#[test]
fn run_of_a_python_style_failure_takes_the_exception_type() {
    let env = TestEnv::new();
    let script = r#"printf 'Traceback (most recent call last):\n  File "/app/studio.py", line 3, in <module>\nValueError: bad scene\n' >&2; exit 1"#;
    env.run(&["run", "--", "sh", "-c", script]).code(1);
    let d = only_dump(&env);
    assert_eq!(d["exc_type"], "ValueError");
    assert_eq!(d["message"], "bad scene");
    assert!(d["traceback"].as_str().unwrap().starts_with("Traceback"));
}

#[test]
fn run_success_writes_nothing_and_signals_exit_128_plus() {
    let env = TestEnv::new();
    env.run(&["run", "--", "true"]).ok();
    assert!(dumps(&env).is_empty());
    env.run(&["run", "--", "sh", "-c", "kill -9 $$"]).code(137);
    let d = only_dump(&env);
    assert_eq!(d["exc_type"], "KilledBySignal");
    assert_eq!(d["child"]["signal"], 9);
    assert_eq!(d["child"]["signal_name"], "SIGKILL");
}

#[test]
fn run_of_a_missing_program_is_127_without_a_dump() {
    let env = TestEnv::new();
    let run = env.run(&["run", "--", "comfyvn-no-such-program"]).code(127);
    assert!(run.stderr.contains("cannot start") && run.stderr.contains("comfyvn-no-such-program"), "{}", run.stderr);
    assert!(dumps(&env).is_empty());
}

#[test]
fn capture_reads_a_traceback_from_stdin_and_masks_secrets() {
    let env = TestEnv::new();
    env.write("notes.txt", "attached");
    let tb = "Traceback (most recent call last):\n  File \"/app/scene.py\", line 9, in load\nKeyError: 'hero'\n";
    let run = env.run_stdin(
        &[
            "crash",
            "capture",
            "--message",
            "sync failed with Bearer abcdefghijklmnop",
            "--context",
            "plugin=asset_sync",
            "--context",
            "api_token=s3cr3t",
            "--attach",
            "notes.txt",
            "--traceback-file",
            "-",
        ],
        tb.as_bytes(),
    );
    let run = run.ok();
    let files = dumps(&env);
    assert!(run.stderr.contains(&files[0].display().to_string()), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let d = only_dump(&env);
    assert_eq!(d["exc_type"], "KeyError");
    assert_eq!(d["message"], "sync failed with Bearer ****************");
    assert!(d["traceback"].as_str().unwrap().contains("scene.py"));
    assert_eq!(d["context"]["plugin"], "asset_sync");
    assert_eq!(d["context"]["api_token"], "******");
    let attached = PathBuf::from(d["attachments"][0].as_str().unwrap());
    assert!(attached.is_absolute());
    assert_eq!(attached.canonicalize().unwrap(), env.path("notes.txt").canonicalize().unwrap());
    let args = d["args"].to_string();
    assert!(!args.contains("abcdefghijklmnop") && !args.contains("s3cr3t"), "{args}");
}

#[test]
fn capture_with_a_traceback_file_and_explicit_type() {
    let env = TestEnv::new();
    env.write("tb.txt", "some trace");
    env.run(&["crash", "capture", "--message", "m", "--type", "PluginError", "--traceback-file", "tb.txt"]).ok();
    let d = only_dump(&env);
    assert_eq!(d["exc_type"], "PluginError");
    assert_eq!(d["traceback"], "some trace");
    let r = env.run(&["crash", "capture", "--message", "m", "--traceback-file", "missing.txt"]).code(2);
    assert!(r.stderr.contains("missing.txt"), "{}", r.stderr);
}

#[test]
fn list_skips_malformed_dumps_and_show_finds_by_id() {
    let env = TestEnv::new();
    env.run(&["crash", "capture", "--message", "first"]).ok();
    env.write("logs/crash/crash-20200101_000000-deadbeef.json", "{torn");
    let run = env.run(&["crash", "list", "--json"]).ok();
    let list = run.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(run.stderr.contains("crash-20200101_000000-deadbeef.json"), "{}", run.stderr);
    let id = list[0]["event_id"].as_str().unwrap().to_string();
    let shown = env.run(&["crash", "show", &id]).ok().json();
    assert_eq!(shown["message"], "first");
    let text = env.run(&["crash", "list"]).ok();
    assert!(text.stdout.contains(&id) && text.stdout.contains("first"), "{}", text.stdout);
    let missing = env.run(&["crash", "show", "00000000"]).code(1);
    assert!(missing.stderr.contains("00000000"), "{}", missing.stderr);
}

#[test]
fn crash_digest_is_recorded_only_when_crash_uploads_are_active() {
    let env = TestEnv::new();
    env.run(&["crash", "simulate"]).code(101);
    assert!(!env.path("logs/telemetry/usage.json").exists());
    env.write(
        "config/comfyvn.json",
        r#"{"features": {"enable_observability": true, "enable_crash_uploader": true},
            "telemetry": {"telemetry_opt_in": true, "crash_opt_in": true}}"#,
    );
    env.run(&["crash", "simulate"]).code(101);
    env.run(&["run", "--", "false"]).code(1);
    let crashes = env.run(&["telemetry", "summary"]).ok().json()["crashes"].clone();
    let crashes = crashes.as_array().unwrap();
    assert_eq!(crashes.len(), 2, "{crashes:?}");
    assert!(is_hex(crashes[0]["report"].as_str().unwrap(), 32));
}
