//! `missing-attribution` (error; only with `audit --release`)
//!
//! **What it does.** Fires when the sidecar's license requires crediting the author (CC BY and its
//! variants, MIT, BSD, Apache-2.0, OFL, the GPL family: see `registry::license::KNOWN`) and its
//! `attribution` is absent or blank. An `OR` expression needs attribution only when every choice
//! does.
//!
//! **Why.** The credits screen (`comfyvn-obs assets credits`) is built from `attribution`; a
//! release without the required credit breaks the license.
//!
//! **Example.** `"license": "CC-BY-4.0"` and no `attribution`.
//!
//! **Fix.** Add the text the license asks for: `"attribution": "Hero by Ann (CC BY 4.0)"`.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};
use crate::registry::license;

pub const RULE: RuleInfo = RuleInfo {
    id: "missing-attribution",
    severity: Severity::Error,
    summary: "release gate: the license requires attribution and the sidecar has none",
    fix: "add the required credit as the sidecar's attribution",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    if !ctx.release {
        return;
    }
    for a in &ctx.scan.assets {
        let SidecarState::Valid(f) = &a.sidecar else { continue };
        if f.has_attribution {
            continue;
        }
        let Some(lic) = f.license.as_deref().map(str::trim).filter(|l| !l.is_empty()) else { continue };
        if license::requires_attribution(lic) == Some(true) {
            let message = format!("license {lic:?} requires attribution, and the sidecar has no attribution");
            out.push(Finding::new(&RULE, a.rel.as_str(), message).subject(lic));
        }
    }
}
