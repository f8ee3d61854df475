//! `comfyvn-obs crash capture|list|show|simulate`.

use std::io::Read;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::Ctx;
use crate::cli::crash::{CaptureArgs, CrashCommand, ListArgs, ShowArgs};
use crate::crash::{self, Incident};
use crate::exit_code::ExitCode;
use crate::output;

pub fn run(ctx: &Ctx, cmd: CrashCommand) -> Result<ExitCode> {
    match cmd {
        CrashCommand::Capture(args) => capture(args),
        CrashCommand::List(args) => list(ctx, args),
        CrashCommand::Show(args) => show(ctx, args),
        CrashCommand::Simulate => simulate(),
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
        if args.json {
            let summaries: Vec<Value> = listing.dumps.iter().map(|d| d.summary()).collect();
            return output::json(&summaries).map(|_| ExitCode::Success);
        }
        let mut text = String::new();
        for d in &listing.dumps {
            let s = d.summary();
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            text.push_str(&format!(
                "{}  {}  {:<20} {}\n",
                f("timestamp"),
                f("event_id"),
                f("exc_type"),
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

fn simulate() -> Result<ExitCode> {
    // Logged first so the dump's `log_tail` can be checked too.
    crate::log::Logger::new("comfyvn.obs.crash", "crash").warn("simulating a crash on purpose", ());
    panic!("simulated crash (comfyvn-obs crash simulate)");
}
