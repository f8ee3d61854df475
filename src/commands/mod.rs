//! One file per subcommand: orchestration only (parse arguments into settings, call the domain
//! modules, publish their events, print). Domain rules live in the domain modules.

use anyhow::Result;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::Config;
use crate::exit_code::{ExitCode, Hinted};
use crate::output::BrokenPipe;
use crate::paths::{PathOverrides, Paths};

pub mod assets;
pub mod audit;
pub mod config;
pub mod hooks;
pub mod rebuild;
pub mod watch;

/// What every command gets: the resolved paths and configuration.
pub struct Ctx {
    pub paths: Paths,
    pub config: Config,
}

/// Run a parsed command line and return the exit code. Errors are printed on stderr as
/// `error: …` with their causes and an optional `hint:` line.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if err.downcast_ref::<BrokenPipe>().is_some() {
                return ExitCode::Success;
            }
            report_error(&err);
            ExitCode::Error
        }
    }
}

/// Print an error chain the way every command does.
pub fn report_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(h) = err.chain().find_map(|e| e.downcast_ref::<Hinted>()) {
        eprintln!("hint: {}", h.hint);
    }
}

fn overrides(g: &GlobalArgs) -> PathOverrides {
    PathOverrides {
        root: g.root.clone(),
        log_dir: g.log_dir.clone(),
        config_dir: g.config_dir.clone(),
        data_dir: g.data_dir.clone(),
        cache_dir: g.cache_dir.clone(),
        assets_root: g.assets_root.clone(),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::resolve(&overrides(&cli.global))?;
    let config = Config::load(&paths)?;
    let ctx = Ctx { paths, config };
    match cli.command {
        Command::Config(cmd) => config::run(&ctx, cmd),
        Command::Hooks(cmd) => hooks::run(&ctx, cmd),
        Command::Assets(cmd) => assets::run(&ctx, cmd),
        Command::Audit(args) => audit::run(&ctx, args),
        Command::Rebuild(args) => rebuild::run(&ctx, args),
        Command::Watch(args) => watch::run(&ctx, args),
    }
}
