//! `comfyvn-obs crash capture|list|show|simulate`.

use std::io::Read;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::Ctx;
use crate::cli::crash::{CaptureArgs, CrashCommand, ListArgs, ShowArgs, UploadArgs};
use crate::crash::{self, Incident};
use crate::crash_upload::{self, Mode, Selection, Settings};
use crate::exit_code::ExitCode;
use crate::output;

pub fn run(ctx: &Ctx, cmd: CrashCommand) -> Result<ExitCode> {
    match cmd {
        CrashCommand::Capture(args) => capture(args),
        CrashCommand::List(args) => list(ctx, args),
        CrashCommand::Show(args) => show(ctx, args),
        CrashCommand::Simulate => simulate(),
        CrashCommand::Upload(args) => upload(ctx, args),
    }
}

/// `--context k=v` pairs as a JSON object (later pairs win).
pub fn context_map(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}

fn capture(args: CaptureArgs) -> Result<ExitCode> {
    let traceback = match &args.traceback_file {
        None => String::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the traceback from stdin")?;
            text
        }
        Some(p) => crate::fs::read_string(p)?,
    };
    let exc_type = args
        .exc_type
        .filter(|t| !t.trim().is_empty())
        .or_else(|| crash::python_exception(&traceback).map(|(t, _)| t))
        .unwrap_or_else(|| "Error".to_string());
    for a in &args.attach {
        if !a.exists() {
            eprintln!("warning: attachment {} does not exist (recorded anyway)", a.display());
        }
    }
    let incident = Incident {
        exc_type,
        fingerprint_hint: crash::normalise(&args.message),
        message: args.message,
        traceback,
        context: context_map(args.context),
        attachments: args.attach,
        ..Incident::default()
    };
    let info = crash::capture(incident)?;
    eprintln!("crash dump written to {}", info.path.display());
    Ok(ExitCode::Success)
}

fn list(ctx: &Ctx, args: ListArgs) -> Result<ExitCode> {
    let listing = crash::list_dumps(&ctx.paths)?;
    for problem in &listing.problems {
        eprintln!("warning: skipped {problem}");
    }
    if args.group {
        let groups = crash::group_dumps(&listing.dumps);
        if args.json {
            return output::json(&groups).map(|_| ExitCode::Success);
        }
        let mut text = String::new();
        for g in &groups {
            let s = |k: &str| g[k].as_str().unwrap_or_default().to_string();
            text.push_str(&format!(
                "{:>5}  {}  {}  {:<20} {}\n",
                g["count"],
                s("last_seen"),
                s("fingerprint"),
                s("exc_type"),
                first_line(&s("message"))
            ));
        }
        output::print(&text)?;
    } else {
        let states = crash_upload::states(&ctx.paths)?;
        let outbox = crash_upload::load_outbox(&ctx.paths)?;
        let upload = |d: &crash::DumpEntry| crash_upload::listing_state(d.event_id(), &states, Some(&outbox));
        if args.json {
            let summaries: Vec<Value> = listing
                .dumps
                .iter()
                .map(|d| {
                    let mut s = d.summary();
                    s["upload"] = upload(d);
                    s
                })
                .collect();
            return output::json(&summaries).map(|_| ExitCode::Success);
        }
        let mut text = String::new();
        for d in &listing.dumps {
            let s = d.summary();
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            let u = upload(d);
            let state = match (u["state"].as_str().unwrap_or_default(), u["server_event_id"].as_str()) {
                (st, Some(id)) => format!("{st}:{id}"),
                (st, None) => st.to_string(),
            };
            text.push_str(&format!(
                "{}  {}  {:<20} {:<20} {}\n",
                f("timestamp"),
                f("event_id"),
                f("exc_type"),
                state,
                first_line(&f("message"))
            ));
        }
        output::print(&text)?;
    }
    if listing.dumps.is_empty() {
        eprintln!("no crash dumps in {}", ctx.paths.crash_dir().display());
    }
    Ok(ExitCode::Success)
}

/// The first line of a message, cut to 100 characters for a table.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(100).collect::<String>())
    } else {
        line.to_string()
    }
}

fn show(ctx: &Ctx, args: ShowArgs) -> Result<ExitCode> {
    match crash::load_dump(&ctx.paths, &args.id)? {
        Some(entry) => {
            output::json(&entry.dump)?;
            Ok(ExitCode::Success)
        }
        None => {
            eprintln!("error: no crash dump {:?} in {}", args.id, ctx.paths.crash_dir().display());
            eprintln!("hint: `comfyvn-obs crash list` shows the event ids");
            Ok(ExitCode::Failure)
        }
    }
}

fn upload(ctx: &Ctx, args: UploadArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(&ctx.config)?;
    if args.dry_run {
        return upload_dry_run(ctx, &settings, &args);
    }
    if let Mode::Off(why) = &settings.mode {
        // What was queued while uploads were on is discarded now, never sent.
        let stop = AtomicBool::new(false);
        let report = crash_upload::pass(&ctx.paths, &ctx.config, &Selection::AllNew, std::time::Instant::now(), &stop)?;
        for id in &report.discarded {
            eprintln!("discarded queued upload of {id} (never sent)");
        }
        if report.busy {
            eprintln!("note: another crash uploader is running; it discards what is queued");
        }
        eprintln!("error: crash uploads are off: {why}");
        eprintln!(
            "hint: uploads need features.enable_observability, features.enable_crash_uploader, telemetry.telemetry_opt_in \
             and telemetry.crash_opt_in all true, telemetry.dry_run false and a DSN (obs.crash_upload.dsn or SENTRY_DSN); \
             `crash upload --dry-run` shows what would be sent"
        );
        return Ok(ExitCode::Failure);
    }
    let selection = if args.all { Selection::AllNew } else { Selection::Ids(args.ids.clone()) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    let stop = crate::signals::install_stop_flag()?;
    let report = crash_upload::pass(&ctx.paths, &ctx.config, &selection, deadline, &stop)?;
    if report.busy {
        eprintln!("error: another crash uploader (serve, or another `crash upload`) is running for this root");
        eprintln!("hint: it uploads the dumps itself; `comfyvn-obs crash list` shows their state");
        return Ok(ExitCode::Failure);
    }
    if args.json {
        output::json(&report)?;
    } else {
        let mut text = String::new();
        for (id, server) in &report.uploaded {
            text.push_str(&format!("{id}  uploaded  {}\n", server.as_deref().unwrap_or("-")));
        }
        for (id, path) in &report.dry_run {
            text.push_str(&format!("{id}  dry_run  {}\n", path.display()));
        }
        for (id, why) in &report.waiting {
            text.push_str(&format!("{id}  queued  {why}\n"));
        }
        for (id, why) in &report.failed {
            text.push_str(&format!("{id}  failed  {why}\n"));
        }
        for id in &report.sampled_out {
            text.push_str(&format!("{id}  sampled_out  -\n"));
        }
        output::print(&text)?;
    }
    eprintln!("crash uploads {}", settings.describe());
    if report.uploaded.is_empty() && report.dry_run.is_empty() && report.waiting.is_empty() && report.failed.is_empty()
    {
        eprintln!("nothing to upload");
    }
    Ok(if report.waiting.is_empty() && report.failed.is_empty() { ExitCode::Success } else { ExitCode::Failure })
}

/// `--dry-run`: the exact envelopes, nothing sent, nothing written.
fn upload_dry_run(ctx: &Ctx, settings: &Settings, args: &UploadArgs) -> Result<ExitCode> {
    let dumps = if args.all {
        let mut d = crash::list_dumps(&ctx.paths)?.dumps;
        d.reverse();
        d
    } else {
        let mut v = Vec::new();
        for id in &args.ids {
            match crash::load_dump(&ctx.paths, id)? {
                Some(d) => v.push(d),
                None => {
                    eprintln!("error: no crash dump {id:?} in {}", ctx.paths.crash_dir().display());
                    eprintln!("hint: `comfyvn-obs crash list` shows the event ids");
                    return Ok(ExitCode::Failure);
                }
            }
        }
        v
    };
    let opts = crash_upload::envelope_options(&ctx.paths, &ctx.config, settings)?;
    let mut out = Vec::new();
    for d in &dumps {
        out.extend(crate::sentry::envelope(&d.dump, &opts)?);
    }
    output::print(&String::from_utf8_lossy(&out))?;
    eprintln!("{} envelope(s), nothing sent; crash uploads {}", dumps.len(), settings.describe());
    Ok(ExitCode::Success)
}

fn simulate() -> Result<ExitCode> {
    // Logged first so the dump's `log_tail` can be checked too.
    crate::log::Logger::new("comfyvn.obs.crash", "crash").warn("simulating a crash on purpose", ());
    panic!("simulated crash (comfyvn-obs crash simulate)");
}
