//! `comfyvn-obs audit` and its compatibility alias `comfyvn-obs rebuild`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

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
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
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
    /// Report only findings that are not in this baseline (or got worse), and list the resolved ones.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Record every finding of this audit in FILE, a sorted JSON baseline to commit.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Audit only shard K of N (folders assigned by a hash of their path); combine with `audit merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Add the release-gate rules: a pending or rejected license_status, a missing attribution.
    #[arg(long)]
    pub release: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Combine the `--format json` reports of `audit --shard K/N` into the report of one audit.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard reports, one per shard (any order).
    #[arg(value_name = "REPORT.json", required = true)]
    pub reports: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Report only findings that are not in this baseline (or got worse), and list the resolved ones.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Record every finding of the merged report in FILE.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
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
