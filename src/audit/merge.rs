//! `audit merge`: the `--format json` reports of `audit --shard K/N` (N of them, any order) as the
//! report one audit of the whole tree gives, byte for byte in every format.
//!
//! Each shard reports its own folders' findings and records, for every asset, its hash and uid
//! (`tree`); the checks that compare assets across folders (`duplicate-content`, a uid used twice)
//! run here over all of them, with the same code the single audit uses. Pure: parses bytes,
//! returns a [`Report`].

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::report::{self, ChangeLine, Context as ReportContext, Mode, Summary, TreeEntry};
use super::rules::{duplicate_content, info, invalid_sidecar};
use super::shard::Shard;
use super::{FailOn, Finding, Fingerprint, Report, Severity};
use crate::exit_code::hinted;
use crate::registry::Skipped;

/// A shard's report as read back.
#[derive(Deserialize)]
struct ShardDoc {
    schema: u32,
    tool: String,
    version: String,
    assets_root: String,
    scope: Option<String>,
    mode: Mode,
    fail_on: FailOn,
    #[serde(default)]
    release: bool,
    shard: Option<Shard>,
    summary: Summary,
    findings: Vec<FindingDoc>,
    #[serde(default)]
    baseline: Option<serde_json::Value>,
    changes: Vec<ChangeLine>,
    skipped: Vec<Skipped>,
    tree: Option<Vec<TreeEntry>>,
}

#[derive(Deserialize)]
struct FindingDoc {
    path: String,
    rule: String,
    severity: Severity,
    message: String,
    fixable: bool,
    fingerprint: Fingerprint,
}

/// Merge shard reports, given as (name for messages, bytes).
pub fn merge(docs: &[(String, Vec<u8>)]) -> Result<Report> {
    let hint = "pass the `--format json` output of `comfyvn-obs audit --shard K/N`, one file per shard";
    if docs.is_empty() {
        bail!(hinted("no shard reports to merge", hint));
    }
    let mut shards: Vec<(String, ShardDoc)> = Vec::with_capacity(docs.len());
    for (name, bytes) in docs {
        let doc: ShardDoc =
            serde_json::from_slice(bytes).map_err(|e| hinted(format!("{name} is not a shard report: {e}"), hint))?;
        if doc.schema != report::SCHEMA || doc.tool != "comfyvn-obs" {
            bail!(hinted(format!("{name} is not a comfyvn-obs audit report of schema {}", report::SCHEMA), hint));
        }
        if doc.version != env!("CARGO_PKG_VERSION") {
            bail!(hinted(
                format!("{name} was written by comfyvn-obs {}, this is {}", doc.version, env!("CARGO_PKG_VERSION")),
                "run every shard and the merge with the same version",
            ));
        }
        let (Some(_), Some(_)) = (&doc.shard, &doc.tree) else {
            bail!(hinted(format!("{name} is the report of a whole audit, not of a shard"), hint));
        };
        if doc.baseline.is_some() {
            bail!(hinted(
                format!("{name} was compared with a baseline"),
                "run the shards without --baseline and pass it to `audit merge`",
            ));
        }
        shards.push((name.clone(), doc));
    }
    shards.sort_by_key(|(_, d)| d.shard.map(|s| s.index));
    let (first_name, first) = &shards[0];
    let count = first.shard.map_or(0, |s| s.count);
    for (name, d) in &shards {
        let same = d.assets_root == first.assets_root
            && d.scope == first.scope
            && d.mode == first.mode
            && d.fail_on == first.fail_on
            && d.release == first.release
            && d.shard.map(|s| s.count) == Some(count);
        if !same {
            bail!(hinted(
                format!("{name} and {first_name} are not shards of one audit (assets root, path, flags or N differ)"),
                "run every shard with the same arguments apart from K",
            ));
        }
    }
    let indexes: Vec<u32> = shards.iter().filter_map(|(_, d)| d.shard.map(|s| s.index)).collect();
    if let Some(w) = indexes.windows(2).find(|w| w[0] == w[1]) {
        bail!("shard {}/{count} is given twice", w[0]);
    }
    let missing: Vec<String> = (1..=count).filter(|k| !indexes.contains(k)).map(|k| format!("{k}/{count}")).collect();
    if !missing.is_empty() {
        bail!(hinted(
            if missing.len() == 1 {
                format!("shard {} is missing", missing[0])
            } else {
                format!("shards {} are missing", missing.join(", "))
            },
            "pass the reports of all N shards",
        ));
    }

    let mut findings = Vec::new();
    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    let mut tree: Vec<TreeEntry> = Vec::new();
    let (mut assets, mut sidecars) = (0, 0);
    let ctx_of = |d: &ShardDoc| (d.assets_root.clone(), d.scope.clone(), d.mode, d.fail_on, d.release);
    let (assets_root, scope, mode, fail_on, release) = ctx_of(first);
    for (name, d) in shards {
        assets += d.summary.assets;
        sidecars += d.summary.sidecars;
        for f in d.findings {
            let Some(rule) = info(&f.rule) else {
                bail!("{name}: unknown rule {:?}", f.rule);
            };
            findings.push(Finding {
                path: f.path,
                rule: rule.id,
                severity: f.severity,
                message: f.message.into(),
                fixable: f.fixable,
                fingerprint: f.fingerprint,
            });
        }
        changes.extend(d.changes);
        skipped.extend(d.skipped);
        tree.extend(d.tree.context("checked above")?);
    }
    tree.sort_by(|a, b| a.path.cmp(&b.path));
    let pairs: Vec<(&str, &str)> =
        tree.iter().filter_map(|e| e.hash.as_deref().map(|h| (h, e.path.as_str()))).collect();
    duplicate_content::from_hashes(pairs, &mut findings);
    let uids: Vec<invalid_sidecar::UidEntry> = tree
        .iter()
        .filter_map(|e| e.uid.as_deref().map(|uid| invalid_sidecar::UidEntry { path: &e.path, uid, own: e.own }))
        .collect();
    invalid_sidecar::uid_conflicts(&uids, &mut findings);
    findings.sort();
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let ctx = ReportContext { assets_root, scope, mode, fail_on, release, shard: None, assets, sidecars };
    Ok(Report::new(ctx, findings, changes, skipped))
}
