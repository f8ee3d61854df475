//! Emits hook events through the library (`Bus::emit`, the same path the CLI and the API use) for
//! `benches/webhooks.sh`, optionally paced, and prints how long emitting took as JSON.
//!
//! Usage: hook_emitter --root DIR --count N [--rate EVENTS_PER_SECOND]

use std::time::{Duration, Instant};

use comfyvn_obs::config::Config;
use comfyvn_obs::hooks::Bus;
use comfyvn_obs::paths::Paths;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> anyhow::Result<()> {
    let root = std::path::PathBuf::from(arg("--root").expect("--root DIR"));
    let count: u64 = arg("--count").unwrap_or_else(|| "10000".into()).parse()?;
    let rate: f64 = arg("--rate").map(|r| r.parse()).transpose()?.unwrap_or(0.0);
    let paths = Paths::under(&root);
    let bus = Bus::open(&paths, &Config::load(&paths)?)?;
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    for i in 0..count {
        if rate > 0.0 {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
        bus.emit("on_scene_enter", serde_json::json!({"scene_id": format!("scene-{i}"), "i": i}))?;
        busy += t.elapsed();
    }
    println!(
        "{{\"count\": {count}, \"seconds\": {:.3}, \"emit_us_mean\": {:.1}}}",
        started.elapsed().as_secs_f64(),
        busy.as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
}
