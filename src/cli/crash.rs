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
    /// Upload crash dumps to the Sentry-compatible server of the DSN (only while the consent gate
    /// holds and `dry_run` is false); exits 1 while any is still queued or was refused.
    Upload(UploadArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Dumps to upload (event id or file name); named dumps are sent again after a discard or refusal.
    #[arg(value_name = "ID", required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Every dump not uploaded yet.
    #[arg(long)]
    pub all: bool,
    /// Print the exact envelope bytes on stdout instead; nothing is sent or written.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up on waiting for the server after this many seconds (what is left stays queued).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
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
