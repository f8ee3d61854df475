//! `missing-sidecar` (error)
//!
//! **What it does.** Fires for every asset that has no `<file>.asset.json` beside it.
//!
//! **Why.** Without a sidecar the asset has no uid, no recorded hash and no license: scenes cannot
//! reference it stably and the download guard cannot judge it.
//!
//! **Example.** `characters/hero.png` exists, `characters/hero.png.asset.json` does not.
//!
//! **Fix.** `comfyvn-obs audit --fix` writes the sidecar (uid from the content hash, type from the
//! folder) and emits `on_asset_sidecar_written`, `on_asset_saved`, `on_asset_registered`; or
//! `comfyvn-obs assets register PATH` with tags and a license.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "missing-sidecar",
    severity: Severity::Error,
    summary: "an asset has no sidecar",
    fix: "run `comfyvn-obs audit --fix` or `comfyvn-obs assets register PATH`",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for a in &ctx.scan.assets {
        if matches!(a.sidecar, SidecarState::Absent) {
            out.push(
                Finding::new(&RULE, a.rel.as_str(), format!("no sidecar {}", a.rel.sidecar().file_name())).fixable(),
            );
        }
    }
}
