//! Structured logs: `logs/run-*/run.log` JSON lines, levels, lazy creation, pruning, bad log folders.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Run, TestEnv};

fn run_dirs(env: &TestEnv) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(env.path("logs"))
        .map(|e| {
            e.map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn records(env: &TestEnv) -> Vec<Value> {
    let dirs = run_dirs(env);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let text = std::fs::read_to_string(dirs[0].join("run.log")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn run_with_level(env: &TestEnv, level: &str, args: &[&str]) -> Run {
    env.command(args).env("COMFYVN_LOG_LEVEL", level).output().unwrap().into()
}

#[test]
fn run_log_is_sorted_json_lines_in_a_per_process_folder() {
    let env = TestEnv::new();
    let run = env.run(&["telemetry", "opt-in"]).ok();
    let dirs = run_dirs(&env);
    assert_eq!(dirs.len(), 1);
    let name = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    // run-YYYYmmdd_HHMMSS-<pid>
    let parts: Vec<&str> = name.splitn(3, '-').collect();
    assert_eq!(parts[1].len(), 15, "{name}");
    assert!(parts[2].parse::<u32>().is_ok(), "{name}");
    let text = std::fs::read_to_string(dirs[0].join("run.log")).unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{line}");
        for k in ["event", "logger", "component", "level", "timestamp"] {
            assert!(v.get(k).is_some(), "{k} missing in {line}");
        }
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    let consent = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "telemetry consent changed");
    let consent = consent.expect("consent record");
    assert_eq!(consent["level"], "info");
    assert_eq!(consent["component"], "telemetry");
    assert_eq!(consent["telemetry_opt_in"], true);
    // The human line went to stderr, never to stdout (which is the JSON answer).
    assert!(run.stderr.contains("telemetry consent changed"), "{}", run.stderr);
    run.json();
}

#[test]
fn commands_that_log_nothing_create_no_run_folder() {
    let env = TestEnv::new();
    env.run(&["hooks", "emit", "on_scene_enter", "--data", "{}"]).ok();
    env.run(&["hooks", "tail", "-n", "10"]).ok();
    env.run(&["config", "check"]).ok();
    assert!(run_dirs(&env).is_empty());
}

#[test]
fn level_comes_from_the_environment_and_flags_override_it() {
    let env = TestEnv::new();
    // WARNING hides the info record: nothing on stderr, no run folder.
    let quiet = run_with_level(&env, "WARNING", &["telemetry", "opt-in"]).ok();
    assert!(!quiet.stderr.contains("consent changed"), "{}", quiet.stderr);
    assert!(run_dirs(&env).is_empty());
    // -q beats a DEBUG environment.
    let q = run_with_level(&env, "DEBUG", &["-q", "telemetry", "opt-in"]).ok();
    assert!(!q.stderr.contains("consent changed"), "{}", q.stderr);
    assert!(run_dirs(&env).is_empty());
    // debug in any spelling shows debug records, in the file too.
    let env = TestEnv::new();
    let dbg = run_with_level(&env, "debug", &["telemetry", "hash", "x"]).ok();
    assert!(dbg.stderr.contains("debug: anonymiser secret created"), "{}", dbg.stderr);
    assert!(records(&env).iter().any(|r| r["level"] == "debug" && r["event"] == "anonymiser secret created"));
    // -v without the environment variable does the same.
    let env = TestEnv::new();
    env.run(&["-v", "telemetry", "hash", "x"]).ok();
    assert!(records(&env).iter().any(|r| r["level"] == "debug"));
}

#[test]
fn an_unknown_level_is_a_warning_and_info_is_used() {
    let env = TestEnv::new();
    let r = run_with_level(&env, "loud", &["telemetry", "opt-in"]).ok();
    assert!(r.stderr.contains("COMFYVN_LOG_LEVEL") && r.stderr.contains("loud"), "{}", r.stderr);
    assert!(r.stderr.contains("info: telemetry consent changed"), "{}", r.stderr);
}

#[test]
fn old_run_folders_are_pruned_to_keep_runs() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"logging": {"keep_runs": 2}}}"#);
    for i in 1..=4 {
        env.write(&format!("logs/run-2020010{i}_000000-1/run.log"), "{}\n");
    }
    env.run(&["telemetry", "opt-in"]).ok();
    let names: Vec<String> =
        run_dirs(&env).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "run-20200104_000000-1");
    // Reading commands do not prune.
    env.write("logs/run-20200101_000000-1/run.log", "{}\n");
    env.run(&["hooks", "tail"]).ok();
    assert_eq!(run_dirs(&env).len(), 3);
}

#[test]
fn a_log_folder_that_is_a_file_is_a_clear_error() {
    let env = TestEnv::new();
    env.write("logs", "not a folder");
    let r = env.run(&["telemetry", "status"]).code(2);
    assert!(r.stderr.contains("log folder") && r.stderr.contains("not a directory"), "{}", r.stderr);
}

#[test]
fn a_read_only_log_folder_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let logs = env.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o555)).unwrap();
    let r = env.run(&["config", "check"]).code(2);
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(r.stderr.contains("not writable"), "{}", r.stderr);
}

#[test]
fn a_log_folder_from_the_environment_is_honoured() {
    let env = TestEnv::new();
    let elsewhere = env.path("elsewhere");
    let r: Run = env.command(&["telemetry", "opt-in"]).env("COMFYVN_LOG_DIR", &elsewhere).output().unwrap().into();
    let r = r.ok();
    assert!(r.stderr.contains("consent changed"));
    let runs: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(!env.path("logs").exists());
}
