//! The asset routes against the real binary: listing with every filter, detail, sidecar, download and its
//! 451 guard, register and multipart upload (including traversal, symlink escapes, oversized, broken and
//! cut uploads: nothing half-written, the server keeps serving), delete to the trash, the hook events
//! each write publishes, the index following other processes, and the bearer token on writes.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{read_response, Resp, Served};
use crate::support::TestEnv;

pub const BOUNDARY: &str = "----comfyvnTestBoundary7MA4YWxk";

/// A multipart/form-data body: `(name, filename, bytes)` per part.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, filename, data) in parts {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => b.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => b.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

pub fn upload(srv: &Served, body: &[u8], headers: &[(&str, &str)]) -> Resp {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut h = vec![("Content-Type", ct.as_str())];
    h.extend_from_slice(headers);
    srv.request("POST", "/assets/upload", &h, body)
}

fn register(srv: &Served, body: Value) -> Resp {
    srv.post_json("/assets/register", &body, &[])
}

/// Every file under `dir` (relative paths, sorted), hidden ones included.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn items(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap().to_string()).collect()
}

/// A small registered tree: three assets with tags and licenses, registered through the API.
fn seeded(env: &TestEnv) -> Served {
    let srv = Served::start(env);
    for (name, body, ty, meta) in [
        (
            "hero.png",
            "hero bytes",
            "characters",
            json!({"tags": ["Hero", "Main"], "license": "CC-BY-4.0", "mood": "brave"}),
        ),
        ("villain.png", "villain bytes", "characters", json!({"tags": ["villain", "main"], "license": "MIT"})),
        ("theme.ogg", "theme bytes", "audio", json!({"tags": ["music"], "note": "Opening THEME"})),
    ] {
        let src = env.write(&format!("incoming/{name}"), body);
        let r = register(&srv, json!({"path": src, "asset_type": ty, "metadata": meta}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    srv
}

#[test]
fn listing_filters_page_and_both_paths_answer() {
    let env = TestEnv::new();
    let srv = seeded(&env);
    let all = srv.get("/assets");
    assert_eq!(items(&all), ["audio/theme.ogg", "characters/hero.png", "characters/villain.png"]);
    assert_eq!(all.json()["total"], 3);
    assert_eq!(all.json()["ok"], true);
    assert_eq!(items(&srv.get("/assets/")), items(&all));
    let rec = &all.json()["items"][1];
    let keys: Vec<&str> = rec.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["uid", "type", "hash", "bytes", "path", "sidecar", "meta", "links", "created_at"]);
    assert_eq!(rec["meta"]["tags"], json!(["Hero", "Main"]));
    assert_eq!(rec["meta"]["mood"], "brave");
    assert_eq!(rec["sidecar"], "characters/hero.png.asset.json");

    // Tags: all of them, case-insensitive, repeated or comma-separated, `tag` as an alias.
    assert_eq!(items(&srv.get("/assets?tag=MAIN")), ["characters/hero.png", "characters/villain.png"]);
    assert_eq!(items(&srv.get("/assets?tags=main,hero")), ["characters/hero.png"]);
    assert_eq!(items(&srv.get("/assets?tag=main&tag=villain")), ["characters/villain.png"]);
    assert_eq!(items(&srv.get("/assets?tags=main&tag=music")), Vec::<String>::new());
    assert_eq!(items(&srv.get("/assets?license=mit")), ["characters/villain.png"]);
    assert_eq!(items(&srv.get("/assets?licenses=MIT,CC-BY-4.0")), ["characters/hero.png", "characters/villain.png"]);
    assert_eq!(items(&srv.get("/assets?type=Audio")), ["audio/theme.ogg"]);
    assert_eq!(items(&srv.get("/assets?q=opening%20theme")), ["audio/theme.ogg"]);
    assert_eq!(items(&srv.get("/assets?q=VILL")), ["characters/villain.png"]);
    let hash = all.json()["items"][0]["hash"].as_str().unwrap().to_uppercase();
    assert_eq!(items(&srv.get(&format!("/assets?hash={hash}"))), ["audio/theme.ogg"]);

    let page = srv.get("/assets?limit=1&offset=1");
    assert_eq!(items(&page), ["characters/hero.png"]);
    assert_eq!(page.json()["total"], 3);
    assert_eq!(items(&srv.get("/assets?offset=10")), Vec::<String>::new());
    for bad in ["limit=0", "limit=1001", "limit=x", "offset=-1", "offset=1.5"] {
        let v = srv.get(&format!("/assets?{bad}")).envelope(422, "validation_error");
        assert_eq!(v["details"][0]["field"], bad.split('=').next().unwrap(), "{bad}");
    }
}

#[test]
fn detail_sidecar_download_and_unknown_uids() {
    let env = TestEnv::new();
    let srv = seeded(&env);
    let hero = srv.get("/assets?tags=hero").json()["items"][0].clone();
    let uid = hero["uid"].as_str().unwrap();
    let d = srv.get(&format!("/assets/{uid}")).json();
    assert_eq!((d["ok"].clone(), d["asset"].clone()), (json!(true), hero.clone()));
    let s = srv.get(&format!("/assets/{uid}/sidecar")).json();
    assert_eq!(s["path"], "characters/hero.png.asset.json");
    assert_eq!(
        s["sidecar"],
        serde_json::from_str::<Value>(&env.read("assets/characters/hero.png.asset.json")).unwrap()
    );
    let dl = srv.get(&format!("/assets/{uid}/download"));
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, b"hero bytes");
    assert_eq!(dl.header("content-type"), Some("image/png"));
    assert_eq!(dl.header("content-disposition"), Some("attachment; filename=\"hero.png\""));
    for path in ["/assets/nope", "/assets/nope/sidecar", "/assets/nope/download", "/assets/%2e%2e"] {
        let v = srv.get(path).envelope(404, "http_404");
        assert_eq!(v["message"], "Asset not found.", "{path}");
    }
    // A file deleted behind the server's back: the detail still answers from the index, the download
    // says the file is missing.
    std::fs::remove_file(env.path("assets/characters/hero.png")).unwrap();
    srv.get(&format!("/assets/{uid}/download")).envelope(404, "http_404");
}

#[test]
fn downloads_are_refused_with_451_by_license_and_provenance_policy() {
    let env = TestEnv::new();
    env.write(
        "config/comfyvn.json",
        r#"{"obs": {"audit": {"licenses": {"deny": ["GPL-3.0-only"]}, "require_provenance": true}}}"#,
    );
    let srv = Served::start(&env);
    let reg = |name: &str, meta: Value| {
        let src = env.write(&format!("in/{name}"), name);
        let r = register(&srv, json!({"path": src, "metadata": meta}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["asset"]["uid"].as_str().unwrap().to_string()
    };
    let gpl = reg("gpl.png", json!({"license": "GPL-3.0-only", "provenance": {"source": "studio"}}));
    let bare = reg("bare.png", json!({"license": "MIT"}));
    let fine = reg("fine.png", json!({"license": "MIT OR GPL-3.0-only", "provenance": {"source": "studio"}}));
    let v = srv.get(&format!("/assets/{gpl}/download")).envelope(451, "http_451");
    assert!(v["message"].as_str().unwrap().contains("GPL-3.0-only"), "{v}");
    assert_eq!(v["details"]["license"], "GPL-3.0-only");
    let v = srv.get(&format!("/assets/{bare}/download")).envelope(451, "http_451");
    assert!(v["message"].as_str().unwrap().contains("provenance"), "{v}");
    let ok = srv.get(&format!("/assets/{fine}/download"));
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"fine.png"[..]));
    // The guard is on the bytes only: the records stay readable.
    assert_eq!(srv.get(&format!("/assets/{gpl}")).status, 200);
}

#[test]
fn register_validates_sources_and_destinations() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let src = env.write("in/hero.png", "hero");
    let v = register(&srv, json!({"path": env.path("in/missing.png")})).envelope(404, "http_404");
    assert_eq!(v["message"], "Source file does not exist.");
    register(&srv, json!({"path": env.path("in")})).envelope(400, "http_400");
    let v = register(&srv, json!({})).envelope(422, "validation_error");
    assert_eq!(v["details"][0]["field"], "path");
    for (body, field) in [
        (json!({"path": 5}), "path"),
        (json!({"path": src, "metadata": [1]}), "metadata"),
        (json!({"path": src, "copy": "yes"}), "copy"),
        (json!({"path": src, "metadata": {"tags": [1]}}), "metadata.tags"),
    ] {
        let v = register(&srv, body.clone()).envelope(422, "validation_error");
        assert_eq!(v["details"][0]["field"], field, "{body}");
    }
    srv.request("POST", "/assets/register", &[("Content-Type", "application/json")], b"{\"path\":")
        .envelope(400, "http_400");

    // Escapes: `..`, absolute, backslashes, a sidecar name, hidden/ignored names, through a symlink.
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(env.path("assets")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("assets/link")).unwrap();
    for dest in [
        "../escape.png",
        "a/../../escape.png",
        "/tmp/escape.png",
        "a\\..\\b.png",
        "x.png.asset.json",
        "link/x.png",
        ".hidden.png",
        "a/x.tmp",
    ] {
        let v = register(&srv, json!({"path": src, "dest_path": dest})).envelope(400, "http_400");
        assert!(v["message"].is_string(), "{dest}");
    }
    assert!(files(&outside).is_empty(), "{:?}", files(&outside));
    assert!(!env.path("escape.png").exists());
    // copy: false keeps the file where it is, which must be inside the assets root.
    register(&srv, json!({"path": src, "copy": false})).envelope(400, "http_400");
    let inside = env.write("assets/props/cup.png", "cup");
    let r = register(&srv, json!({"path": inside, "copy": false}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["asset"]["path"], "props/cup.png");
    assert_eq!(r.json()["asset"]["meta"]["origin"], "register");
    register(&srv, json!({"path": inside, "copy": false, "dest_path": "x/cup.png"})).envelope(400, "http_400");
    // The default destination is <asset_type>/<file name>, the type derived from the name as the CLI
    // does (`image` for a .png); the same bytes again are fine, others are 409.
    let r = register(&srv, json!({"path": src}));
    assert_eq!(r.json()["asset"]["path"], "image/hero.png");
    assert_eq!(register(&srv, json!({"path": src})).status, 200);
    let other = env.write("in2/hero.png", "another hero");
    register(&srv, json!({"path": other})).envelope(409, "http_409");
    assert_eq!(env.read("assets/image/hero.png"), "hero");
}

/// The CLI and the API copy in to the same place and read metadata the same way (the rules live in
/// the registry): before, `--copy` went to `image/`, the API to `generic/`, and `--meta` could not
/// set `provenance`.
#[test]
fn cli_and_api_agree_on_copy_in_defaults_and_metadata() {
    let env = TestEnv::new();
    let a = env.write("in/a.png", "a");
    let b = env.write("in/b.png", "b");
    let meta = json!({"tags": ["Hero"], "license": "MIT", "provenance": {"author": "Kim"}, "mood": "calm"});
    let cli = env.run(&[
        "assets",
        "register",
        a.to_str().unwrap(),
        "--copy",
        "--meta",
        &meta.to_string(),
        "--provenance-source",
        "https://example.com/a",
    ]);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    let srv = Served::start(&env);
    let r = register(&srv, json!({"path": b, "copy": true, "metadata": meta}));
    assert_eq!(r.status, 200, "{}", r.text());
    let cli_side: Value = serde_json::from_str(&env.read("assets/image/a.png.asset.json")).unwrap();
    let api_side: Value = serde_json::from_str(&env.read("assets/image/b.png.asset.json")).unwrap();
    for s in [&cli_side, &api_side] {
        assert_eq!(s["tags"], json!(["Hero"]), "{s}");
        assert_eq!(s["license"], "MIT", "{s}");
        assert_eq!(s["provenance"]["author"], "Kim", "{s}");
        assert_eq!(s["meta"]["mood"], "calm", "{s}");
    }
    assert_eq!(cli_side["provenance"]["source"], "https://example.com/a");
    let bad = env.run(&[
        "assets",
        "register",
        a.to_str().unwrap(),
        "--copy",
        "--dest",
        "x/a.png",
        "--meta",
        r#"{"tags": [1]}"#,
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--meta: tags: expected a list of strings"), "{}", bad.stderr);
}

#[test]
fn uploads_register_and_publish_hook_events() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let body = multipart(&[
        ("asset_type", None, b"backgrounds"),
        ("metadata", None, br#"{"tags": ["Sky", "day"], "license": "CC0-1.0", "scene": "intro"}"#),
        ("unknown_field", None, b"ignored"),
        ("file", Some("sky.png"), b"\x89PNG\r\n--not-a-boundary\r\n\x00\xff"),
    ]);
    let r = upload(&srv, &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json()["asset"].clone();
    assert_eq!((a["path"].clone(), a["type"].clone()), (json!("backgrounds/sky.png"), json!("backgrounds")));
    assert_eq!(a["meta"]["tags"], json!(["Sky", "day"]));
    assert_eq!((a["meta"]["license"].clone(), a["meta"]["scene"].clone()), (json!("CC0-1.0"), json!("intro")));
    assert_eq!(a["meta"]["origin"], "upload");
    assert_eq!(
        std::fs::read(env.path("assets/backgrounds/sky.png")).unwrap(),
        b"\x89PNG\r\n--not-a-boundary\r\n\x00\xff"
    );
    assert_eq!(env.events(), ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
    // dest_path wins over the default; the upload is listed at once.
    let body = multipart(&[("file", Some("ignored.bin"), b"voice"), ("dest_path", None, b"audio/voice/line1.ogg")]);
    let r = upload(&srv, &body, &[]);
    assert_eq!(r.json()["asset"]["path"], "audio/voice/line1.ogg");
    assert_eq!(items(&srv.get("/assets?tag=sky")), ["backgrounds/sky.png"]);
    assert_eq!(srv.get("/assets").json()["total"], 2);
}

#[test]
fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"max_upload_bytes": 4096, "max_json_bytes": 256}}}"#);
    let srv = Served::start(&env);
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::create_dir_all(env.path("assets")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), env.path("assets/link")).unwrap();
    let file = ("file", Some("a.png"), &b"png bytes"[..]);
    for (parts, status, what) in [
        (vec![file, ("metadata", None, &b"{not json"[..])], 400, "bad metadata JSON"),
        (vec![file, ("metadata", None, &b"[1, 2]"[..])], 400, "metadata not an object"),
        (vec![file, ("metadata", None, &br#"{"tags": 5}"#[..])], 400, "metadata.tags of the wrong type"),
        (vec![file, ("dest_path", None, &b"../../escape.png"[..])], 400, "traversal"),
        (vec![file, ("dest_path", None, &b"/etc/escape.png"[..])], 400, "absolute"),
        (vec![file, ("dest_path", None, &b"link/escape.png"[..])], 400, "through a symlink"),
        (vec![("file", Some(".."), &b"x"[..])], 400, "a file name that is no name"),
        (vec![("asset_type", None, &b"image"[..])], 422, "no file part"),
        (vec![file, ("metadata", None, &[b'x'; 300][..])], 413, "a text field over max_json_bytes"),
    ] {
        let r = upload(&srv, &multipart(&parts), &[]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
    }
    // Oversized: declared (refused before reading) and chunked (refused while reading).
    let big = multipart(&[("file", Some("big.bin"), &[7u8; 5000][..])]);
    upload(&srv, &big, &[]).envelope(413, "http_413");
    let mut chunked = format!(
        "POST /assets/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n",
        srv.port()
    )
    .into_bytes();
    for piece in big.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    srv.raw(&chunked).envelope(413, "http_413");
    // Truncated: the body ends before the closing boundary.
    let whole = multipart(&[("file", Some("t.png"), &[1u8; 2000][..])]);
    upload(&srv, &whole[..1500], &[]).envelope(400, "http_400");
    // Not multipart, or without a boundary.
    srv.request("POST", "/assets/upload", &[("Content-Type", "application/json")], b"{}").envelope(415, "http_415");
    srv.request("POST", "/assets/upload", &[("Content-Type", "multipart/form-data")], &whole).envelope(400, "http_400");

    // Only the symlink planted above: no asset, no sidecar, no temp file.
    assert_eq!(files(&env.path("assets")), ["link"], "nothing half-written");
    assert!(files(&env.path("outside")).is_empty());
    assert!(!env.path("logs/hooks/history.jsonl").exists());
    assert_eq!(srv.get("/assets").json()["total"], 0);
    assert_eq!(srv.get("/health").status, 200);
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_nothing_and_the_server_serves_on() {
    let env = TestEnv::new();
    let srv = Served::start_with(&env, &["--workers", "2"], &[]);
    let body = multipart(&[("file", Some("cut.bin"), &vec![3u8; 200_000][..])]);
    for cut in [10, 150, 100_000] {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        let head = format!(
            "POST /assets/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
             Content-Length: {}\r\n\r\n",
            srv.port(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..cut]).unwrap();
        drop(s);
    }
    // The workers notice the cut bodies; wait (bounded) until no temp file remains.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = files(&env.path("assets"));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.get("/health").status, 200);
    // And a whole upload on a keep-alive connection still works after them.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ok = multipart(&[("file", Some("ok.bin"), b"fine")]);
    let head = format!(
        "POST /assets/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {}\r\n\r\n",
        srv.port(),
        ok.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&ok).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(files(&env.path("assets")), ["generic/ok.bin", "generic/ok.bin.asset.json"]);
}

#[test]
fn delete_moves_the_asset_to_the_trash_and_publishes_the_removal() {
    let env = TestEnv::new();
    let srv = seeded(&env);
    let uid = srv.get("/assets?tags=villain").json()["items"][0]["uid"].as_str().unwrap().to_string();
    let r = srv.request("DELETE", &format!("/assets/{uid}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"ok": true, "trashed": true}));
    assert!(!env.path("assets/characters/villain.png.asset.json").exists());
    let trashed = files(&env.path("logs/trash"));
    assert!(trashed.iter().any(|f| f.ends_with("characters/villain.png.asset.json")), "{trashed:?}");
    assert_eq!(env.events().last().unwrap(), "on_asset_removed");
    srv.get(&format!("/assets/{uid}")).envelope(404, "http_404");
    srv.request("DELETE", &format!("/assets/{uid}"), &[], b"").envelope(404, "http_404");
    assert_eq!(srv.get("/assets").json()["total"], 2);
}

#[test]
fn the_index_follows_registrations_made_by_other_processes() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    assert_eq!(srv.get("/assets").json()["total"], 0);
    env.write("assets/props/lamp.png", "lamp");
    env.run(&["assets", "register", &env.path("assets/props/lamp.png").display().to_string(), "--tag", "light"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while items(&srv.get("/assets?tag=light")).is_empty() {
        assert!(Instant::now() < deadline, "the CLI registration never reached the index");
        std::thread::sleep(Duration::from_millis(50));
    }
    let uid = srv.get("/assets?tag=light").json()["items"][0]["uid"].as_str().unwrap().to_string();
    env.run(&["assets", "remove", &uid]).ok();
    while srv.get(&format!("/assets/{uid}")).status != 404 {
        assert!(Instant::now() < deadline, "the CLI removal never reached the index");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn with_a_token_asset_writes_need_the_bearer() {
    let env = TestEnv::new();
    let srv = Served::start_with(&env, &[], &[("COMFYVN_API_TOKEN", "tok")]);
    let src = env.write("in/a.png", "a");
    srv.post_json("/assets/register", &json!({"path": src}), &[]).envelope(401, "http_401");
    let body = multipart(&[("file", Some("a.png"), b"a")]);
    upload(&srv, &body, &[]).envelope(401, "http_401");
    upload(&srv, &body, &[("Authorization", "Bearer wrong")]).envelope(403, "http_403");
    srv.request("DELETE", "/assets/whatever", &[], b"").envelope(401, "http_401");
    assert!(!env.path("assets").exists() || files(&env.path("assets")).is_empty());
    let r = upload(&srv, &body, &[("Authorization", "Bearer tok")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let uid = r.json()["asset"]["uid"].as_str().unwrap().to_string();
    // Reads stay open.
    for path in ["/assets".to_string(), format!("/assets/{uid}"), format!("/assets/{uid}/download")] {
        assert_eq!(srv.get(&path).status, 200, "{path}");
    }
    let r = srv.request("DELETE", &format!("/assets/{uid}"), &[("Authorization", "Bearer tok")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn files_dropped_while_serving_reach_the_listing_through_the_watcher() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("assets/bg")).unwrap();
    let srv = Served::start_watching(&env);
    env.write("assets/bg/dropped.png", b"dropped pixels");
    let deadline = Instant::now() + Duration::from_secs(15);
    while items(&srv.get("/assets?type=bg")).is_empty() {
        assert!(Instant::now() < deadline, "the watched file never reached GET /assets");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = srv.get("/assets?type=bg").json()["items"][0].clone();
    assert_eq!((a["path"].clone(), a["bytes"].clone()), (json!("bg/dropped.png"), json!(14)));
    // An upload and a registration next to it are not registered a second time by the watcher seeing
    // their files appear.
    let r = upload(&srv, &multipart(&[("file", Some("up.png"), b"uploaded"), ("dest_path", None, b"bg/up.png")]), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let src = env.write("in/reg.png", "registered");
    let r = register(&srv, json!({"path": src, "dest_path": "bg/reg.png"}));
    assert_eq!(r.status, 200, "{}", r.text());
    // Give the watcher time to see both files appear (settle is 500 ms).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(items(&srv.get("/assets?type=bg")), ["bg/dropped.png", "bg/reg.png", "bg/up.png"]);
    let registered = env.events().iter().filter(|e| *e == "on_asset_registered").count();
    assert_eq!(registered, 3, "{}", env.read("logs/hooks/history.jsonl"));
}
