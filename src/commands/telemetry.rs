//! `comfyvn-obs telemetry status|opt-in|opt-out|summary|record-feature|record-event|hash`. Answers are
//! the API's JSON shapes on stdout; notes for people (nothing recorded, flag off) go to stderr.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::Ctx;
use crate::cli::telemetry::{OptInArgs, RecordEventArgs, TelemetryCommand};
use crate::exit_code::ExitCode;
use crate::output;
use crate::telemetry::{OptIn, Telemetry};

pub fn run(ctx: &Ctx, cmd: TelemetryCommand) -> Result<ExitCode> {
    let mut t = Telemetry::new(&ctx.paths, &ctx.config);
    match cmd {
        TelemetryCommand::Status => {
            output::json(&t.health()?)?;
            match crate::crash_upload::Settings::resolve(&ctx.config) {
                Ok(s) => eprintln!("crash uploads {}", s.describe()),
                Err(e) => eprintln!("crash uploads off: {e:#}"),
            }
        }
        TelemetryCommand::OptIn(args) => opt_in(&mut t, args)?,
        TelemetryCommand::OptOut => {
            output::json(&t.opt_out()?)?;
            eprintln!("telemetry consent withdrawn in {}", ctx.paths.config_file().display());
        }
        TelemetryCommand::Summary(args) => output::json(&t.summary(args.events)?)?,
        TelemetryCommand::RecordFeature(args) => {
            let answer = t.record_feature(&args.name, args.variant.as_deref())?;
            explain_unrecorded(&t, &answer);
            output::json(&answer)?;
        }
        TelemetryCommand::RecordEvent(args) => record_event(&t, args)?,
        TelemetryCommand::Hash(args) => output::println(&t.hash(&args.value, args.namespace.as_deref())?)?,
    }
    Ok(ExitCode::Success)
}

fn opt_in(t: &mut Telemetry, args: OptInArgs) -> Result<()> {
    let answer =
        t.opt_in(&OptIn { crash: Some(args.crash), diagnostics: Some(args.diagnostics), dry_run: Some(args.dry_run) })?;
    output::json(&answer)?;
    if !t.gates().flag_enabled {
        eprintln!(
            "note: consent saved, but nothing is recorded while features.enable_observability is false\n\
             hint: set \"features\": {{\"enable_observability\": true}} in config/comfyvn.json"
        );
    } else if args.crash && !t.config().features.enable_crash_uploader {
        eprintln!("note: crash digests also need features.enable_crash_uploader = true");
    }
    Ok(())
}

fn record_event(t: &Telemetry, args: RecordEventArgs) -> Result<()> {
    let payload: Value =
        serde_json::from_str(&args.payload).map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?;
    if !payload.is_object() {
        bail!("--payload must be a JSON object, found {}", crate::config::kind(&payload));
    }
    let answer = t.record_event(&args.name, Some(&payload), Some(&args.category))?;
    explain_unrecorded(t, &answer);
    output::json(&answer)
}

/// Say on stderr why nothing was recorded.
fn explain_unrecorded(t: &Telemetry, answer: &Value) {
    if answer["recorded"] == true {
        return;
    }
    let why = if !t.gates().flag_enabled {
        "features.enable_observability is false"
    } else {
        "telemetry_opt_in is false (run `comfyvn-obs telemetry opt-in`)"
    };
    eprintln!("not recorded: telemetry is not active ({why})");
}
