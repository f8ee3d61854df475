//! `comfyvn-obs audit` and its compatibility alias `comfyvn-obs rebuild`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Sarif,
    Junit,
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOnArg {
    Error,
    Warning,
    Never,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit only this folder or file (inside the assets root).
    pub path: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Lowest severity that fails the audit (exit 1) [default: obs.audit.fail_on].
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOnArg>,
    /// Write missing sidecars and refresh stale machine fields (emits the registry hooks).
    #[arg(long)]
    pub fix: bool,
    /// Also fill empty tags from the path and an empty license with "unknown" (implies --fix).
    #[arg(long)]
    pub fill_metadata: bool,
    /// Print what --fix would change; write nothing (no sidecars, hooks, cache or report file).
    #[arg(long)]
    pub dry_run: bool,
    /// Rehash every file and re-read every sidecar, ignoring the stat cache.
    #[arg(long)]
    pub full: bool,
    /// Worker threads [default: obs.audit.jobs; 0 = one per core].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Accepted for compatibility with the original toolkit (the report is always produced).
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Write a sidecar for every asset that has none (emits the registration hooks).
    #[arg(long)]
    pub enforce_sidecars: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }
}
