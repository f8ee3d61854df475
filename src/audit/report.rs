//! The audit report: findings, the `--fix` changes, a summary and the verdict. The same value feeds
//! every output format and `logs/audit/latest.json`.
//!
//! Reproducible: everything printed depends only on the tree, the config and the flags (no times, no
//! cache statistics). `latest.json` adds `generated_at` and `stats`.

use serde::{Deserialize, Serialize};

use super::baseline::{self, Baseline};
use super::shard::Shard;
use super::{Action, FailOn, Finding, Planned, Severity};
use crate::exit_code::ExitCode;
use crate::registry::Skipped;

/// Schema of the report document (stdout JSON and `latest.json`).
pub const SCHEMA: u32 = 1;

/// check: findings only; fix: changes written; dry-run: changes planned, nothing written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Check,
    Fix,
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Planned,
    Applied,
    Failed,
    /// Not written: another writer (a watcher, a second `audit --fix`) wrote a sidecar for this
    /// very content meanwhile.
    Concurrent,
}

/// One sidecar write of `--fix` / `--dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeLine {
    /// The sidecar, relative to the assets root.
    pub path: String,
    pub action: Action,
    pub detail: String,
    pub status: ChangeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChangeLine {
    pub fn planned(p: &Planned) -> ChangeLine {
        ChangeLine {
            path: p.change.rel.sidecar().to_string(),
            action: p.action,
            detail: p.detail.clone(),
            status: ChangeStatus::Planned,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub assets: usize,
    pub sidecars: usize,
    pub errors: usize,
    pub warnings: usize,
    /// Findings `--fix` would repair.
    pub fixable: usize,
    pub changes: usize,
    pub failed_changes: usize,
    /// No finding at or above `fail_on` and no failed change.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub tool: &'static str,
    pub version: &'static str,
    /// The assets root as given to people: relative to the current directory when inside it.
    pub assets_root: String,
    pub scope: Option<String>,
    pub mode: Mode,
    pub fail_on: FailOn,
    /// `--release`: the release-gate rules ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
    /// The shard this report covers (`--shard K/N`); merged reports and whole-tree audits have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    pub summary: Summary,
    /// With a baseline, only the new findings (and the ones that got worse).
    pub findings: Vec<Finding>,
    /// `--baseline`: how many findings it knew, and the entries that are resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<baseline::Outcome>,
    pub changes: Vec<ChangeLine>,
    /// Symbolic links and special files that were not followed.
    pub skipped: Vec<Skipped>,
    /// A shard's record of every asset, for the checks `audit merge` runs across the whole tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<Vec<TreeEntry>>,
}

/// Inputs of [`Report::new`] that are not findings or changes.
#[derive(Debug, Clone)]
pub struct Context {
    pub assets_root: String,
    pub scope: Option<String>,
    pub mode: Mode,
    pub fail_on: FailOn,
    pub release: bool,
    pub shard: Option<Shard>,
    pub assets: usize,
    pub sidecars: usize,
}

/// What the checks across folders need of one asset (see `audit merge`): its content hash when it
/// could be hashed, and the uid its valid sidecar records (`own`: the sidecar records this path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
}

impl Report {
    pub fn new(ctx: Context, findings: Vec<Finding>, changes: Vec<ChangeLine>, skipped: Vec<Skipped>) -> Report {
        let summary = summarise(ctx.assets, ctx.sidecars, ctx.fail_on, &findings, &changes);
        Report {
            schema: SCHEMA,
            tool: "comfyvn-obs",
            version: env!("CARGO_PKG_VERSION"),
            assets_root: ctx.assets_root,
            scope: ctx.scope,
            mode: ctx.mode,
            fail_on: ctx.fail_on,
            release: ctx.release,
            shard: ctx.shard,
            summary,
            findings,
            baseline: None,
            changes,
            skipped,
            tree: None,
        }
    }

    /// Leave out the findings `baseline` knows and record what it resolved; the summary and the
    /// exit code then count only the new findings. `covers` says which baseline entries this
    /// report looked at (its scope, its shard).
    pub fn apply_baseline(&mut self, baseline: &Baseline, covers: &dyn Fn(&str) -> bool) {
        let outcome = baseline.apply(&mut self.findings, covers);
        self.summary =
            summarise(self.summary.assets, self.summary.sidecars, self.fail_on, &self.findings, &self.changes);
        self.baseline = Some(outcome);
    }

    /// 0 when passed, 1 otherwise; 2 when a `--fix` write failed (the tool could not do what was asked: a full disk, a read-only
    /// folder), whatever `--fail-on` says, so CI can tell findings from tool failure.
    pub fn exit_code(&self) -> ExitCode {
        if self.summary.failed_changes > 0 {
            ExitCode::Error
        } else if self.summary.passed {
            ExitCode::Success
        } else {
            ExitCode::Failure
        }
    }

    /// The path of a finding or change as shown to people and CI tools: joined to the display root.
    pub fn display_path(&self, rel: &str) -> String {
        if self.assets_root.is_empty() || self.assets_root == "." {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.assets_root.trim_end_matches('/'))
        }
    }
}

fn summarise(assets: usize, sidecars: usize, fail_on: FailOn, findings: &[Finding], changes: &[ChangeLine]) -> Summary {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let failed_changes = changes.iter().filter(|c| c.status == ChangeStatus::Failed).count();
    let passed = !findings.iter().any(|f| fail_on.fails(f.severity)) && failed_changes == 0;
    Summary {
        assets,
        sidecars,
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        fixable: findings.iter().filter(|f| f.fixable).count(),
        changes: changes.len(),
        failed_changes,
        passed,
    }
}
