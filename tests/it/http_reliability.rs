//! `serve` never stops on its own (issue: the server died after one idle I/O timeout, and its accept
//! loop ended for good on the first accept error, e.g. out of file descriptors).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::Served;
use crate::support::TestEnv;

fn alive(srv: &mut Served) -> bool {
    srv.child.try_wait().unwrap().is_none()
}

#[test]
fn serve_answers_after_idle_gaps_longer_than_the_io_timeout() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"io_timeout_ms": 300}}}"#);
    let mut srv = Served::start(&env);
    assert_eq!(srv.get("/health").status, 200);
    // An idle keep-alive connection is closed by the server after the I/O timeout, quietly.
    let mut idle = TcpStream::connect(srv.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for gap_ms in [1_000, 1_300] {
        std::thread::sleep(Duration::from_millis(gap_ms));
        assert!(alive(&mut srv), "serve exited after an idle gap of {gap_ms} ms");
        let r = srv.get("/health");
        assert_eq!(r.status, 200, "after an idle gap of {gap_ms} ms");
    }
    let mut buf = Vec::new();
    assert_eq!(idle.read_to_end(&mut buf).unwrap(), 0, "the idle connection is closed without a response");
    let lines = srv.stderr_lines().join("\n");
    assert!(!lines.contains("listener failed"), "{lines}");
}

/// Under `ulimit -n 64`, a crowd of clients exhausts the descriptors: accept fails with EMFILE (or
/// the socket cannot be duplicated). The server warns once for the burst, keeps the process and the
/// listener alive, and answers again as soon as the crowd is gone.
#[test]
fn serve_keeps_accepting_after_file_descriptors_run_out() {
    let env = TestEnv::new();
    env.write("config/comfyvn.json", r#"{"obs": {"server": {"io_timeout_ms": 20000}}}"#);
    let inner = Served::command(&env, &[], &[], false);
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(r#"ulimit -n 64 && exec "$0" "$@""#).arg(inner.get_program()).args(inner.get_args());
    cmd.current_dir(inner.get_current_dir().unwrap());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut srv = Served::from_command(cmd);
    assert_eq!(srv.get("/health").status, 200);

    // 100 idle clients: more than the descriptors left (each accepted connection takes two), fewer
    // than the listen backlog, so every connect completes in the kernel.
    let crowd: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(srv.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(800));
    assert!(alive(&mut srv), "serve exited when descriptors ran out");
    drop(crowd);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = try_health(&srv) {
            assert_eq!(code, 200);
            break;
        }
        assert!(Instant::now() < deadline, "serve did not answer again after the descriptors came back");
        assert!(alive(&mut srv), "serve exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still answering, many times over.
    for _ in 0..20 {
        assert_eq!(srv.get("/health").status, 200);
    }
    assert!(alive(&mut srv));
    let lines = srv.stderr_lines();
    let warnings = lines.iter().filter(|l| l.contains("out of file descriptors")).count();
    assert!(warnings >= 1, "no exhaustion warning in:\n{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("accepting connections again")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{}", lines.join("\n"));
}

/// One GET /health with a short timeout; `None` when it cannot be had yet.
fn try_health(srv: &Served) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&srv.addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", srv.port());
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let head = String::from_utf8_lossy(&out);
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn serve_removes_temp_files_of_killed_processes_when_it_starts() {
    let env = TestEnv::new();
    let litter = crate::support::Litter::plant(&env);
    let srv = Served::start(&env);
    litter.assert_swept();
    assert_eq!(srv.get("/health").status, 200);
}
