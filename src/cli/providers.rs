//! `comfyvn-obs providers …`

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// List the provider registry (secrets masked) with each provider's last health result.
    List(ListArgs),
    /// Probe providers' health endpoints in parallel; exit 1 when any is down.
    Health(HealthArgs),
    /// Ask a provider's quota endpoint for its quota; exit 1 when it cannot answer.
    Quota(QuotaArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Only this provider (probed even when inactive); default: every active provider.
    pub id: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Provider id.
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
