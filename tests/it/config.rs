//! `config check|show` and config errors.

use crate::support::TestEnv;

#[test]
fn check_passes_on_defaults_and_show_masks_secrets() {
    let env = TestEnv::new();
    env.run(&["config", "check"]).ok();
    env.write(
        "config/comfyvn.json",
        r#"{"obs": {"server": {"bind": "127.0.0.1:9000"}}, "studio": {"api_token": "abc123"}}"#,
    );
    let show = env.run(&["config", "show"]).ok().json();
    assert_eq!(show["config"]["obs"]["server"]["bind"], "127.0.0.1:9000");
    assert_eq!(show["config"]["studio"]["api_token"], "******");
}

#[test]
fn malformed_config_exits_2_with_path_and_position_and_is_not_reset() {
    let env = TestEnv::new();
    let body = "{\n  \"features\": {\n    \"enable_observability\": tru\n  }\n}";
    env.write("config/comfyvn.json", body);
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("config/comfyvn.json") && run.stderr.contains("line 4"), "{}", run.stderr);
    // Any command refuses to start, and the file is untouched.
    env.run(&["hooks", "list"]).code(2);
    assert_eq!(env.read("config/comfyvn.json"), body);
}

#[test]
fn string_boolean_is_a_config_error() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"features": {"enable_observability": "false"}}"#);
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("features.enable_observability"), "{}", run.stderr);
}

#[test]
fn runtime_root_that_is_a_file_is_a_clear_error() {
    let env = TestEnv::new();
    let file = env.write("not-a-dir", "x");
    let run = env.command(&["config", "check"]).env("COMFYVN_RUNTIME_ROOT", &file).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("is a regular file"));
}
