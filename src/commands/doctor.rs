//! `comfyvn-obs doctor`: run the checks, print the report, exit 0 when every required check passes.

use std::time::Duration;

use anyhow::Result;

use crate::cli::doctor::DoctorArgs;
use crate::config::Config;
use crate::doctor::{self, Status};
use crate::exit_code::ExitCode;
use crate::output;
use crate::paths::Paths;

pub fn run(paths: &Paths, config: &Result<Config>, args: DoctorArgs) -> Result<ExitCode> {
    let opts = doctor::Options { base: args.base, timeout: Duration::from_millis(args.timeout_ms) };
    let report = doctor::run(paths, config, &opts);
    if args.json {
        output::json(&report)?;
    } else {
        let mut text = String::new();
        for c in &report.checks {
            let mark = match c.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            text.push_str(&format!("[{mark}] {:<18} {}\n", c.name, c.detail));
            if let (Some(h), false) = (&c.hint, c.status == Status::Pass) {
                text.push_str(&format!("       hint: {h}\n"));
            }
        }
        text.push_str(if report.pass {
            "doctor: all required checks passed\n"
        } else {
            "doctor: some required checks failed\n"
        });
        output::print(&text)?;
    }
    Ok(if report.pass { ExitCode::Success } else { ExitCode::Failure })
}
