//! comfyvn-obs: the observability and debugging layer of the ComfyVN studio toolchain.
//!
//! Files are the source of truth: everything lives as JSON/JSONL under the runtime root
//! ([`paths::Paths`]). See `ARCHITECTURE.md` for the codemap and the invariants.

pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crash;
pub mod crash_upload;
pub mod digest;
pub mod doctor;
pub mod exit_code;
pub mod fs;
pub mod hooks;
pub mod http;
pub mod log;
pub mod memory;
pub mod otlp;
pub mod outbound;
pub mod output;
pub mod paths;
pub mod providers;
pub mod registry;
pub mod sentry;
pub mod signals;
pub mod telemetry;
pub mod time;
pub mod watch;
