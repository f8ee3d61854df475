//! `comfyvn-obs hooks list|tail|emit`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::Ctx;
use crate::cli::hooks::{EmitArgs, HooksCommand, ListArgs, PluginsArgs, TailArgs};
use crate::exit_code::ExitCode;
use crate::hooks::{Bus, Envelope, Filter};
use crate::output;

pub fn run(ctx: &Ctx, cmd: HooksCommand) -> Result<ExitCode> {
    let bus = Bus::open(&ctx.paths, &ctx.config)?;
    match cmd {
        HooksCommand::List(args) => list(&bus, args),
        HooksCommand::Tail(args) => tail(&bus, args),
        HooksCommand::Emit(args) => emit(ctx, &bus, args),
        HooksCommand::Plugins(args) => plugins(ctx, args),
    }
}

fn list(bus: &Bus, args: ListArgs) -> Result<ExitCode> {
    if args.json {
        output::json(bus.catalogue.specs())?;
    } else {
        let mut text = String::new();
        for s in bus.catalogue.specs() {
            text.push_str(&format!("{:<34} {:<36} {}\n", s.name, s.ws_topic, s.payload_fields.join(",")));
        }
        output::print(&text)?;
    }
    Ok(ExitCode::Success)
}

fn print_envelope(e: &Envelope, json: bool) -> Result<()> {
    if json {
        return output::json_line(e);
    }
    let ts = chrono::DateTime::from_timestamp_micros((e.ts * 1e6) as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    output::println(&format!("{:>8}  {ts}  {:<28} {}", e.seq, e.event, e.data))
}

fn tail(bus: &Bus, args: TailArgs) -> Result<ExitCode> {
    let mut filter = Filter { since: args.since, ..Default::default() };
    if let Some(glob) = &args.event {
        filter = filter.with_event_glob(glob)?;
    }
    let items = bus.history.tail(args.lines, &filter)?;
    for e in &items {
        print_envelope(e, args.json)?;
    }
    if !args.follow {
        return Ok(ExitCode::Success);
    }
    let start = items.last().map(|e| e.seq).or(args.since).unwrap_or(bus.history.last_seq()?);
    let mut follower = bus.history.follow(start)?;
    let stop = crate::signals::install_stop_flag()?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for e in follower.poll()? {
            if filter.matches(&e) {
                print_envelope(&e, args.json)?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::Success)
}

fn emit(ctx: &Ctx, bus: &Bus, args: EmitArgs) -> Result<ExitCode> {
    let data: Value =
        serde_json::from_str(&args.data).with_context(|| format!("--data is not valid JSON: {}", args.data))?;
    let env = bus.emit(&args.event, data)?;
    // Telemetry samples explicitly emitted hooks (when opted in); a telemetry failure never fails the emit.
    if let Err(e) = crate::telemetry::Telemetry::new(&ctx.paths, &ctx.config).record_hook(&env.event, &env.data) {
        tracing::warn!(error = %format!("{e:#}"), "telemetry.record_hook_failed");
    }
    output::json_line(&env)?;
    Ok(ExitCode::Success)
}

fn plugins(ctx: &Ctx, args: PluginsArgs) -> Result<ExitCode> {
    use crate::hooks::plugins::{self, PluginHost};
    if args.run {
        let host = PluginHost::new(&ctx.paths, &ctx.config);
        if !host.enabled() {
            eprintln!(
                "dev plugins are off: set COMFYVN_DEV_MODE=1 to run the executables in {}",
                host.root().display()
            );
            return Ok(ExitCode::Failure);
        }
        let stop = crate::signals::install_stop_flag()?;
        eprintln!("running the hook plugins in {} (Ctrl-C to stop)", host.root().display());
        if let Some(handle) = host.start(stop)? {
            let _ = handle.join();
        }
        return Ok(ExitCode::Success);
    }
    let status = plugins::status_from_disk(&ctx.paths, &ctx.config)?;
    if args.json {
        output::json(&status)?;
        return Ok(ExitCode::Success);
    }
    let root = status["root"].as_str().unwrap_or_default();
    if status["enabled"] != true {
        eprintln!("dev plugins are off: set COMFYVN_DEV_MODE=1 to run the executables in {root}");
        return Ok(ExitCode::Success);
    }
    match status["host"]["pid"].as_u64() {
        Some(pid) => eprintln!("plugin host pid {pid}, folder {root}"),
        None => {
            eprintln!("no plugin host is running for {root} (`comfyvn-obs hooks plugins --run` or `serve` starts one)")
        }
    }
    let mut text = String::new();
    for p in status["plugins"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "{:<24} {:<8} pid={:<8} restarts={:<4} delivered={:<8} dropped={:<6} {}\n",
            p["name"].as_str().unwrap_or_default(),
            if p["running"] == true { "running" } else { "stopped" },
            p["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            p["restarts"],
            p["delivered"],
            p["dropped"],
            p["last_error"].as_str().unwrap_or_default(),
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::Success)
}
