//! `unreadable` (error) — an addition to the DESIGN §7 table
//!
//! **What it does.** Fires for a file or sidecar that could not be read (permission denied, an I/O
//! error, vanished while the audit ran), a folder that could not be listed, a name that is not
//! valid UTF-8 (shown lossily), or an item whose check failed internally.
//!
//! **Why.** An audit must not pass a tree it could not fully look at, and one bad file must not abort
//! the audit of 20,000 others.
//!
//! **Example.** `characters/locked.png: cannot read: permission denied`.
//!
//! **Fix.** Fix the permissions or rename the file, then audit again.

use super::{Ctx, RuleInfo};
use crate::audit::{FileState, Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "unreadable",
    severity: Severity::Error,
    summary: "a file, folder or sidecar could not be read",
    fix: "fix permissions or rename the file, then audit again",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for t in &ctx.scan.troubles {
        out.push(Finding::new(&RULE, t.path.clone(), t.message.clone()).subject("entry"));
    }
    for a in &ctx.scan.assets {
        if let FileState::Unreadable(msg) = &a.file {
            out.push(Finding::new(&RULE, a.rel.as_str(), msg.clone()).subject("file"));
        }
        if let SidecarState::Unreadable(msg) = &a.sidecar {
            out.push(Finding::new(&RULE, a.rel.sidecar().as_str(), msg.clone()).subject("sidecar"));
        }
    }
}
