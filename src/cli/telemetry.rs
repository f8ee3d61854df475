//! `comfyvn-obs telemetry …` and `comfyvn-obs diagnostics`.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// Flag, consent and gate state (the API's `/health`).
    Status,
    /// Opt in to telemetry (crash digests and diagnostics only when asked for).
    OptIn(OptInArgs),
    /// Withdraw every telemetry consent.
    OptOut,
    /// Counters, hook samples and crash digests (the API's `/summary`).
    Summary(SummaryArgs),
    /// Count a feature use.
    RecordFeature(RecordFeatureArgs),
    /// Record a custom event; identifying payload values are hashed.
    RecordEvent(RecordEventArgs),
    /// Print the anonymised hash of a value.
    Hash(HashArgs),
}

#[derive(Debug, Args)]
pub struct OptInArgs {
    /// Also consent to crash digests.
    #[arg(long)]
    pub crash: bool,
    /// Also consent to diagnostics bundles.
    #[arg(long)]
    pub diagnostics: bool,
    /// Record locally only, never send (written as given: without it, dry_run becomes false).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Include the events ring.
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Args)]
pub struct RecordFeatureArgs {
    /// Feature name, e.g. `toolkit.launch`.
    pub name: String,
    /// A variant to count separately.
    #[arg(long)]
    pub variant: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordEventArgs {
    /// Event name (lowercased).
    pub name: String,
    /// The payload: a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub payload: String,
    /// Event category.
    #[arg(long, default_value = "custom")]
    pub category: String,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The value to hash.
    pub value: String,
    /// Namespace prepended to the value (e.g. a payload key path).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiagnosticsArgs {}
