//! `comfyvn-obs doctor`

use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Base URL of a running server to probe (`/health`); without it the HTTP check is skipped.
    #[arg(long, value_name = "URL")]
    pub base: Option<String>,
    /// Print the report as JSON: {checks:[{name, ok, status, detail, hint}], pass}.
    #[arg(long)]
    pub json: bool,
    /// Timeout of the HTTP probe in milliseconds.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub timeout_ms: u64,
}
