//! `comfyvn-obs hooks …`

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// List the hook catalogue (built-in events plus those declared in config).
    List(ListArgs),
    /// Print the last entries of the hook history, optionally following new ones.
    Tail(TailArgs),
    /// Append an event to the hook history.
    Emit(EmitArgs),
    /// Show the dev-mode hook plugins (COMFYVN_DEV_MODE=1), or run them with --run.
    Plugins(PluginsArgs),
}

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the plugin host in the foreground until interrupted.
    #[arg(long)]
    pub run: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many entries to print.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    pub lines: usize,
    /// Keep printing new entries as they are appended (across rotation) until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events whose name matches this glob (e.g. `on_asset_*`).
    #[arg(long, value_name = "GLOB")]
    pub event: Option<String>,
    /// Only entries with a sequence number greater than SEQ.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Print the envelopes as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Event name from the catalogue (`comfyvn-obs hooks list`).
    pub event: String,
    /// The payload: a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
}
