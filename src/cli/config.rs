//! `comfyvn-obs config …`

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config files; exit 0 when they load, 2 with the file and position otherwise.
    Check,
    /// Print the resolved settings as JSON (secrets masked).
    Show,
}
