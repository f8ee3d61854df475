//! The CI audit (DESIGN §7): scan the assets tree, judge it with the rules, plan the `--fix`
//! changes, and build a reproducible report.
//!
//! Data flow: [`walk::scan`] (parallel hashing, stat cache) → [`plan_fixes`] → the caller writes the
//! changes with `Registry::write_batch` and publishes their hooks → [`record_written`] → [`evaluate`]
//! (the rules) → [`report::Report`] → [`format`]. This module reads files and never writes them:
//! writes go through the registry, the cache and report files through `crate::fs`, called by the
//! command.

pub mod baseline;
pub mod cache;
pub mod format;
pub mod merge;
pub mod report;
pub mod rules;
pub mod shard;
pub mod walk;

use std::collections::HashSet;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::registry::{self, sidecar, Change, FileStat, Found, Parsed, Registry, RelPath, Sidecar, Skipped, Trouble};

pub use cache::StatCache;
pub use report::Report;
pub use walk::{scan, ScanOptions};

/// How bad a finding is. Ordered: `Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// `--fail-on`: the lowest severity that makes the audit fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    Error,
    Warning,
    Never,
}

impl FailOn {
    pub fn parse(s: &str) -> Option<FailOn> {
        match s {
            "error" => Some(FailOn::Error),
            "warning" => Some(FailOn::Warning),
            "never" => Some(FailOn::Never),
            _ => None,
        }
    }

    /// True when a finding of severity `s` fails the audit.
    pub fn fails(self, s: Severity) -> bool {
        match self {
            FailOn::Error => s == Severity::Error,
            FailOn::Warning => true,
            FailOn::Never => false,
        }
    }
}

/// One finding. Sorted by path, then rule, then message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Relative to the assets root: the asset, or the sidecar for sidecar problems.
    pub path: String,
    pub rule: &'static str,
    pub severity: Severity,
    /// Borrowed for the fixed wordings (`no tags`): a tree can have 300,000 such findings.
    pub message: std::borrow::Cow<'static, str>,
    /// `--fix` repairs it.
    pub fixable: bool,
    /// What the finding is about, independent of its wording (see [`Fingerprint`]).
    pub fingerprint: Fingerprint,
}

/// A stable key of what a finding is about, beside its rule and path: the rule's id mixed with the
/// rule's subject (the license for `disallowed-license`, the file's hash for `stale-hash`, nothing
/// for `missing-tags`), never the message text, so rewording a message keeps baselines valid.
/// 64-bit FNV-1a, shown as 16 hex digits; it only has to tell findings of one rule on one path
/// apart, and costs no allocation (a 100,000-file tree can have 300,000 findings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;

    /// The fingerprint of a rule's finding without a subject.
    pub const fn of_rule(rule: &str) -> Fingerprint {
        Fingerprint(Self::feed(Self::OFFSET, rule.as_bytes()))
    }

    /// Mix `subject` in (after a separator, so `("a", "bc")` and `("ab", "c")` differ).
    pub fn with(self, subject: &str) -> Fingerprint {
        Fingerprint(Self::feed(Self::feed(self.0, &[0]), subject.as_bytes()))
    }

    const fn feed(mut h: u64, bytes: &[u8]) -> u64 {
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(Self::PRIME);
            i += 1;
        }
        h
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok()).flatten().map(Fingerprint)
    }
}

impl Fingerprint {
    /// The 16 lower-case hex digits, without the formatting machinery: a report can serialize
    /// 300,000 of them.
    fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Fingerprint::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("expected 16 hex digits, found {s:?}")))
    }
}

/// What the rules need to know about a readable sidecar; also what the stat cache stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub uid: String,
    #[serde(rename = "type")]
    pub asset_type: String,
    /// The `path` the sidecar records.
    pub recorded_path: String,
    /// Empty when missing.
    pub hash: String,
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    pub has_tags: bool,
    pub provenance_source: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_status: Option<sidecar::LicenseStatus>,
    /// A non-blank `attribution`.
    #[serde(default)]
    pub has_attribution: bool,
    /// Machine fields a refresh would fill or correct (`"path: records …"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixable: Vec<String>,
}

impl Facts {
    pub fn of(parsed: &Parsed) -> Facts {
        let mut f = Facts::of_sidecar(&parsed.sidecar);
        if parsed.missing.contains(&"bytes") {
            f.bytes = None;
        }
        f.fixable = parsed.fixable.clone();
        f
    }

    /// From the fast path; a recorded path other than `rel` is the one thing to fix.
    pub fn of_summary(s: sidecar::Summary, rel: &RelPath) -> Facts {
        let fixable = if s.path == rel.as_str() {
            Vec::new()
        } else {
            vec![format!("path: records {:?} but the sidecar is beside {:?}", s.path, rel.as_str())]
        };
        Facts {
            uid: s.uid,
            asset_type: s.asset_type,
            recorded_path: s.path,
            hash: s.hash,
            bytes: Some(s.bytes),
            license: s.license,
            has_tags: s.has_tags,
            provenance_source: s.provenance_source,
            license_status: s.license_status,
            has_attribution: s.has_attribution,
            fixable,
        }
    }

    pub fn of_sidecar(s: &Sidecar) -> Facts {
        Facts {
            uid: s.uid.clone(),
            asset_type: s.asset_type.clone(),
            recorded_path: s.path.clone(),
            hash: s.hash.clone(),
            bytes: Some(s.bytes),
            license: s.license.clone(),
            has_tags: !s.tags.is_empty(),
            provenance_source: s.provenance_source().is_some(),
            license_status: s.credits.license_status,
            has_attribution: s.attribution_text().is_some(),
            fixable: Vec::new(),
        }
    }
}

/// The asset file as the audit saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum FileState {
    Hashed { hash: String, bytes: u64 },
    Unreadable(String),
}

/// The asset's sidecar as the audit saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum SidecarState {
    Absent,
    Unreadable(String),
    /// Not usable; the message names the field(s).
    Invalid(String),
    Valid(Facts),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssetState {
    pub rel: RelPath,
    pub stat: FileStat,
    pub file: FileState,
    /// The hash came from the stat cache.
    pub file_cached: bool,
    pub sidecar: SidecarState,
    pub sidecar_stat: Option<FileStat>,
    pub sidecar_cached: bool,
}

/// Counts for the log and `latest.json` (not part of the reproducible output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    pub files_hashed: u64,
    pub files_cached: u64,
    pub bytes_hashed: u64,
    pub sidecars_read: u64,
    pub sidecars_cached: u64,
}

/// Everything one scan saw, assets sorted by path.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub assets: Vec<AssetState>,
    /// Sidecars without an asset.
    pub orphans: Vec<Found>,
    pub troubles: Vec<Trouble>,
    pub skipped: Vec<Skipped>,
    pub scope: Option<RelPath>,
    /// The shard scanned, when not the whole tree.
    pub shard: Option<shard::Shard>,
    /// System time (ns) when the scan began; the cache's racy limit is measured from it.
    pub started_at_ns: i64,
    pub stats: ScanStats,
}

impl Scan {
    /// True when `rel` (an asset path) is in what this scan looked at: its scope and its shard.
    pub fn covers(&self, rel: &str) -> bool {
        let in_scope = match &self.scope {
            None => true,
            Some(s) => rel == s.as_str() || rel.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('/')),
        };
        in_scope && self.shard.is_none_or(|k| k.owns(rel))
    }

    /// Number of sidecar files (valid or not, orphans included).
    pub fn sidecar_count(&self) -> usize {
        self.assets.iter().filter(|a| !matches!(a.sidecar, SidecarState::Absent)).count() + self.orphans.len()
    }
}

/// What `--fix` does to one sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Write a sidecar for an asset without one.
    Register,
    /// Refresh machine fields of an existing sidecar (and fill metadata when asked).
    Refresh,
    /// Only `--fill-metadata` changes (tags from the path, license `unknown`).
    FillMetadata,
}

/// One planned sidecar write.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub change: Change,
    pub action: Action,
    /// What changes, for people: `new sidecar, uid 0a1b…`, `hash, bytes`.
    pub detail: String,
}

/// Plan the `--fix` writes for a scan, in path order: sidecars for assets without one, refreshed
/// machine fields where they are missing or stale, and (with `fill_metadata`) tags from the path and
/// license `unknown` where those are empty. Sidecars are re-read here so edits made since the scan
/// are kept; one that became unreadable is left out (its finding stays). `outside_uids` are uids in
/// use outside the scanned scope.
pub fn plan_fixes(registry: &Registry, scan: &Scan, fill_metadata: bool, outside_uids: &[String]) -> Vec<Planned> {
    let mut taken: HashSet<String> = outside_uids.iter().cloned().collect();
    for a in &scan.assets {
        if let SidecarState::Valid(f) = &a.sidecar {
            if !f.uid.is_empty() {
                taken.insert(f.uid.clone());
            }
        }
    }
    // Re-read the sidecars that need a write, in parallel.
    let rereads: Vec<Option<Parsed>> = scan
        .assets
        .par_iter()
        .map(|a| {
            let (FileState::Hashed { hash, bytes }, SidecarState::Valid(f)) = (&a.file, &a.sidecar) else {
                return None;
            };
            let stale = !f.fixable.is_empty() || (!f.hash.is_empty() && &f.hash != hash) || f.bytes != Some(*bytes);
            let fill = fill_metadata && (!f.has_tags || f.license.as_deref().is_none_or(|l| l.trim().is_empty()));
            if !stale && !fill {
                return None;
            }
            registry.read_sidecar(&a.rel).ok().flatten()
        })
        .collect();
    let now = crate::time::iso_now();
    let mut out = Vec::new();
    for (a, reread) in scan.assets.iter().zip(rereads) {
        let FileState::Hashed { hash, bytes } = &a.file else { continue };
        match (&a.sidecar, reread) {
            (SidecarState::Absent, _) => {
                let uid = registry::assign_uid(hash, &a.rel, &|u| taken.contains(u));
                taken.insert(uid.clone());
                let opts = registry::RegisterOptions { origin: Some("audit".into()), ..Default::default() };
                let mut asset = registry::new_sidecar(&a.rel, hash, *bytes, uid.clone(), &opts);
                if fill_metadata {
                    fill(&mut asset, &a.rel);
                }
                let detail = format!("new sidecar, uid {uid}");
                out.push(Planned {
                    change: Change { rel: a.rel.clone(), asset, previous: None },
                    action: Action::Register,
                    detail,
                });
            }
            (SidecarState::Valid(_), Some(parsed)) => {
                let mut next = registry::refreshed(&parsed, &a.rel, hash, *bytes, &|u| taken.contains(u));
                taken.insert(next.uid.clone());
                let mut fields = changed_fields(&parsed, &next);
                let machine = !fields.is_empty() || !parsed.fixable.is_empty();
                if fill_metadata {
                    let before = (next.tags.clone(), next.license.clone());
                    fill(&mut next, &a.rel);
                    if next.tags != before.0 {
                        fields.push("tags");
                    }
                    if next.license != before.1 {
                        fields.push("license");
                    }
                }
                if fields.is_empty() && parsed.fixable.is_empty() {
                    continue;
                }
                for m in &parsed.missing {
                    if !fields.contains(m) {
                        fields.push(m);
                    }
                }
                next.tags = sidecar::normalise_tags(&next.tags);
                next.updated_at = Some(now.clone());
                let action = if machine { Action::Refresh } else { Action::FillMetadata };
                let change = Change { rel: a.rel.clone(), asset: next, previous: Some(parsed.sidecar) };
                out.push(Planned { change, action, detail: fields.join(", ") });
            }
            _ => {}
        }
    }
    out
}

/// `--fill-metadata`: tags from the path when there are none, license `unknown` when blank.
fn fill(s: &mut Sidecar, rel: &RelPath) {
    if s.tags.is_empty() {
        s.tags = sidecar::tags_from_path(rel);
    }
    if s.license.as_deref().is_none_or(|l| l.trim().is_empty()) {
        s.license = Some("unknown".into());
    }
}

fn changed_fields(parsed: &Parsed, next: &Sidecar) -> Vec<&'static str> {
    let old = &parsed.sidecar;
    let mut f = Vec::new();
    if old.uid != next.uid {
        f.push("uid");
    }
    if old.path != next.path {
        f.push("path");
    }
    if old.hash != next.hash {
        f.push("hash");
    }
    if old.bytes != next.bytes {
        f.push("bytes");
    }
    f.retain(|x| !parsed.missing.contains(x));
    f
}

/// Update the scan after a planned change was written, so the findings describe the tree as it now
/// is. The new sidecar's stat is left unknown: it was just written, so the cache would not trust it
/// anyway (the next audit reads it once).
pub fn record_written(scan: &mut Scan, planned: &Planned) {
    if let Ok(i) = scan.assets.binary_search_by(|a| a.rel.cmp(&planned.change.rel)) {
        let a = &mut scan.assets[i];
        a.sidecar = SidecarState::Valid(Facts::of_sidecar(&planned.change.asset));
        a.sidecar_stat = None;
        a.sidecar_cached = false;
    }
}

/// Record a sidecar another writer wrote for `rel` meanwhile (see `record_written`).
pub fn record_found(scan: &mut Scan, rel: &RelPath, sidecar: &registry::Sidecar) {
    if let Ok(i) = scan.assets.binary_search_by(|a| a.rel.cmp(rel)) {
        let a = &mut scan.assets[i];
        a.sidecar = SidecarState::Valid(Facts::of_sidecar(sidecar));
        a.sidecar_stat = None;
        a.sidecar_cached = false;
    }
}

/// Run the rules over a scan (`release`: the release-gate rules too). A shard's scan leaves out the
/// checks across folders; `audit merge` runs them over the whole tree.
pub fn evaluate(scan: &Scan, policy: &registry::Policy, require_provenance: bool, release: bool) -> Vec<Finding> {
    rules::run_all(&rules::Ctx { scan, policy, require_provenance, whole_tree: scan.shard.is_none(), release })
}

#[cfg(test)]
mod tests;
