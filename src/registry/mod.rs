//! The asset registry (DESIGN §6): files under the assets root, each described by a JSON sidecar
//! beside it. Files are the source of truth; [`Index`] is a derived, rebuildable view.
//!
//! Owns: discovering assets ([`discover`]), the sidecar format ([`sidecar`]), identity (`uid`),
//! registration, refresh of machine fields, metadata edits, removal to the trash, the license policy
//! ([`license`]) and the registry events each operation returns ([`events`]). Every write goes through
//! `crate::fs`. Must not: modify asset bytes, follow symbolic links, write outside the assets root
//! (except the trash under the log folder), publish hooks or print (callers do that).

pub mod credits;
pub mod discover;
pub mod events;
pub mod index;
pub mod license;
pub mod relpath;
pub mod sidecar;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde_json::{Map, Value};

pub use discover::{Discovery, FileStat, Found, IgnoreRules, Skipped, Trouble};
pub use events::{to_hooks, RegistryEvent};
pub use index::{record, Index, Page, Problem, Query};
pub use license::{Policy, Verdict};
pub use relpath::{PathError, RelPath};
pub use sidecar::{Invalid, Parsed, Sidecar, SCHEMA, SUFFIX};

use crate::config::Config;
use crate::paths::Paths;

/// Failures a caller branches on (HTTP status, exit code). Other failures are plain I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0} does not exist")]
    NoSuchFile(String),
    #[error("{0} is not registered (it has no sidecar)")]
    NotRegistered(String),
    #[error("{0} is hidden or matched by obs.assets.ignore, so it cannot be an asset")]
    Ignored(String),
    #[error("sidecar {sidecar} is invalid: {error}")]
    InvalidSidecar { sidecar: String, error: Invalid },
    #[error("{0} already exists with different content")]
    Exists(String),
    /// A batched update whose sidecar was changed by another writer after the change was planned.
    #[error("{0} changed meanwhile; left as it is")]
    Changed(String),
    /// A new sidecar that another writer created after the change was planned.
    #[error("{0} appeared meanwhile; left as it is")]
    Appeared(String),
    /// A read-modify-write that kept losing to other writers.
    #[error("{0} kept changing while this edit was retried; try again")]
    Busy(String),
}

/// Options for a registration (CLI flags, HTTP body). Empty options register with derived values.
#[derive(Debug, Clone, Default)]
pub struct RegisterOptions {
    /// Overrides the derived `type`.
    pub asset_type: Option<String>,
    pub tags: Vec<String>,
    pub license: Option<String>,
    /// Recorded in `origin` for a new asset (`register`, `copy`, `audit`, `watch`, `upload`).
    pub origin: Option<String>,
    /// Merged into `meta` (a `null` value removes a key).
    pub meta: Map<String, Value>,
    /// Merged into `provenance` (a `null` value removes a key).
    pub provenance: Map<String, Value>,
}

impl RegisterOptions {
    /// Options from a `metadata` object, as the API's `metadata` and the CLI's `--meta` give it:
    /// `tags` (a list, or a comma-separated string), `license` and `provenance` go to their sidecar
    /// fields, everything else into `meta`. An error names the field (`metadata.tags`) and says what
    /// was expected.
    pub fn from_metadata(
        metadata: Map<String, Value>,
        asset_type: Option<String>,
        origin: &str,
    ) -> Result<RegisterOptions, (String, String)> {
        let mut opts = RegisterOptions {
            asset_type: asset_type.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            origin: Some(origin.to_string()),
            ..Default::default()
        };
        for (k, v) in metadata {
            let bad =
                |what: &str| (format!("metadata.{k}"), format!("expected {what}, found {}", crate::config::kind(&v)));
            match k.as_str() {
                "tags" => match &v {
                    Value::Array(items) => {
                        for t in items {
                            match t.as_str() {
                                Some(s) => opts.tags.push(s.to_string()),
                                None => return Err(bad("a list of strings")),
                            }
                        }
                    }
                    Value::String(s) => opts.tags.extend(s.split(',').map(|t| t.trim().to_string())),
                    Value::Null => {}
                    _ => return Err(bad("a list of strings")),
                },
                "license" => match &v {
                    Value::String(s) => opts.license = Some(s.trim().to_string()).filter(|s| !s.is_empty()),
                    Value::Null => {}
                    _ => return Err(bad("a string")),
                },
                "provenance" => match v {
                    Value::Object(m) => opts.provenance = m,
                    Value::Null => {}
                    _ => return Err(bad("an object")),
                },
                _ => {
                    opts.meta.insert(k, v);
                }
            }
        }
        Ok(opts)
    }
}

/// Where a file copied in lands when no destination is given, for the CLI (`assets register --copy`)
/// and the API (`copy: true`, uploads) alike: `<type>/<file name>`, with the type given, else derived
/// from the name as for a file at the root (`image`, `audio`, `json`, else `generic`). Only the
/// name's last component counts.
pub fn copy_destination(asset_type: Option<&str>, file_name: &str) -> Result<RelPath, String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.is_empty() || base == "." || base == ".." {
        return Err("the file has no usable name; give a destination".to_string());
    }
    let folder = match asset_type.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_string(),
        None => sidecar::derived_type_of(base).to_string(),
    };
    RelPath::parse(&format!("{folder}/{base}")).map_err(|e| e.to_string())
}

/// A metadata edit. Fields left at their default change nothing.
#[derive(Debug, Clone, Default)]
pub struct MetaPatch {
    pub add_tags: Vec<String>,
    /// Compared case-insensitively.
    pub remove_tags: Vec<String>,
    /// Replaces the tag list (before `add_tags`/`remove_tags` apply).
    pub set_tags: Option<Vec<String>>,
    /// `Some(None)` clears the license.
    pub license: Option<Option<String>>,
    pub asset_type: Option<String>,
    /// Merged into `meta` (a `null` value removes a key).
    pub meta: Map<String, Value>,
    /// Merged into `provenance` (a `null` value removes a key).
    pub provenance: Map<String, Value>,
}

/// The result of one operation: the sidecar as it now is (as it was, for a removal) and the events.
/// `events` is empty when nothing needed to change.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub asset: Sidecar,
    pub events: Vec<RegistryEvent>,
}

/// A sidecar write planned by a batch (the audit's `--fix`): `previous` is `None` for a new asset.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rel: RelPath,
    pub asset: Sidecar,
    pub previous: Option<Sidecar>,
}

impl Change {
    /// The events this change causes once written, in the original order.
    pub fn events(&self, sidecar_abs: PathBuf) -> Vec<RegistryEvent> {
        let written = RegistryEvent::AssetSidecarWritten { asset: self.asset.clone(), sidecar: sidecar_abs };
        match &self.previous {
            None => vec![written, RegistryEvent::AssetRegistered { asset: self.asset.clone() }],
            Some(prev) => vec![
                written,
                RegistryEvent::AssetMetaUpdated {
                    asset: self.asset.clone(),
                    previous_hash: (!prev.hash.is_empty() && prev.hash != self.asset.hash).then(|| prev.hash.clone()),
                    previous_path: (prev.path != self.asset.path).then(|| prev.path.clone()),
                },
            ],
        }
    }
}

/// Handle on the registry of one runtime root. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    trash: PathBuf,
    rules: IgnoreRules,
}

impl Registry {
    pub fn open(paths: &Paths, config: &Config) -> Result<Registry> {
        Ok(Registry {
            root: paths.assets_root.clone(),
            trash: paths.trash_dir(),
            rules: IgnoreRules::new(&config.obs.assets.ignore)?,
        })
    }

    /// The assets root (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn rules(&self) -> &IgnoreRules {
        &self.rules
    }

    pub fn trash_dir(&self) -> &Path {
        &self.trash
    }

    /// Absolute path of an asset (or sidecar).
    pub fn abs(&self, rel: &RelPath) -> PathBuf {
        rel.under(&self.root)
    }

    /// Absolute path of an asset's sidecar.
    pub fn sidecar_abs(&self, rel: &RelPath) -> PathBuf {
        rel.sidecar().under(&self.root)
    }

    /// Walk the assets root (or `scope` below it).
    pub fn discover(&self, scope: Option<&RelPath>) -> Result<Discovery> {
        discover::discover(&self.root, scope, &self.rules)
    }

    /// Walk the assets root (or `scope`), handing each folder's files to `visit` as soon as they
    /// are found, stat'ed or not (see [`discover::discover_each`]). Returns the troubles and skipped
    /// entries.
    pub fn discover_each(
        &self,
        scope: Option<&RelPath>,
        stat: bool,
        visit: &(dyn Fn(discover::Folder) + Sync),
    ) -> Result<(Vec<Trouble>, Vec<Skipped>)> {
        discover::discover_each(&self.root, scope, &self.rules, stat, visit)
    }

    /// The asset path of an existing file given on the command line (absolute or relative to the
    /// current directory): a regular file inside the root, not behind a symbolic link, not ignored.
    pub fn locate(&self, path: &Path) -> Result<RelPath, RegistryError> {
        if !path.exists() && std::fs::symlink_metadata(path).is_err() {
            return Err(RegistryError::NoSuchFile(relpath::lossy(path)));
        }
        let rel = relpath::check_inside(&self.root, path)?;
        self.check_not_ignored(&rel)?;
        Ok(rel)
    }

    fn check_not_ignored(&self, rel: &RelPath) -> Result<(), RegistryError> {
        if self.rules.ignores_path(rel) {
            return Err(RegistryError::Ignored(rel.to_string()));
        }
        Ok(())
    }

    /// Read and validate the sidecar of `rel`; `Ok(None)` when there is none.
    pub fn read_sidecar(&self, rel: &RelPath) -> Result<Option<Parsed>> {
        let path = self.sidecar_abs(rel);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        sidecar::parse(&bytes, rel)
            .map(Some)
            .map_err(|error| RegistryError::InvalidSidecar { sidecar: rel.sidecar().to_string(), error }.into())
    }

    fn read_valid(&self, rel: &RelPath) -> Result<Parsed> {
        self.read_sidecar(rel)?.ok_or_else(|| RegistryError::NotRegistered(rel.to_string()).into())
    }

    fn hash(&self, rel: &RelPath) -> Result<(String, u64)> {
        let path = self.abs(rel);
        match crate::digest::sha256_file(&path) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::NoSuchFile(rel.to_string()).into())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// [`Registry::hash`] of `rel`, computed on the first call for `memo` only: a retried edit does
    /// not hash the file again.
    fn hash_once<'m>(&self, rel: &RelPath, memo: &'m std::cell::OnceCell<(String, u64)>) -> Result<&'m (String, u64)> {
        if memo.get().is_none() {
            let _ = memo.set(self.hash(rel)?);
        }
        Ok(memo.get().expect("set above"))
    }

    /// Register the file at `rel` (already inside the root). A file that already has a sidecar gets
    /// `opts` merged in and its machine fields refreshed instead. `taken` says whether a uid is in use
    /// by another asset (ask the [`Index`]); a clash gets a uid derived from the hash and the path.
    pub fn register(&self, rel: &RelPath, opts: &RegisterOptions, taken: &dyn Fn(&str) -> bool) -> Result<Outcome> {
        relpath::check_inside(&self.root, &self.abs(rel)).map_err(RegistryError::from)?;
        self.check_not_ignored(rel)?;
        let (hash, bytes) = self.hash(rel)?;
        self.edit(rel, |current| match current {
            Some(parsed) => {
                let patch = MetaPatch {
                    add_tags: opts.tags.clone(),
                    license: opts.license.clone().map(Some),
                    asset_type: opts.asset_type.clone(),
                    meta: opts.meta.clone(),
                    provenance: opts.provenance.clone(),
                    ..Default::default()
                };
                let mut next = refreshed(&parsed, rel, &hash, bytes, taken);
                apply_patch(&mut next, &patch);
                Ok(update_plan(rel, parsed, next))
            }
            None => {
                let uid = assign_uid(&hash, rel, taken);
                let asset = new_sidecar(rel, &hash, bytes, uid, opts);
                Ok(Plan::Write(Change { rel: rel.clone(), asset, previous: None }))
            }
        })
    }

    /// Re-hash `rel` and refresh its machine fields (`hash`, `bytes`, `path`, missing fields); human
    /// fields are kept. No events when nothing changed.
    pub fn refresh(&self, rel: &RelPath, taken: &dyn Fn(&str) -> bool) -> Result<Outcome> {
        let hashed = std::cell::OnceCell::new();
        self.edit(rel, |current| {
            let parsed = current.ok_or_else(|| RegistryError::NotRegistered(rel.to_string()))?;
            let (hash, bytes) = self.hash_once(rel, &hashed)?;
            let next = refreshed(&parsed, rel, hash, *bytes, taken);
            Ok(update_plan(rel, parsed, next))
        })
    }

    /// Edit human fields. Machine fields missing from a hand-written sidecar are filled (which hashes
    /// the file); present ones are left alone.
    pub fn update_meta(&self, rel: &RelPath, patch: &MetaPatch, taken: &dyn Fn(&str) -> bool) -> Result<Outcome> {
        let hashed = std::cell::OnceCell::new();
        self.edit(rel, |current| {
            let parsed = current.ok_or_else(|| RegistryError::NotRegistered(rel.to_string()))?;
            let mut next = if parsed.fixable.is_empty() {
                parsed.sidecar.clone()
            } else {
                let (hash, bytes) = self.hash_once(rel, &hashed)?;
                refreshed(&parsed, rel, hash, *bytes, taken)
            };
            apply_patch(&mut next, patch);
            Ok(update_plan(rel, parsed, next))
        })
    }

    /// A read-modify-write of the sidecar of `rel`: `plan` gets the sidecar as it is now (`None`:
    /// there is none) and says what to write; the write happens only if the sidecar is still the
    /// one `plan` saw (see [`Registry::commit`]), otherwise `plan` runs again on the new one. So two
    /// processes editing one sidecar at once both get their edit in.
    fn edit(&self, rel: &RelPath, plan: impl Fn(Option<Parsed>) -> Result<Plan>) -> Result<Outcome> {
        let mut refused_new = false;
        for _ in 0..EDIT_ATTEMPTS {
            let current = self.read_sidecar(rel)?;
            if refused_new && current.is_none() {
                // Creating it was refused, yet there is still no sidecar to read: something that is
                // not a sidecar file (a dangling link, a folder) holds the name.
                anyhow::bail!("{} exists but is not a readable sidecar file; move it away", rel.sidecar());
            }
            match plan(current)? {
                Plan::Unchanged(asset) => return Ok(Outcome { asset, events: Vec::new() }),
                Plan::Write(change) => {
                    if let Some(events) = self.commit(&change)? {
                        return Ok(Outcome { asset: change.asset, events });
                    }
                    refused_new = change.previous.is_none();
                }
            }
        }
        Err(RegistryError::Busy(rel.sidecar().to_string()).into())
    }

    /// Write a planned change only if the sidecar is still the one it was planned from: a new
    /// asset's sidecar only where none exists (never replacing one), an update only over the exact
    /// sidecar in `previous`, checked and replaced under the sidecar's edit lock
    /// ([`crate::fs::lock_in_place`]). `Ok(None)` when another writer got there first; the events
    /// otherwise.
    pub fn commit(&self, change: &Change) -> Result<Option<Vec<RegistryEvent>>> {
        let path = self.sidecar_abs(&change.rel);
        let bytes = change.asset.to_bytes();
        match &change.previous {
            None => {
                if !crate::fs::write_new(&path, &bytes)? {
                    return Ok(None);
                }
            }
            Some(previous) => {
                let Some(_lock) = self.lock_unchanged(&change.rel, previous)? else { return Ok(None) };
                crate::fs::write_atomic(&path, &bytes)?;
            }
        }
        Ok(Some(change.events(path)))
    }

    /// The edit lock on the sidecar of `rel`, if that sidecar still reads as `previous`; `None` (no
    /// lock held) when it is gone or changed.
    fn lock_unchanged(&self, rel: &RelPath, previous: &Sidecar) -> Result<Option<crate::fs::EditLock>> {
        let lock = crate::fs::lock_in_place(&self.sidecar_abs(rel))?;
        let unchanged = matches!(self.read_sidecar(rel), Ok(Some(p)) if &p.sidecar == previous);
        Ok(lock.filter(|_| unchanged))
    }

    /// Write many sidecars with one durability barrier: stage all, `syncfs` once, rename each,
    /// fsync the folders. A folder's files are created and renamed by one thread (the kernel
    /// serialises them on the folder's lock anyway); different folders go in parallel. New-asset
    /// changes whose sidecar appeared in the meantime are refused rather than overwritten. Results
    /// are in the order of `changes`.
    pub fn write_batch(&self, changes: &[Change]) -> Vec<Result<Vec<RegistryEvent>>> {
        self.write_batch_gated(changes, || Ok(()))
    }

    /// [`Registry::write_batch`] with a gate between the durability barrier and the renames: when
    /// `before_commit` fails, nothing is renamed, the staged files are removed and every change
    /// fails with its error. `audit --fix` waits there for the previous batch's hook events, so
    /// they are appended while this batch is staged and synced, and still before it lands.
    pub fn write_batch_gated(
        &self,
        changes: &[Change],
        before_commit: impl FnOnce() -> Result<()>,
    ) -> Vec<Result<Vec<RegistryEvent>>> {
        let mut by_dir: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, c) in changes.iter().enumerate() {
            by_dir.entry(c.rel.as_str().rsplit_once('/').map_or("", |(d, _)| d)).or_default().push(i);
        }
        let groups: Vec<Vec<usize>> = by_dir.into_values().collect();
        let mut results: Vec<Option<Result<Vec<RegistryEvent>>>> = (0..changes.len()).map(|_| None).collect();
        let mut slots: Vec<Option<crate::fs::Staged>> = (0..changes.len()).map(|_| None).collect();
        let per_group: Vec<Vec<(usize, Result<crate::fs::Staged>)>> = groups
            .par_iter()
            .map(|g| {
                g.iter()
                    .map(|&i| (i, crate::fs::stage(&self.sidecar_abs(&changes[i].rel), &changes[i].asset.to_bytes())))
                    .collect()
            })
            .collect();
        for (i, staged) in per_group.into_iter().flatten() {
            match staged {
                Ok(s) => slots[i] = Some(s),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let targets: Vec<&Path> = slots.iter().flatten().map(|s| s.target()).collect();
        if let Err(e) = crate::fs::sync_filesystem(&self.root, &targets).and_then(|()| before_commit()) {
            let msg = format!("{e:#}");
            for s in slots.into_iter().flatten() {
                s.abort();
            }
            return changes.iter().map(|_| Err(anyhow::anyhow!("{msg}"))).collect();
        }
        let taken: Vec<Vec<(usize, crate::fs::Staged)>> =
            groups.iter().map(|g| g.iter().filter_map(|&i| slots[i].take().map(|s| (i, s))).collect()).collect();
        let committed: Vec<Vec<(usize, Result<PathBuf>)>> = taken
            .into_par_iter()
            .map(|g| g.into_iter().map(|(i, staged)| (i, commit_one(self, &changes[i], staged))).collect())
            .collect();
        let mut dirs = BTreeSet::new();
        for (i, r) in committed.into_iter().flatten() {
            results[i] = Some(r.map(|target| {
                if let Some(d) = target.parent() {
                    dirs.insert(d.to_path_buf());
                }
                changes[i].events(target)
            }));
        }
        for d in dirs {
            crate::fs::sync_dir(&d);
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("sidecar was not written")))).collect()
    }

    /// Take `rel` out of the registry: the file (when present) and its sidecar move to
    /// `logs/trash/<stamp>/<rel>` and `<rel>.asset.json`. Nothing is deleted.
    pub fn remove(&self, rel: &RelPath) -> Result<Outcome> {
        self.read_valid(rel)?;
        let mut stamp_dir = self.trash.join(crate::time::file_stamp());
        let mut n = 1;
        while rel.under(&stamp_dir).exists() || rel.sidecar().under(&stamp_dir).exists() {
            stamp_dir = self.trash.join(format!("{}-{n}", crate::time::file_stamp()));
            n += 1;
        }
        let file = self.abs(rel);
        if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            crate::fs::move_file(&file, &rel.under(&stamp_dir))?;
        }
        // The sidecar last, under its edit lock and read again, so an edit that landed meanwhile is
        // what goes to the trash (and into the event). The lock is not held while the file moves,
        // which may be a copy across filesystems.
        let Some(_lock) = crate::fs::lock_in_place(&self.sidecar_abs(rel))? else {
            return Err(RegistryError::NotRegistered(rel.to_string()).into());
        };
        let parsed = self.read_valid(rel)?;
        crate::fs::move_file(&self.sidecar_abs(rel), &rel.sidecar().under(&stamp_dir))?;
        let asset = parsed.sidecar;
        Ok(Outcome { asset: asset.clone(), events: vec![RegistryEvent::AssetRemoved { asset, trashed_to: stamp_dir }] })
    }

    /// Copy `source` (anywhere) to `dest` under the root, then register it. An existing `dest` with
    /// the same bytes is registered as it is; with other bytes it is refused.
    pub fn import(
        &self,
        source: &Path,
        dest: &RelPath,
        opts: &RegisterOptions,
        taken: &dyn Fn(&str) -> bool,
    ) -> Result<Outcome> {
        let meta = std::fs::metadata(source).map_err(|_| RegistryError::NoSuchFile(relpath::lossy(source)))?;
        if !meta.is_file() {
            return Err(RegistryError::Path(PathError::NotAFile(source.to_path_buf())).into());
        }
        crate::fs::ensure_dir(&self.root)?;
        let mut temp = crate::fs::TempFile::create_in(&self.root, "import")?;
        let mut input = std::fs::File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        std::io::copy(&mut input, &mut temp).with_context(|| format!("cannot copy {}", source.display()))?;
        self.import_temp(temp, dest, opts, taken)
    }

    /// Put a file already written to `temp` (a hidden temp file inside the assets root: an upload, or a
    /// copy made by [`Registry::import`]) at `dest` and register it. Nothing is ever replaced: an
    /// identical file already there is registered as it is, a different one is
    /// [`RegistryError::Exists`]. For a new asset the sidecar is written first and the file renamed into
    /// place after it, so a watcher that sees the file appear finds it already described and it is
    /// registered once, not twice. The hash is taken of the temp file, not of the source, which may
    /// change meanwhile.
    pub fn import_temp(
        &self,
        temp: crate::fs::TempFile,
        dest: &RelPath,
        opts: &RegisterOptions,
        taken: &dyn Fn(&str) -> bool,
    ) -> Result<Outcome> {
        let hash_temp = || {
            crate::digest::sha256_file(temp.path()).with_context(|| format!("cannot read {}", temp.path().display()))
        };
        if !self.prepare_dest(dest, || hash_temp().map(|(h, _)| h))? {
            return self.register(dest, opts, taken); // the same bytes are already there
        }
        let abs = self.abs(dest);
        let sidecar = self.sidecar_abs(dest);
        if std::fs::symlink_metadata(&sidecar).is_ok() {
            // An orphan sidecar waits for this file: place it, then merge into the sidecar.
            if !temp.persist_new(&abs)? {
                return Err(RegistryError::Exists(dest.to_string()).into());
            }
            return self.register(dest, opts, taken);
        }
        let (hash, bytes) = hash_temp()?;
        let asset = new_sidecar(dest, &hash, bytes, assign_uid(&hash, dest, taken), opts);
        let change = Change { rel: dest.clone(), asset: asset.clone(), previous: None };
        let events = match self.write_batch(std::slice::from_ref(&change)).pop() {
            Some(Ok(events)) => events,
            // Someone else's sidecar appeared meanwhile (a watcher or another writer): keep it.
            Some(Err(_)) if std::fs::symlink_metadata(&sidecar).is_ok() => {
                return Err(RegistryError::Exists(dest.sidecar().to_string()).into())
            }
            Some(Err(e)) => return Err(e),
            None => anyhow::bail!("no result for the sidecar of {dest}"),
        };
        match temp.persist_new(&abs) {
            Ok(true) => Ok(Outcome { asset, events }),
            result => {
                // The sidecar describes a file that did not arrive: take it back (no human edits yet).
                let _ = std::fs::remove_file(&sidecar);
                result?;
                Err(RegistryError::Exists(dest.to_string()).into())
            }
        }
    }

    /// Write `bytes` to `dest` under the root (an upload), then register it; same rules as
    /// [`Registry::import`].
    pub fn import_bytes(
        &self,
        bytes: &[u8],
        dest: &RelPath,
        opts: &RegisterOptions,
        taken: &dyn Fn(&str) -> bool,
    ) -> Result<Outcome> {
        use std::io::Write as _;
        crate::fs::ensure_dir(&self.root)?;
        let mut temp = crate::fs::TempFile::create_in(&self.root, "upload")?;
        temp.write_all(bytes).with_context(|| format!("cannot write {}", temp.path().display()))?;
        self.import_temp(temp, dest, opts, taken)
    }

    /// Check a destination; `Ok(true)` when the bytes must be written, `Ok(false)` when an identical
    /// file is already there.
    fn prepare_dest(&self, dest: &RelPath, source_hash: impl FnOnce() -> Result<String>) -> Result<bool> {
        if dest.is_sidecar() {
            return Err(RegistryError::Path(PathError::IsSidecar(dest.to_string())).into());
        }
        self.check_not_ignored(dest)?;
        let abs = self.abs(dest);
        // Every existing folder on the way must be a real folder inside the root.
        let mut dir = self.root.clone();
        for part in dest.dirs() {
            dir.push(part);
            if let Ok(m) = std::fs::symlink_metadata(&dir) {
                if !m.is_dir() {
                    return Err(RegistryError::Path(PathError::Symlink(dir)).into());
                }
            }
        }
        match std::fs::symlink_metadata(&abs) {
            Err(_) => Ok(true),
            Ok(m) if !m.is_file() => Err(RegistryError::Path(PathError::NotAFile(abs)).into()),
            Ok(_) => {
                let existing =
                    crate::digest::sha256_file(&abs).with_context(|| format!("cannot read {}", abs.display()))?.0;
                if existing == source_hash()? {
                    Ok(false)
                } else {
                    Err(RegistryError::Exists(dest.to_string()).into())
                }
            }
        }
    }
}

/// Put one staged sidecar in place: a new asset's sidecar never replaces one that appeared
/// meanwhile (the watcher or another process may have written it); an update replaces the old one
/// only if it is still the one the change was planned from (checked under its edit lock).
fn commit_one(registry: &Registry, change: &Change, staged: crate::fs::Staged) -> Result<PathBuf> {
    let target = staged.target().to_path_buf();
    match &change.previous {
        Some(previous) => match registry.lock_unchanged(&change.rel, previous) {
            Ok(Some(_lock)) => staged.commit()?,
            other => {
                staged.abort();
                other?;
                return Err(RegistryError::Changed(change.rel.sidecar().to_string()).into());
            }
        },
        None => {
            if !staged.commit_new()? {
                return Err(RegistryError::Appeared(change.rel.sidecar().to_string()).into());
            }
        }
    }
    Ok(target)
}

/// How often a read-modify-write of a sidecar is tried when other writers keep changing it under it
/// (the registry's edits and the watcher's).
pub const EDIT_ATTEMPTS: usize = 8;

/// What a read-modify-write decided.
// Short-lived return value, moved once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Write(Change),
    /// Nothing to write; the sidecar as it is.
    Unchanged(Sidecar),
}

/// The plan that turns `parsed` into `next`: nothing when they are equal and nothing is missing,
/// else a write with a new `updated_at`.
fn update_plan(rel: &RelPath, parsed: Parsed, mut next: Sidecar) -> Plan {
    next.tags = sidecar::normalise_tags(&next.tags);
    if next == parsed.sidecar && parsed.fixable.is_empty() {
        return Plan::Unchanged(next);
    }
    next.updated_at = Some(crate::time::iso_now());
    Plan::Write(Change { rel: rel.clone(), asset: next, previous: Some(parsed.sidecar) })
}

/// The provenance guard of `GET /assets/{uid}/download` (and any export): `Err(reason)` when the
/// asset's license is denied by the policy, or a license or provenance source is required and
/// missing. The same rules as the audit's `disallowed-license`, `missing-license` (with
/// `licenses.require`) and `missing-provenance` (with `require_provenance`).
pub fn download_guard(asset: &Sidecar, policy: &Policy, require_provenance: bool) -> Result<(), String> {
    match asset.license_text() {
        None if policy.require => return Err("the asset has no license (obs.audit.licenses.require)".into()),
        None => {}
        Some(l) => match policy.check(l) {
            Verdict::Allowed => {}
            Verdict::Denied(why) => return Err(format!("license {l:?}: {why}")),
            Verdict::Invalid(why) => return Err(format!("license {l:?} is not an SPDX expression: {why}")),
        },
    }
    if require_provenance && asset.provenance_source().is_none() {
        return Err("the asset has no provenance source (obs.audit.require_provenance)".into());
    }
    Ok(())
}

/// A fresh sidecar for a new asset.
pub fn new_sidecar(rel: &RelPath, hash: &str, bytes: u64, uid: String, opts: &RegisterOptions) -> Sidecar {
    let now = crate::time::iso_now();
    let mut s = Sidecar {
        schema: SCHEMA,
        uid,
        asset_type: opts
            .asset_type
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| sidecar::derive_type(rel)),
        path: rel.to_string(),
        hash: hash.to_string(),
        bytes,
        tags: sidecar::normalise_tags(&opts.tags),
        license: opts.license.clone().filter(|l| !l.trim().is_empty()),
        credits: sidecar::Credits::default(),
        origin: opts.origin.clone(),
        version: 1,
        created_at: Some(now.clone()),
        updated_at: Some(now),
        meta: Map::new(),
        provenance: Map::new(),
        extra: Map::new(),
    };
    merge(&mut s.meta, &opts.meta);
    merge(&mut s.provenance, &opts.provenance);
    s
}

/// The uid for a new asset: the first 16 hex of its hash, or (when another asset already has that
/// uid, e.g. a duplicate) 16 hex of `sha256(hash:path)`, then of `sha256(hash:path:n)`.
pub fn assign_uid(hash: &str, rel: &RelPath, taken: &dyn Fn(&str) -> bool) -> String {
    let first: String = hash.chars().take(16).collect();
    if !taken(&first) && sidecar::valid_uid(&first) {
        return first;
    }
    let mut n = 0u32;
    loop {
        let seed = if n == 0 { format!("{hash}:{rel}") } else { format!("{hash}:{rel}:{n}") };
        let candidate = crate::digest::sha256_hex(seed.as_bytes())[..16].to_string();
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// `parsed` with its machine fields brought up to date for the file at `rel` with `hash`/`bytes`:
/// `schema`, `path`, `hash`, `bytes`, a missing `uid` or `created_at`; `version` + 1 when recorded
/// content changes. Human fields are untouched. `updated_at` is set by the writer.
pub fn refreshed(parsed: &Parsed, rel: &RelPath, hash: &str, bytes: u64, taken: &dyn Fn(&str) -> bool) -> Sidecar {
    let mut s = parsed.sidecar.clone();
    s.schema = SCHEMA;
    s.path = rel.to_string();
    if s.hash != hash {
        if !s.hash.is_empty() {
            s.version += 1;
        }
        s.hash = hash.to_string();
    }
    s.bytes = bytes;
    if s.uid.is_empty() {
        s.uid = assign_uid(hash, rel, taken);
    }
    if s.created_at.is_none() {
        s.created_at = Some(crate::time::iso_now());
    }
    s
}

/// Apply a metadata edit to a sidecar (tags normalised by the writer).
pub fn apply_patch(s: &mut Sidecar, patch: &MetaPatch) {
    if let Some(tags) = &patch.set_tags {
        s.tags = tags.clone();
    }
    s.tags.extend(patch.add_tags.iter().cloned());
    if !patch.remove_tags.is_empty() {
        let drop: Vec<String> = patch.remove_tags.iter().map(|t| t.trim().to_lowercase()).collect();
        s.tags.retain(|t| !drop.contains(&t.trim().to_lowercase()));
    }
    s.tags = sidecar::normalise_tags(&s.tags);
    if let Some(license) = &patch.license {
        s.license = license.clone().filter(|l| !l.trim().is_empty());
    }
    if let Some(t) = patch.asset_type.as_ref().filter(|t| !t.trim().is_empty()) {
        s.asset_type = t.clone();
    }
    merge(&mut s.meta, &patch.meta);
    merge(&mut s.provenance, &patch.provenance);
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        if v.is_null() {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests;
