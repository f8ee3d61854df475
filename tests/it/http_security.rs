//! The server's guards against the real binary: bind policy, `Host` check, bearer token, and bodies
//! that declare more than they should.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::http::{read_response, Served};
use crate::support::TestEnv;

#[test]
fn non_loopback_bind_without_token_is_refused_with_a_hint() {
    let env = TestEnv::new();
    let r = env.run(&["serve", "--bind", "0.0.0.0:0"]).code(2);
    assert!(r.stderr.contains("COMFYVN_API_TOKEN"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(!r.stderr.contains("listening on"), "{}", r.stderr);
}

#[test]
fn host_header_must_match_the_bind_address_or_the_allow_list() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"allowed_hosts": ["studio.example"]}}}"#);
    let srv = Served::start(&env);
    let raw =
        |host: &str| srv.raw(format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    for ok in [format!("127.0.0.1:{}", srv.port()), format!("localhost:{}", srv.port()), "studio.example:80".into()] {
        assert_eq!(raw(&ok).status, 200, "{ok}");
    }
    let v = raw("evil.example").envelope(403, "http_403");
    assert_eq!(v["details"]["host"], "evil.example");
    raw(&format!("127.0.0.1.evil.example:{}", srv.port())).envelope(403, "http_403");
    // HTTP/1.0 without Host is not a browser; it is answered.
    let r = srv.raw(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn with_a_token_state_changing_routes_need_the_bearer() {
    let env = TestEnv::new();
    let srv = Served::start_with(&env, &[], &[("COMFYVN_API_TOKEN", "s3cret-token")]);
    let body = json!({"event": "on_scene_enter"});
    let r = srv.post_json("/api/modder/hooks/emit", &body, &[]);
    r.envelope(401, "http_401");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    srv.post_json("/api/modder/hooks/emit", &body, &[("Authorization", "Bearer wrong")]).envelope(403, "http_403");
    srv.post_json("/api/modder/hooks/test", &body, &[("Authorization", "Basic czNjcmV0")]).envelope(401, "http_401");
    assert!(!env.path("logs/hooks/history.jsonl").exists());
    let ok = srv.post_json("/api/modder/hooks/emit", &body, &[("Authorization", "Bearer s3cret-token")]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Reads stay open.
    assert_eq!(srv.get("/api/modder/hooks/history").status, 200);
    assert_eq!(srv.get("/health").status, 200);
}

#[test]
fn bodies_declaring_more_than_the_limit_are_413_and_never_read() {
    let env = TestEnv::new();
    let srv = Served::start(&env);
    let port = srv.port();
    // Declared sizes from just over the JSON limit to absurd: each is refused without being read, and
    // a client that never sends the body does not hold anything up.
    for declared in ["2000000", "50000000", "900000000000", "18446744073709551615"] {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /api/modder/hooks/emit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {declared}\r\n\r\n{{\"event\":"
        );
        s.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut s);
        let v = r.envelope(413, "http_413");
        assert_eq!(v["details"]["limit_bytes"], 1048576, "{declared}");
        // The connection is cut after the answer: the rest of the body is never read.
        let mut rest = [0u8; 16];
        assert!(matches!(s.read(&mut rest), Ok(0) | Err(_)), "{declared}");
    }
    // An unread body on a route that does not read it is not taken for the next request either.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let filler = "x".repeat(4000);
    s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 4000\r\n\r\n{filler}").as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    assert_eq!(srv.get("/health").status, 200);
    assert!(!env.path("logs/hooks/history.jsonl").exists());
}
