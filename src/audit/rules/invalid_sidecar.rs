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

use std::collections::HashMap;

use super::{Ctx, RuleInfo};
use crate::audit::{Finding, Severity, SidecarState};

pub const RULE: RuleInfo = RuleInfo {
    id: "invalid-sidecar",
    severity: Severity::Error,
    summary: "a sidecar is not valid JSON or violates the schema",
    fix: "edit the named field; missing machine fields are filled by `comfyvn-obs audit --fix`",
};

pub fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    // uid → the asset that keeps it: the first (by path) whose sidecar records its own path.
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for pass in [true, false] {
        for a in &ctx.scan.assets {
            if let SidecarState::Valid(f) = &a.sidecar {
                if !f.uid.is_empty() && (f.recorded_path == a.rel.as_str()) == pass {
                    owners.entry(f.uid.as_str()).or_insert(a.rel.as_str());
                }
            }
        }
    }
    for a in &ctx.scan.assets {
        // The sidecar's path is built only for a finding (most assets have none).
        let sidecar = || a.rel.sidecar().to_string();
        match &a.sidecar {
            SidecarState::Invalid(message) => out.push(Finding::new(&RULE, sidecar(), message.clone())),
            SidecarState::Valid(f) => {
                if !f.fixable.is_empty() {
                    out.push(Finding::new(&RULE, sidecar(), f.fixable.join("; ")).fixable());
                }
                if let Some(owner) = owners.get(f.uid.as_str()).filter(|o| **o != a.rel.as_str()) {
                    out.push(Finding::new(
                        &RULE,
                        sidecar(),
                        format!(
                            "uid: {:?} is also used by {owner} (copied sidecar?); give one of them a new uid",
                            f.uid
                        ),
                    ));
                }
            }
            SidecarState::Absent | SidecarState::Unreadable(_) => {}
        }
    }
}
