//! SIGINT/SIGTERM handling for long-running commands: a flag the main loop polls, so the command
//! finishes its in-flight item and flushes before it exits.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

/// A flag set when SIGINT or SIGTERM arrives. A second signal terminates at once.
pub fn install_stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The second signal exits immediately, for a user who really means it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("cannot install signal handler")?;
    }
    Ok(flag)
}
