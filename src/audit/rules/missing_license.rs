//! `missing-license` (warning; error when `obs.audit.licenses.require` is true)
//!
//! **What it does.** Fires when a valid sidecar has no `license`, or a blank one.
//!
//! **Why.** Assets without a license cannot be shipped safely; the download guard and exports need
//! to know what may be redistributed.
//!
//! **Example.** `"license": null`.
//!
//! **Fix.** `comfyvn-obs assets set-license UID CC-BY-4.0`, or `audit --fill-metadata` to record
//! `unknown` for a person to settle later.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "missing-license",
    severity: Severity::Warning,
    summary: "the sidecar's license is absent or blank",
    fix: "run `comfyvn-obs assets set-license UID SPDX-ID`",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    let severity = if ctx.policy.require { Severity::Error } else { RULE.severity };
    for a in &ctx.scan.assets {
        if let SidecarState::Valid(f) = &a.sidecar {
            if f.license.as_deref().is_none_or(|l| l.trim().is_empty()) {
                out.push(Finding::new(&RULE, a.rel.as_str(), "no license").severity(severity));
            }
        }
    }
}
