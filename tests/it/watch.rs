//! `comfyvn-obs watch`: the real binary as a child process on a temp runtime root, real files, real
//! inotify (or polling). Every wait is bounded and polls the hook history; nothing asserts on speed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::TestEnv;

/// Short settle window so tests that need it stay fast.
const SETTLE_MS: &str = "300";
/// Upper bound for any single wait (generous: two cores shared with other builds).
const WAIT: Duration = Duration::from_secs(20);

/// A running watcher; killed when dropped so a failing test leaves no process behind.
struct Watcher {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    fn start(env: &TestEnv, extra: &[&str]) -> Watcher {
        let n = std::fs::read_dir(env.root()).map(|d| d.count()).unwrap_or(0);
        let stderr = env.path(&format!("watch-{n}.stderr"));
        let mut args = vec!["watch"];
        if !extra.contains(&"--settle-ms") {
            args.extend_from_slice(&["--settle-ms", SETTLE_MS]);
        }
        args.extend_from_slice(extra);
        let child = env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start comfyvn-obs watch");
        Watcher { child, stderr }
    }

    /// Start and wait until the start-up reconcile is in the history (after `after_seq`).
    fn ready(env: &TestEnv, extra: &[&str]) -> Watcher {
        let after = last_seq(env);
        let mut w = Watcher::start(env, extra);
        w.wait_for(env, "obs.watch_rescanned", |e| {
            e["seq"].as_u64() > Some(after) && e["event"] == "obs.watch_rescanned"
        });
        w
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Wait for the process to exit (bounded); its exit code.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "watcher did not exit; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the history holds an entry matching `pred`; returns it.
    fn wait_for(&mut self, env: &TestEnv, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(env, what, |all| all.iter().find(|e| pred(e)).cloned())
    }

    /// Wait until `check` over the whole history returns something.
    fn wait_until<T>(&mut self, env: &TestEnv, what: &str, check: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check(&history(env)) {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("watcher exited ({status}) while waiting for {what}; stderr:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr:\n{}\nhistory:\n{:#?}",
                self.stderr(),
                history(env)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Every complete entry of the hook history, oldest first.
fn history(env: &TestEnv) -> Vec<Value> {
    let text = std::fs::read_to_string(env.path("logs/hooks/history.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn last_seq(env: &TestEnv) -> u64 {
    history(env).last().and_then(|e| e["seq"].as_u64()).unwrap_or(0)
}

fn events<'a>(all: &'a [Value], name: &str, path: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == name && e["data"]["path"] == path).collect()
}

fn is(name: &'static str, path: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == name && e["data"]["path"] == path
}

fn sidecar(env: &TestEnv, rel: &str) -> Value {
    let text = env.read(&format!("assets/{rel}.asset.json"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sidecar of {rel} is not JSON ({e}):\n{text}"))
}

fn sha(bytes: &[u8]) -> String {
    comfyvn_obs::digest::sha256_hex(bytes)
}

/// Files under `dir` (recursive) whose name ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_dropped_file_gets_a_sidecar_and_three_events_in_order() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    let started = history(&env).into_iter().find(|e| e["event"] == "obs.watch_started").unwrap();
    assert_eq!(started["data"]["mode"], "native", "{started}");
    env.write("assets/chars/hero.png", b"\x89PNG pretend image");
    w.wait_for(&env, "registration", is("on_asset_registered", "chars/hero.png"));
    // Past the settle window: an echo of the tool's own sidecar write would be in the history by now.
    barrier(&mut w, &env, "marker.txt");
    let all = history(&env);
    let names: Vec<&str> = all
        .iter()
        .filter(|e| e["data"]["path"] == "chars/hero.png" || e["data"]["rel_path"] == "chars/hero.png")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
    let s = sidecar(&env, "chars/hero.png");
    assert_eq!(s["hash"], sha(b"\x89PNG pretend image"));
    assert_eq!(s["path"], "chars/hero.png");
    assert_eq!(s["uid"], sha(b"\x89PNG pretend image")[..16]);
}

#[test]
fn a_file_still_being_written_is_not_registered_until_its_writer_closes_it() {
    let env = TestEnv::new();
    // A long settle window: only the writer's close may make the file ready.
    let after = last_seq(&env);
    let mut w = Watcher::start(&env, &["--settle-ms", "5000"]);
    w.wait_for(&env, "ready", |e| e["seq"].as_u64() > Some(after) && e["event"] == "obs.watch_rescanned");
    let path = env.path("assets/big.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut content = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![i; 4096];
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
        content.extend_from_slice(&chunk);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!env.path("assets/big.bin.asset.json").exists(), "registered while still open after chunk {i}");
    }
    drop(f);
    let e = w.wait_for(&env, "registration", is("on_asset_registered", "big.bin"));
    assert_eq!(e["data"]["bytes"], content.len());
    assert_eq!(sidecar(&env, "big.bin")["hash"], sha(&content));
    assert_eq!(events(&history(&env), "on_asset_registered", "big.bin").len(), 1);
}

/// Drop a marker after the removal grace has passed and wait for it: anything the watcher would
/// have done about earlier events is in the history by then.
fn barrier(w: &mut Watcher, env: &TestEnv, name: &'static str) {
    barrier_after(w, env, name, SETTLE_MS.parse().unwrap());
}

fn barrier_after(w: &mut Watcher, env: &TestEnv, name: &'static str, settle_ms: u64) {
    std::thread::sleep(Duration::from_millis(settle_ms + 300));
    env.write(&format!("assets/{name}"), name.as_bytes());
    w.wait_for(env, name, move |e| e["event"] == "on_asset_registered" && e["data"]["path"] == name);
}

#[test]
fn editor_save_by_rename_is_one_modification_keeping_uid_and_tags() {
    let env = TestEnv::new();
    // A settle window (and so a removal grace) well above the editor's pause below.
    let mut w = Watcher::ready(&env, &["--settle-ms", "1000"]);
    env.write("assets/hero.png", b"version 1");
    w.wait_for(&env, "registration", is("on_asset_registered", "hero.png"));
    let uid = sidecar(&env, "hero.png")["uid"].clone();
    // A person tags it (a valid sidecar edit).
    let mut s = sidecar(&env, "hero.png");
    s["tags"] = serde_json::json!(["hero", "Main Cast"]);
    s["license"] = serde_json::json!("CC-BY-4.0");
    std::fs::write(env.path("assets/hero.png.asset.json"), serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    w.wait_for(&env, "tag edit", is("on_asset_meta_updated", "hero.png"));

    // vim-style: the original is renamed to a backup, a new file is written, the backup deleted.
    std::fs::rename(env.path("assets/hero.png"), env.path("assets/hero.png~")).unwrap();
    // The editor takes a moment to write the new file: for that moment the asset is gone.
    std::thread::sleep(Duration::from_millis(100));
    env.write("assets/hero.png", b"version 2");
    std::fs::remove_file(env.path("assets/hero.png~")).unwrap();
    w.wait_for(&env, "save 1", |e| {
        e["event"] == "on_asset_meta_updated" && e["data"]["previous_hash"] == sha(b"version 1")
    });

    // Temp file + rename over the original (most image editors, `sed -i`).
    env.write("assets/.hero.png.tmp-save", b"version 3");
    std::fs::rename(env.path("assets/.hero.png.tmp-save"), env.path("assets/hero.png")).unwrap();
    w.wait_for(&env, "save 2", |e| {
        e["event"] == "on_asset_meta_updated" && e["data"]["previous_hash"] == sha(b"version 2")
    });

    barrier_after(&mut w, &env, "marker.txt", 1000);
    let all = history(&env);
    assert!(events(&all, "on_asset_removed", "hero.png").is_empty(), "a save is not a delete");
    assert_eq!(events(&all, "on_asset_registered", "hero.png").len(), 1, "a save is not a new asset");
    let s = sidecar(&env, "hero.png");
    assert_eq!(s["uid"], uid);
    assert_eq!(s["hash"], sha(b"version 3"));
    assert_eq!(s["tags"], serde_json::json!(["hero", "Main Cast"]));
    assert_eq!(s["license"], "CC-BY-4.0");
}

#[test]
fn a_renamed_file_takes_its_sidecar_along() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/old-name.png", b"rename me");
    w.wait_for(&env, "registration", is("on_asset_registered", "old-name.png"));
    let uid = sidecar(&env, "old-name.png")["uid"].clone();
    std::fs::create_dir_all(env.path("assets/chars")).unwrap();
    std::fs::rename(env.path("assets/old-name.png"), env.path("assets/chars/new-name.png")).unwrap();
    let e = w.wait_for(&env, "move", is("on_asset_meta_updated", "chars/new-name.png"));
    assert_eq!(e["data"]["previous_path"], "old-name.png");
    assert_eq!(e["data"]["uid"], uid);
    assert!(!env.path("assets/old-name.png.asset.json").exists());
    assert_eq!(sidecar(&env, "chars/new-name.png")["path"], "chars/new-name.png");
    barrier(&mut w, &env, "marker.txt");
    assert!(events(&history(&env), "on_asset_removed", "old-name.png").is_empty());
}

#[test]
fn a_deleted_file_sends_its_sidecar_to_the_trash() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/doomed.png", b"short-lived");
    w.wait_for(&env, "registration", is("on_asset_registered", "doomed.png"));
    std::fs::remove_file(env.path("assets/doomed.png")).unwrap();
    w.wait_for(&env, "removal", is("on_asset_removed", "doomed.png"));
    assert!(!env.path("assets/doomed.png.asset.json").exists());
    let trashed = find(&env.path("logs/trash"), "doomed.png.asset.json");
    assert_eq!(trashed.len(), 1, "sidecar kept in the trash");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&trashed[0]).unwrap()).unwrap();
    assert_eq!(kept["hash"], sha(b"short-lived"));
}

#[test]
fn a_burst_of_200_files_is_registered_exactly_once_each() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    for i in 0..200 {
        env.write(&format!("assets/burst/{:02}/f{i:03}.dat", i % 10), format!("file {i}").as_bytes());
    }
    w.wait_until(&env, "200 registrations", |all| {
        (all.iter().filter(|e| e["event"] == "on_asset_registered").count() >= 200).then_some(())
    });
    barrier(&mut w, &env, "marker.txt");
    let all = history(&env);
    for i in 0..200 {
        let rel = format!("burst/{:02}/f{i:03}.dat", i % 10);
        let n = all.iter().filter(|e| e["event"] == "on_asset_registered" && e["data"]["path"] == rel.as_str()).count();
        assert_eq!(n, 1, "{rel} registered {n} times");
        assert_eq!(sidecar(&env, &rel)["hash"], sha(format!("file {i}").as_bytes()));
    }
}

#[test]
fn a_person_editing_a_sidecar_is_validated_and_never_overwritten() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/a.png", b"a");
    w.wait_for(&env, "registration", is("on_asset_registered", "a.png"));
    let mut s = sidecar(&env, "a.png");
    s["tags"] = serde_json::json!(["forest"]);
    std::fs::write(env.path("assets/a.png.asset.json"), serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    let e = w.wait_for(&env, "valid edit", is("on_asset_meta_updated", "a.png"));
    assert_eq!(e["data"]["meta"]["tags"], serde_json::json!(["forest"]), "{e}");

    // An invalid edit: reported with the field, the file left exactly as the person wrote it.
    s["tags"] = serde_json::json!(5);
    let broken = serde_json::to_vec_pretty(&s).unwrap();
    std::fs::write(env.path("assets/a.png.asset.json"), &broken).unwrap();
    let e = w.wait_for(&env, "invalid edit", |e| e["event"] == "obs.sidecar_invalid");
    assert_eq!(e["data"]["field"], "tags", "{e}");
    assert!(e["data"]["sidecar"].as_str().unwrap().ends_with("a.png.asset.json"), "{e}");
    // The watcher keeps running and has not touched the file.
    barrier(&mut w, &env, "still-alive.txt");
    assert_eq!(std::fs::read(env.path("assets/a.png.asset.json")).unwrap(), broken);
}

#[test]
fn killed_mid_burst_then_restarted_every_file_has_a_correct_sidecar_and_a_registration() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    let n = 300;
    for i in 0..n {
        env.write(&format!("assets/k/f{i:03}.dat"), format!("content {i} {}", "x".repeat(i * 7)).as_bytes());
    }
    // Kill as soon as the first registrations land (mid-burst, as far as the watcher is concerned).
    w.wait_until(&env, "first registrations", |all| {
        all.iter().any(|e| e["event"] == "on_asset_registered").then_some(())
    });
    w.signal("-KILL");
    w.wait_exit();
    drop(w);
    let mut w = Watcher::ready(&env, &[]);
    w.wait_until(&env, "every registration", |all| {
        (0..n)
            .all(|i| {
                let rel = format!("k/f{i:03}.dat");
                all.iter().any(|e| e["event"] == "on_asset_registered" && e["data"]["path"] == rel.as_str())
            })
            .then_some(())
    });
    for i in 0..n {
        let rel = format!("k/f{i:03}.dat");
        let s = sidecar(&env, &rel);
        assert_eq!(s["hash"], sha(format!("content {i} {}", "x".repeat(i * 7)).as_bytes()), "{rel}");
    }
    let leftovers = find(&env.path("assets"), ".tmp");
    assert!(leftovers.iter().all(|p| p.file_name().unwrap().to_string_lossy().starts_with('.')), "{leftovers:?}");
}

#[test]
fn sigterm_stops_cleanly_with_exit_code_0() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/x.png", b"x");
    w.wait_for(&env, "registration", is("on_asset_registered", "x.png"));
    w.signal("-TERM");
    assert_eq!(w.wait_exit(), 0, "stderr:\n{}", w.stderr());
    assert!(w.stderr().contains("watch stopped"), "{}", w.stderr());
    // The lock is released: a new watcher starts.
    let _again = Watcher::ready(&env, &[]);
}

#[test]
fn polling_mode_is_reported_and_works() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"watch": {"poll_interval_ms": 200}}}"#);
    let mut w = Watcher::ready(&env, &["--poll"]);
    let started = history(&env).into_iter().find(|e| e["event"] == "obs.watch_started").unwrap();
    assert_eq!(started["data"]["mode"], "polling", "{started}");
    env.write("assets/p.png", b"polled");
    w.wait_for(&env, "registration", is("on_asset_registered", "p.png"));
    std::fs::rename(env.path("assets/p.png"), env.path("assets/q.png")).unwrap();
    let e = w.wait_for(&env, "move", is("on_asset_meta_updated", "q.png"));
    assert_eq!(e["data"]["previous_path"], "p.png", "a poller's delete+create is still a move");
    // The poller sees the tool's own sidecar writes like anyone's: they must not come back as edits.
    barrier_after(&mut w, &env, "marker.txt", 700);
    let all = history(&env);
    let updates = all.iter().filter(|e| e["event"] == "on_asset_meta_updated").count();
    assert_eq!(updates, 1, "{all:#?}");
    assert!(events(&all, "on_asset_removed", "p.png").is_empty());
}

#[test]
fn files_present_at_start_are_reconciled_and_counted() {
    let env = TestEnv::new();
    env.write("assets/a.png", b"a");
    env.write("assets/b.png", b"b");
    env.write("assets/dl.zip.part", b"partial");
    // Make them older than the settle window so the reconcile takes them at once.
    std::thread::sleep(Duration::from_millis(SETTLE_MS.parse::<u64>().unwrap() + 50));
    let mut w = Watcher::ready(&env, &[]);
    let rescan = history(&env).into_iter().find(|e| e["event"] == "obs.watch_rescanned").unwrap();
    assert_eq!(rescan["data"]["reason"], "start");
    assert_eq!(rescan["data"]["registered"], 2, "{rescan}");
    w.wait_for(&env, "a", is("on_asset_registered", "a.png"));
    assert!(!env.path("assets/dl.zip.part.asset.json").exists());
}

#[test]
fn a_second_watcher_on_the_same_root_is_refused() {
    let env = TestEnv::new();
    let _w = Watcher::ready(&env, &[]);
    let r = env.run(&["watch"]).code(2);
    assert!(r.stderr.contains("another watcher"), "{}", r.stderr);
}

#[test]
fn explain_names_the_rule_that_decides() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("assets/chars")).unwrap();
    let r = env.run(&["watch", "--explain", "assets/chars/hero.png"]).ok();
    assert!(r.stdout.contains("watched (an asset)"), "{}", r.stdout);
    let r = env.run(&["watch", "--explain", "assets/dl/pack.zip.part"]).code(1);
    assert!(r.stdout.contains("not watched") && r.stdout.contains("\"*.part\""), "{}", r.stdout);
    let r = env.run(&["watch", "--explain", "logs/hooks/history.jsonl", "--json"]).code(1);
    let v = r.json();
    assert_eq!(v["rule"], "outside-roots", "{v}");
    let r = env.run(&["watch", "--explain", "assets/chars/_meta/notes.txt", "--json"]).code(1);
    assert_eq!(r.json()["rule"], "ignore-glob");
    let r = env.run(&["watch", "--explain", "assets/chars/hero.png.asset.json", "--json"]).ok();
    assert_eq!(r.json()["class"], "sidecar");
}

#[test]
fn a_watched_folder_outside_the_assets_root_is_a_clear_error() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("elsewhere")).unwrap();
    let r = env.run(&["watch", "--dir", "elsewhere"]).code(2);
    assert!(r.stderr.contains("not inside the assets root") && r.stderr.contains("hint:"), "{}", r.stderr);
}

#[test]
fn a_journal_left_by_a_killed_watcher_is_replayed_at_the_next_start() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/j.png", b"journaled");
    w.wait_for(&env, "registration", is("on_asset_registered", "j.png"));
    w.signal("-TERM");
    assert_eq!(w.wait_exit(), 0);
    // As if killed after writing the sidecar and before appending the events.
    let abs = env.path("assets/j.png").canonicalize().unwrap();
    let journal = serde_json::json!({
        "schema": 1,
        "pid": 1,
        "actions": [{"action": "register", "path": abs, "hash": sha(b"journaled"), "bytes": 9}],
    });
    env.write("data/watch/pending.json", serde_json::to_vec(&journal).unwrap());
    let mut w = Watcher::ready(&env, &[]);
    w.wait_until(&env, "replayed registration", |all| {
        (events(all, "on_asset_registered", "j.png").len() == 2).then_some(())
    });
    assert!(!env.path("data/watch/pending.json").exists(), "journal cleared after the replay");
}

#[test]
fn a_cli_copy_into_a_watched_root_is_registered_once() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("incoming/theme.ogg", b"pretend audio");
    let out = env.run(&["assets", "register", "incoming/theme.ogg", "--copy", "--dest", "music/theme.ogg"]).ok();
    w.wait_for(&env, "registration", is("on_asset_registered", "music/theme.ogg"));
    barrier(&mut w, &env, "marker.txt");
    let all = history(&env);
    let registered = events(&all, "on_asset_registered", "music/theme.ogg");
    assert_eq!(registered.len(), 1, "registered more than once:\n{all:#?}\nstdout: {}", out.stdout);
    assert_eq!(sidecar(&env, "music/theme.ogg")["hash"], sha(b"pretend audio"));
    assert_eq!(sidecar(&env, "music/theme.ogg")["uid"], registered[0]["data"]["uid"]);
    assert_eq!(env.read("assets/music/theme.ogg"), "pretend audio");
}

#[test]
fn watch_removes_temp_files_of_killed_processes_when_it_starts() {
    let env = TestEnv::new();
    let litter = crate::support::Litter::plant(&env);
    let w = Watcher::ready(&env, &[]);
    litter.assert_swept();
    assert!(w.stderr().contains("removed 3 temp files left by processes that are gone"), "{}", w.stderr());
}

/// `rm -rf assets; mkdir assets` (or `mv assets elsewhere; mkdir assets`) took the inotify watch with
/// the old folder: files dropped afterwards never got sidecars, and nothing said why. Now the loss is
/// an event, and the new folder is watched again.
#[test]
fn a_watched_folder_deleted_or_replaced_is_reported_and_watched_again() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    let assets = env.path("assets");
    let after = last_seq(&env);
    std::fs::remove_dir_all(&assets).unwrap();
    let lost = w.wait_for(&env, "obs.watch_root_lost", |e| {
        e["event"] == "obs.watch_root_lost" && e["seq"].as_u64() > Some(after)
    });
    assert_eq!(lost["data"]["reason"], "missing", "{lost}");
    assert!(w.stderr().contains("a watched folder is gone"), "{}", w.stderr());
    std::fs::create_dir(&assets).unwrap();
    w.wait_for(&env, "obs.watch_root_restored", |e| e["event"] == "obs.watch_root_restored");
    env.write("assets/chars/hero.png", b"after recreate");
    w.wait_for(&env, "a registration in the new folder", is("on_asset_registered", "chars/hero.png"));
    assert_eq!(sidecar(&env, "chars/hero.png")["hash"], sha(b"after recreate"));

    // Moved away and another folder put in its place, faster than the check: "replaced".
    let after = last_seq(&env);
    std::fs::rename(&assets, env.path("assets-old")).unwrap();
    std::fs::create_dir(&assets).unwrap();
    let lost = w.wait_for(&env, "a second obs.watch_root_lost", |e| {
        e["event"] == "obs.watch_root_lost" && e["seq"].as_u64() > Some(after)
    });
    assert_eq!(lost["data"]["reason"], "replaced", "{lost}");
    w.wait_for(&env, "a second obs.watch_root_restored", |e| {
        e["event"] == "obs.watch_root_restored" && e["seq"].as_u64() > Some(after)
    });
    env.write("assets/bg/room.png", b"in the replacement");
    w.wait_for(&env, "a registration in the replacement", is("on_asset_registered", "bg/room.png"));
    // Files in the moved-away folder are no longer watched: an edit there changes nothing here.
    std::fs::write(env.path("assets-old/chars/hero.png"), b"edited elsewhere").unwrap();
    barrier(&mut w, &env, "marker.txt");
    assert!(
        !history(&env).iter().any(|e| e["data"]["path"] == "chars/hero.png"
            && e["seq"].as_u64() > Some(after)
            && e["event"] == "on_asset_saved"),
        "an edit outside the watched tree was reported"
    );
}

/// Each CLI edit made while a watcher runs is one event, not two: the watcher used to see the CLI's
/// sidecar write (or removal) as a change of its own and publish it again ~0.6 s later, with a new
/// `seq` and `webhook-id`, and a wrong `on_asset_removed` (`tags: []`, `sidecar_lost: true`).
#[test]
fn cli_edits_while_a_watcher_runs_are_reported_once() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/chars/hero.png", b"hero");
    w.wait_for(&env, "registration", is("on_asset_registered", "chars/hero.png"));
    barrier(&mut w, &env, "marker0.txt");
    let start = last_seq(&env);
    let count = |env: &TestEnv, event: &str| {
        history(env)
            .iter()
            .filter(|e| e["seq"].as_u64() > Some(start) && e["event"] == event)
            .filter(|e| e["data"]["path"] == "chars/hero.png" || e["data"]["rel_path"] == "chars/hero.png")
            .count()
    };
    for args in [
        &["assets", "tag", "chars/hero.png", "Hero", "Knight"][..],
        &["assets", "untag", "chars/hero.png", "Knight"],
        &["assets", "set-license", "chars/hero.png", "CC-BY-4.0"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    barrier_after(&mut w, &env, "marker1.txt", 1500);
    assert_eq!(count(&env, "on_asset_meta_updated"), 3, "{:#?}", history(&env));
    assert_eq!(count(&env, "on_asset_sidecar_written"), 3);

    // A file dropped and registered by hand before the watcher settles it: one registration.
    env.write("assets/bg/room.png", b"room");
    let out = env.run(&["assets", "register", "assets/bg/room.png", "--tag", "Night"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    barrier_after(&mut w, &env, "marker2.txt", 1500);
    let regs = history(&env)
        .iter()
        .filter(|e| {
            e["seq"].as_u64() > Some(start) && e["event"] == "on_asset_registered" && e["data"]["path"] == "bg/room.png"
        })
        .count();
    assert_eq!(regs, 1, "{:#?}", history(&env));

    let out = env.run(&["assets", "remove", "chars/hero.png"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    barrier_after(&mut w, &env, "marker3.txt", 1500);
    let removed: Vec<Value> = history(&env)
        .into_iter()
        .filter(|e| {
            e["seq"].as_u64() > Some(start) && e["event"] == "on_asset_removed" && e["data"]["path"] == "chars/hero.png"
        })
        .collect();
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert_ne!(removed[0]["data"]["sidecar_lost"], true, "{removed:#?}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "advice.detachedHead=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git checkout` of another branch while the watcher runs: committed sidecars must not be rewritten
/// (only `updated_at` changed, which left the work tree dirty and made the next checkout refuse), and
/// sidecars git is still writing are not reported invalid.
#[test]
fn git_checkout_while_watching_leaves_the_work_tree_clean() {
    let env = TestEnv::new();
    let assets = env.path("assets");
    std::fs::create_dir_all(&assets).unwrap();
    git(&assets, &["init", "-q", "-b", "main"]);
    for i in 0..40 {
        env.write(&format!("assets/bg/f{i}.png"), format!("main {i}"));
    }
    // Sidecars as the tool writes them, committed with the files.
    let out = env.run(&["audit", "--fix"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    git(&assets, &["add", "-A"]);
    git(&assets, &["commit", "-qm", "main"]);
    git(&assets, &["checkout", "-qb", "other"]);
    for i in 0..40 {
        env.write(&format!("assets/bg/f{i}.png"), format!("other {i} {}", "x".repeat(i * 100)));
    }
    env.write("assets/bg/new.png", "only on other");
    let out = env.run(&["audit", "--fix"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    git(&assets, &["add", "-A"]);
    git(&assets, &["commit", "-qm", "other"]);
    git(&assets, &["checkout", "-q", "main"]);

    // The default settle window (500 ms): a refresh waits one window, so git has written the
    // branch's sidecar by then even on a loaded machine.
    let mut w = Watcher::ready(&env, &["--settle-ms", "500"]);
    for branch in ["other", "main", "other"] {
        git(&assets, &["checkout", "-q", branch]);
        barrier_after(&mut w, &env, "marker.txt", 1200);
        std::fs::remove_file(env.path("assets/marker.txt")).unwrap();
        std::fs::remove_file(env.path("assets/marker.txt.asset.json")).ok();
        barrier_after(&mut w, &env, "marker2.txt", 1200);
        std::fs::remove_file(env.path("assets/marker2.txt")).unwrap();
        std::fs::remove_file(env.path("assets/marker2.txt.asset.json")).ok();
        std::thread::sleep(Duration::from_millis(1200));
        let status = git(&assets, &["status", "--porcelain"]);
        assert_eq!(
            status.trim(),
            "",
            "after checking out {branch}, the watcher left changes:\n{status}\n{}",
            w.stderr()
        );
    }
    assert!(
        !w.stderr().contains("obs.sidecar_invalid")
            && !history(&env).iter().any(|e| e["event"] == "obs.sidecar_invalid"),
        "a sidecar git was writing was reported invalid: {}",
        w.stderr()
    );
}

/// Editors' temp and backup files are not assets: one JetBrains safe-write (`x___jb_tmp___` written,
/// the original renamed to `x___jb_old___`, the temp renamed over it, the old one deleted) is one
/// modification, not nine events with a false removal; Emacs autosaves and vim's `4913` probe are
/// never registered.
#[test]
fn editor_temp_files_are_ignored_and_a_jetbrains_save_is_one_modification() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/scenes/scene.json", b"{\"v\": 1}");
    w.wait_for(&env, "registration", is("on_asset_registered", "scenes/scene.json"));
    barrier(&mut w, &env, "marker0.txt");
    let start = last_seq(&env);
    let dir = env.path("assets/scenes");
    std::fs::write(dir.join("scene.json___jb_tmp___"), b"{\"v\": 2}").unwrap();
    std::fs::rename(dir.join("scene.json"), dir.join("scene.json___jb_old___")).unwrap();
    std::fs::rename(dir.join("scene.json___jb_tmp___"), dir.join("scene.json")).unwrap();
    std::fs::remove_file(dir.join("scene.json___jb_old___")).unwrap();
    std::fs::write(dir.join("#scene.json#"), b"autosave").unwrap();
    std::fs::write(dir.join("4913"), b"").unwrap();
    barrier_after(&mut w, &env, "marker1.txt", 2000);
    let events: Vec<(String, String)> = history(&env)
        .iter()
        .filter(|e| e["seq"].as_u64() > Some(start) && !e["event"].as_str().unwrap().starts_with("obs."))
        .map(|e| {
            let path = e["data"]["path"].as_str().or(e["data"]["rel_path"].as_str()).unwrap_or("").to_string();
            (e["event"].as_str().unwrap().to_string(), path)
        })
        .filter(|(_, p)| !p.starts_with("marker"))
        .collect();
    let expected: Vec<(String, String)> =
        [("on_asset_sidecar_written", "scenes/scene.json"), ("on_asset_meta_updated", "scenes/scene.json")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(events, expected);
    assert_eq!(sidecar(&env, "scenes/scene.json")["hash"], sha(b"{\"v\": 2}"));
    for name in ["#scene.json#", "4913"] {
        assert!(!dir.join(format!("{name}.asset.json")).exists(), "{name} got a sidecar");
    }
}

/// A folder moved out of the watched tree took its sidecars along: its assets' `on_asset_removed`
/// say `moved_out: true` and `sidecar_lost: false`, and carry no made-up metadata (before: `tags: []`,
/// `sidecar_lost: true`). A folder deleted with its sidecars still says `sidecar_lost: true`.
#[test]
fn a_folder_moved_out_is_reported_as_moved_out_not_as_lost_sidecars() {
    let env = TestEnv::new();
    let mut w = Watcher::ready(&env, &[]);
    env.write("assets/chars/hero.png", b"hero");
    env.write("assets/bg/room.png", b"room");
    w.wait_for(&env, "hero", is("on_asset_registered", "chars/hero.png"));
    w.wait_for(&env, "room", is("on_asset_registered", "bg/room.png"));
    assert_eq!(env.run(&["assets", "tag", "chars/hero.png", "Hero"]).code, 0);
    barrier(&mut w, &env, "marker0.txt");
    std::fs::rename(env.path("assets/chars"), env.path("elsewhere")).unwrap();
    std::fs::remove_dir_all(env.path("assets/bg")).unwrap();
    let moved = w.wait_for(&env, "hero removed", is("on_asset_removed", "chars/hero.png"));
    let deleted = w.wait_for(&env, "room removed", is("on_asset_removed", "bg/room.png"));
    assert_eq!(
        (moved["data"]["moved_out"].as_bool(), moved["data"]["sidecar_lost"].as_bool()),
        (Some(true), Some(false)),
        "{moved}"
    );
    assert!(moved["data"]["meta"].is_null(), "no made-up metadata: {moved}");
    assert_eq!(deleted["data"]["sidecar_lost"], true, "{deleted}");
    assert!(deleted["data"].get("moved_out").is_none(), "{deleted}");
    // The sidecar did go along, tags and all.
    let carried: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("elsewhere/hero.png.asset.json")).unwrap()).unwrap();
    assert_eq!(carried["tags"], serde_json::json!(["Hero"]));
}
