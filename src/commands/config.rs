//! `comfyvn-obs config check|show`.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::config::ConfigCommand;
use crate::exit_code::ExitCode;
use crate::output;

pub fn run(ctx: &Ctx, cmd: ConfigCommand) -> Result<ExitCode> {
    // Loading already happened (and failed with exit 2 on a bad file) before we got here.
    match cmd {
        ConfigCommand::Check => {
            let sources: Vec<String> = ctx.config.sources.iter().map(|p| p.display().to_string()).collect();
            if sources.is_empty() {
                eprintln!("config ok: no config file, compiled-in defaults apply");
            } else {
                eprintln!("config ok: {}", sources.join(", "));
            }
            Ok(ExitCode::Success)
        }
        ConfigCommand::Show => {
            let p = &ctx.paths;
            output::json(&json!({
                "paths": {
                    "root": p.root, "log_dir": p.log_dir, "config_dir": p.config_dir,
                    "data_dir": p.data_dir, "cache_dir": p.cache_dir, "assets_root": p.assets_root,
                },
                "sources": ctx.config.sources,
                "config": ctx.config.masked(),
            }))?;
            Ok(ExitCode::Success)
        }
    }
}
