//! The audit rules (DESIGN §7), one file each with a fixed doc block (what it does / why / example /
//! fix). Rules are pure: they read the [`Scan`] and append [`Finding`]s; they never touch files.
//!
//! Rule ids are stable: CI configurations, SARIF baselines and `jq` filters depend on them.

use rayon::prelude::*;

use super::{Finding, Fingerprint, Scan, Severity};
use crate::registry::Policy;

pub mod disallowed_license;
pub mod duplicate_content;
pub mod invalid_sidecar;
pub mod missing_attribution;
pub mod missing_license;
pub mod missing_provenance;
pub mod missing_sidecar;
pub mod missing_tags;
pub mod orphan_sidecar;
pub mod size_mismatch;
pub mod stale_hash;
pub mod unreadable;
pub mod unverified_license;

/// A rule's identity and help text (SARIF `rules[]`, `--format` outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: &'static str,
    pub severity: Severity,
    /// One line: when it fires.
    pub summary: &'static str,
    /// One line: how to make it go away.
    pub fix: &'static str,
}

/// What every rule may look at.
pub struct Ctx<'a> {
    pub scan: &'a Scan,
    pub policy: &'a Policy,
    /// `obs.audit.require_provenance`: a missing provenance source is an error.
    pub require_provenance: bool,
    /// The scan saw the whole tree (or scope): false for a shard, whose report leaves the checks
    /// across folders (`duplicate-content`, duplicate uids) to `audit merge`.
    pub whole_tree: bool,
    /// `audit --release`: the release-gate rules run too.
    pub release: bool,
}

/// Every rule, in id order.
pub const ALL: &[RuleInfo] = &[
    disallowed_license::RULE,
    duplicate_content::RULE,
    invalid_sidecar::RULE,
    missing_attribution::RULE,
    missing_license::RULE,
    missing_provenance::RULE,
    missing_sidecar::RULE,
    missing_tags::RULE,
    orphan_sidecar::RULE,
    size_mismatch::RULE,
    stale_hash::RULE,
    unreadable::RULE,
    unverified_license::RULE,
];

/// Rules that run only with `audit --release`.
pub const RELEASE: &[&str] = &[missing_attribution::RULE.id, unverified_license::RULE.id];

/// Look a rule up by id.
pub fn info(id: &str) -> Option<&'static RuleInfo> {
    ALL.iter().find(|r| r.id == id)
}

/// Every rule's check, in id order.
const CHECKS: &[fn(&Ctx, &mut Vec<Finding>)] = &[
    disallowed_license::check,
    duplicate_content::check,
    invalid_sidecar::check,
    missing_attribution::check,
    missing_license::check,
    missing_provenance::check,
    missing_sidecar::check,
    missing_tags::check,
    orphan_sidecar::check,
    size_mismatch::check,
    stale_hash::check,
    unreadable::check,
    unverified_license::check,
];

/// Run every rule (in parallel: each reads the scan alone) and sort the findings by path, then
/// rule, then message. The unstable sort is deterministic: findings that compare equal are equal in
/// every field, and it needs no buffer beside the 300,000 findings a large tree can have.
pub fn run_all(ctx: &Ctx) -> Vec<Finding> {
    let parts: Vec<Vec<Finding>> = CHECKS
        .par_iter()
        .map(|check| {
            let mut out = Vec::new();
            check(ctx, &mut out);
            out
        })
        .collect();
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    out.par_sort_unstable();
    out
}

impl Finding {
    pub(crate) fn new(
        rule: &RuleInfo,
        path: impl Into<String>,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Finding {
        Finding {
            path: path.into(),
            rule: rule.id,
            severity: rule.severity,
            message: message.into(),
            fixable: false,
            fingerprint: Fingerprint::of_rule(rule.id),
        }
    }

    /// Key the finding by what it is about (see [`Fingerprint`]).
    pub(crate) fn subject(mut self, subject: &str) -> Finding {
        self.fingerprint = self.fingerprint.with(subject);
        self
    }

    pub(crate) fn fixable(mut self) -> Finding {
        self.fixable = true;
        self
    }

    pub(crate) fn severity(mut self, s: Severity) -> Finding {
        self.severity = s;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sorted_unique_and_kebab_case() {
        let ids: Vec<_> = ALL.iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
        assert_eq!(ids.len(), 13);
        assert_eq!(CHECKS.len(), ALL.len());
    }
}
