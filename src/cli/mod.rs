//! The command line, as clap types only. Each area keeps its subcommands in its own file; nothing
//! outside `cli` and `commands` sees these types (commands turn them into plain settings).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod assets;
pub mod audit;
pub mod config;
pub mod crash;
pub mod doctor;
pub mod export;
pub mod hooks;
pub mod providers;
pub mod run;
pub mod serve;
pub mod telemetry;
pub mod watch;
pub mod webhooks;

/// Observability and debugging for the ComfyVN studio pipeline: crash dumps, telemetry, structured
/// logs, asset sidecars and audits, hook history, webhooks and an HTTP API.
#[derive(Debug, Parser)]
#[command(name = "comfyvn-obs", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Runtime root (default: $COMFYVN_RUNTIME_ROOT, else the current directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log folder (default: $COMFYVN_LOG_DIR, else ROOT/logs).
    #[arg(long, global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Config folder (default: $COMFYVN_CONFIG_DIR, else ROOT/config).
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Data folder (default: $COMFYVN_DATA_DIR, else ROOT/data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cache folder (default: $COMFYVN_CACHE_DIR, else ROOT/cache).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Assets root (default: $COMFYVN_ASSETS_ROOT, else ROOT/assets).
    #[arg(long, global = true, value_name = "DIR")]
    pub assets_root: Option<PathBuf>,
    /// More log output on stderr (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output on stderr (-q warnings, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate or show the resolved configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Check the installation: config, folders, crash and log round-trips, server, limits.
    Doctor(doctor::DoctorArgs),
    /// The hook catalogue and history: list, tail, emit.
    #[command(subcommand)]
    Hooks(hooks::HooksCommand),
    /// Crash dumps: capture, list, show, simulate.
    #[command(subcommand)]
    Crash(crash::CrashCommand),
    /// Run a program; when it fails, write a crash dump with its stderr tail and exit with its status.
    Run(run::RunArgs),
    /// Opt-in, local-only telemetry: status, consent, counters, hashing.
    #[command(subcommand)]
    Telemetry(telemetry::TelemetryCommand),
    /// Write a diagnostics bundle (needs diagnostics consent) and print its path.
    Diagnostics(telemetry::DiagnosticsArgs),
    /// Serve the HTTP API and the live hook stream until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Webhook registrations, deliveries, replays and the delivery worker.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// OTLP/HTTP export of the hook history to an OpenTelemetry collector: run, status.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// The compute/API provider registry: list, health, quota.
    #[command(subcommand)]
    Providers(providers::ProvidersCommand),
    /// The asset registry: list, show, register, tag, untag, set-license, remove.
    #[command(subcommand)]
    Assets(assets::AssetsCommand),
    /// Audit the assets tree for CI: sidecars, hashes, licenses, duplicates.
    Audit(audit::AuditArgs),
    /// Re-read the registry from disk and report; --enforce-sidecars writes missing sidecars.
    Rebuild(audit::RebuildArgs),
    /// Watch asset folders: dropped, edited, renamed, deleted files become sidecars and hook events.
    Watch(watch::WatchArgs),
}

/// Parse `KEY=VALUE` pairs (used by `--context`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}
