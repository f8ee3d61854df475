//! A follower's durable position in the hook history: `checkpoint.json` (`{"schema","seq","updated_at"}`),
//! the last `seq` whose messages are safe (in the outbox, or accepted by the destination).
//!
//! Invariant: written atomically, and only after what it covers is durable, so a restart (even
//! after `kill -9`) re-reads at most what was in flight.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of `checkpoint.json`.
pub const SCHEMA: u64 = 1;

#[derive(Serialize, Deserialize)]
struct CheckpointDoc {
    schema: u64,
    seq: u64,
    updated_at: String,
}

/// The checkpoint's `seq`, `None` when there is none yet.
pub fn read(path: &Path) -> Result<Option<u64>> {
    let Some(v) = crate::fs::read_json_opt(path)? else { return Ok(None) };
    match v.get("seq").and_then(Value::as_u64) {
        Some(seq) => Ok(Some(seq)),
        None => Err(crate::exit_code::hinted(
            format!("{}: seq: expected a non-negative integer", path.display()),
            "delete the file: the webhook worker then starts from the end of the hook history, the exporter from its start",
        )),
    }
}

/// Move the checkpoint to `seq` (atomically).
pub fn write(path: &Path, seq: u64) -> Result<()> {
    crate::fs::write_json_atomic(path, &CheckpointDoc { schema: SCHEMA, seq, updated_at: crate::time::iso_now() })
}
