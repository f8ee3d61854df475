//! `comfyvn-obs run [--context k=v] -- CMD ARGS…`

use std::ffi::OsString;

use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Context to stamp on the crash dump; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub context: Vec<(String, String)>,
    /// The program and its arguments (put them after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}
