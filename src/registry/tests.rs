//! Registry operations against a temp runtime root.

use super::*;
use serde_json::json;

struct Env {
    _dir: tempfile::TempDir,
    paths: Paths,
    reg: Registry,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    std::fs::create_dir_all(&paths.assets_root).unwrap();
    let reg = Registry::open(&paths, &Config::defaults()).unwrap();
    Env { _dir: dir, paths, reg }
}

impl Env {
    fn write(&self, rel: &str, bytes: &[u8]) -> RelPath {
        let p = self.paths.assets_root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        RelPath::parse(rel).unwrap()
    }
    fn sidecar_json(&self, rel: &RelPath) -> Value {
        serde_json::from_slice(&std::fs::read(self.reg.sidecar_abs(rel)).unwrap()).unwrap()
    }
}

fn free(_: &str) -> bool {
    false
}

fn kinds(events: &[RegistryEvent]) -> Vec<&'static str> {
    events.iter().map(RegistryEvent::name).collect()
}

#[test]
fn register_writes_a_sidecar_and_returns_events_in_order() {
    let e = env();
    let rel = e.write("characters/hero.png", b"hero-v1");
    let opts =
        RegisterOptions { tags: vec!["Hero".into(), "hero".into()], license: Some("MIT".into()), ..Default::default() };
    let out = e.reg.register(&rel, &opts, &free).unwrap();
    assert_eq!(kinds(&out.events), ["asset_sidecar_written", "asset_registered"]);
    let hash = crate::digest::sha256_hex(b"hero-v1");
    assert_eq!(out.asset.uid, &hash[..16]);
    assert_eq!(out.asset.asset_type, "characters");
    let v = e.sidecar_json(&rel);
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "schema",
            "uid",
            "type",
            "path",
            "hash",
            "bytes",
            "tags",
            "license",
            "origin",
            "version",
            "created_at",
            "updated_at",
            "meta",
            "provenance"
        ]
    );
    assert_eq!(v["tags"], json!(["Hero"]));
    assert_eq!(v["bytes"], 7);
    let text = std::fs::read_to_string(e.reg.sidecar_abs(&rel)).unwrap();
    assert!(text.starts_with("{\n  \"schema\": 1,") && text.ends_with("}\n"), "{text}");
    // The asset's bytes are untouched.
    assert_eq!(std::fs::read(e.reg.abs(&rel)).unwrap(), b"hero-v1");
}

#[test]
fn uid_is_stable_across_content_edits_and_human_fields_survive_refresh() {
    let e = env();
    let rel = e.write("bg/sky.png", b"sky-1");
    let first = e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap().asset;
    // A person edits human fields and adds a key of their own.
    let mut v = e.sidecar_json(&rel);
    v["tags"] = json!(["Sky", "day"]);
    v["license"] = json!("CC0-1.0");
    v["meta"] = json!({"title": "Blue sky"});
    v["provenance"] = json!({"source": "studio"});
    v["x-reviewed-by"] = json!("mia");
    std::fs::write(e.reg.sidecar_abs(&rel), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    e.write("bg/sky.png", b"sky-2, repainted");
    let out = e.reg.refresh(&rel, &free).unwrap();
    assert_eq!(kinds(&out.events), ["asset_sidecar_written", "asset_meta_updated"]);
    match &out.events[1] {
        RegistryEvent::AssetMetaUpdated { previous_hash, previous_path, .. } => {
            assert_eq!(previous_hash.as_deref(), Some(first.hash.as_str()));
            assert_eq!(*previous_path, None);
        }
        other => panic!("{other:?}"),
    }
    let after = e.sidecar_json(&rel);
    assert_eq!(after["uid"], json!(first.uid));
    assert_eq!(after["hash"], json!(crate::digest::sha256_hex(b"sky-2, repainted")));
    assert_eq!(after["version"], 2);
    assert_eq!(after["tags"], json!(["Sky", "day"]));
    assert_eq!(after["license"], "CC0-1.0");
    assert_eq!(after["meta"], json!({"title": "Blue sky"}));
    assert_eq!(after["provenance"], json!({"source": "studio"}));
    assert_eq!(after["x-reviewed-by"], "mia");
    // Nothing changed: no write, no events.
    assert!(e.reg.refresh(&rel, &free).unwrap().events.is_empty());
}

#[test]
fn update_meta_tags_untags_and_clears_license() {
    let e = env();
    let rel = e.write("a.png", b"a");
    e.reg.register(&rel, &RegisterOptions { license: Some("MIT".into()), ..Default::default() }, &free).unwrap();
    let patch = MetaPatch { add_tags: vec!["One".into(), "two".into(), "ONE".into()], ..Default::default() };
    let out = e.reg.update_meta(&rel, &patch, &free).unwrap();
    assert_eq!(out.asset.tags, ["One", "two"]);
    assert_eq!(kinds(&out.events), ["asset_sidecar_written", "asset_meta_updated"]);
    let patch = MetaPatch { remove_tags: vec!["one".into()], license: Some(None), ..Default::default() };
    let out = e.reg.update_meta(&rel, &patch, &free).unwrap();
    assert_eq!(out.asset.tags, ["two"]);
    assert_eq!(out.asset.license, None);
    let same =
        e.reg.update_meta(&rel, &MetaPatch { add_tags: vec!["TWO".into()], ..Default::default() }, &free).unwrap();
    assert!(same.events.is_empty());
}

#[test]
fn remove_moves_file_and_sidecar_to_the_trash() {
    let e = env();
    let rel = e.write("ui/button.png", b"btn");
    e.reg.register(&rel, &RegisterOptions { tags: vec!["ui".into()], ..Default::default() }, &free).unwrap();
    let out = e.reg.remove(&rel).unwrap();
    assert_eq!(kinds(&out.events), ["asset_removed"]);
    let RegistryEvent::AssetRemoved { trashed_to, .. } = &out.events[0] else { panic!() };
    assert!(trashed_to.starts_with(e.paths.trash_dir()));
    let kept: Value =
        serde_json::from_slice(&std::fs::read(trashed_to.join("ui/button.png.asset.json")).unwrap()).unwrap();
    assert_eq!(kept["tags"], json!(["ui"]));
    assert_eq!(std::fs::read(trashed_to.join("ui/button.png")).unwrap(), b"btn");
    assert!(!e.reg.abs(&rel).exists() && !e.reg.sidecar_abs(&rel).exists());
    // Removing it twice in the same second does not overwrite the first trash copy.
    let rel = e.write("ui/button.png", b"btn2");
    e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap();
    let again = e.reg.remove(&rel).unwrap();
    let RegistryEvent::AssetRemoved { trashed_to: second, .. } = &again.events[0] else { panic!() };
    assert_ne!(second, trashed_to);
}

#[test]
fn duplicate_content_gets_a_distinct_uid() {
    let e = env();
    let a = e.write("a.png", b"same");
    let b = e.write("b.png", b"same");
    let ua = e.reg.register(&a, &RegisterOptions::default(), &free).unwrap().asset.uid;
    let taken = |u: &str| u == ua;
    let ub = e.reg.register(&b, &RegisterOptions::default(), &taken).unwrap().asset.uid;
    assert_ne!(ua, ub);
    assert_eq!(ub.len(), 16);
}

#[test]
fn import_copies_in_and_refuses_escapes() {
    let e = env();
    let outside = e.paths.root.join("incoming.png");
    std::fs::write(&outside, b"new art").unwrap();
    let dest = RelPath::parse("characters/incoming.png").unwrap();
    let out = e.reg.import(&outside, &dest, &RegisterOptions::default(), &free).unwrap();
    assert_eq!(out.asset.path, "characters/incoming.png");
    assert_eq!(std::fs::read(e.reg.abs(&dest)).unwrap(), b"new art");
    // Same bytes again: fine; different bytes: refused.
    e.reg.import(&outside, &dest, &RegisterOptions::default(), &free).unwrap();
    std::fs::write(&outside, b"other").unwrap();
    let err = e.reg.import(&outside, &dest, &RegisterOptions::default(), &free).unwrap_err();
    assert!(matches!(err.downcast_ref::<RegistryError>(), Some(RegistryError::Exists(_))), "{err:#}");
    let err = e.reg.locate(&outside).unwrap_err();
    assert!(matches!(err, RegistryError::Path(PathError::OutsideRoot(..))), "{err}");
    let hidden = RelPath::parse("x/.secret.png").unwrap();
    let err = e.reg.import_bytes(b"x", &hidden, &RegisterOptions::default(), &free).unwrap_err();
    assert!(matches!(err.downcast_ref::<RegistryError>(), Some(RegistryError::Ignored(_))), "{err:#}");
}

#[test]
fn invalid_sidecar_is_never_overwritten() {
    let e = env();
    let rel = e.write("a.png", b"a");
    std::fs::write(e.reg.sidecar_abs(&rel), b"{\"tags\": \"oops\"}").unwrap();
    let err = e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap_err();
    assert!(format!("{err:#}").contains("tags: expected an array of strings"), "{err:#}");
    assert_eq!(std::fs::read(e.reg.sidecar_abs(&rel)).unwrap(), b"{\"tags\": \"oops\"}");
}

#[test]
fn hand_written_sidecar_is_completed_keeping_human_fields() {
    let e = env();
    let rel = e.write("audio/theme.ogg", b"la la");
    std::fs::write(e.reg.sidecar_abs(&rel), br#"{"tags": ["music"], "license": "CC-BY-4.0"}"#).unwrap();
    let out = e.reg.refresh(&rel, &free).unwrap();
    assert_eq!(out.asset.uid, &crate::digest::sha256_hex(b"la la")[..16]);
    assert_eq!(out.asset.version, 1);
    assert_eq!(out.asset.tags, ["music"]);
    assert_eq!(e.sidecar_json(&rel)["schema"], 1);
}

#[test]
fn batch_writes_land_and_report_events() {
    let e = env();
    let rels: Vec<RelPath> = (0..5).map(|i| e.write(&format!("t/{i}.png"), format!("{i}").as_bytes())).collect();
    let changes: Vec<Change> = rels
        .iter()
        .map(|r| {
            let (h, n) = crate::digest::sha256_file(&e.reg.abs(r)).unwrap();
            Change {
                rel: r.clone(),
                asset: new_sidecar(r, &h, n, h[..16].to_string(), &RegisterOptions::default()),
                previous: None,
            }
        })
        .collect();
    // One sidecar appears meanwhile: it is left alone.
    std::fs::write(e.reg.sidecar_abs(&rels[2]), b"{}").unwrap();
    let results = e.reg.write_batch(&changes);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert!(results[2].as_ref().unwrap_err().to_string().contains("appeared"));
    assert_eq!(std::fs::read(e.reg.sidecar_abs(&rels[2])).unwrap(), b"{}");
    assert_eq!(kinds(results[0].as_ref().unwrap()), ["asset_sidecar_written", "asset_registered"]);
    let names: Vec<_> =
        std::fs::read_dir(e.paths.assets_root.join("t")).unwrap().map(|d| d.unwrap().file_name()).collect();
    assert_eq!(names.len(), 10, "no temp files remain: {names:?}");
}

#[test]
fn index_build_reports_problems() {
    let e = env();
    let a = e.write("a.png", b"a");
    e.reg.register(&a, &RegisterOptions::default(), &free).unwrap();
    e.write("b.png", b"b");
    e.write("c.png.asset.json", b"{}");
    e.write("d.png", b"d");
    e.write("d.png.asset.json", b"not json");
    let copy = e.write("e.png", b"a");
    std::fs::copy(e.reg.sidecar_abs(&a), e.reg.sidecar_abs(&copy)).unwrap();
    let (index, problems) = Index::build(&e.reg).unwrap();
    assert_eq!(index.len(), 1);
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert_eq!(shown[0], "b.png: no sidecar");
    assert_eq!(shown[1], "c.png.asset.json: sidecar without an asset");
    assert!(shown[2].starts_with("d.png.asset.json: invalid sidecar: invalid JSON at line 1"), "{}", shown[2]);
    assert!(shown[3].starts_with("e.png: uid ") && shown[3].ends_with("is already used by a.png"), "{}", shown[3]);
}

#[test]
fn download_guard_follows_the_policy() {
    let rel = RelPath::parse("a.png").unwrap();
    let mut s = new_sidecar(&rel, &"a".repeat(64), 1, "u".into(), &RegisterOptions::default());
    let policy = |allow: &[&str], require: bool| {
        Policy::new(&crate::config::LicensePolicy {
            allow: allow.iter().map(|x| x.to_string()).collect(),
            deny: vec!["CC-BY-NC-4.0".into()],
            require,
        })
    };
    assert_eq!(download_guard(&s, &policy(&[], false), false), Ok(()));
    assert!(download_guard(&s, &policy(&[], true), false).unwrap_err().contains("no license"));
    s.license = Some("CC-BY-NC-4.0".into());
    assert!(download_guard(&s, &policy(&[], false), false).unwrap_err().contains("denied"));
    s.license = Some("MIT".into());
    assert!(download_guard(&s, &policy(&["CC0-1.0"], false), false).unwrap_err().contains("not in"));
    assert!(download_guard(&s, &policy(&[], false), true).unwrap_err().contains("provenance"));
    s.provenance.insert("source".into(), json!("studio"));
    assert_eq!(download_guard(&s, &policy(&["mit"], true), true), Ok(()));
}

#[test]
fn concurrent_edits_of_one_sidecar_all_land() {
    let e = env();
    let rel = e.write("bg/sky.png", b"sky");
    e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap();
    // Four writers add 25 tags each to the same sidecar at once; each edit reads, changes and
    // replaces the whole file, so without the compare-and-swap most of them would be lost.
    std::thread::scope(|s| {
        for w in 0..4 {
            let (reg, rel) = (&e.reg, &rel);
            s.spawn(move || {
                for i in 0..25 {
                    let patch = MetaPatch { add_tags: vec![format!("w{w}-t{i:02}")], ..Default::default() };
                    reg.update_meta(rel, &patch, &free).unwrap();
                }
            });
        }
    });
    let tags = e.sidecar_json(&rel)["tags"].as_array().unwrap().len();
    assert_eq!(tags, 100, "every edit kept");
}

#[test]
fn a_change_planned_from_an_old_sidecar_is_refused() {
    let e = env();
    let rel = e.write("bg/sky.png", b"sky");
    let first = e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap();
    let parsed = e.reg.read_sidecar(&rel).unwrap().unwrap();
    let mut stale = parsed.sidecar.clone();
    stale.license = Some("CC0-1.0".into());
    let change = Change { rel: rel.clone(), asset: stale, previous: Some(parsed.sidecar.clone()) };
    // Someone else edits first.
    let patch = MetaPatch { add_tags: vec!["night".into()], ..Default::default() };
    e.reg.update_meta(&rel, &patch, &free).unwrap();
    assert_eq!(e.reg.commit(&change).unwrap(), None, "the update would drop the other edit");
    let results = e.reg.write_batch(std::slice::from_ref(&change));
    let err = format!("{:#}", results[0].as_ref().unwrap_err());
    assert!(err.contains("changed meanwhile"), "{err}");
    assert_eq!(e.sidecar_json(&rel)["tags"], json!(["night"]));
    // A new-asset change never replaces a sidecar that exists.
    let again = Change { rel: rel.clone(), asset: first.asset, previous: None };
    assert_eq!(e.reg.commit(&again).unwrap(), None);
    // Planned from the current sidecar, it goes through.
    let current = e.reg.read_sidecar(&rel).unwrap().unwrap();
    let mut next = current.sidecar.clone();
    next.license = Some("CC0-1.0".into());
    let ok = Change { rel: rel.clone(), asset: next, previous: Some(current.sidecar) };
    assert!(e.reg.commit(&ok).unwrap().is_some());
    assert_eq!(e.sidecar_json(&rel)["license"], json!("CC0-1.0"));
    assert_eq!(e.sidecar_json(&rel)["tags"], json!(["night"]));
}

#[test]
fn a_name_held_by_something_else_is_a_clear_error_not_a_retry_loop() {
    let e = env();
    let rel = e.write("bg/sky.png", b"sky");
    std::os::unix::fs::symlink("/nonexistent/target", e.reg.sidecar_abs(&rel)).unwrap();
    let err = format!("{:#}", e.reg.register(&rel, &RegisterOptions::default(), &free).unwrap_err());
    assert!(err.contains("exists but is not a readable sidecar file"), "{err}");
    assert!(std::fs::symlink_metadata(e.reg.sidecar_abs(&rel)).unwrap().file_type().is_symlink(), "left as it is");
}
