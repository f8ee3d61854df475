//! `comfyvn-obs crash …`

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CrashCommand {
    /// Record a crash dump for any program (a Python traceback piped in works); prints its path on stderr.
    Capture(CaptureArgs),
    /// List crash dumps, newest first.
    List(ListArgs),
    /// Print one crash dump (by event id or file name).
    Show(ShowArgs),
    /// Panic on purpose, so the crash hook can be checked from outside (exits 101).
    Simulate,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// What went wrong.
    #[arg(long)]
    pub message: String,
    /// The error type (default: the exception type of a Python traceback, else `Error`).
    #[arg(long = "type", value_name = "TYPE")]
    pub exc_type: Option<String>,
    /// Context to stamp on the dump (plugin ids, job ids …); repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub context: Vec<(String, String)>,
    /// A file that belongs with the dump (recorded as an absolute path); repeatable.
    #[arg(long = "attach", value_name = "PATH")]
    pub attach: Vec<PathBuf>,
    /// Read the traceback from FILE, or from stdin with `-`.
    #[arg(long, value_name = "FILE|-")]
    pub traceback_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Group dumps by fingerprint, with counts and first/last seen.
    #[arg(long)]
    pub group: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The event id (8 hex), the file name or its stem.
    pub id: String,
}
