//! `orphan-sidecar` (error)
//!
//! **What it does.** Fires for a `*.asset.json` whose asset file does not exist (or is hidden or
//! ignored by `obs.assets.ignore`).
//!
//! **Why.** The asset was moved or deleted without its sidecar: its uid now points at nothing and
//! the human metadata in the sidecar is stranded.
//!
//! **Example.** `bg/old.png.asset.json` with no `bg/old.png`.
//!
//! **Fix.** Move the sidecar along with its file, or delete it if the asset is gone for good
//! (`--fix` never deletes human metadata, so it leaves orphans alone).

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity};

pub const RULE: RuleInfo = RuleInfo {
    id: "orphan-sidecar",
    severity: Severity::Error,
    summary: "a sidecar has no asset",
    fix: "move the sidecar next to its file again, or delete it",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for o in &ctx.scan.orphans {
        let asset = o.rel.asset_of_sidecar().map(|r| r.file_name().to_string()).unwrap_or_default();
        out.push(Finding::new(&RULE, o.rel.as_str(), format!("no asset {asset} beside this sidecar")));
    }
}
