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
pub mod crash;
pub mod diagnostics;
pub mod doctor;
pub mod export;
pub mod hooks;
pub mod progress;
pub mod providers;
pub mod rebuild;
pub mod run;
pub mod serve;
pub mod telemetry;
pub mod watch;
pub mod webhooks;

/// What every command gets: the resolved paths and configuration.
pub struct Ctx {
    pub paths: Paths,
    pub config: Config,
}

/// Remove the temp files that killed processes left under the runtime folders and `extra` (watched
/// roots outside the assets root), saying how many on stderr. `watch`, `serve`, `webhooks run` and
/// `audit --fix` call this when they start; a temp file of a process still running is never touched.
pub fn sweep_litter(paths: &Paths, extra: &[std::path::PathBuf]) -> usize {
    let mut dirs: Vec<&std::path::Path> =
        vec![&paths.assets_root, &paths.config_dir, &paths.log_dir, &paths.data_dir, &paths.cache_dir];
    dirs.extend(extra.iter().map(|p| p.as_path()));
    let sweep = crate::fs::sweep_stale_temps(&dirs);
    for (path, why) in &sweep.failed {
        tracing::warn!(path = %path.display(), error = %why, "cannot remove a stale temp file");
        eprintln!("warning: cannot remove the stale temp file {}: {why}", path.display());
    }
    let n = sweep.removed.len();
    if n > 0 {
        tracing::info!(removed = n, "removed temp files left by processes that are gone");
        eprintln!("removed {n} temp file{} left by processes that are gone", if n == 1 { "" } else { "s" });
    }
    n
}

/// Run a parsed command line and return the exit code. Errors are printed on stderr as
/// `error: …` with their causes and an optional `hint:` line.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        // A log file that could not be written was reported when it happened; the run still failed.
        Ok(_) if crate::log::write_failure().is_some() => ExitCode::Error,
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
    crate::crash::install_panic_hook(&paths);
    if let Command::Doctor(args) = cli.command {
        // The doctor reports a broken config as a failed check instead of refusing to start.
        let config = Config::load(&paths);
        return doctor::run(&paths, &config, args);
    }
    let config = Config::load(&paths)?;
    crate::crash::configure(&paths, &config);
    crate::telemetry::record_crashes(&paths, &config);
    crate::log::init_for_command(&paths, &config, cli.global.verbose, cli.global.quiet)?;
    let ctx = Ctx { paths, config };
    // `serve` and `crash upload` send dumps themselves; after any other command (but the read-only
    // `crash list`/`show`), dumps still waiting are handed to a background `crash upload`, so they go
    // out without this command waiting.
    use crate::cli::crash::CrashCommand as C;
    let upload_after = !matches!(
        &cli.command,
        Command::Serve(_) | Command::Export(_) | Command::Crash(C::Upload(_) | C::List(_) | C::Show(_) | C::Simulate)
    );
    let code = dispatch(&ctx, cli.command);
    if upload_after {
        crate::crash_upload::start_background_upload(&ctx.paths, &ctx.config);
    }
    code
}

fn dispatch(ctx: &Ctx, command: Command) -> Result<ExitCode> {
    match command {
        Command::Config(cmd) => config::run(ctx, cmd),
        Command::Hooks(cmd) => hooks::run(ctx, cmd),
        Command::Doctor(_) => unreachable!("handled before the config is loaded"),
        Command::Crash(cmd) => crash::run(ctx, cmd),
        Command::Run(args) => run::run(ctx, args),
        Command::Telemetry(cmd) => telemetry::run(ctx, cmd),
        Command::Diagnostics(args) => diagnostics::run(ctx, args),
        Command::Serve(args) => serve::run(ctx, args),
        Command::Webhooks(cmd) => webhooks::run(ctx, cmd),
        Command::Providers(cmd) => providers::run(ctx, cmd),
        Command::Export(cmd) => export::run(ctx, cmd),
        Command::Assets(cmd) => assets::run(ctx, cmd),
        Command::Audit(args) => audit::run(ctx, args),
        Command::Rebuild(args) => rebuild::run(ctx, args),
        Command::Watch(args) => watch::run(ctx, args),
    }
}
