//! `--format text` (default): one line per finding, `PATH: SEVERITY[RULE]: MESSAGE`, then the
//! baseline entries that are resolved, the changes, notes on skipped entries, and the verdict.

use crate::audit::report::{ChangeStatus, Mode};
use crate::audit::Report;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let fix = if f.fixable && r.mode == Mode::Check { " (fixable with --fix)" } else { "" };
        out.push_str(&format!(
            "{}: {}[{}]: {}{fix}\n",
            r.display_path(&f.path),
            f.severity.as_str(),
            f.rule,
            f.message
        ));
    }
    if let Some(b) = &r.baseline {
        for e in &b.resolved {
            out.push_str(&format!(
                "{}: resolved[{}]: fixed; can be removed from the baseline\n",
                r.display_path(&e.path),
                e.rule
            ));
        }
    }
    for c in &r.changes {
        let verb = match (r.mode, c.status) {
            (Mode::DryRun, _) => "would write",
            (_, ChangeStatus::Failed) => "could not write",
            (_, ChangeStatus::Concurrent) => "left (another writer wrote it meanwhile)",
            _ => "wrote",
        };
        let action =
            serde_json::to_value(c.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let mut line = format!("{verb} {} ({action}: {})", r.display_path(&c.path), c.detail);
        if let Some(e) = &c.error {
            line.push_str(&format!(": {e}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for s in &r.skipped {
        out.push_str(&format!("note: skipped {}: {}\n", r.display_path(&s.path), s.reason));
    }
    if r.mode == Mode::DryRun {
        out.push_str(&format!("dry run: {} sidecar(s) would be written; nothing was changed\n", r.changes.len()));
    }
    out.push_str(&super::summary_line(r));
    out.push('\n');
    out
}
