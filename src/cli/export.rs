//! `comfyvn-obs export …`

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export the hook history as OTLP/HTTP log records to the collector until SIGINT/SIGTERM.
    Run(RunArgs),
    /// The exporter's checkpoint, lag, counts and last error.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop once everything in the history was accepted (exit 1 when stopped before).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
