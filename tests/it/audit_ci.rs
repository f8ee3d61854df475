//! `audit` at studio scale: baselines (`--baseline`, `--write-baseline`), sharded audits
//! (`--shard K/N` and `audit merge`), the release gate (`--release`) and the progress line's
//! absence on a pipe.

use serde_json::{json, Value};

use crate::support::TestEnv;

const FORMATS: [&str; 5] = ["text", "json", "sarif", "junit", "github"];

/// A tree of 40 folders, registered by `audit --fix`, then given every kind of finding, several of
/// which span folders: duplicate content, a copied sidecar (a uid used twice), plus orphans, invalid
/// and missing sidecars, a changed file, a symbolic link and a disallowed license.
fn studio_tree() -> TestEnv {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"audit": {"licenses": {"deny": ["CC-BY-NC-4.0"]}}}}"#);
    for i in 0..40 {
        let dir = if i % 4 == 0 { format!("assets/t{}/f{i}", i % 5) } else { format!("assets/f{i}") };
        for j in 0..3 {
            env.write(&format!("{dir}/a{j}.png"), format!("asset {i} {j}\n"));
        }
    }
    // The same bytes in folders far apart.
    env.write("assets/f1/dup.png", "shared bytes\n");
    env.write("assets/f22/dup.png", "shared bytes\n");
    env.write("assets/t3/f8/dup-too.png", "shared bytes\n");
    env.run(&["audit", "--fix"]).code(0);
    // A sidecar copied to another folder along with its file: the uid is now used twice.
    std::fs::copy(env.path("assets/f5/a0.png"), env.path("assets/f30/copied.png")).unwrap();
    std::fs::copy(env.path("assets/f5/a0.png.asset.json"), env.path("assets/f30/copied.png.asset.json")).unwrap();
    env.write("assets/f2/gone.png.asset.json", std::fs::read(env.path("assets/f2/a0.png.asset.json")).unwrap());
    env.write("assets/f3/a1.png.asset.json", "{ not json");
    env.write("assets/f6/new.png", "added after the fix\n");
    env.write("assets/f7/a2.png", "changed content\n");
    let mut s: Value = serde_json::from_str(&env.read("assets/f9/a0.png.asset.json")).unwrap();
    s["license"] = json!("CC-BY-NC-4.0");
    s["tags"] = json!(["kept"]);
    env.write("assets/f9/a0.png.asset.json", serde_json::to_vec_pretty(&s).unwrap());
    std::os::unix::fs::symlink("a0.png", env.path("assets/f10/link.png")).unwrap();
    env
}

/// `audit --shard K/N --format json` for every K, each saved beside the assets root.
fn shard_reports(env: &TestEnv, n: u32, extra: &[&str]) -> Vec<String> {
    (1..=n)
        .map(|k| {
            let shard = format!("{k}/{n}");
            let mut args = vec!["audit", "--shard", &shard, "--format", "json"];
            args.extend_from_slice(extra);
            let r = env.run(&args);
            assert!(r.code == 0 || r.code == 1, "shard {shard}: {}\n{}", r.code, r.stderr);
            let name = format!("shard-{k}-of-{n}{}.json", extra.join(""));
            env.write(&name, &r.stdout);
            name
        })
        .collect()
}

#[test]
fn merged_shards_equal_the_unsharded_audit_byte_for_byte() {
    let env = studio_tree();
    let single: Vec<_> = FORMATS.iter().map(|f| env.run(&["audit", "--format", f])).collect();
    let findings = single[1].json()["findings"].as_array().unwrap().clone();
    for rule in ["duplicate-content", "invalid-sidecar", "orphan-sidecar", "stale-hash", "disallowed-license"] {
        assert!(findings.iter().any(|f| f["rule"] == rule), "the tree has no {rule} finding");
    }
    assert!(findings.iter().any(|f| f["message"].as_str().unwrap().contains("is also used by")));
    assert!(single[0].stdout.contains("note: skipped assets/f10/link.png"), "{}", single[0].stdout);
    for n in [1, 3, 7] {
        let reports = shard_reports(&env, n, &[]);
        if n > 1 {
            // The cross-folder checks are left to the merge: no shard sees both copies.
            for name in &reports {
                let doc: Value = serde_json::from_str(&env.read(name)).unwrap();
                assert!(doc["findings"].as_array().unwrap().iter().all(|f| f["rule"] != "duplicate-content"));
                assert_eq!(doc["shard"]["count"], n);
            }
        }
        for (format, expected) in FORMATS.iter().zip(&single) {
            let mut args = vec!["audit", "merge", "--format", format];
            args.extend(reports.iter().rev().map(String::as_str));
            let merged = env.run(&args);
            assert_eq!(merged.code, expected.code, "exit code, N = {n}, {format}\n{}", merged.stderr);
            assert_eq!(merged.stdout, expected.stdout, "N = {n}, --format {format}");
        }
    }
}

#[test]
fn every_asset_is_in_exactly_one_shard_with_its_sidecar() {
    let env = studio_tree();
    let reports = shard_reports(&env, 7, &[]);
    let mut paths: Vec<String> = Vec::new();
    let mut non_empty = 0;
    for name in &reports {
        let doc: Value = serde_json::from_str(&env.read(name)).unwrap();
        let tree = doc["tree"].as_array().unwrap();
        non_empty += usize::from(!tree.is_empty());
        paths.extend(tree.iter().map(|e| e["path"].as_str().unwrap().to_string()));
        // A shard's sidecar findings are about its own assets' folders.
        let folders: Vec<&str> = tree.iter().map(|e| e["path"].as_str().unwrap().rsplit_once('/').unwrap().0).collect();
        for f in doc["findings"].as_array().unwrap() {
            let dir = f["path"].as_str().unwrap().rsplit_once('/').unwrap().0;
            assert!(folders.contains(&dir) || f["rule"] == "orphan-sidecar", "{f} in {name}");
        }
    }
    assert!(non_empty >= 3, "40 folders spread over several of 7 shards");
    let total = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), total, "no asset is in two shards");
    let single = env.run(&["audit", "--format", "json"]).json();
    assert_eq!(total as u64, single["summary"]["assets"].as_u64().unwrap());

    // Adding files elsewhere does not move a folder to another shard.
    let before: Vec<String> = reports.iter().map(|r| env.read(r)).collect();
    env.write("assets/brand-new-folder/x.png", "x\n");
    let after = shard_reports(&env, 7, &[]);
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| {
            let tree = |s: &str| serde_json::from_str::<Value>(s).unwrap()["tree"].clone();
            let mut t = tree(&env.read(a));
            t.as_array_mut().unwrap().retain(|e| !e["path"].as_str().unwrap().starts_with("brand-new-folder/"));
            t != tree(b)
        })
        .count();
    assert_eq!(moved, 0);
}

#[test]
fn merge_refuses_incomplete_or_mixed_shards() {
    let env = studio_tree();
    let reports = shard_reports(&env, 3, &[]);
    let r = env.run(&["audit", "merge", &reports[0], &reports[2]]).code(2);
    assert!(r.stderr.contains("shard 2/3 is missing"), "{}", r.stderr);
    let r = env.run(&["audit", "merge", &reports[0], &reports[0], &reports[1], &reports[2]]).code(2);
    assert!(r.stderr.contains("given twice"), "{}", r.stderr);
    let other = shard_reports(&env, 3, &["--fail-on", "warning"]);
    let r = env.run(&["audit", "merge", &reports[0], &reports[1], &other[2]]).code(2);
    assert!(r.stderr.contains("not shards of one audit"), "{}", r.stderr);
    env.write("whole.json", env.run(&["audit", "--format", "json"]).stdout);
    let r = env.run(&["audit", "merge", "whole.json"]).code(2);
    assert!(r.stderr.contains("not of a shard"), "{}", r.stderr);
    let r = env.run(&["audit", "--shard", "4/3"]).code(2);
    assert!(r.stderr.contains("between 1 and N"), "{}", r.stderr);
    let r = env.run(&["audit", "--shard", "1/3", "--fix"]).code(2);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
}

#[test]
fn baseline_reports_only_new_and_worse_findings_and_lists_resolved_ones() {
    let env = studio_tree();
    // Writing the baseline: the full report, and exit 0 (nothing is new against it).
    let full = env.run(&["audit", "--write-baseline", "baseline.json"]).code(0);
    assert!(full.stdout.contains("error[stale-hash]"), "{}", full.stdout);
    let doc: Value = serde_json::from_str(&env.read("baseline.json")).unwrap();
    assert_eq!(doc["schema"], 1);
    let entries = doc["findings"].as_array().unwrap();
    let all = env.run(&["audit", "--format", "json"]).json();
    assert_eq!(entries.len(), all["findings"].as_array().unwrap().len());
    let keys: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e["rule"].as_str().unwrap().to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "the baseline is sorted");
    assert_eq!(env.read("baseline.json").lines().count(), entries.len() + 6, "one finding a line");

    // Nothing changed: clean, exit 0.
    let r = env.run(&["audit", "--baseline", "baseline.json"]).code(0);
    assert_eq!(
        r.stdout.lines().last().unwrap(),
        format!(
            "audit passed: 0 errors, 0 warnings in {} assets, {} sidecars (fail-on error); {} known in the baseline, 0 resolved",
            all["summary"]["assets"], all["summary"]["sidecars"], entries.len()
        )
    );

    // One new error, one warning that became an error, one fixed error.
    env.write("assets/f11/a0.png", "edited\n");
    env.write(
        "config/comfyvn.json",
        r#"{"obs": {"audit": {"licenses": {"deny": ["CC-BY-NC-4.0"], "require": true}}}}"#,
    );
    std::fs::remove_file(env.path("assets/f2/gone.png.asset.json")).unwrap();
    let r = env.run(&["audit", "--baseline", "baseline.json", "--format", "json"]).code(1);
    let v = r.json();
    let new: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["rule"].as_str().unwrap()))
        .collect();
    assert!(new.contains(&("f11/a0.png", "stale-hash")), "{new:?}");
    assert!(new.contains(&("t2/f12/a0.png", "missing-license")), "a warning that became an error: {new:?}");
    assert!(!new.iter().any(|(_, rule)| *rule == "missing-tags"), "known findings are left out: {new:?}");
    assert_eq!(v["baseline"]["resolved"][0]["path"], "f2/gone.png.asset.json");
    assert_eq!(v["baseline"]["resolved"].as_array().unwrap().len(), 1);
    let text = env.run(&["audit", "--baseline", "baseline.json"]).code(1).stdout;
    assert!(
        text.contains(
            "assets/f2/gone.png.asset.json: resolved[orphan-sidecar]: fixed; can be removed from the baseline"
        ),
        "{text}"
    );
    // Only new warnings: passes at the default --fail-on error.
    env.write("config/comfyvn.json", r#"{"obs": {"audit": {"licenses": {"deny": ["CC-BY-NC-4.0"]}}}}"#);
    env.write("assets/f11/extra.png", "one more\n");
    env.run(&["audit", "--fix", "assets/f11"]).code(0);
    env.run(&["audit", "--baseline", "baseline.json"]).code(0);
    env.run(&["audit", "--baseline", "baseline.json", "--fail-on", "warning"]).code(1);

    // A scoped audit does not call findings outside its scope resolved.
    let r = env.run(&["audit", "assets/f9", "--baseline", "baseline.json", "--format", "json"]).json();
    assert!(r["baseline"]["resolved"].as_array().unwrap().is_empty(), "{}", r["baseline"]);

    let r = env.run(&["audit", "--baseline", "missing.json"]).code(2);
    assert!(r.stderr.contains("hint: create it with `comfyvn-obs audit --write-baseline FILE`"), "{}", r.stderr);
}

#[test]
fn merge_takes_the_baseline_and_gives_the_single_audits_answer() {
    let env = studio_tree();
    env.run(&["audit", "--write-baseline", "baseline.json"]).code(0);
    env.write("assets/f17/a1.png", "new content\n");
    let single = env.run(&["audit", "--baseline", "baseline.json", "--format", "json"]).code(1);
    let reports = shard_reports(&env, 3, &[]);
    let mut args = vec!["audit", "merge", "--baseline", "baseline.json", "--format", "json"];
    args.extend(reports.iter().map(String::as_str));
    let merged = env.run(&args).code(1);
    assert_eq!(merged.stdout, single.stdout);
    let r = env.run(&["audit", "--shard", "1/3", "--baseline", "baseline.json"]).code(2);
    assert!(r.stderr.contains("audit merge"), "{}", r.stderr);
    // A baseline written from the merge equals the one a single audit writes.
    let mut args = vec!["audit", "merge", "--write-baseline", "merged-baseline.json"];
    args.extend(reports.iter().map(String::as_str));
    env.run(&args).code(0);
    env.run(&["audit", "--write-baseline", "single-baseline.json"]).code(0);
    assert_eq!(env.read("merged-baseline.json"), env.read("single-baseline.json"));
}

#[test]
fn release_gate_rules_fire_only_with_release() {
    let env = TestEnv::new();
    for name in ["verified", "pending", "rejected", "no-credit", "credited", "cc0", "either"] {
        env.write(&format!("assets/art/{name}.png"), format!("{name}\n"));
    }
    env.run(&["audit", "--fix"]).code(0);
    let edit = |name: &str, patch: Value| {
        let rel = format!("assets/art/{name}.png.asset.json");
        let mut s: Value = serde_json::from_str(&env.read(&rel)).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        env.write(&rel, serde_json::to_vec_pretty(&s).unwrap());
    };
    let credited = json!({"license": "CC-BY-4.0", "attribution": "Art by Ann (CC BY 4.0)"});
    edit("verified", json!({"license": "CC0-1.0", "license_status": "verified"}));
    edit("pending", json!({"license": "CC0-1.0", "license_status": "pending"}));
    edit("rejected", json!({"license": "CC0-1.0", "license_status": "rejected"}));
    edit("no-credit", json!({"license": "CC-BY-4.0"}));
    edit("credited", credited);
    edit("cc0", json!({"license": "CC0-1.0"}));
    edit("either", json!({"license": "CC0-1.0 OR CC-BY-4.0"}));
    let plain = env.run(&["audit", "--format", "json"]).code(0).json();
    assert!(plain["findings"].as_array().unwrap().iter().all(|f| f["severity"] == "warning"));
    let junit = env.run(&["audit", "--format", "junit"]).stdout;
    assert!(!junit.contains("unverified-license"), "release rules are not suites without --release");
    let r = env.run(&["audit", "--release", "--format", "json"]).code(1).json();
    let errors: Vec<(&str, &str)> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| (f["path"].as_str().unwrap(), f["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("art/no-credit.png", "missing-attribution"),
            ("art/pending.png", "unverified-license"),
            ("art/rejected.png", "unverified-license"),
        ]
    );
    assert_eq!(r["release"], true);
    // The stat cache must not hide an edit of the new fields.
    edit("pending", json!({"license_status": "verified"}));
    edit("rejected", json!({"license_status": "verified"}));
    edit("no-credit", json!({"attribution": "Art by Ann"}));
    let r = env.run(&["audit", "--release"]).code(0);
    assert!(r.stdout.starts_with("assets/art/"), "{}", r.stdout);
    edit("cc0", json!({"license_status": "maybe"}));
    let r = env.run(&["audit"]).code(1);
    assert!(
        r.stdout
            .contains("license_status: expected \"verified\", \"pending\" or \"rejected\", found the string \"maybe\""),
        "{}",
        r.stdout
    );
}

#[test]
fn no_progress_line_on_a_pipe() {
    let env = studio_tree();
    let r = env.run(&["audit", "--full"]);
    assert!(!r.stderr.contains("files,"), "{}", r.stderr);
    assert!(!r.stdout.contains("MB/s"), "{}", r.stdout);
}
