//! `duplicate-content` (warning)
//!
//! **What it does.** Fires on each asset whose content hash is shared with another asset in the
//! audited tree, naming the others.
//!
//! **Why.** Duplicates waste space and drift apart when one copy is edited; both stay registered
//! (each with its own uid), so this is a warning, not an error.
//!
//! **Example.** `bg/sky.png` and `bg/sky_copy.png` have the same bytes.
//!
//! **Fix.** Keep one copy and point scenes at its uid, or accept the warning.

use super::{Ctx, RuleInfo};
use crate::audit::{FileState, Finding, Severity};

pub const RULE: RuleInfo = RuleInfo {
    id: "duplicate-content",
    severity: Severity::Warning,
    summary: "two assets share a content hash",
    fix: "keep one copy, or accept the duplicate",
};

/// How many other paths a message names before "and N more".
const NAMED: usize = 3;

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    if !ctx.whole_tree {
        return;
    }
    let pairs: Vec<(&str, &str)> = ctx
        .scan
        .assets
        .iter()
        .filter_map(|a| match &a.file {
            FileState::Hashed { hash, .. } => Some((hash.as_str(), a.rel.as_str())),
            FileState::Unreadable(_) => None,
        })
        .collect();
    from_hashes(pairs, out);
}

/// The findings for `(hash, path)` pairs of every hashed asset of the tree (also what `audit merge`
/// runs over the hashes its shards recorded).
pub fn from_hashes(pairs: Vec<(&str, &str)>, out: &mut Vec<Finding>) {
    // (hash, path) sorted: equal hashes become runs, paths in order within each. A sort of borrowed
    // pairs, not a map of vectors: no allocation per asset. The runs' order does not matter (the
    // findings are sorted by path after), so each pair carries its hash's first bytes and distinct
    // hashes are told apart without reading the strings, which lie all over the heap.
    let mut keyed: Vec<(u64, &str, &str)> = pairs.into_iter().map(|(h, p)| (super::prefix_key(h), h, p)).collect();
    keyed.sort_unstable();
    for run in keyed.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1).filter(|run| run.len() > 1) {
        for &(_, hash, path) in run {
            let others: Vec<&str> = run.iter().map(|&(_, _, p)| p).filter(|p| *p != path).collect();
            let mut msg =
                format!("same content as {}", others.iter().take(NAMED).copied().collect::<Vec<_>>().join(", "));
            if others.len() > NAMED {
                msg.push_str(&format!(" and {} more", others.len() - NAMED));
            }
            out.push(Finding::new(&RULE, path, msg).subject(hash));
        }
    }
}
