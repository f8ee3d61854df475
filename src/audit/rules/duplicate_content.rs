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

use std::collections::BTreeMap;

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
    let mut by_hash: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &ctx.scan.assets {
        if let FileState::Hashed { hash, .. } = &a.file {
            by_hash.entry(hash.as_str()).or_default().push(a.rel.as_str());
        }
    }
    for paths in by_hash.values().filter(|p| p.len() > 1) {
        for path in paths {
            let others: Vec<&str> = paths.iter().copied().filter(|p| p != path).collect();
            let mut msg =
                format!("same content as {}", others.iter().take(NAMED).copied().collect::<Vec<_>>().join(", "));
            if others.len() > NAMED {
                msg.push_str(&format!(" and {} more", others.len() - NAMED));
            }
            out.push(Finding::new(&RULE, *path, msg));
        }
    }
}
