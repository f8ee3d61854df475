//! Telemetry and diagnostics through the real binary: hashing, consent gates, anonymisation, the store's
//! repair and concurrency, and the diagnostics zip.

use std::path::PathBuf;

use comfyvn_obs::telemetry::bundle;
use serde_json::{json, Value};

use crate::support::TestEnv;

const VECTOR_SECRET: &str = "+6NTLtoMohNPd6aPkTkAfRxpjmEcKh7SzpspPLxuf58=";

const ALL_ON: &str = r#"{"features": {"enable_observability": true, "enable_crash_uploader": true},
    "telemetry": {"telemetry_opt_in": true, "crash_opt_in": true, "diagnostics_opt_in": true, "dry_run": true}}"#;

fn files_starting_with(dir: PathBuf, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn hash_matches_the_design_vector() {
    let env = TestEnv::new();
    env.write("config/telemetry/anonymizer.json", format!(r#"{{"secret": "{VECTOR_SECRET}"}}"#));
    let run = env.run(&["telemetry", "hash", "hello-world"]).ok();
    assert_eq!(run.stdout.trim(), "8028628a352d96b5697f1b7937821fd5");
    let with_ns = env.run(&["telemetry", "hash", "world", "--namespace", "hello-"]).ok();
    assert_eq!(with_ns.stdout.trim(), "8028628a352d96b5697f1b7937821fd5");
}

#[test]
fn secret_is_created_on_first_need_and_kept() {
    let env = TestEnv::new();
    let first = env.run(&["telemetry", "hash", "x"]).ok().stdout;
    let doc: Value = serde_json::from_str(&env.read("config/telemetry/anonymizer.json")).unwrap();
    assert_eq!(doc["secret"].as_str().unwrap().len(), 44, "base64 of 32 bytes");
    assert_eq!(env.run(&["telemetry", "hash", "x"]).ok().stdout, first);
}

#[test]
fn recording_without_consent_records_nothing_and_says_so() {
    let env = TestEnv::new();
    let run = env.run(&["telemetry", "record-feature", "toolkit.launch"]).ok();
    assert_eq!(run.json()["recorded"], false);
    assert!(run.stderr.contains("not recorded"), "{}", run.stderr);
    let run = env.run(&["telemetry", "record-event", "x", "--payload", "{}"]).ok();
    assert_eq!(run.json()["recorded"], false);
    assert!(!env.path("logs/telemetry/usage.json").exists());
}

#[test]
fn consent_gates_through_the_cli() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"studio": {"title": "Sakura – 桜"}}"#);
    // Opting in without the feature flag saves consent but records nothing.
    let r = env.run(&["telemetry", "opt-in", "--diagnostics"]).ok();
    assert_eq!(r.json()["settings"]["telemetry_opt_in"], true);
    assert_eq!(r.json()["telemetry_active"], false);
    assert!(r.stderr.contains("enable_observability"), "{}", r.stderr);
    assert_eq!(env.run(&["telemetry", "record-feature", "f"]).ok().json()["recorded"], false);
    // The config rewrite kept the unknown key and its text.
    let cfg: Value = serde_json::from_str(&env.read("config/comfyvn.json")).unwrap();
    assert_eq!(cfg["studio"]["title"], "Sakura – 桜");
    assert_eq!(cfg["telemetry"]["diagnostics_opt_in"], true);
    assert_eq!(cfg["telemetry"]["dry_run"], false);

    let mut cfg = cfg;
    cfg["features"] = json!({"enable_observability": true});
    env.write("config/comfyvn.json", cfg.to_string());
    let status = env.run(&["telemetry", "status"]).ok().json();
    assert_eq!(status["telemetry_active"], true);
    assert_eq!(status["crash_active"], false, "crash uploads need the uploader flag and crash consent");
    assert_eq!(status["diagnostics_active"], true);
    assert_eq!(env.run(&["telemetry", "record-feature", "f", "--variant", "cli"]).ok().json()["recorded"], true);

    let out = env.run(&["telemetry", "opt-out"]).ok().json();
    assert_eq!(out["telemetry_active"], false);
    assert_eq!(out["settings"]["diagnostics_opt_in"], false);
    assert_eq!(env.run(&["telemetry", "record-feature", "f"]).ok().json()["recorded"], false);
    let summary = env.run(&["telemetry", "summary"]).ok().json();
    assert_eq!(summary["features"]["f"]["total"], 1);
    assert_eq!(summary["features"]["f"]["variants"]["cli"], 1);
}

#[test]
fn nested_payloads_are_anonymised_before_they_reach_disk() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", ALL_ON);
    let payload = json!({
        "uid": "abc123",
        "meta": {"license": "CC-BY-4.0", "title": "Hero"},
        "contact": "modder@example.com",
        "count": 2,
    });
    env.run(&["telemetry", "record-event", "Modder.Asset.Packaged", "--payload", &payload.to_string()]).ok();
    let summary = env.run(&["telemetry", "summary", "--events"]).ok().json();
    let e = &summary["events"][0];
    assert_eq!(e["event"], "modder.asset.packaged");
    let hash = |v: &str, ns: &str| env.run(&["telemetry", "hash", v, "--namespace", ns]).ok().stdout.trim().to_string();
    assert_eq!(e["payload"]["uid"], hash("abc123", "uid"));
    assert_eq!(e["payload"]["meta"]["license"], hash("CC-BY-4.0", "meta.license"));
    assert_eq!(e["payload"]["contact"], hash("modder@example.com", "contact"));
    assert_eq!(e["payload"]["meta"]["title"], "Hero");
    assert_eq!(e["payload"]["count"], 2);
    let raw = env.read("logs/telemetry/usage.json");
    assert!(!raw.contains("abc123") && !raw.contains("modder@example.com"), "{raw}");
    assert_eq!(serde_json::from_str::<Value>(&raw).unwrap()["schema"], 1);
}

#[test]
fn record_event_rejects_bad_payloads_with_exit_2() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", ALL_ON);
    let r = env.run(&["telemetry", "record-event", "x", "--payload", "[1, 2]"]).code(2);
    assert!(r.stderr.contains("JSON object"), "{}", r.stderr);
    let r = env.run(&["telemetry", "record-event", "x", "--payload", "{\"a\": }"]).code(2);
    assert!(r.stderr.contains("not valid JSON") && r.stderr.contains("column"), "{}", r.stderr);
    assert!(!env.path("logs/telemetry/usage.json").exists());
}

#[test]
fn corrupt_usage_json_is_quarantined_and_recreated_with_a_warning() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", ALL_ON);
    env.write("logs/telemetry/usage.json", "{\"features\": [oops");
    let r = env.run(&["telemetry", "record-feature", "f"]).ok();
    assert!(r.stderr.contains("usage.json"), "{}", r.stderr);
    assert_eq!(r.json()["recorded"], true);
    let moved = files_starting_with(env.path("logs/telemetry"), "usage.json.corrupt-");
    assert_eq!(moved.len(), 1);
    assert_eq!(std::fs::read_to_string(&moved[0]).unwrap(), "{\"features\": [oops");
    let usage: Value = serde_json::from_str(&env.read("logs/telemetry/usage.json")).unwrap();
    assert_eq!(usage["features"]["f"]["total"], 1);
}

#[test]
fn corrupt_anonymizer_json_is_quarantined_and_recreated_with_a_warning() {
    let env = TestEnv::new();
    env.write("config/telemetry/anonymizer.json", "not json at all");
    let r = env.run(&["telemetry", "hash", "x"]).ok();
    assert!(r.stderr.contains("anonymizer.json"), "{}", r.stderr);
    assert_eq!(r.stdout.trim().len(), 32);
    let moved = files_starting_with(env.path("config/telemetry"), "anonymizer.json.corrupt-");
    assert_eq!(moved.len(), 1);
    assert_eq!(std::fs::read_to_string(&moved[0]).unwrap(), "not json at all");
    // The new secret is stable from now on.
    assert_eq!(env.run(&["telemetry", "hash", "x"]).ok().stdout, r.stdout);
}

#[test]
fn concurrent_processes_do_not_lose_updates() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", ALL_ON);
    let env = std::sync::Arc::new(env);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let env = std::sync::Arc::clone(&env);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    env.run(&["telemetry", "record-feature", "f"]).ok();
                }
            })
        })
        .collect();
    // A reader keeps parsing the file while the writers run: it must never see a torn document.
    let reader = {
        let path = env.path("logs/telemetry/usage.json");
        let workers_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&workers_done);
        let handle = std::thread::spawn(move || {
            let mut parsed = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("torn usage.json ({e}): {text}"));
                    parsed += 1;
                }
            }
            parsed
        });
        (handle, workers_done)
    };
    workers.into_iter().for_each(|w| w.join().unwrap());
    reader.1.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.0.join().unwrap();
    let summary = env.run(&["telemetry", "summary"]).ok().json();
    assert_eq!(summary["features"]["f"]["total"], 20);
}

#[test]
fn diagnostics_refuses_without_consent() {
    let env = TestEnv::new();
    let r = env.run(&["diagnostics"]).code(1);
    assert!(r.stderr.contains("requires opt-in"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(!env.path("logs/diagnostics").exists());
    // Telemetry consent alone is not enough.
    env.write(
        "config/comfyvn.json",
        r#"{"features": {"enable_observability": true}, "telemetry": {"telemetry_opt_in": true}}"#,
    );
    env.run(&["diagnostics"]).code(1);
}

#[test]
fn diagnostics_zip_has_the_four_documents() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", ALL_ON);
    env.run(&["telemetry", "record-event", "e", "--payload", r#"{"user": "bob", "note": "hi"}"#]).ok();
    env.run(&["crash", "capture", "--message", "secret plans"]).ok();
    let r = env.run(&["diagnostics"]).ok();
    let path = PathBuf::from(r.stdout.trim());
    assert!(path.starts_with(env.path("logs/diagnostics")), "{}", path.display());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let id = env.run(&["telemetry", "summary"]).ok().json()["anonymous_id"].as_str().unwrap().to_string();
    assert!(name.starts_with("comfyvn-diagnostics-") && name.ends_with(&format!("-{}.zip", &id[..8])), "{name}");

    let entries = bundle::read_entries(&path).unwrap();
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["manifest.json", "telemetry.json", "crashes.json", "redactions.json"]);
    let doc = |n: &str| -> Value { serde_json::from_slice(&entries.iter().find(|(e, _)| e == n).unwrap().1).unwrap() };

    let manifest = doc("manifest.json");
    assert_eq!(manifest["anonymous_id"], id);
    assert_eq!(manifest["app_version"], env!("CARGO_PKG_VERSION"));
    assert!(manifest["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(manifest["flag_enabled"], true);
    assert_eq!(manifest["consent"]["diagnostics_opt_in"], true);
    assert_eq!(manifest["health"]["diagnostics_active"], true);

    let telemetry = doc("telemetry.json");
    assert_eq!(telemetry["events"][0]["event"], "e");
    assert_ne!(telemetry["events"][0]["payload"]["user"], "bob");

    let crashes = doc("crashes.json");
    let c = &crashes["crashes"][0];
    assert_eq!(c["exc_type"], "Error");
    assert_eq!(c["event_id"].as_str().unwrap().len(), 8);
    assert_eq!(c["message_digest"].as_str().unwrap().len(), 32);
    let raw: String = entries.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
    assert!(!raw.contains("secret plans") && !raw.contains("bob"), "{raw}");

    let redactions = doc("redactions.json");
    assert_eq!(redactions["by_rule"]["sensitive_key"], 1);
    assert_eq!(redactions["by_rule"]["crash_message"], 1);
}
