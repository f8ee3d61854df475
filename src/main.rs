//! The `comfyvn-obs` binary: parse, then hand over to `commands::main`, which installs the crash hook
//! and logging, runs the command and maps the result to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = comfyvn_obs::cli::Cli::parse();
    comfyvn_obs::commands::main(cli).into()
}
