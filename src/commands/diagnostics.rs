//! `comfyvn-obs diagnostics`: write a diagnostics bundle and print its path, or refuse (exit 1) without
//! diagnostics consent.

use anyhow::Result;

use super::Ctx;
use crate::cli::telemetry::DiagnosticsArgs;
use crate::exit_code::ExitCode;
use crate::output;
use crate::telemetry::{Telemetry, TelemetryError};

pub fn run(ctx: &Ctx, _args: DiagnosticsArgs) -> Result<ExitCode> {
    let t = Telemetry::new(&ctx.paths, &ctx.config);
    match t.diagnostics() {
        Ok(path) => {
            output::println(&path.display().to_string())?;
            Ok(ExitCode::Success)
        }
        Err(e) if matches!(e.downcast_ref::<TelemetryError>(), Some(TelemetryError::DiagnosticsRefused)) => {
            let c = t.consent();
            let mut missing = Vec::new();
            if !t.gates().flag_enabled {
                missing.push("features.enable_observability");
            }
            if !c.telemetry_opt_in {
                missing.push("telemetry.telemetry_opt_in");
            }
            if !c.diagnostics_opt_in {
                missing.push("telemetry.diagnostics_opt_in");
            }
            eprintln!("error: diagnostics export requires opt-in (not set: {})", missing.join(", "));
            eprintln!(
                "hint: run `comfyvn-obs telemetry opt-in --diagnostics` and set features.enable_observability \
                 to true in {}",
                ctx.paths.config_file().display()
            );
            Ok(ExitCode::Failure)
        }
        Err(e) => Err(e),
    }
}
