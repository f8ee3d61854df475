//! `disallowed-license` (error)
//!
//! **What it does.** Fires when a sidecar's `license` is not allowed by the policy in
//! `obs.audit.licenses`: an id listed in `deny`, or (when `allow` is not empty) an id missing from
//! `allow`. SPDX expressions are understood: `A OR B` passes when either side does, `A AND B` needs
//! both, `A WITH exception` is judged by `A`. With a policy configured, a value that is not an SPDX
//! expression also fires.
//!
//! **Why.** CI should stop non-commercial or unknown licenses before they ship in a build.
//!
//! **Example.** `"license": "CC-BY-NC-4.0"` with `"deny": ["CC-BY-NC-4.0"]`.
//!
//! **Fix.** Replace the asset, or correct its license with `comfyvn-obs assets set-license`.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};
use crate::registry::Verdict;

pub const RULE: RuleInfo = RuleInfo {
    id: "disallowed-license",
    severity: Severity::Error,
    summary: "the license is not allowed by obs.audit.licenses",
    fix: "replace the asset or correct its license",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    if !ctx.policy.is_active() {
        return;
    }
    for a in &ctx.scan.assets {
        let SidecarState::Valid(f) = &a.sidecar else { continue };
        let Some(license) = f.license.as_deref().map(str::trim).filter(|l| !l.is_empty()) else { continue };
        match ctx.policy.check(license) {
            Verdict::Allowed => {}
            Verdict::Denied(why) => {
                out.push(Finding::new(&RULE, a.rel.as_str(), format!("license {license:?}: {why}")).subject(license))
            }
            Verdict::Invalid(why) => out.push(
                Finding::new(&RULE, a.rel.as_str(), format!("license {license:?} is not an SPDX expression: {why}"))
                    .subject(license),
            ),
        }
    }
}
