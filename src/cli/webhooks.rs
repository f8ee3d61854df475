//! `comfyvn-obs webhooks …`

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register (or update) a webhook for an event, `*`, or a glob; prints a generated secret once.
    Add(AddArgs),
    /// Remove the registration for an event and URL.
    Remove(RemoveArgs),
    /// List registrations (secrets masked).
    List(JsonArgs),
    /// Show the last delivery attempts.
    Deliveries(DeliveriesArgs),
    /// Re-send events after a sequence number to the current registrations.
    Replay(ReplayArgs),
    /// Run the delivery worker in the foreground until interrupted.
    Run,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Event name from the catalogue, `*`, or a glob such as `on_asset_*`.
    #[arg(long)]
    pub event: String,
    /// Receiver URL (http or https).
    #[arg(long)]
    pub url: String,
    /// Signing secret; without it (or --secret-file) a `whsec_` secret is generated and printed once.
    /// On the command line it ends up in the shell's history: prefer --secret-file.
    #[arg(long, conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// Read the signing secret from this file (`-`: standard input); one trailing newline is dropped.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<std::path::PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(long)]
    pub event: String,
    #[arg(long)]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// How many attempts to show (newest last).
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    pub lines: usize,
    /// Print the log entries as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Re-send events with a sequence number greater than SEQ.
    #[arg(long, value_name = "SEQ")]
    pub since: u64,
    /// Only to this receiver URL.
    #[arg(long)]
    pub url: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}
