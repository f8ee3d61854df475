//! `comfyvn-obs watch [--dir DIR …] [--settle-ms N] [--poll]` and `watch --explain PATH`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::watch::WatchArgs;
use crate::exit_code::ExitCode;
use crate::hooks::Bus;
use crate::output;
use crate::watch::{self, Options, RegistrySink};

pub fn run(ctx: &Ctx, args: WatchArgs) -> Result<ExitCode> {
    if let Some(path) = &args.explain {
        return explain(ctx, &args, path);
    }
    crate::fs::ensure_dir(&ctx.paths.assets_root)?;
    let options = Options::resolve(&ctx.paths, &ctx.config, &args.dirs, args.settle_ms, args.poll)?;
    let settle_ms = options.settle.as_millis();
    super::sweep_litter(&ctx.paths, &options.roots);
    let bus = Bus::open(&ctx.paths, &ctx.config)?;
    let sink = RegistrySink::open(&ctx.paths, &ctx.config)?;
    let stop = crate::signals::install_stop_flag()?;
    let watcher = watch::spawn(options, sink, bus, stop)?;
    if let Some(fb) = watcher.fallback() {
        eprintln!("error: {}", fb.message);
        eprintln!("hint: {}", fb.hint);
    }
    let roots: Vec<String> = watcher.roots().iter().map(|r| r.display().to_string()).collect();
    eprintln!(
        "watching {} ({} mode, settle {settle_ms} ms); Ctrl-C to stop",
        roots.join(", "),
        watcher.mode().as_str()
    );
    let summary = watcher.join()?;
    eprintln!(
        "watch stopped: {} actions, {} hook events, {} errors, {} reconciles",
        summary.actions, summary.events, summary.errors, summary.rescans
    );
    Ok(ExitCode::Success)
}

fn explain(ctx: &Ctx, args: &WatchArgs, path: &Path) -> Result<ExitCode> {
    let options = Options::resolve(&ctx.paths, &ctx.config, &args.dirs, args.settle_ms, args.poll)?;
    let rules = options.rules()?;
    let cwd = std::env::current_dir().unwrap_or_default();
    let abs = watch::engine::canonical(&cwd.join(path));
    let is_dir = abs.is_dir();
    let v = rules.explain(&abs, is_dir);
    if args.json {
        let roots: Vec<String> = options.roots.iter().map(|r| r.display().to_string()).collect();
        output::json(&json!({
            "path": abs.display().to_string(),
            "watched": v.watched,
            "class": v.class,
            "rule": v.rule,
            "detail": v.detail,
            "roots": roots,
        }))?;
    } else {
        let what = match v.class {
            "asset" => "watched (an asset)",
            "folder" => "watched (a folder)",
            "sidecar" => "watched (a sidecar)",
            _ => "not watched",
        };
        output::println(&format!("{}: {what}", abs.display()))?;
        output::println(&format!("  rule {}: {}", v.rule, v.detail))?;
    }
    Ok(if v.watched { ExitCode::Success } else { ExitCode::Failure })
}
