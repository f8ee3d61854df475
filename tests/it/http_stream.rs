//! The live stream against the real binary: SSE and WebSocket clients receive events emitted by a
//! separate `hooks emit` process (the stream follows the history file), resume, filter, keepalive,
//! resync, client limit and shutdown.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::http::Served;
use crate::support::TestEnv;

/// One SSE block: its `id`, `event`, `data` fields and comment lines.
#[derive(Debug, Default)]
struct Block {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comments: Vec<String>,
}

struct Sse {
    reader: BufReader<TcpStream>,
    pub status_line: String,
    pub headers: Vec<String>,
}

impl Sse {
    fn connect(srv: &Served, target: &str, extra: &[(&str, &str)]) -> Sse {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n", srv.port());
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            let l = l.trim_end().to_string();
            if l.is_empty() {
                break;
            }
            headers.push(l);
        }
        Sse { reader, status_line, headers }
    }

    /// The next block, or `None` at end of stream.
    fn next(&mut self) -> Option<Block> {
        let mut b = Block::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(b);
                }
                continue;
            }
            any = true;
            if let Some(c) = line.strip_prefix(':') {
                b.comments.push(c.trim().to_string());
            } else if let Some((k, v)) = line.split_once(": ") {
                match k {
                    "id" => b.id = Some(v.to_string()),
                    "event" => b.event = Some(v.to_string()),
                    "data" => b.data = Some(v.to_string()),
                    _ => {}
                }
            }
        }
    }

    /// The next block that carries an event (skipping comments).
    fn next_event(&mut self) -> Block {
        loop {
            let b = self.next().expect("stream ended");
            if b.event.is_some() {
                return b;
            }
        }
    }
}

fn emit(env: &TestEnv, event: &str, data: &str) {
    env.run(&["hooks", "emit", event, "--data", data]).ok();
}

#[test]
fn sse_delivers_events_emitted_by_another_process_with_topic_filter() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let mut all = Sse::connect(&srv, "/api/modder/hooks/stream", &[]);
    assert!(all.status_line.starts_with("HTTP/1.1 200"), "{}", all.status_line);
    assert!(all.headers.iter().any(|h| h.eq_ignore_ascii_case("content-type: text/event-stream; charset=utf-8")));
    assert!(all.headers.iter().any(|h| h.to_ascii_lowercase().starts_with("x-request-id:")));
    let mut choices = Sse::connect(&srv, "/api/modder/hooks/stream?topics=modder.on_choice_render", &[]);
    // The opening comment means the subscription is live.
    assert!(all.next().unwrap().comments[0].contains("hook stream"));
    assert!(choices.next().unwrap().comments[0].contains("hook stream"));

    emit(&env, "on_scene_enter", r#"{"scene_id": "s1"}"#);
    emit(&env, "on_choice_render", r#"{"choices": [1]}"#);
    let b = all.next_event();
    assert_eq!((b.id.as_deref(), b.event.as_deref()), (Some("1"), Some("on_scene_enter")));
    let env1: Value = serde_json::from_str(b.data.as_deref().unwrap()).unwrap();
    assert_eq!(env1["data"], json!({"scene_id": "s1"}));
    assert_eq!(env1["seq"], 1);
    assert_eq!(all.next_event().event.as_deref(), Some("on_choice_render"));
    let only = choices.next_event();
    assert_eq!((only.id.as_deref(), only.event.as_deref()), (Some("2"), Some("on_choice_render")));
}

#[test]
fn sse_resumes_after_last_event_id_and_since() {
    let env = TestEnv::new();
    for i in 1..=4 {
        emit(&env, "on_scene_enter", &format!(r#"{{"i": {i}}}"#));
    }
    let srv = Served::start(&env);
    let mut s = Sse::connect(&srv, "/api/modder/hooks/stream?since=3", &[("Last-Event-ID", "1")]);
    let ids: Vec<String> = (0..3).map(|_| s.next_event().id.unwrap()).collect();
    assert_eq!(ids, ["2", "3", "4"]);
    let mut s = Sse::connect(&srv, "/api/modder/hooks/stream?since=3", &[]);
    assert_eq!(s.next_event().id.as_deref(), Some("4"));
    // HEAD does not open a stream.
    let head =
        srv.raw(format!("HEAD /api/modder/hooks/stream HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", srv.port()).as_bytes());
    assert_eq!(head.status, 200);
    let r = srv.get("/api/modder/hooks/stream?since=-1");
    r.envelope(422, "validation_error");
    let r = srv.get("/api/modder/hooks/stream?topics=on_nope");
    let v = r.envelope(422, "validation_error");
    assert_eq!(v["details"][0]["message"], "Unsupported modder hook topics: on_nope");
}

#[test]
fn sse_keepalive_and_resync_for_a_client_too_far_behind() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"sse_keepalive_secs": 1, "stream_buffer": 2}}}"#);
    for i in 1..=5 {
        emit(&env, "on_scene_enter", &format!(r#"{{"i": {i}}}"#));
    }
    let srv = Served::start(&env);
    let mut s = Sse::connect(&srv, "/api/modder/hooks/stream?since=0", &[]);
    let resync = s.next_event();
    assert_eq!(resync.event.as_deref(), Some("resync_required"));
    let v: Value = serde_json::from_str(resync.data.as_deref().unwrap()).unwrap();
    assert_eq!(v, json!({"resync_required": true, "next_seq": 4}));
    assert_eq!(s.next_event().id.as_deref(), Some("4"));
    assert_eq!(s.next_event().id.as_deref(), Some("5"));
    let started = Instant::now();
    loop {
        let b = s.next().unwrap();
        if b.comments.iter().any(|c| c == "keepalive") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "no keepalive");
    }
}

/// Whether an SSE block fits one branch of the document's event schema: the fields the branch
/// requires are there and no others, a `const` or `pattern` holds, and the JSON in `data` has the
/// keys its `contentSchema` requires (and no others where it forbids them).
fn fits(doc: &Value, branch: &Value, block: &Block) -> Result<(), String> {
    let fields: Vec<(&str, &str)> = [("id", &block.id), ("event", &block.event), ("data", &block.data)]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect();
    let props = branch["properties"].as_object().unwrap();
    for need in branch["required"].as_array().unwrap() {
        if !fields.iter().any(|(k, _)| need == k) {
            return Err(format!("{need} missing"));
        }
    }
    for (k, v) in &fields {
        let Some(p) = props.get(*k) else { return Err(format!("{k} not in the schema")) };
        if p.get("const").is_some_and(|c| c != v) {
            return Err(format!("{k}: {v:?} is not {}", p["const"]));
        }
        if p["pattern"] == "^[1-9][0-9]*$"
            && !(v.starts_with(|c: char| c != '0') && v.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{k}: {v:?} does not match {}", p["pattern"]));
        }
        if p["contentMediaType"] == "application/json" {
            let data: Value = serde_json::from_str(v).map_err(|e| format!("{k} is not JSON: {e}"))?;
            let name = p["contentSchema"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            let schema = &doc["components"]["schemas"][name];
            let keys: Vec<&String> = data.as_object().unwrap().keys().collect();
            for need in schema["required"].as_array().unwrap() {
                if !keys.iter().any(|k| *k == need) {
                    return Err(format!("{name}: {need} missing in {data}"));
                }
            }
            if schema["additionalProperties"] == false {
                if let Some(extra) = keys.iter().find(|k| schema["properties"].get(k.as_str()).is_none()) {
                    return Err(format!("{name}: {extra} not in the schema"));
                }
            }
        }
    }
    Ok(())
}

/// The document described a stream event as `{"type": "string"}` and knew nothing of
/// `resync_required`. Every event the server sends (hook events, the resync notice) fits exactly one
/// branch of the documented event schema; comments are no events.
#[test]
fn the_documented_sse_event_schema_describes_every_event_sent_resync_included() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"stream_buffer": 2}}}"#);
    for i in 1..=5 {
        emit(&env, "on_scene_enter", &format!(r#"{{"i": {i}}}"#));
    }
    let srv = Served::start(&env);
    let doc = srv.get("/openapi.json").json();
    let ok = &doc["paths"]["/api/modder/hooks/stream"]["get"]["responses"]["200"];
    let branches = ok["content"]["text/event-stream"]["schema"]["oneOf"].as_array().expect("oneOf of event kinds");
    assert!(branches.iter().any(|b| b["properties"]["event"]["const"] == "resync_required"));
    let mut s = Sse::connect(&srv, "/api/modder/hooks/stream?since=0", &[]);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let block = s.next_event();
        let fitting: Vec<&str> =
            branches.iter().filter(|b| fits(&doc, b, &block).is_ok()).map(|b| b["title"].as_str().unwrap()).collect();
        let why: Vec<String> = branches.iter().filter_map(|b| fits(&doc, b, &block).err()).collect();
        assert_eq!(fitting.len(), 1, "{block:?} fits {fitting:?}; {why:?}");
        kinds.push(fitting[0]);
    }
    assert_eq!(kinds, ["resync_required", "hook event", "hook event"]);
}

/// A client that went away held its stream slot until a keepalive write failed (up to twice
/// `obs.server.sse_keepalive_secs`): with `max_stream_clients: 1`, the next client got 503 for 30 s.
#[test]
fn a_stream_client_that_left_frees_its_slot_while_the_stream_is_idle() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"max_stream_clients": 1}}}"#);
    let srv = Served::start(&env);
    for round in 0..3 {
        // Each time, the client before this one has just hung up; the slot comes back within a few
        // hang-up checks (250 ms each).
        let started = Instant::now();
        let mut s = loop {
            let s = Sse::connect(&srv, "/api/modder/hooks/stream", &[]);
            if s.status_line.starts_with("HTTP/1.1 200") {
                break s;
            }
            assert!(s.status_line.starts_with("HTTP/1.1 503"), "{}", s.status_line);
            assert!(started.elapsed() < Duration::from_secs(3), "round {round}: the slot is still taken after 3 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(s.next().unwrap().comments[0].contains("hook stream"));
    }
}

#[test]
fn stream_clients_are_bounded_and_shutdown_closes_them() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"max_stream_clients": 1}}}"#);
    let mut srv = Served::start(&env);
    let mut first = Sse::connect(&srv, "/api/modder/hooks/stream", &[]);
    first.next().unwrap();
    let r = srv.get("/api/modder/hooks/stream");
    r.envelope(503, "http_503");
    assert_eq!(r.header("retry-after"), Some("5"));
    // Ordinary requests are not affected by the stream.
    assert_eq!(srv.get("/health").status, 200);
    assert_eq!(srv.stop_with("-TERM"), 0);
    // The client is told and its stream ends.
    let mut saw_end = false;
    while let Some(b) = first.next() {
        saw_end |= b.comments.iter().any(|c| c.contains("shutting down"));
    }
    assert!(saw_end);
}

fn ws_connect(srv: &Served, target: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(srv.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!("ws://127.0.0.1:{}{target}", srv.port());
    let (ws, resp) = tungstenite::client::client(url.as_str(), stream).expect("websocket handshake");
    assert_eq!(resp.status().as_u16(), 101);
    assert!(resp.headers().contains_key("x-request-id"));
    ws
}

fn ws_json(ws: &mut tungstenite::WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Message::Close(_)) => panic!("closed"),
            Ok(_) => {}
            // A signal landing on this thread while it blocks in read (seen under a loaded parallel run).
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("websocket frame: {e:?}"),
        }
    }
}

#[test]
fn websocket_first_frame_protocol() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let mut ws = ws_connect(&srv, "/api/modder/hooks/ws");
    ws.send(Message::text(r#"{"topics": ["modder.on_scene_enter", "audio.tts.cached"]}"#)).unwrap();
    assert_eq!(ws_json(&mut ws), json!({"ok": true, "subscribed": ["on_scene_enter", "on_audio_tts_cached"]}));
    emit(&env, "on_choice_render", "{}");
    emit(&env, "on_scene_enter", r#"{"scene_id": "a"}"#);
    let e = ws_json(&mut ws);
    assert_eq!(
        (e["seq"].clone(), e["event"].clone(), e["data"].clone()),
        (json!(2), json!("on_scene_enter"), json!({"scene_id": "a"}))
    );

    let mut bad = ws_connect(&srv, "/api/modder/hooks/ws");
    bad.send(Message::text(r#"{"topics": ["on_scene_enter", "nope"]}"#)).unwrap();
    assert_eq!(ws_json(&mut bad), json!({"ok": false, "error": "Unsupported modder hook topics: nope"}));
    let mut closed = false;
    for _ in 0..10 {
        match bad.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed);
}

#[test]
fn websocket_query_topics_since_and_idle_ping() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"ws_ping_secs": 1}}}"#);
    emit(&env, "on_scene_enter", "{}");
    emit(&env, "on_choice_render", r#"{"n": 1}"#);
    let srv = Served::start(&env);
    // No client frame at all: `since` replays, `topics` filters.
    let mut ws = ws_connect(&srv, "/api/modder/hooks/ws?topics=on_choice_render&since=0");
    let e = ws_json(&mut ws);
    assert_eq!((e["seq"].clone(), e["event"].clone()), (json!(2), json!("on_choice_render")));
    assert_eq!(ws_json(&mut ws), json!({"ping": true}));
    emit(&env, "on_choice_render", r#"{"n": 2}"#);
    loop {
        let v = ws_json(&mut ws);
        if v.get("ping").is_none() {
            assert_eq!(v["seq"], 3);
            break;
        }
    }
    ws.close(None).unwrap();
    // A plain GET is told to upgrade; unknown topics are refused before the upgrade.
    let r = srv.get("/api/modder/hooks/ws");
    r.envelope(426, "http_426");
    let url = format!("ws://127.0.0.1:{}/api/modder/hooks/ws?topics=nope", srv.port());
    let stream = TcpStream::connect(srv.addr).unwrap();
    match tungstenite::client::client(url.as_str(), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 422)
        }
        other => panic!("expected a 422 refusal, got {:?}", other.map(|_| ())),
    }
}
