//! `unverified-license` (error; only with `audit --release`)
//!
//! **What it does.** Fires when a sidecar's `license_status` is `pending` or `rejected`.
//!
//! **Why.** A release must ship only assets whose license a person has checked; `pending` means
//! nobody has yet, `rejected` means the asset may not ship at all.
//!
//! **Example.** `"license": "CC-BY-4.0", "license_status": "pending"`.
//!
//! **Fix.** Check the license and set `"license_status": "verified"`, or replace the asset.

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};
use crate::registry::sidecar::LicenseStatus;

pub const RULE: RuleInfo = RuleInfo {
    id: "unverified-license",
    severity: Severity::Error,
    summary: "release gate: the license_status is pending or rejected",
    fix: "check the license and set license_status to verified, or replace the asset",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    if !ctx.release {
        return;
    }
    for a in &ctx.scan.assets {
        let SidecarState::Valid(f) = &a.sidecar else { continue };
        let message = match f.license_status {
            Some(LicenseStatus::Pending) => "license_status is \"pending\": nobody has checked the license yet",
            Some(LicenseStatus::Rejected) => "license_status is \"rejected\": this asset may not ship",
            Some(LicenseStatus::Verified) | None => continue,
        };
        let status = f.license_status.map_or("", LicenseStatus::as_str);
        out.push(Finding::new(&RULE, a.rel.as_str(), message).subject(status));
    }
}
