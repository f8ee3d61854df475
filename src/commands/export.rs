//! `comfyvn-obs export run|status`: the OTLP log exporter standalone, and its state.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::export::{ExportCommand, RunArgs, StatusArgs};
use crate::exit_code::ExitCode;
use crate::otlp::{self, ExportFiles, RunEnd, Settings};
use crate::output;

pub fn run(ctx: &Ctx, cmd: ExportCommand) -> Result<ExitCode> {
    match cmd {
        ExportCommand::Run(args) => export_run(ctx, args),
        ExportCommand::Status(args) => status(ctx, args),
    }
}

fn export_run(ctx: &Ctx, args: RunArgs) -> Result<ExitCode> {
    let stop = crate::signals::install_stop_flag()?;
    let settings = Settings::resolve(&ctx.config)?;
    if let Some(url) = &settings.endpoint {
        eprintln!("exporting hook events to {url}");
    }
    match otlp::run(&ctx.paths, &ctx.config, &stop, args.once)? {
        RunEnd::CaughtUp => Ok(ExitCode::Success),
        RunEnd::Stopped if args.once => Ok(ExitCode::Failure),
        RunEnd::Stopped => Ok(ExitCode::Success),
    }
}

fn status(ctx: &Ctx, args: StatusArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(&ctx.config)?;
    let files = ExportFiles::new(&ctx.paths);
    let seq = otlp::read_checkpoint(&files)?;
    let last = crate::hooks::Bus::open(&ctx.paths, &ctx.config)?.history.last_seq()?;
    let st = otlp::read_status(&files)?.unwrap_or_default();
    let doc = json!({
        "endpoint": settings.endpoint,
        "checkpoint_seq": seq,
        "history_seq": last,
        "lag": last.saturating_sub(seq),
        "exported": st.exported,
        "batches": st.batches,
        "dropped": st.dropped,
        "retries": st.retries,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "last_success_at": st.last_success_at,
    });
    if args.json {
        output::json(&doc)?;
    } else {
        let endpoint = settings.endpoint.as_deref().unwrap_or("(none: export is off)");
        output::print(&format!(
            "endpoint   {endpoint}\ncheckpoint {seq} of {last} (lag {})\nexported   {} in {} batches, {} dropped, {} retries\nlast error {}\n",
            last.saturating_sub(seq),
            st.exported,
            st.batches,
            st.dropped,
            st.retries,
            st.last_error.as_deref().map_or("-".to_string(), |e| format!("{e} at {}", st.last_error_at.as_deref().unwrap_or("?"))),
        ))?;
    }
    Ok(ExitCode::Success)
}
