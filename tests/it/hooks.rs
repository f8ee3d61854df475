//! `hooks list|tail|emit` against the real binary.

use crate::support::TestEnv;

#[test]
fn emit_then_tail_returns_envelopes_with_increasing_seq() {
    let env = TestEnv::new();
    for i in 0..3 {
        let e = env.run(&["hooks", "emit", "on_scene_enter", "--data", &format!(r#"{{"scene_id": "s{i}"}}"#)]).ok();
        assert_eq!(e.json_lines()[0]["seq"], i + 1);
    }
    let tail = env.run(&["hooks", "tail", "-n", "2", "--json"]).ok().json_lines();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["seq"], 2);
    assert_eq!(tail[1]["data"]["scene_id"], "s2");
    let keys: Vec<_> = tail[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["seq", "event", "ts", "data"]);
}

#[test]
fn emit_rejects_unknown_events_and_non_objects() {
    let env = TestEnv::new();
    let r = env.run(&["hooks", "emit", "on_nothing", "--data", "{}"]).code(2);
    assert!(r.stderr.contains("on_nothing"), "{}", r.stderr);
    let r = env.run(&["hooks", "emit", "on_scene_enter", "--data", "[1]"]).code(2);
    assert!(r.stderr.contains("JSON object"), "{}", r.stderr);
    let r = env.run(&["hooks", "emit", "on_scene_enter", "--data", "{bad"]).code(2);
    assert!(r.stderr.contains("not valid JSON"), "{}", r.stderr);
    assert!(!env.path("logs/hooks/history.jsonl").exists());
}

#[test]
fn two_processes_emitting_at_once_never_interleave() {
    let env = TestEnv::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            let script = format!(
                "for i in $(seq 1 25); do {} hooks emit on_scene_enter --data '{{\"i\":1}}' >/dev/null || exit 1; done",
                crate::support::bin().display()
            );
            let mut c = env.command(&[]);
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(script).current_dir(env.root());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            let _ = &mut c;
            sh.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let text = env.read("logs/hooks/history.jsonl");
    let mut seqs: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 100);
    let sorted = seqs.clone();
    seqs.dedup();
    assert_eq!(seqs, sorted);
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

#[test]
fn list_has_the_catalogue() {
    let env = TestEnv::new();
    let list = env.run(&["hooks", "list", "--json"]).ok().json();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"on_asset_registered"));
    assert_eq!(names.iter().filter(|n| n.starts_with("on_")).count(), 63);
}

#[test]
fn emitted_hooks_are_sampled_by_telemetry_only_when_opted_in() {
    let env = TestEnv::new();
    env.run(&["hooks", "emit", "on_scene_enter", "--data", r#"{"scene_id": "a"}"#]).ok();
    assert!(!env.path("logs/telemetry/usage.json").exists());
    env.write(
        "config/comfyvn.json",
        r#"{"features": {"enable_observability": true}, "telemetry": {"telemetry_opt_in": true}}"#,
    );
    env.run(&["hooks", "emit", "on_scene_enter", "--data", r#"{"scene_id": "b", "user_email": "x@y.z"}"#]).ok();
    let usage: serde_json::Value = serde_json::from_str(&env.read("logs/telemetry/usage.json")).unwrap();
    let hook = &usage["hooks"]["on_scene_enter"];
    assert_eq!(hook["total"], 1);
    let sample = hook["samples"][0]["payload"].to_string();
    assert!(!sample.contains("x@y.z"), "{sample}");
}
