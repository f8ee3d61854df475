//! `--format text` (default): one line per finding, `PATH: SEVERITY[RULE]: MESSAGE`, then the
//! baseline entries that are resolved, the changes, notes on skipped entries, and the verdict.

use std::io::{self, Write};

use crate::audit::report::{ChangeStatus, Mode};
use crate::audit::Report;

pub fn render(r: &Report) -> String {
    let mut out = Vec::new();
    write(r, &mut out).expect("writing to a Vec cannot fail");
    // Only `str`s were written, so this is valid UTF-8 and nothing is copied.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`render`] into a writer line by line: `audit` streams it to stdout, as the whole text of
/// 300,000 findings would be tens of MB held at once.
pub fn write(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    for f in &r.findings {
        let fix = if f.fixable && r.mode == Mode::Check { " (fixable with --fix)" } else { "" };
        writeln!(out, "{}: {}[{}]: {}{fix}", r.display_path(&f.path), f.severity.as_str(), f.rule, f.message)?;
    }
    if let Some(b) = &r.baseline {
        for e in &b.resolved {
            writeln!(
                out,
                "{}: resolved[{}]: fixed; can be removed from the baseline",
                r.display_path(&e.path),
                e.rule
            )?;
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
        writeln!(out, "{line}")?;
    }
    for s in &r.skipped {
        writeln!(out, "note: skipped {}: {}", r.display_path(&s.path), s.reason)?;
    }
    if r.mode == Mode::DryRun {
        writeln!(out, "dry run: {} sidecar(s) would be written; nothing was changed", r.changes.len())?;
    }
    writeln!(out, "{}", super::summary_line(r))
}
