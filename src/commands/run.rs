//! `comfyvn-obs run [--context k=v] -- CMD ARGS…`: run a program, pass its output through, and write a
//! crash dump when it exits non-zero or is killed by a signal.
//!
//! This command exits with the child's own status (or 128 + signal), which the three-valued
//! [`ExitCode`] cannot express, so it ends the process itself with `std::process::exit` once the dump
//! is on disk (nothing of ours is buffered at that point: stdout was the child's, logs are unbuffered).

use anyhow::Result;

use super::Ctx;
use crate::cli::run::RunArgs;
use crate::crash::{self, SpawnError};
use crate::exit_code::ExitCode;

pub fn run(ctx: &Ctx, args: RunArgs) -> Result<ExitCode> {
    let log = crate::log::Logger::new("comfyvn.obs.run", "run");
    let outcome = match crash::run_child(&args.command, ctx.config.obs.crash.stderr_tail_bytes) {
        Ok(o) => o,
        Err(e) => match e.downcast_ref::<SpawnError>() {
            Some(spawn) => {
                let code = spawn.exit_code();
                super::report_error(&e);
                if code == 127 {
                    eprintln!("hint: check the program name and that it is on PATH");
                }
                std::process::exit(code);
            }
            None => return Err(e),
        },
    };
    if !outcome.failed() {
        return Ok(ExitCode::Success);
    }
    let incident = crash::child_incident(&args.command, &outcome, super::crash::context_map(args.context));
    match crash::capture(incident) {
        Ok(info) => {
            log.debug("child failed", serde_json::json!({"dump": info.path, "exit_code": outcome.exit_code()}));
            eprintln!("crash dump written to {}", info.path.display());
        }
        Err(e) => eprintln!("error: cannot write crash dump: {e:#}"),
    }
    std::process::exit(outcome.exit_code());
}
