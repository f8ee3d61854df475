//! `size-mismatch` (error)
//!
//! **What it does.** Fires when the sidecar's `bytes` differs from the file's size.
//!
//! **Why.** A cheap, early sign of a truncated or replaced file; it also catches sidecars edited by
//! hand with a wrong size.
//!
//! **Example.** `bytes: 20480` while the file has 20311 bytes.
//!
//! **Fix.** `comfyvn-obs audit --fix` records the real size (with the hash), or restore the file.

use super::{Ctx, RuleInfo};
use crate::audit::{FileState, Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "size-mismatch",
    severity: Severity::Error,
    summary: "the sidecar's bytes differs from the file size",
    fix: "run `comfyvn-obs audit --fix`, or restore the file",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for a in &ctx.scan.assets {
        if let (FileState::Hashed { bytes, .. }, SidecarState::Valid(f)) = (&a.file, &a.sidecar) {
            if let Some(recorded) = f.bytes.filter(|b| b != bytes) {
                let msg = format!("the sidecar records {recorded} bytes, the file has {bytes}");
                out.push(Finding::new(&RULE, a.rel.as_str(), msg).fixable().subject(&format!("{recorded}/{bytes}")));
            }
        }
    }
}
