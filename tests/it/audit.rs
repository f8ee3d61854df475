//! `audit` and `rebuild` against the fixture trees (`fixtures/trees/<case>`, copied into a temp
//! runtime root), snapshot-style: the expected output is checked exactly.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::TestEnv;

/// A temp runtime root holding a copy of `fixtures/trees/<case>`.
pub fn fixture(case: &str) -> TestEnv {
    let env = TestEnv::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/trees").join(case);
    copy_dir(&src, env.root());
    env
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn valid_tree_passes_and_ignores_junk() {
    let env = fixture("valid");
    let r = env.run(&["audit"]).code(0);
    assert_eq!(r.stdout, "audit passed: 0 errors, 0 warnings in 3 assets, 3 sidecars (fail-on error)\n");
    assert!(env.path("logs/audit/latest.json").exists());
    assert!(env.path("cache/audit-state.json").exists());
}

#[test]
fn missing_sidecar_snapshot() {
    let env = fixture("missing-sidecar");
    let r = env.run(&["audit"]).code(1);
    assert_eq!(
        r.stdout,
        "assets/characters/villain/angry.png: error[missing-sidecar]: no sidecar angry.png.asset.json (fixable with --fix)\n\
         audit failed: 1 error, 0 warnings in 2 assets, 1 sidecar (fail-on error); 1 fixable with --fix\n"
    );
}

#[test]
fn stale_hash_snapshot_reports_both_hashes() {
    let env = fixture("stale-hash");
    let r = env.run(&["audit"]).code(1);
    let v1 = sha256(b"v1 background\n");
    let v2 = sha256(b"v2 of the background, longer\n");
    let (a, b) = (sha256(b"BBBB\n"), sha256(b"AAAA\n"));
    assert_eq!(
        r.stdout,
        format!(
            "assets/backgrounds/grown.png: error[size-mismatch]: the sidecar records 14 bytes, the file has 29 (fixable with --fix)\n\
             assets/backgrounds/grown.png: error[stale-hash]: content changed: the sidecar records hash {v1}, the file hashes to {v2} (fixable with --fix)\n\
             assets/backgrounds/same-size.png: error[stale-hash]: content changed: the sidecar records hash {a}, the file hashes to {b} (fixable with --fix)\n\
             audit failed: 3 errors, 0 warnings in 3 assets, 3 sidecars (fail-on error); 3 fixable with --fix\n"
        )
    );
}

#[test]
fn orphan_snapshot() {
    let env = fixture("orphan");
    let r = env.run(&["audit"]).code(1);
    assert_eq!(
        r.stdout,
        "assets/ui/old-button.png.asset.json: error[orphan-sidecar]: no asset old-button.png beside this sidecar\n\
         audit failed: 1 error, 0 warnings in 1 asset, 2 sidecars (fail-on error)\n"
    );
}

#[test]
fn invalid_snapshot_names_each_field() {
    let env = fixture("invalid");
    let r = env.run(&["audit"]).code(1);
    assert_eq!(
        r.stdout,
        "assets/characters/a-bad-json.png.asset.json: error[invalid-sidecar]: truncated JSON at line 2, column 0: EOF while parsing a value\n\
         assets/characters/b-wrong-types.png.asset.json: error[invalid-sidecar]: bytes: expected a non-negative integer, found the string \"12\"; tags: expected an array of strings, found the string \"hero\"\n\
         assets/characters/c-schema-2.png.asset.json: error[invalid-sidecar]: schema: unsupported version 2 (this tool reads 1)\n\
         assets/characters/d-hand-written.png.asset.json: error[invalid-sidecar]: schema: missing (a sidecar of the original toolkit?); uid: missing; type: missing; path: missing; hash: missing; bytes: missing (fixable with --fix)\n\
         assets/characters/e-moved.png.asset.json: error[invalid-sidecar]: path: records \"characters/old-name.png\" but the sidecar is beside \"characters/e-moved.png\" (fixable with --fix)\n\
         assets/characters/f-not-object.png.asset.json: error[invalid-sidecar]: expected a JSON object at the top level, found an array\n\
         audit failed: 6 errors, 0 warnings in 6 assets, 6 sidecars (fail-on error); 2 fixable with --fix\n"
    );
}

#[test]
fn license_policy_snapshot() {
    let env = fixture("license-policy");
    let r = env.run(&["audit"]).code(1);
    assert_eq!(
        r.stdout,
        "assets/art/bare.png: warning[missing-license]: no license\n\
         assets/art/bare.png: warning[missing-provenance]: no provenance source\n\
         assets/art/bare.png: warning[missing-tags]: no tags\n\
         assets/art/denied.png: error[disallowed-license]: license \"CC-BY-NC-4.0\": CC-BY-NC-4.0 is denied by obs.audit.licenses.deny\n\
         assets/art/garbled.png: error[disallowed-license]: license \"MIT and/or whatever\" is not an SPDX expression: character '/' is not allowed in license expression \"MIT and/or whatever\"\n\
         assets/art/not-allowed.png: error[disallowed-license]: license \"GPL-3.0-only\": GPL-3.0-only is not in obs.audit.licenses.allow\n\
         audit failed: 3 errors, 3 warnings in 6 assets, 6 sidecars (fail-on error)\n"
    );
    // `require` turns a missing license into an error.
    env.write("config/comfyvn.json", r#"{"obs": {"audit": {"licenses": {"allow": [], "deny": [], "require": true}}}}"#);
    let r = env.run(&["audit", "--format", "json"]).code(1);
    let bare: Vec<Value> =
        r.json()["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "missing-license").cloned().collect();
    assert_eq!(bare[0]["severity"], "error");
}

#[test]
fn duplicates_snapshot_and_fail_on() {
    let env = fixture("duplicates");
    let r = env.run(&["audit"]).code(0);
    assert_eq!(
        r.stdout,
        "assets/backgrounds/a.png: warning[duplicate-content]: same content as backgrounds/b.png, backgrounds/c.png\n\
         assets/backgrounds/b.png: warning[duplicate-content]: same content as backgrounds/a.png, backgrounds/c.png\n\
         assets/backgrounds/c.png: warning[duplicate-content]: same content as backgrounds/a.png, backgrounds/b.png\n\
         audit passed: 0 errors, 3 warnings in 4 assets, 4 sidecars (fail-on error)\n"
    );
    env.run(&["audit", "--fail-on", "warning"]).code(1);
    fixture("orphan").run(&["audit", "--fail-on", "never"]).code(0);
    env.write("config/comfyvn.json", r#"{"obs": {"audit": {"fail_on": "warning"}}}"#);
    env.run(&["audit"]).code(1);
}

#[test]
fn json_report_shape() {
    let env = fixture("missing-sidecar");
    let r = env.run(&["audit", "--format", "json"]).code(1);
    let v = r.json();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["assets_root"], "assets");
    assert_eq!(v["mode"], "check");
    assert_eq!(v["fail_on"], "error");
    assert_eq!(
        v["summary"],
        json!({"assets": 2, "sidecars": 1, "errors": 1, "warnings": 0, "fixable": 1, "changes": 0,
               "failed_changes": 0, "passed": false})
    );
    assert_eq!(
        v["findings"],
        json!([{"path": "characters/villain/angry.png", "rule": "missing-sidecar", "severity": "error",
                "message": "no sidecar angry.png.asset.json", "fixable": true,
                // 64-bit FNV-1a of the rule id: the rule has no subject.
                "fingerprint": "c904da583cd8ae39"}])
    );
    assert!(v.get("generated_at").is_none() && v.get("stats").is_none(), "stdout stays reproducible");
    let text = env.read("logs/audit/latest.json");
    let latest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(latest["findings"], v["findings"]);
    assert_eq!(latest["stats"]["files_hashed"], 2);
    assert!(latest["generated_at"].is_string());
    // One finding a line, whole: grep finds it.
    let line = text.lines().find(|l| l.contains("missing-sidecar")).unwrap();
    let one: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(one, v["findings"][0], "{text}");
}

#[test]
fn sarif_is_a_valid_2_1_0_log() {
    let env = fixture("invalid");
    let v = env.run(&["audit", "--format", "sarif"]).code(1).json();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "comfyvn-obs");
    let rules: Vec<&str> =
        run["tool"]["driver"]["rules"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), 13);
    assert!(rules.contains(&"invalid-sidecar") && rules.contains(&"unreadable"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for res in results {
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][idx]["id"], res["ruleId"]);
        assert_eq!(res["level"], "error");
        assert!(res["message"]["text"].is_string());
        let loc = &res["locations"][0]["physicalLocation"];
        assert!(loc["artifactLocation"]["uri"].as_str().unwrap().starts_with("assets/characters/"));
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "%SRCROOT%");
        assert_eq!(loc["region"]["startLine"], 1);
        assert_eq!(res["partialFingerprints"]["comfyvnFinding/v1"].as_str().unwrap().len(), 32);
    }
}

#[test]
fn junit_lists_each_rule_and_failure() {
    let env = fixture("license-policy");
    let out = env.run(&["audit", "--format", "junit"]).code(1).stdout;
    assert!(out.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"comfyvn-obs audit\""));
    assert!(out.contains("tests=\"13\" failures=\"3\" errors=\"0\""), "{out}");
    assert_eq!(out.matches("<testsuite ").count(), 11);
    assert_eq!(out.matches("<failure ").count(), 3);
    assert!(out.contains("<testcase name=\"assets/art/denied.png\" classname=\"comfyvn-obs.audit.disallowed-license\" file=\"assets/art/denied.png\">"));
    assert!(out.contains("license &quot;CC-BY-NC-4.0&quot;"), "attributes are escaped");
    assert!(out.contains("<system-out>assets/art/bare.png: warning[missing-tags]: no tags"));
    assert_eq!(out.matches("<testcase").count(), out.matches("</testcase>").count() + out.matches("\"/>").count());
    assert!(out.trim_end().ends_with("</testsuites>"));
}

#[test]
fn github_annotations() {
    let env = fixture("missing-sidecar");
    let out = env.run(&["audit", "--format", "github"]).code(1).stdout;
    assert_eq!(
        out,
        "::error file=assets/characters/villain/angry.png,line=1,title=missing-sidecar::no sidecar angry.png.asset.json\n\
         audit failed: 1 error, 0 warnings in 2 assets, 1 sidecar (fail-on error); 1 fixable with --fix\n"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let env = fixture("stale-hash");
    std::fs::remove_file(env.path("assets/backgrounds/ok.png.asset.json")).unwrap();
    let before = snapshot_tree(&env.path("assets"));
    let r = env.run(&["audit", "--dry-run"]).code(1);
    let uid = &sha256(b"unchanged\n")[..16];
    assert!(
        r.stdout.ends_with(&format!(
            "would write assets/backgrounds/grown.png.asset.json (refresh: hash, bytes)\n\
             would write assets/backgrounds/ok.png.asset.json (register: new sidecar, uid {uid})\n\
             would write assets/backgrounds/same-size.png.asset.json (refresh: hash)\n\
             dry run: 3 sidecar(s) would be written; nothing was changed\n\
             audit failed: 4 errors, 0 warnings in 3 assets, 2 sidecars (fail-on error)\n"
        )),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot_tree(&env.path("assets")), before);
    for p in ["logs", "cache"] {
        assert!(!env.path(p).exists(), "{p} must not be written by --dry-run");
    }
    // --report is accepted (compatibility) and changes nothing.
    env.run(&["audit", "--report", "--dry-run"]).code(1);
}

#[test]
fn fix_writes_refreshes_and_emits_hooks_in_order() {
    let env = fixture("stale-hash");
    std::fs::remove_file(env.path("assets/backgrounds/ok.png.asset.json")).unwrap();
    let r = env.run(&["audit", "--fix"]).code(0);
    assert!(
        r.stdout.contains("wrote assets/backgrounds/ok.png.asset.json (register: new sidecar, uid "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("audit passed: 0 errors, 3 warnings in 3 assets, 3 sidecars (fail-on error)\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        env.events(),
        [
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
            "on_asset_sidecar_written",
            "on_asset_saved",
            "on_asset_registered",
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
        ]
    );
    let h = env.history();
    assert_eq!(h[1]["data"]["path"], "backgrounds/grown.png");
    assert_eq!(h[1]["data"]["previous_hash"], sha256(b"v1 background\n"));
    assert_eq!(h[1]["data"]["hook_event"], "asset_meta_updated");
    assert_eq!(h[4]["data"]["meta"]["origin"], "audit");
    let seqs: Vec<u64> = h.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    // Human fields and the uid survive the refresh; version counts the content change.
    let grown: Value = serde_json::from_str(&env.read("assets/backgrounds/grown.png.asset.json")).unwrap();
    assert_eq!(grown["uid"], &sha256(b"v1 background\n")[..16]);
    assert_eq!(grown["hash"], sha256(b"v2 of the background, longer\n"));
    assert_eq!((grown["bytes"].as_u64(), grown["version"].as_u64()), (Some(29), Some(2)));
    assert_eq!(grown["tags"], json!(["fixture"]));
    assert_eq!(grown["provenance"], json!({"source": "fixtures"}));
    assert_eq!(grown["created_at"], "2026-01-01T00:00:00.000000Z");
    // The asset bytes are never touched.
    assert_eq!(std::fs::read(env.path("assets/backgrounds/grown.png")).unwrap(), b"v2 of the background, longer\n");
    // Nothing left to fix: a second --fix writes and emits nothing.
    env.run(&["audit", "--fix"]).code(0);
    assert_eq!(env.history().len(), 7);
}

/// `--fix` appends a chunk's hook events while it writes the next chunk, but that chunk's sidecars
/// land only once those events are in: when the history cannot be appended, nothing more is written
/// and no staged file is left behind.
#[test]
fn fix_stops_writing_when_its_hook_events_cannot_be_appended() {
    let chunk = comfyvn_obs::commands::audit::CHUNK;
    let env = TestEnv::new();
    for i in 0..chunk + 4 {
        env.write(&format!("assets/bulk/f{i:05}.png"), i.to_string());
    }
    // A folder where the history file should be: every append fails.
    std::fs::create_dir_all(env.path("logs/hooks/history.jsonl")).unwrap();
    let r = env.run(&["audit", "--fix"]).code(2);
    assert!(r.stderr.contains("hook events could not be appended"), "{}", r.stderr);
    let names: Vec<String> = std::fs::read_dir(env.path("assets/bulk"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let sidecars = names.iter().filter(|n| n.ends_with(".asset.json")).count();
    assert_eq!(sidecars, chunk, "the first chunk only");
    assert_eq!(
        names.len(),
        2 * chunk + 4,
        "no staged temp files left: {:?}",
        names.iter().filter(|n| n.starts_with('.')).collect::<Vec<_>>()
    );
    // Once the history can be written, the rest is registered and announced.
    std::fs::remove_dir(env.path("logs/hooks/history.jsonl")).unwrap();
    env.run(&["audit", "--fix"]).code(0);
    assert_eq!(env.events().iter().filter(|e| *e == "on_asset_registered").count(), 4);
}

#[test]
fn fix_completes_hand_written_and_moved_sidecars_but_never_rewrites_invalid_ones() {
    let env = fixture("invalid");
    let bad = env.read("assets/characters/b-wrong-types.png.asset.json");
    let r = env.run(&["audit", "--fix", "--format", "json"]).code(1);
    let changes: Vec<String> = r.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c["path"].as_str().unwrap(), c["action"], c["status"]))
        .collect();
    assert_eq!(
        changes,
        [
            "characters/d-hand-written.png.asset.json \"refresh\" \"applied\"",
            "characters/e-moved.png.asset.json \"refresh\" \"applied\"",
        ]
    );
    assert_eq!(env.read("assets/characters/b-wrong-types.png.asset.json"), bad);
    let hand: Value = serde_json::from_str(&env.read("assets/characters/d-hand-written.png.asset.json")).unwrap();
    assert_eq!(hand["schema"], 1);
    assert_eq!(hand["uid"], &sha256(b"d\n")[..16]);
    assert_eq!(hand["tags"], json!(["hand", "written"]));
    assert_eq!(hand["license"], "MIT");
    let moved = env
        .history()
        .into_iter()
        .find(|e| e["data"]["path"] == "characters/e-moved.png" && e["event"] == "on_asset_meta_updated");
    assert_eq!(moved.unwrap()["data"]["previous_path"], "characters/old-name.png");
}

#[test]
fn fill_metadata_fills_tags_and_license() {
    let env = fixture("missing-sidecar");
    env.run(&["audit", "--fill-metadata"]).code(0);
    let v: Value = serde_json::from_str(&env.read("assets/characters/villain/angry.png.asset.json")).unwrap();
    assert_eq!(v["tags"], json!(["characters", "villain", "angry"]));
    assert_eq!(v["license"], "unknown");
    let hero: Value = serde_json::from_str(&env.read("assets/characters/hero.png.asset.json")).unwrap();
    assert_eq!(hero["tags"], json!(["hero"]), "existing tags are kept");
}

#[test]
fn incremental_cache_skips_unchanged_files_and_catches_same_size_edits() {
    let env = fixture("valid");
    // Files copied just now are inside the 2 s racy window: let them settle once.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.run(&["audit"]).code(0);
    let stats =
        |env: &TestEnv| serde_json::from_str::<Value>(&env.read("logs/audit/latest.json")).unwrap()["stats"].clone();
    assert_eq!(stats(&env)["files_hashed"], 3);
    let first = env.run(&["audit", "--format", "json"]).code(0).stdout;
    assert_eq!((stats(&env)["files_cached"].as_u64(), stats(&env)["sidecars_cached"].as_u64()), (Some(3), Some(3)));
    // Byte-for-byte the same report whether hashes came from the cache or not.
    assert_eq!(env.run(&["audit", "--full", "--format", "json"]).code(0).stdout, first);
    assert_eq!(stats(&env)["files_cached"], 0);
    std::fs::write(env.path("assets/characters/hero.png"), b"HERO PORTRAIT\n").unwrap();
    let r = env.run(&["audit"]).code(1);
    assert!(r.stdout.starts_with("assets/characters/hero.png: error[stale-hash]"), "{}", r.stdout);
    assert_eq!(stats(&env)["files_hashed"], 1);
    // A corrupt cache is ignored.
    env.write("cache/audit-state.json", "{garbage");
    let again = env.run(&["audit"]).code(1);
    assert_eq!(again.stdout, r.stdout);
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let env = fixture("license-policy");
    let one = env.run(&["audit", "--jobs", "1", "--full", "--format", "sarif"]).stdout;
    let many = env.run(&["audit", "--jobs", "4", "--full", "--format", "sarif"]).stdout;
    assert_eq!(one, many);
}

#[test]
fn scope_limits_the_audit() {
    let env = fixture("missing-sidecar");
    env.write("assets/bg/loose.png", "x");
    let r = env.run(&["audit", "assets/characters/villain"]).code(1);
    assert!(r.stdout.contains("in 1 asset, 0 sidecars"), "{}", r.stdout);
    assert!(!r.stdout.contains("loose.png"));
    let r = env.run(&["audit", "bg"]).code(1);
    assert!(r.stdout.starts_with("assets/bg/loose.png: error[missing-sidecar]"), "{}", r.stdout);
    // A single file is audited together with its sidecar.
    let one = fixture("valid");
    let r = one.run(&["audit", "assets/characters/hero.png"]).code(0);
    assert_eq!(r.stdout, "audit passed: 0 errors, 0 warnings in 1 asset, 1 sidecar (fail-on error)\n");
    let r = one.run(&["audit", "assets/characters/hero.png.asset.json"]).code(0);
    assert!(r.stdout.contains("in 1 asset, 1 sidecar"), "{}", r.stdout);
    let outside = env.write("elsewhere/x.png", "x");
    let r = env.run(&["audit", outside.to_str().unwrap()]).code(2);
    assert!(r.stderr.contains("outside the assets root") && r.stderr.contains("hint:"), "{}", r.stderr);
}

#[test]
fn bad_names_links_and_unreadable_files_are_reported_not_fatal() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let env = fixture("valid");
    let bad = env.path("assets/characters").join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    std::fs::write(&bad, b"latin-1 name").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.path("assets/characters/passwd.png")).unwrap();
    std::os::unix::fs::symlink(env.path("assets"), env.path("assets/loop")).unwrap();
    let locked = env.write("assets/characters/locked.png", "secret");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let r = env.run(&["audit"]).code(1);
    assert!(
        r.stdout.contains("assets/characters/caf\u{fffd}.png: error[unreadable]: file name is not valid UTF-8"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("note: skipped assets/characters/passwd.png: symbolic link (not followed)"));
    assert!(r.stdout.contains("note: skipped assets/loop: symbolic link (not followed)"));
    if std::fs::read(&locked).is_err() {
        assert!(
            r.stdout.contains("assets/characters/locked.png: error[unreadable]: cannot read: permission denied"),
            "{}",
            r.stdout
        );
    } else {
        // Running as root: the file is readable, so it is simply unregistered.
        assert!(r.stdout.contains("assets/characters/locked.png: error[missing-sidecar]"), "{}", r.stdout);
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn tool_failures_exit_2() {
    let env = TestEnv::new();
    let r = env.run(&["audit"]).code(2);
    assert!(r.stderr.contains("assets root") && r.stderr.contains("does not exist"), "{}", r.stderr);
    env.write("assets/a.png", "a");
    env.write("config/comfyvn.json", r#"{"obs": {"audit": {"fail_on": "sometimes"}}}"#);
    env.run(&["audit"]).code(2);
    env.write("config/comfyvn.json", "{}");
    env.run(&["audit", "--format", "xml"]).code(2);
}

#[test]
fn rebuild_reports_and_enforces_sidecars() {
    let env = fixture("missing-sidecar");
    let r = env.run(&["rebuild"]).code(1);
    assert!(r.stdout.ends_with("rebuild: 2 assets, 1 registered, 0 sidecars written, 1 problems\n"), "{}", r.stdout);
    let r = env.run(&["rebuild", "--enforce-sidecars", "--json"]).code(0);
    let v = r.json();
    assert_eq!(
        (v["assets"].as_u64(), v["registered"].as_u64(), v["sidecars_written"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(env.events(), ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
    env.run(&["audit"]).code(0);
}

fn sha256(bytes: &[u8]) -> String {
    comfyvn_obs::digest::sha256_hex(bytes)
}

fn snapshot_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in crate::support::files_under(dir) {
        out.push((e.to_string_lossy().into_owned(), std::fs::read(&e).unwrap_or_default()));
    }
    out.sort();
    out
}

#[test]
fn audit_fix_removes_temp_files_of_killed_processes_and_says_how_many() {
    let env = TestEnv::new();
    env.write("assets/chars/hero.png", b"png bytes");
    let litter = crate::support::Litter::plant(&env);
    // A plain audit reads only: it leaves them.
    env.run(&["audit"]);
    assert!(litter.stale.iter().all(|p| p.exists()));
    let run = env.run(&["audit", "--fix", "--fail-on", "never"]).ok();
    assert!(run.stderr.contains("removed 3 temp files left by processes that are gone"), "{}", run.stderr);
    litter.assert_swept();
}

/// Two `audit --fix` runs at once (or one racing a watcher): the loser of each race finds the
/// winner's sidecar for the same content and says so; before, it reported files that had sidecars
/// as `missing-sidecar` and exited 1.
#[test]
fn concurrent_audit_fix_runs_both_succeed_and_report_no_missing_sidecar() {
    let env = TestEnv::new();
    for i in 0..1500 {
        env.write(&format!("assets/bg/d{}/f{i}.png", i % 30), format!("file {i}"));
    }
    let spawn = || {
        env.command(&["audit", "--fix", "--format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        let missing = report["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == "missing-sidecar").count();
        assert_eq!((out.status.code(), missing), (Some(0), 0), "{}", report["summary"]);
    }
    let check = env.run(&["audit"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
}
