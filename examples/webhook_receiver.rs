//! A minimal webhook receiver for `benches/webhooks.sh`: N loopback HTTP/1.1 listeners (keep-alive)
//! that answer 200 at once and record, per request, the `webhook-id` and the delivery delay (receive
//! time minus the event's `ts` in the body). Exits when `--expect` requests arrived or after
//! `--timeout-s`, printing a JSON summary on stdout.
//!
//! Usage: webhook_receiver --receivers 3 --expect 30000 --ports-file PATH [--timeout-s 120]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Seen {
    delays_ms: Vec<f64>,
    ids: HashSet<String>,
    per_receiver: Vec<usize>,
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() {
    let receivers: usize = arg("--receivers", "3").parse().expect("--receivers N");
    let expect: usize = arg("--expect", "30000").parse().expect("--expect N");
    let timeout = Duration::from_secs(arg("--timeout-s", "120").parse().expect("--timeout-s N"));
    let ports_file = arg("--ports-file", "ports.txt");
    let seen = Arc::new(Mutex::new(Seen { per_receiver: vec![0; receivers], ..Seen::default() }));
    let mut ports = Vec::new();
    for r in 0..receivers {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        ports.push(listener.local_addr().unwrap().port());
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, r, &seen));
            }
        });
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    std::fs::write(&ports_file, list.join(" ") + "\n").expect("write ports file");
    let started = Instant::now();
    while seen.lock().unwrap().delays_ms.len() < expect && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = seen.lock().unwrap();
    let mut d = s.delays_ms.clone();
    d.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| if d.is_empty() { f64::NAN } else { d[((d.len() - 1) as f64 * p) as usize] };
    println!(
        "{{\"received\": {}, \"unique_ids\": {}, \"per_receiver\": {:?}, \"p50_ms\": {:.2}, \"p95_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}",
        d.len(),
        s.ids.len(),
        s.per_receiver,
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0)
    );
}

fn serve(stream: TcpStream, receiver: usize, seen: &Mutex<Seen>) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut len, mut id) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "webhook-id" => id = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let ts = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["ts"].as_f64()).unwrap_or(now);
        {
            let mut s = seen.lock().unwrap();
            s.delays_ms.push((now - ts) * 1000.0);
            s.ids.insert(id);
            s.per_receiver[receiver] += 1;
        }
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}
