//! Audit baselines for gradual adoption: `audit --write-baseline FILE` records today's findings,
//! `audit --baseline FILE` then reports only what is new or got worse, and lists what was fixed.
//!
//! A finding is keyed by rule, path and [`Fingerprint`] (what it is about, never its wording), and
//! the baseline remembers its severity: a finding whose key is in the baseline at the same or a
//! lower severity is known; one whose key is missing, or whose severity rose (a warning that became
//! an error), is new. An entry no finding matches is resolved and can be removed from the file.
//!
//! The file is small, sorted JSON with a schema version, one finding per line, meant to be
//! committed: fixing one file removes one line. Pure apart from [`Baseline::load`]; the command
//! writes the file through `crate::fs`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Finding, Fingerprint, Severity};
use crate::exit_code::hinted;

/// Schema of the baseline document.
pub const SCHEMA: u32 = 1;
/// The `kind` of the document, so a report or a cache passed by mistake is refused.
pub const KIND: &str = "comfyvn-obs-audit-baseline";

/// One known finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub rule: String,
    pub fingerprint: Fingerprint,
    pub severity: Severity,
}

impl Entry {
    fn key(&self) -> (&str, &str, Fingerprint) {
        (&self.path, &self.rule, self.fingerprint)
    }
}

/// A baseline: known findings, sorted, one per key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    schema: u32,
    kind: String,
    findings: Vec<Entry>,
}

/// What comparing findings with a baseline found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Findings the baseline knows (left out of the report).
    pub known: usize,
    /// Entries no finding matches any more: fixed, and can be removed from the baseline.
    pub resolved: Vec<Entry>,
}

impl Baseline {
    /// Every finding, keyed; a key seen twice keeps the higher severity.
    pub fn of(findings: &[Finding]) -> Baseline {
        let mut map: BTreeMap<(String, String, Fingerprint), Severity> = BTreeMap::new();
        for f in findings {
            let sev = map.entry((f.path.clone(), f.rule.to_string(), f.fingerprint)).or_insert(f.severity);
            *sev = (*sev).max(f.severity);
        }
        let entries = map
            .into_iter()
            .map(|((path, rule, fingerprint), severity)| Entry { path, rule, fingerprint, severity })
            .collect();
        Baseline { entries }
    }

    /// The document: sorted, one finding per line, so a change to the tree is a small diff.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{{\n  \"schema\": {SCHEMA},\n  \"kind\": \"{KIND}\",\n  \"findings\": [");
        for (i, e) in self.entries.iter().enumerate() {
            out.push_str(if i == 0 { "\n    " } else { ",\n    " });
            out.push_str(&serde_json::to_string(e).expect("an entry always serialises"));
        }
        out.push_str(if self.entries.is_empty() { "]\n}\n" } else { "\n  ]\n}\n" });
        out.into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Result<Baseline> {
        let doc: Doc = serde_json::from_slice(bytes).context("not an audit baseline document")?;
        if doc.kind != KIND {
            bail!("not an audit baseline (kind {:?}, expected {KIND:?})", doc.kind);
        }
        if doc.schema != SCHEMA {
            bail!("baseline schema {} is not supported (this tool reads {SCHEMA})", doc.schema);
        }
        let mut entries = doc.findings;
        entries.sort();
        entries.dedup_by(|a, b| a.key() == b.key());
        Ok(Baseline { entries })
    }

    pub fn load(path: &Path) -> Result<Baseline> {
        let bytes = std::fs::read(path).map_err(|e| {
            hinted(
                format!("cannot read the baseline {}: {e}", path.display()),
                "create it with `comfyvn-obs audit --write-baseline FILE`",
            )
        })?;
        Baseline::parse(&bytes).with_context(|| format!("cannot use the baseline {}", path.display()))
    }

    /// Drop the findings the baseline knows from `findings` (keeping new ones and ones that got
    /// worse), and list the entries that `covers` (the audited scope or shard) but no finding matches.
    pub fn apply(&self, findings: &mut Vec<Finding>, covers: &dyn Fn(&str) -> bool) -> Outcome {
        // key → (position in `entries`, known severity); `seen` marks the entries a finding matches.
        let index: BTreeMap<(&str, &str, Fingerprint), (usize, Severity)> =
            self.entries.iter().enumerate().map(|(i, e)| (e.key(), (i, e.severity))).collect();
        let mut seen = vec![false; self.entries.len()];
        let before = findings.len();
        findings.retain(|f| match index.get(&(f.path.as_str(), f.rule, f.fingerprint)) {
            Some(&(i, known)) => {
                seen[i] = true;
                f.severity > known
            }
            None => true,
        });
        let known = before - findings.len();
        let resolved = self
            .entries
            .iter()
            .zip(&seen)
            .filter(|(e, seen)| !**seen && covers(&e.path))
            .map(|(e, _)| e.clone())
            .collect();
        Outcome { known, resolved }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::rules;

    fn finding(rule: &str, path: &str, subject: &str, severity: Severity) -> Finding {
        let info = rules::info(rule).unwrap();
        Finding::new(info, path, format!("about {subject}")).subject(subject).severity(severity)
    }

    #[test]
    fn new_worse_known_and_resolved() {
        let old = vec![
            finding("missing-tags", "a.png", "", Severity::Warning),
            finding("missing-license", "b.png", "", Severity::Warning),
            finding("disallowed-license", "c.png", "GPL-3.0", Severity::Error),
            finding("missing-tags", "gone.png", "", Severity::Warning),
            finding("missing-tags", "elsewhere/x.png", "", Severity::Warning),
        ];
        let baseline = Baseline::parse(&Baseline::of(&old).to_bytes()).unwrap();
        assert_eq!(baseline, Baseline::of(&old), "the document round-trips");
        let mut now = vec![
            // Same finding, reworded: still known.
            Finding { message: "reworded".into(), ..finding("missing-tags", "a.png", "", Severity::Warning) },
            // Got worse: a warning that is now an error.
            finding("missing-license", "b.png", "", Severity::Error),
            // Another license on the same file: a new finding (and the old one is resolved).
            finding("disallowed-license", "c.png", "AGPL-3.0", Severity::Error),
            finding("missing-tags", "new.png", "", Severity::Warning),
        ];
        let out = baseline.apply(&mut now, &|p| !p.starts_with("elsewhere/"));
        let paths: Vec<_> = now.iter().map(|f| (f.path.as_str(), f.rule)).collect();
        assert_eq!(paths, [("b.png", "missing-license"), ("c.png", "disallowed-license"), ("new.png", "missing-tags")]);
        assert_eq!(out.known, 1, "only a.png's tags are left out; b.png's license got worse");
        let resolved: Vec<_> = out.resolved.iter().map(|e| (e.path.as_str(), e.rule.as_str())).collect();
        assert_eq!(resolved, [("c.png", "disallowed-license"), ("gone.png", "missing-tags")]);
    }

    #[test]
    fn the_document_is_sorted_one_finding_a_line() {
        let b = Baseline::of(&[
            finding("missing-tags", "z.png", "", Severity::Warning),
            finding("missing-tags", "a.png", "", Severity::Warning),
            finding("missing-tags", "a.png", "", Severity::Error),
        ]);
        let text = String::from_utf8(b.to_bytes()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(lines[4].contains("\"a.png\"") && lines[4].contains("\"error\""), "{text}");
        assert!(lines[5].contains("\"z.png\""), "{text}");
        assert_eq!(String::from_utf8(Baseline::default().to_bytes()).unwrap().lines().count(), 5);
        assert!(Baseline::parse(br#"{"schema": 1, "findings": []}"#).is_err());
        assert!(Baseline::parse(br#"{"schema": 9, "kind": "comfyvn-obs-audit-baseline", "findings": []}"#).is_err());
    }
}
