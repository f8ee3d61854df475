//! `missing-provenance` (warning; error when `obs.audit.require_provenance` is true)
//!
//! **What it does.** Fires when a valid sidecar's `provenance` has no non-blank `source`.
//!
//! **Why.** Knowing where an asset came from (which workflow, which commit, which artist) is what
//! makes a license claim checkable and a generated asset reproducible.
//!
//! **Example.** `"provenance": {}`.
//!
//! **Fix.** Record it: `comfyvn-obs assets register PATH --meta …` does not touch provenance, so edit
//! the sidecar's `provenance` object (`{"source": "comfyui", "workflow_hash": "…"}`); the tool keeps
//! it on every refresh.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "missing-provenance",
    severity: Severity::Warning,
    summary: "the sidecar has no provenance source",
    fix: "add provenance.source to the sidecar",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    let severity = if ctx.require_provenance { Severity::Error } else { RULE.severity };
    for a in &ctx.scan.assets {
        if let SidecarState::Valid(f) = &a.sidecar {
            if !f.provenance_source {
                out.push(Finding::new(&RULE, a.rel.as_str(), "no provenance source").severity(severity));
            }
        }
    }
}
