//! The baseline for `benches/http.sh`: a bare tiny_http server answering every request with a small
//! JSON body on the same number of worker threads as `serve`, so the bench can print how much the
//! API's routing, checks and logging cost on top of the HTTP library itself.
//!
//! Usage: `baseline_http [ADDR] [WORKERS]` (default `127.0.0.1:0 8`); prints `listening on http://…` on
//! stderr like `serve`, and runs until killed.

use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(8);
    let server = Arc::new(tiny_http::Server::http(addr.as_str()).expect("bind"));
    eprintln!("listening on http://{}", server.server_addr());
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("header");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (server, header) = (Arc::clone(&server), header.clone());
            std::thread::spawn(move || {
                while let Ok(rq) = server.recv() {
                    let _ =
                        rq.respond(tiny_http::Response::from_string("{\"status\":\"ok\"}").with_header(header.clone()));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
