//! `invalid-sidecar` (error)
//!
//! **What it does.** Fires when a sidecar is not valid JSON, is not an object, has a field of the
//! wrong type, declares an unknown `schema` version, lacks machine fields (`uid`, `hash`, `bytes`,
//! `type`, `path`, `schema`), records a `path` other than where it lies, or reuses another asset's
//! uid. The message names the field: `tags: expected an array of strings, found the string "hero"`.
//!
//! **Why.** Tools downstream (the server, the watcher, the studio) cannot trust an asset whose
//! sidecar they cannot read.
//!
//! **Example.** `{"schema": 1, "uid": "0a1b…", "tags": "hero", …}`.
//!
//! **Fix.** Missing machine fields and a stale `path` are filled by `comfyvn-obs audit --fix`
//! (human fields are kept). Wrong types, unknown schema versions and duplicate uids need a person:
//! edit the sidecar (the tool never overwrites one it cannot read).

use std::collections::{HashMap, HashSet};

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "invalid-sidecar",
    severity: Severity::Error,
    summary: "a sidecar is not valid JSON or violates the schema",
    fix: "edit the named field; missing machine fields are filled by `comfyvn-obs audit --fix`",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for a in &ctx.scan.assets {
        // The sidecar's path is built only for a finding (most assets have none).
        let sidecar = || a.rel.sidecar().to_string();
        match &a.sidecar {
            SidecarState::Invalid(message) => {
                out.push(Finding::new(&RULE, sidecar(), message.clone()).subject(&fields_of(message)))
            }
            SidecarState::Valid(f) if !f.fixable.is_empty() => {
                let message = f.fixable.join("; ");
                let subject = format!("fixable {}", fields_of(&message));
                out.push(Finding::new(&RULE, sidecar(), message).fixable().subject(&subject));
            }
            _ => {}
        }
    }
    if ctx.whole_tree {
        let uids: Vec<UidEntry> = ctx
            .scan
            .assets
            .iter()
            .filter_map(|a| match &a.sidecar {
                SidecarState::Valid(f) if !f.uid.is_empty() => {
                    Some(UidEntry { path: a.rel.as_str(), uid: &f.uid, own: f.recorded_path == a.rel.as_str() })
                }
                _ => None,
            })
            .collect();
        uid_conflicts(&uids, out);
    }
}

/// An asset with a valid sidecar that records a uid.
#[derive(Debug, Clone, Copy)]
pub struct UidEntry<'a> {
    pub path: &'a str,
    pub uid: &'a str,
    /// The sidecar records this very path (it was not copied from elsewhere).
    pub own: bool,
}

/// The findings for uids used by more than one sidecar of the tree; `entries` in path order (also
/// what `audit merge` runs over the uids its shards recorded).
pub fn uid_conflicts(entries: &[UidEntry], out: &mut Vec<Finding>) {
    // Most trees share no uid: a sort of the uids shows it, and then no map of every uid is built
    // (for 100,000 assets the map took longer than all the other rules together).
    // Each uid carries its first bytes, so most comparisons do not read the strings.
    let mut uids: Vec<(u64, &str)> = entries.iter().map(|e| (super::prefix_key(e.uid), e.uid)).collect();
    uids.sort_unstable();
    let shared: HashSet<&str> = uids.chunk_by(|a, b| a == b).filter(|run| run.len() > 1).map(|run| run[0].1).collect();
    if shared.is_empty() {
        return;
    }
    let entries: Vec<&UidEntry> = entries.iter().filter(|e| shared.contains(e.uid)).collect();
    // uid → the asset that keeps it: the first (by path) whose sidecar records its own path.
    let mut owners: HashMap<&str, &str> = HashMap::with_capacity(shared.len());
    for pass in [true, false] {
        for e in entries.iter().filter(|e| e.own == pass) {
            owners.entry(e.uid).or_insert(e.path);
        }
    }
    for e in entries {
        if let Some(owner) = owners.get(e.uid).filter(|o| **o != e.path) {
            out.push(
                Finding::new(
                    &RULE,
                    format!("{}{}", e.path, crate::registry::sidecar::SUFFIX),
                    format!("uid: {:?} is also used by {owner} (copied sidecar?); give one of them a new uid", e.uid),
                )
                .subject(&format!("uid {}", e.uid)),
            );
        }
    }
}

/// The field names of a validation message (`tags: …; bytes: …` → `bytes,tags`), `document` for
/// a problem of the whole document: the fingerprint's subject, which survives rewording.
fn fields_of(message: &str) -> String {
    let mut fields: Vec<&str> = message
        .split("; ")
        .map(|part| match part.split_once(": ") {
            Some((field, _)) if !field.is_empty() && !field.contains(' ') => field,
            _ => "document",
        })
        .collect();
    fields.sort_unstable();
    fields.dedup();
    fields.join(",")
}
