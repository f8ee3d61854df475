//! `hooks plugins` (status) and `hooks plugins --run` (the host) with a small shell-script plugin.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support::TestEnv;
use crate::webhooks::wait_until;

fn plugin(env: &TestEnv, name: &str, body: &str) {
    let p = env.write(&format!("dev/modder_hooks/{name}"), format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn status(env: &TestEnv) -> Value {
    let mut c = env.command(&["hooks", "plugins", "--json"]);
    c.env("COMFYVN_DEV_MODE", "1");
    let out: crate::support::Run = c.output().unwrap().into();
    out.ok().json()
}

#[test]
fn a_script_plugin_gets_every_envelope_on_stdin_and_its_status_is_shown() {
    let env = TestEnv::new();
    let out = env.path("seen.jsonl");
    plugin(
        &env,
        "record.sh",
        &format!("while IFS= read -r line; do printf '%s\\n' \"$line\" >> '{}'; done", out.display()),
    );
    env.write("dev/modder_hooks/notes.txt", "not executable, not a plugin");

    // Outside dev mode nothing runs and the command says so.
    let off = env.run(&["hooks", "plugins"]).ok();
    assert!(off.stderr.contains("COMFYVN_DEV_MODE=1"), "{}", off.stderr);
    assert_eq!(env.run(&["hooks", "plugins", "--json"]).ok().json()["enabled"], false);
    env.run(&["hooks", "plugins", "--run"]).code(1);

    // Without a host, dev mode lists what would run.
    let idle = status(&env);
    assert_eq!((idle["enabled"].as_bool(), idle["host"].is_null()), (Some(true), true));
    assert_eq!(idle["plugins"].as_array().unwrap().len(), 1);
    assert_eq!(idle["plugins"][0]["running"], false);

    let mut host = env.command(&["hooks", "plugins", "--run"]);
    host.env("COMFYVN_DEV_MODE", "1").stdout(Stdio::null()).stderr(Stdio::null());
    let mut host = host.spawn().unwrap();
    wait_until("the plugin to run", || status(&env)["plugins"][0]["running"] == true);
    for i in 0..3 {
        env.run(&["hooks", "emit", "on_scene_enter", "--data", &json!({"i": i}).to_string()]).ok();
    }
    wait_until("three lines", || std::fs::read_to_string(&out).map(|t| t.lines().count() == 3).unwrap_or(false));
    let lines: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["data"]["i"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(lines[0]["event"], "on_scene_enter");
    assert!(lines[0]["seq"].is_u64() && lines[0]["ts"].is_f64());
    wait_until("the status to count them", || status(&env)["plugins"][0]["delivered"] == 3);
    let st = status(&env);
    assert_eq!(st["host"]["pid"].as_u64(), Some(u64::from(host.id())));
    let plugin_pid = st["plugins"][0]["pid"].as_u64().unwrap();
    assert_eq!((st["plugins"][0]["name"].as_str(), st["plugins"][0]["dropped"].as_u64()), (Some("record.sh"), Some(0)));

    assert!(std::process::Command::new("kill").args(["-TERM", &host.id().to_string()]).status().unwrap().success());
    assert!(host.wait().unwrap().success());
    assert!(!std::path::Path::new(&format!("/proc/{plugin_pid}")).exists(), "the plugin outlived its host");
    let after = status(&env);
    assert!(after["host"].is_null(), "a stopped host is not reported as running: {after}");
}
