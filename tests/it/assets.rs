//! `assets list|show|register|tag|untag|set-license|remove|credits` against the real binary.

use serde_json::{json, Value};

use crate::audit::fixture;
use crate::support::TestEnv;

fn sidecar(env: &TestEnv, rel: &str) -> Value {
    serde_json::from_str(&env.read(&format!("assets/{rel}.asset.json"))).unwrap()
}

#[test]
fn register_in_place_writes_the_sidecar_and_three_hooks() {
    let env = TestEnv::new();
    env.write("assets/characters/hero.png", "hero");
    let r = env
        .run(&[
            "assets",
            "register",
            "assets/characters/hero.png",
            "--tag",
            "Hero",
            "--tag",
            "hero",
            "--tag",
            "portrait",
            "--license",
            "CC-BY-4.0",
            "--meta",
            r#"{"title": "The hero"}"#,
        ])
        .ok();
    let asset = &r.json()["asset"];
    let hash = comfyvn_obs::digest::sha256_hex(b"hero");
    assert_eq!(asset["uid"], &hash[..16]);
    assert_eq!(asset["type"], "characters");
    assert_eq!(asset["sidecar"], "characters/hero.png.asset.json");
    assert_eq!(asset["meta"]["tags"], json!(["Hero", "portrait"]));
    assert_eq!(asset["meta"]["title"], "The hero");
    assert_eq!(asset["links"], json!({"file": "characters/hero.png", "sidecar": "characters/hero.png.asset.json"}));
    let s = sidecar(&env, "characters/hero.png");
    assert_eq!(s["origin"], "register");
    assert_eq!(s["meta"], json!({"title": "The hero"}));
    assert_eq!(env.events(), ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
    let h = env.history();
    assert_eq!(h[0]["data"]["rel_path"], "characters/hero.png");
    assert!(h[0]["data"]["sidecar"].as_str().unwrap().ends_with("/assets/characters/hero.png.asset.json"));
    assert_eq!(h[2]["data"]["bytes"], 4);
    assert_eq!(h[2]["data"]["hook_event"], "asset_registered");
    assert!(h[2]["data"]["timestamp"].is_f64());
}

#[test]
fn register_outside_the_root_needs_copy() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("assets")).unwrap();
    env.write("incoming/theme.ogg", "la la");
    let r = env.run(&["assets", "register", "incoming/theme.ogg"]).code(2);
    assert!(r.stderr.contains("outside the assets root") && r.stderr.contains("hint: add --copy"), "{}", r.stderr);
    let r = env.run(&["assets", "register", "incoming/theme.ogg", "--copy"]).ok();
    assert_eq!(r.json()["asset"]["path"], "audio/theme.ogg");
    assert_eq!(env.read("assets/audio/theme.ogg"), "la la");
    assert_eq!(env.read("incoming/theme.ogg"), "la la", "the source is left alone");
    let r = env
        .run(&["assets", "register", "incoming/theme.ogg", "--copy", "--dest", "music/main.ogg", "--type", "bgm"])
        .ok();
    assert_eq!(r.json()["asset"]["type"], "bgm");
    assert_eq!(r.json()["asset"]["path"], "music/main.ogg");
    assert_ne!(r.json()["asset"]["uid"], sidecar(&env, "audio/theme.ogg")["uid"], "same content, distinct uid");
    let r = env.run(&["assets", "register", "incoming/theme.ogg", "--copy", "--dest", "../escape.ogg"]).code(2);
    assert!(r.stderr.contains("'..'"), "{}", r.stderr);
}

#[test]
fn register_rejects_bad_input() {
    let env = TestEnv::new();
    env.write("assets/a.png", "a");
    let r = env.run(&["assets", "register", "assets/a.png", "--meta", "[1]"]).code(2);
    assert!(r.stderr.contains("--meta must be a JSON object"), "{}", r.stderr);
    let r = env.run(&["assets", "register", "assets/a.png", "--license", "MIT OR"]).code(2);
    assert!(r.stderr.contains("not an SPDX expression"), "{}", r.stderr);
    std::os::unix::fs::symlink("/etc/hostname", env.path("assets/link.png")).unwrap();
    let r = env.run(&["assets", "register", "assets/link.png"]).code(2);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(!env.path("assets/link.png.asset.json").exists());
    env.run(&["assets", "register", "assets/missing.png"]).code(2);
    assert!(!env.path("logs/hooks/history.jsonl").exists());
}

#[test]
fn two_processes_tagging_one_asset_at_once_keep_every_tag() {
    let env = fixture("valid");
    // Each `assets tag` reads, changes and replaces the whole sidecar; run two loops of them side by
    // side and check that no edit overwrote another.
    std::thread::scope(|s| {
        for w in 0..2 {
            let env = &env;
            s.spawn(move || {
                for i in 0..12 {
                    env.run(&["assets", "tag", "characters/hero.png", &format!("w{w}-{i:02}")]).ok();
                }
            });
        }
    });
    let tags = sidecar(&env, "characters/hero.png")["tags"].as_array().unwrap().len();
    assert_eq!(tags, 2 + 24, "the fixture's two tags and every added one");
    let events = env.run(&["hooks", "tail", "-n", "1000", "--event", "on_asset_meta_updated", "--json"]).ok();
    assert_eq!(events.json_lines().len(), 24, "one event per edit");
}

#[test]
fn tag_untag_and_set_license_by_uid_or_path() {
    let env = fixture("valid");
    let uid = sidecar(&env, "characters/hero.png")["uid"].as_str().unwrap().to_string();
    let r = env.run(&["assets", "tag", &uid, "Main", "HERO", "lead"]).ok();
    assert_eq!(r.json()["asset"]["meta"]["tags"], json!(["hero", "portrait", "Main", "lead"]));
    let r = env.run(&["assets", "untag", "characters/hero.png", "main", "PORTRAIT"]).ok();
    assert_eq!(r.json()["asset"]["meta"]["tags"], json!(["hero", "lead"]));
    env.run(&["assets", "set-license", "assets/characters/hero.png", "MIT"]).ok();
    assert_eq!(sidecar(&env, "characters/hero.png")["license"], "MIT");
    env.run(&["assets", "set-license", &uid, ""]).ok();
    assert_eq!(sidecar(&env, "characters/hero.png")["license"], Value::Null);
    let r = env.run(&["assets", "set-license", &uid, "not/spdx"]).code(2);
    assert!(r.stderr.contains("not an SPDX expression"));
    assert_eq!(
        env.events(),
        [
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
            "on_asset_sidecar_written",
            "on_asset_meta_updated",
        ]
    );
    // Machine fields untouched; the provenance a person recorded is kept.
    let s = sidecar(&env, "characters/hero.png");
    assert_eq!(s["provenance"], json!({"source": "fixtures"}));
    assert_eq!(s["created_at"], "2026-01-01T00:00:00.000000Z");
    assert_ne!(s["updated_at"], "2026-01-01T00:00:00.000000Z");
}

#[test]
fn list_filters_and_json_shape() {
    let env = fixture("valid");
    let r = env.run(&["assets", "list", "--json"]).ok();
    let v = r.json();
    assert_eq!(v["total"], 3);
    let paths: Vec<&str> = v["items"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["audio/theme.ogg", "backgrounds/sky.png", "characters/hero.png"]);
    let keys: Vec<&String> = v["items"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["uid", "type", "hash", "bytes", "path", "sidecar", "meta", "links", "created_at"]);
    let only = |args: &[&str]| {
        let mut all = vec!["assets", "list", "--json"];
        all.extend_from_slice(args);
        env.run(&all).ok().json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(only(&["--type", "Characters"]), ["characters/hero.png"]);
    assert_eq!(only(&["--tag", "HERO", "--tag", "portrait"]), ["characters/hero.png"]);
    assert!(only(&["--tag", "hero", "--tag", "sky"]).is_empty());
    assert_eq!(
        only(&["--license", "cc0-1.0", "--license", "CC-BY-4.0"]),
        ["backgrounds/sky.png", "characters/hero.png"]
    );
    assert_eq!(only(&["--search", "SKY"]), ["backgrounds/sky.png"]);
    let table = env.run(&["assets", "list"]).ok().stdout;
    assert_eq!(table.lines().count(), 3);
    assert!(table.lines().last().unwrap().ends_with("characters/hero.png"));
}

#[test]
fn show_and_unknown_assets() {
    let env = fixture("valid");
    let uid = sidecar(&env, "backgrounds/sky.png")["uid"].as_str().unwrap().to_string();
    let v = env.run(&["assets", "show", &uid]).ok().json();
    assert_eq!(v["asset"]["path"], "backgrounds/sky.png");
    assert_eq!(v["sidecar"]["provenance"]["source"], "fixtures");
    let r = env.run(&["assets", "show", "nope"]).code(1);
    assert!(r.stderr.contains("no registered asset") && r.stderr.contains("hint:"), "{}", r.stderr);
    env.run(&["assets", "tag", "nope", "x"]).code(1);
    // An empty runtime root is an empty registry.
    let empty = TestEnv::new();
    assert_eq!(empty.run(&["assets", "list", "--json"]).ok().json(), json!({"items": [], "total": 0}));
}

#[test]
fn remove_moves_file_and_sidecar_to_the_trash() {
    let env = fixture("valid");
    let before = sidecar(&env, "audio/theme.ogg");
    let uid = before["uid"].as_str().unwrap().to_string();
    let v = env.run(&["assets", "remove", &uid]).ok().json();
    assert_eq!(v["removed"], uid.as_str());
    let trash = std::path::PathBuf::from(v["trashed_to"].as_str().unwrap());
    assert!(trash.starts_with(env.path("logs/trash")));
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(trash.join("audio/theme.ogg.asset.json")).unwrap()).unwrap();
    assert_eq!(kept, before, "the human metadata is kept as it was");
    assert_eq!(std::fs::read(trash.join("audio/theme.ogg")).unwrap(), b"la la la\n");
    assert!(!env.path("assets/audio/theme.ogg").exists());
    assert_eq!(env.events(), ["on_asset_removed"]);
    let data = &env.history()[0]["data"];
    assert_eq!((data["uid"].as_str(), data["path"].as_str()), (Some(uid.as_str()), Some("audio/theme.ogg")));
    assert_eq!(data["sidecar"], "audio/theme.ogg.asset.json");
    assert_eq!(env.run(&["assets", "list", "--json"]).ok().json()["total"], 2);
    env.run(&["audit"]).code(0);
}

#[test]
fn uid_is_stable_across_content_edits() {
    let env = TestEnv::new();
    env.write("assets/bg/sky.png", "day");
    let uid = env.run(&["assets", "register", "assets/bg/sky.png", "--tag", "sky"]).ok().json()["asset"]["uid"].clone();
    env.write("assets/bg/sky.png", "night, repainted");
    env.run(&["audit"]).code(1);
    env.run(&["audit", "--fix"]).code(0);
    let s = sidecar(&env, "bg/sky.png");
    assert_eq!(s["uid"], uid);
    assert_eq!(s["hash"], comfyvn_obs::digest::sha256_hex(b"night, repainted"));
    assert_eq!(s["version"], 2);
    assert_eq!(s["tags"], json!(["sky"]));
    let last = env.history().pop().unwrap();
    assert_eq!(last["event"], "on_asset_meta_updated");
    assert_eq!(last["data"]["previous_hash"], comfyvn_obs::digest::sha256_hex(b"day"));
    assert_eq!(env.run(&["assets", "show", uid.as_str().unwrap()]).ok().json()["asset"]["path"], "bg/sky.png");
}

#[test]
fn credits_come_from_the_sidecars_grouped_and_deterministic() {
    let env = TestEnv::new();
    env.write("assets/music/theme.ogg", "theme\n");
    env.write("assets/art/hero.png", "hero\n");
    env.write("assets/art/sky.png", "sky\n");
    env.run(&["audit", "--fix"]).code(0);
    let edit = |rel: &str, patch: Value| {
        let path = format!("assets/{rel}.asset.json");
        let mut s: Value = serde_json::from_str(&env.read(&path)).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        env.write(&path, serde_json::to_vec_pretty(&s).unwrap());
    };
    edit(
        "art/hero.png",
        json!({"license": "CC-BY-4.0", "author": "Ann", "source_url": "https://example.org/hero",
               "attribution": "Hero by Ann, CC BY 4.0", "license_status": "verified", "meta": {"title": "Hero"}}),
    );
    edit("art/sky.png", json!({"license": "CC0-1.0", "author": "Bo"}));
    edit("music/theme.ogg", json!({"license": "CC-BY-4.0", "author": "Cy", "attribution": "Theme by Cy"}));
    let md = env.run(&["assets", "credits"]).ok().stdout;
    assert_eq!(
        md,
        "# Credits\n\
         \n## Creative Commons Attribution 4.0 International (CC-BY-4.0)\n\n\
         - **Hero**, by Ann, <https://example.org/hero> (`art/hero.png`)\n  > Hero by Ann, CC BY 4.0\n\
         - **theme.ogg**, by Cy (`music/theme.ogg`)\n  > Theme by Cy\n\
         \n## Creative Commons Zero v1.0 Universal (CC0-1.0)\n\n\
         - **sky.png**, by Bo (`art/sky.png`)\n"
    );
    assert_eq!(env.run(&["assets", "credits"]).ok().stdout, md, "the same output every run");
    let by_type = env.run(&["assets", "credits", "--group-by", "type", "--format", "txt"]).ok().stdout;
    assert!(
        by_type.starts_with(
            "CREDITS\n\nart\n  Hero, by Ann, Creative Commons Attribution 4.0 International (CC-BY-4.0)\n"
        ),
        "{by_type}"
    );
    assert!(by_type.contains("\nmusic\n  theme.ogg, by Cy, "), "{by_type}");
    let v = env.run(&["assets", "credits", "--group-by", "author", "--format", "json"]).ok().json();
    let authors: Vec<&str> = v["groups"].as_array().unwrap().iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(authors, ["Ann", "Bo", "Cy"]);
    assert_eq!(v["groups"][0]["assets"][0]["license_status"], "verified");
    assert_eq!(v["groups"][0]["assets"][0]["source_url"], "https://example.org/hero");
}
