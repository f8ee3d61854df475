//! `stale-hash` (error)
//!
//! **What it does.** Fires when the file's SHA-256 differs from the `hash` its sidecar records; the
//! message gives both.
//!
//! **Why.** The content changed without the registry noticing (edited outside the studio, a bad
//! merge, a truncated download): downloads would not match their recorded hash and caches keyed by
//! hash go stale.
//!
//! **Example.** `hash` records `9f86d0…`, the file now hashes to `60303a…`.
//!
//! **Fix.** If the new content is intended, `comfyvn-obs audit --fix` records it (the uid stays, the
//! `version` goes up, `on_asset_meta_updated` carries the previous hash). Otherwise restore the file.

use super::{Ctx, RuleInfo};
use crate::audit::{FileState, Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "stale-hash",
    severity: Severity::Error,
    summary: "file content no longer matches the sidecar hash",
    fix: "run `comfyvn-obs audit --fix` to record the new content, or restore the file",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for a in &ctx.scan.assets {
        if let (FileState::Hashed { hash, .. }, SidecarState::Valid(f)) = (&a.file, &a.sidecar) {
            if !f.hash.is_empty() && &f.hash != hash {
                let msg = format!("content changed: the sidecar records hash {}, the file hashes to {hash}", f.hash);
                out.push(Finding::new(&RULE, a.rel.as_str(), msg).fixable().subject(hash));
            }
        }
    }
}
