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
/// rule, then message. Each rule's findings are sorted on its own task (a rule that walks the assets
/// in path order emits them nearly sorted, which the sort checks in one pass), and the sorted lists
/// are merged. The order is deterministic: findings that compare equal are equal in every field.
pub fn run_all(ctx: &Ctx) -> Vec<Finding> {
    let parts: Vec<Vec<Finding>> = CHECKS
        .par_iter()
        .map(|check| {
            let mut out = Vec::new();
            check(ctx, &mut out);
            out.sort_unstable();
            out
        })
        .collect();
    merge_sorted(parts)
}

/// Merge lists that are each sorted into one sorted list. A tree's findings come from a few rules
/// (300,000 from three in the bench's 100,000-file tree): a pass over the heads of the lists for
/// each finding costs less than sorting them all again, and moves each finding once.
fn merge_sorted(parts: Vec<Vec<Finding>>) -> Vec<Finding> {
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    // What is left of each list; its first finding is the list's head.
    let mut heads: Vec<std::vec::IntoIter<Finding>> =
        parts.into_iter().filter(|p| !p.is_empty()).map(Vec::into_iter).collect();
    while heads.len() > 1 {
        let head = |i: usize| heads[i].as_slice().first();
        let least = (1..heads.len()).fold(0, |least, i| if head(i) < head(least) { i } else { least });
        out.extend(heads[least].next());
        if heads[least].len() == 0 {
            heads.swap_remove(least);
        }
    }
    if let Some(last) = heads.pop() {
        out.extend(last);
    }
    out
}

/// The first 8 bytes of `s` as a big-endian number, zero-padded: ordering by it, then by the whole
/// string, is an order in which equal strings are neighbours, and most comparisons of distinct
/// hashes or uids end at one integer comparison instead of a `memcmp` call. A rule that sorts
/// 100,000 hashes spends most of its time comparing them.
pub(crate) fn prefix_key(s: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_be_bytes(b)
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

    #[test]
    fn merging_sorted_lists_gives_the_sort_of_all_findings() {
        let f = |path: &str, rule: &RuleInfo, msg: &'static str| Finding::new(rule, path, msg);
        let (a, b, c) = (&missing_tags::RULE, &missing_license::RULE, &invalid_sidecar::RULE);
        let mut parts = vec![
            vec![f("a.png", a, "no tags"), f("b.png", a, "no tags"), f("d.png", a, "no tags")],
            vec![],
            vec![f("a.png", b, "x"), f("c.png", b, "y"), f("c.png", b, "z"), f("e.png", b, "x")],
            vec![f("a.png.asset.json", c, "bad"), f("b.png", c, "late")],
            vec![f("a.png", a, "no tags")],
        ];
        for p in &parts {
            assert!(p.is_sorted());
        }
        let mut all: Vec<Finding> = parts.concat();
        all.sort_unstable();
        assert_eq!(merge_sorted(parts.clone()), all);
        parts.reverse();
        assert_eq!(merge_sorted(parts), all);
        assert!(merge_sorted(vec![]).is_empty());
        assert!(merge_sorted(vec![vec![], vec![]]).is_empty());
    }

    #[test]
    fn prefix_keys_never_order_strings_against_their_byte_order() {
        let words =
            ["", "a", "ab", "ab\0", "abcdefgh", "abcdefgh0", "abcdefgi", "b", "ba", "\u{e9}t\u{e9}", "zzzzzzzzzz"];
        for a in words {
            for b in words {
                if prefix_key(a) < prefix_key(b) {
                    assert!(a < b, "{a:?} before {b:?}");
                }
                if a == b {
                    assert_eq!(prefix_key(a), prefix_key(b));
                }
            }
        }
        assert_eq!(prefix_key("ab"), prefix_key("ab\0"), "a tie the whole string breaks");
    }
}
