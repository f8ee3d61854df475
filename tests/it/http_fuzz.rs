//! A few thousand malformed and random requests against a real server on loopback (bounded in count
//! and time, deterministic seed), then the server must still answer `/health` and its history must be
//! intact.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::http::Served;
use crate::support::TestEnv;

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const METHODS: &[&str] = &["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH", "BREW", "G\tET", ""];
const PATHS: &[&str] = &[
    "/health",
    "/healthz/",
    "/api/modder/hooks",
    "/api/modder/hooks/history?limit=",
    "/api/modder/hooks/history?limit=-5",
    "/api/modder/hooks/history?limit=1e9",
    "/api/modder/hooks/emit",
    "/api/modder/hooks/test",
    "/api/audit/latest",
    "/openapi.json",
    "/api/modder/hooks/ws?topics=nope",
    "/api/modder/hooks/stream?since=abc",
    "/%ff%fe",
    "/..%2f..%2fetc%2fpasswd",
    "//",
    "*",
    "/a?%zz=%",
    "/api/telemetry/events?limit=0",
    "/api/telemetry/opt_in",
    "/api/telemetry/settings",
    "/api/telemetry/features",
    "/api/telemetry/diagnostics",
    "/api/crashes/..%2f",
    "/assets?limit=-1&tag=%ff",
    "/assets/upload",
    "/assets/register",
    "/assets/x/download",
    "/api/modder/hooks/webhooks",
    "/api/providers/quota",
];
const BODIES: &[&str] = &[
    "",
    "{",
    "null",
    "[]",
    "{\"event\": 5}",
    "{\"event\": \"on_scene_enter\", \"payload\": \"x\"}",
    "{\"event\": \"on_scene_enter\", \"payload\": {\"deep\": [[[[[[]]]]]]}}",
    "{\"event\": \"\u{0000}\"}",
    "{\"event\": \"on_scene_enter\", \"data\": {}, \"payload\": {}}",
    "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.png\"\r\n\r\nabc",
    "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../f.png\"\r\n\r\nabc\r\n--b--\r\n",
    "--b\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\r\n--b--",
];

fn one_request(rng: &mut Rng, port: u16) -> Vec<u8> {
    match rng.below(10) {
        // Pure noise.
        0 => {
            let n = rng.below(300);
            rng.bytes(n)
        }
        // A request line only, possibly truncated.
        1 => {
            let line = format!("{} {} HTTP/1.1", rng.pick(METHODS), rng.pick(PATHS));
            let cut = rng.below(line.len() + 1);
            line.as_bytes()[..cut].to_vec()
        }
        _ => {
            let body = rng.pick(BODIES);
            let mut req = format!("{} {} HTTP/1.{}\r\n", rng.pick(METHODS), rng.pick(PATHS), rng.below(2));
            if rng.below(5) != 0 {
                let host = ["127.0.0.1", "localhost", "evil.example", "", "[::1]"][rng.below(5)];
                req.push_str(&format!("Host: {host}:{port}\r\n"));
            }
            match rng.below(5) {
                0 => req.push_str("Content-Type: application/json\r\n"),
                1 => req.push_str("Content-Type: text/plain; charset=\u{ff}\r\n"),
                2 => req.push_str("Content-Type: multipart/form-data; boundary=b\r\n"),
                _ => {}
            }
            match rng.below(6) {
                0 => req.push_str(&format!("Content-Length: {}\r\n", body.len() + rng.below(3000))),
                1 => req.push_str("Content-Length: -1\r\n"),
                2 => req.push_str("Transfer-Encoding: chunked\r\n"),
                3 => req.push_str("Expect: 100-continue\r\n"),
                _ => req.push_str(&format!("Content-Length: {}\r\n", body.len())),
            }
            if rng.below(4) == 0 {
                req.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
            }
            if rng.below(8) == 0 {
                let junk = rng.bytes(40);
                req.push_str(&String::from_utf8_lossy(&junk));
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            bytes
        }
    }
}

#[test]
fn thousands_of_malformed_requests_leave_the_server_healthy() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"io_timeout_ms": 1000}}}"#);
    let srv = Served::start(&env);
    let port = srv.port();
    let addr = srv.addr;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                for _ in 0..600 {
                    let req = one_request(&mut rng, port);
                    let Ok(mut c) = TcpStream::connect(addr) else { continue };
                    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let _ = c.write_all(&req);
                    // Half the clients hang up at once (mid-request or before the response).
                    if rng.below(2) == 0 {
                        continue;
                    }
                    let _ = c.shutdown(Shutdown::Write);
                    let mut sink = Vec::new();
                    let _ = c.take(64 * 1024).read_to_end(&mut sink);
                }
            });
        }
    });
    let r = srv.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    // Whatever the fuzzing emitted is well-formed history.
    let tail = env.run(&["hooks", "tail", "-n", "100000", "--json"]).ok().json_lines();
    assert!(tail.windows(2).all(|w| w[1]["seq"].as_u64() > w[0]["seq"].as_u64()));
    // No upload was left half-written: no temp file under the assets root.
    let leftovers: Vec<String> = crate::support::files_under(&env.path("assets"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .map(|p| p.display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
