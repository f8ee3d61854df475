//! `missing-tags` (warning)
//!
//! **What it does.** Fires when a valid sidecar has an empty `tags` list.
//!
//! **Why.** Tags are how the studio's gallery, `GET /assets?tags=` and modders find assets; an
//! untagged asset is effectively invisible.
//!
//! **Example.** `"tags": []`.
//!
//! **Fix.** `comfyvn-obs assets tag UID hero portrait`, or `audit --fill-metadata` to derive tags
//! from the folder and file name.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "missing-tags",
    severity: Severity::Warning,
    summary: "the sidecar has no tags",
    fix: "run `comfyvn-obs assets tag UID TAG…` or `comfyvn-obs audit --fill-metadata`",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for a in &ctx.scan.assets {
        if let SidecarState::Valid(f) = &a.sidecar {
            if !f.has_tags {
                out.push(Finding::new(&RULE, a.rel.as_str(), "no tags"));
            }
        }
    }
}
