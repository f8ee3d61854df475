//! Finding assets and sidecars under the assets root: a parallel walk over `std::fs::read_dir`,
//! globset for the ignore rules (`obs.assets.ignore`), one `fstatat` per file through its folder's
//! handle. (walkdir stats by full path; with 40,000 files that path walk was the largest cost of a
//! stat-only re-audit, so the walk is done here directly.)
//!
//! Rules (DESIGN §6): a file is an asset unless it is a sidecar (`*.asset.json`), hidden (name starts
//! with `.`, at any level), or matched by an ignore glob. Symbolic links are never followed (no loops,
//! nothing outside the root) and are listed as skipped; so are sockets, FIFOs and devices. Names that
//! are not UTF-8 cannot be recorded in a sidecar: they are reported with a lossy name. This module
//! reads directory entries and metadata only, never file contents.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::relpath::RelPath;

/// The compiled `obs.assets.ignore` globs. A pattern without `/` matches a file or folder name at any
/// depth; a pattern with `/` matches the path relative to the assets root; a trailing `/` limits the
/// pattern to folders (`_meta/`).
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    file_names: GlobSet,
    file_paths: GlobSet,
    dir_names: GlobSet,
    dir_paths: GlobSet,
}

impl IgnoreRules {
    pub fn new(patterns: &[String]) -> Result<IgnoreRules> {
        let mut sets = [GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new()];
        for pattern in patterns {
            let (body, dir_only) = match pattern.strip_suffix('/') {
                Some(b) => (b, true),
                None => (pattern.as_str(), false),
            };
            let body = body.trim_start_matches('/');
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .build()
                .map_err(|e| anyhow!("obs.assets.ignore: bad glob {pattern:?}: {e}"))?;
            let by_path = body.contains('/');
            let slots: &[usize] = match (dir_only, by_path) {
                (true, false) => &[2],
                (true, true) => &[3],
                (false, false) => &[0, 2],
                (false, true) => &[1, 3],
            };
            for &i in slots {
                sets[i].add(glob.clone());
            }
        }
        let [a, b, c, d] = sets.map(|s| s.build());
        Ok(IgnoreRules {
            file_names: a.context("obs.assets.ignore")?,
            file_paths: b.context("obs.assets.ignore")?,
            dir_names: c.context("obs.assets.ignore")?,
            dir_paths: d.context("obs.assets.ignore")?,
        })
    }

    /// True when a file at `rel` is hidden or ignored (its folders are checked by the walk).
    pub fn ignores_file(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        name.starts_with('.')
            || (!self.file_names.is_empty() && self.file_names.is_match(name))
            || (!self.file_paths.is_empty() && self.file_paths.is_match(rel))
    }

    /// True when the folder at `rel` is hidden or ignored (nothing below it is looked at).
    pub fn ignores_dir(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        name.starts_with('.')
            || (!self.dir_names.is_empty() && self.dir_names.is_match(name))
            || (!self.dir_paths.is_empty() && self.dir_paths.is_match(rel))
    }

    /// True when `rel` or one of its folders is hidden or ignored.
    pub fn ignores_path(&self, rel: &RelPath) -> bool {
        let s = rel.as_str();
        let mut end = 0;
        for dir in rel.dirs() {
            end += dir.len();
            if self.ignores_dir(&s[..end]) {
                return true;
            }
            end += 1;
        }
        self.ignores_file(s)
    }
}

/// What the stat cache compares: size, modification time, inode, and status-change time (ns). The
/// ctime cannot be set by programs, so an edit that restores the old mtime is still noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub ctime_ns: i64,
}

impl FileStat {
    /// The stat of a file listed without a stat (see [`discover_each`]); never equal to a real one.
    pub const UNKNOWN: FileStat = FileStat { size: 0, mtime_ns: i64::MIN, ino: 0, ctime_ns: i64::MIN };

    pub fn is_known(&self) -> bool {
        *self != FileStat::UNKNOWN
    }

    pub fn of(meta: &std::fs::Metadata) -> FileStat {
        FileStat {
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ino: meta.ino(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }

    /// The later of mtime and ctime: when the file last changed in any way.
    pub fn changed_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

/// One regular file found by the walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub rel: RelPath,
    pub stat: FileStat,
}

/// Something the walk could not use: reported (audit rule `unreadable`), never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    /// Relative to the assets root, lossy for names that are not UTF-8.
    pub path: String,
    pub message: String,
}

/// Something deliberately not followed (symbolic links, special files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Everything found under the root (or the scope), each list sorted by path.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub assets: Vec<Found>,
    pub sidecars: Vec<Found>,
    pub troubles: Vec<Trouble>,
    pub skipped: Vec<Skipped>,
}

/// One folder's files as the walk found them, each list sorted by path. A sidecar is always in the
/// same folder as its asset, so the two can be paired within one `Folder`.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    pub assets: Vec<Found>,
    pub sidecars: Vec<Found>,
}

/// Walk `root` (or only `scope`, a folder or file below it) and stat every candidate file.
///
/// Errors only when the root (or scope) itself cannot be read; everything below is reported in the
/// result.
pub fn discover(root: &Path, scope: Option<&RelPath>, rules: &IgnoreRules) -> Result<Discovery> {
    let files = std::sync::Mutex::new((Vec::new(), Vec::new()));
    let (troubles, skipped) = discover_each(root, scope, rules, true, &|folder: Folder| {
        let mut all = files.lock().unwrap_or_else(|p| p.into_inner());
        all.0.extend(folder.assets);
        all.1.extend(folder.sidecars);
    })?;
    let (mut assets, mut sidecars) = files.into_inner().unwrap_or_else(|p| p.into_inner());
    assets.sort_unstable_by(|a: &Found, b: &Found| a.rel.cmp(&b.rel));
    sidecars.sort_unstable_by(|a: &Found, b: &Found| a.rel.cmp(&b.rel));
    Ok(Discovery { assets, sidecars, troubles, skipped })
}

/// Like [`discover`], but hands each folder's files to `visit` as soon as they are listed, on the
/// thread that walked the folder, so work on one folder overlaps the walk of the others. Folders
/// are read in parallel (one rayon task each). With `stat`, files are stat'ed through the folder's
/// open handle (`fstatat`, no path walk from `/` per file); without it their stat is
/// [`FileStat::UNKNOWN`] (a caller that opens every file anyway can `fstat` the handle, which is
/// cheaper still). Returns the troubles and skipped entries, sorted by path.
pub fn discover_each(
    root: &Path,
    scope: Option<&RelPath>,
    rules: &IgnoreRules,
    stat: bool,
    visit: &(dyn Fn(Folder) + Sync),
) -> Result<(Vec<Trouble>, Vec<Skipped>)> {
    let meta = std::fs::metadata(root).map_err(|e| anyhow!("cannot read the assets root {}: {e}", root.display()))?;
    if !meta.is_dir() {
        bail!("the assets root {} is not a directory", root.display());
    }
    let (start, prefix) = match scope {
        Some(s) => {
            if rules.ignores_path(s) {
                return Ok((Vec::new(), Vec::new()));
            }
            (s.under(root), s.to_string())
        }
        None => (root.to_path_buf(), String::new()),
    };
    let start_meta = std::fs::symlink_metadata(&start).with_context(|| format!("cannot read {}", start.display()))?;
    if start_meta.file_type().is_symlink() {
        bail!("{} is a symbolic link; links are not followed", start.display());
    }
    if !start_meta.is_dir() {
        // A single file: the scope itself and its counterpart (the asset's sidecar, or the
        // sidecar's asset), so the pair is judged together.
        let rel = RelPath::parse(&prefix)?;
        let other = if rel.is_sidecar() { rel.asset_of_sidecar() } else { Some(rel.sidecar()) };
        let mut folder = Folder::default();
        let candidates = std::iter::once((rel, Some(start_meta))).chain(other.map(|o| (o, None)));
        for (rel, meta) in candidates {
            let meta = match meta {
                Some(m) => m,
                None => match std::fs::symlink_metadata(rel.under(root)) {
                    Ok(m) if m.is_file() && !rules.ignores_path(&rel) => m,
                    _ => continue,
                },
            };
            let found = Found { rel, stat: FileStat::of(&meta) };
            if found.rel.is_sidecar() {
                folder.sidecars.push(found);
            } else {
                folder.assets.push(found);
            }
        }
        visit(folder);
        return Ok((Vec::new(), Vec::new()));
    }
    let entries = std::fs::read_dir(&start).with_context(|| format!("cannot read {}", start.display()))?;
    let notes = std::sync::Mutex::new((Vec::new(), Vec::new()));
    let walk = Walk { rules, visit, notes: &notes, stat };
    rayon::scope(|s| walk.dir(s, entries, prefix));
    let (mut troubles, mut skipped): (Vec<Trouble>, Vec<Skipped>) =
        notes.into_inner().unwrap_or_else(|p| p.into_inner());
    troubles.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((troubles, skipped))
}

/// What every folder task of one walk shares.
struct Walk<'a> {
    rules: &'a IgnoreRules,
    stat: bool,
    visit: &'a (dyn Fn(Folder) + Sync),
    notes: &'a std::sync::Mutex<(Vec<Trouble>, Vec<Skipped>)>,
}

impl<'a> Walk<'a> {
    fn note(&self, troubles: Vec<Trouble>, skipped: Vec<Skipped>) {
        if troubles.is_empty() && skipped.is_empty() {
            return;
        }
        let mut n = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        n.0.extend(troubles);
        n.1.extend(skipped);
    }

    /// Read one folder (its handle is `entries`), stat its files in parallel, hand them to `visit`,
    /// and spawn a task for each sub-folder. Symbolic links are never followed, so there are no loops.
    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, entries: std::fs::ReadDir, prefix: String)
    where
        'a: 's,
    {
        let join = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let mut troubles = Vec::new();
        let mut skipped = Vec::new();
        let mut files: Vec<(String, std::fs::DirEntry)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    troubles.push(Trouble { path: prefix.clone(), message: format!("cannot list: {}", plain_io(&e)) });
                    break;
                }
            };
            let name = entry.file_name();
            let Ok(ft) = entry.file_type() else {
                troubles
                    .push(Trouble { path: join(&name.to_string_lossy()), message: "vanished while being read".into() });
                continue;
            };
            let Some(name) = name.to_str() else {
                // A hidden name is ignored whatever its encoding.
                if !name.as_encoded_bytes().starts_with(b".") {
                    let what = if ft.is_dir() { "folder" } else { "file" };
                    troubles.push(Trouble {
                        path: join(&name.to_string_lossy()),
                        message: format!("{what} name is not valid UTF-8; rename it so it can be recorded"),
                    });
                }
                continue;
            };
            let rel = join(name);
            if ft.is_dir() {
                if self.rules.ignores_dir(&rel) {
                    continue;
                }
                // Opened inside the task, so queued folders hold no file descriptors.
                let path = entry.path();
                scope.spawn(move |s| match std::fs::read_dir(&path) {
                    Ok(sub) => self.dir(s, sub, rel),
                    Err(e) => self
                        .note(vec![Trouble { path: rel, message: format!("cannot list: {}", plain_io(&e)) }], vec![]),
                });
            } else if self.rules.ignores_file(&rel) {
                continue;
            } else if ft.is_symlink() {
                skipped.push(Skipped { path: rel, reason: "symbolic link (not followed)".into() });
            } else if !ft.is_file() {
                skipped.push(Skipped { path: rel, reason: "not a regular file".into() });
            } else {
                files.push((rel, entry));
            }
        }
        // `DirEntry::metadata` stats relative to the folder's handle (no path walk from the root).
        let stats: Vec<(String, std::io::Result<FileStat>)> = if self.stat {
            files.into_par_iter().map(|(rel, e)| (rel, e.metadata().map(|m| FileStat::of(&m)))).collect()
        } else {
            files.into_iter().map(|(rel, _)| (rel, Ok(FileStat::UNKNOWN))).collect()
        };
        let mut folder = Folder::default();
        for (rel, stat) in stats {
            let stat = match stat {
                Ok(stat) => stat,
                Err(e) => {
                    troubles.push(Trouble { path: rel, message: vanished_or(&e) });
                    continue;
                }
            };
            match RelPath::parse_owned(rel) {
                Ok(rel) => {
                    let found = Found { rel, stat };
                    if found.rel.is_sidecar() {
                        folder.sidecars.push(found);
                    } else {
                        folder.assets.push(found);
                    }
                }
                Err((rel, e)) => troubles.push(Trouble { path: rel, message: e.to_string() }),
            }
        }
        self.note(troubles, skipped);
        if !folder.assets.is_empty() || !folder.sidecars.is_empty() {
            folder.assets.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
            folder.sidecars.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
            (self.visit)(folder);
        }
    }
}

/// "vanished during the audit" for NotFound, else "cannot read: <error>".
pub fn vanished_or(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "vanished while being read".to_string()
    } else {
        format!("cannot read: {}", plain_io(e))
    }
}

/// An io::Error without the "(os error N)" suffix.
pub fn plain_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IgnoreRules {
        IgnoreRules::new(&crate::config::Config::defaults().obs.assets.ignore).unwrap()
    }

    #[test]
    fn ignore_rules() {
        let r = rules();
        assert!(r.ignores_file("a/b.tmp"));
        assert!(r.ignores_file("a/.hidden.png"));
        assert!(r.ignores_file("x~"));
        assert!(!r.ignores_file("a/b.png"));
        assert!(r.ignores_dir("_meta"));
        assert!(r.ignores_dir("a/_meta"));
        assert!(!r.ignores_dir("meta"));
        assert!(r.ignores_path(&RelPath::parse("_meta/x.png").unwrap()));
        let by_path = IgnoreRules::new(&["drafts/*.png".into(), "cache/".into()]).unwrap();
        assert!(by_path.ignores_file("drafts/a.png"));
        assert!(!by_path.ignores_file("other/drafts/a.png"));
        assert!(by_path.ignores_dir("x/cache"));
    }

    #[test]
    fn walk_sorts_classifies_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["b/2.png", "a/1.png", "a/1.png.asset.json", "a/.hidden", "_meta/x.png", "c.tmp", "top.ogg"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("a/etc")).unwrap();
        std::os::unix::fs::symlink(root, root.join("loop")).unwrap();
        let d = discover(root, None, &rules()).unwrap();
        let names: Vec<_> = d.assets.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(names, ["a/1.png", "b/2.png", "top.ogg"]);
        assert_eq!(d.sidecars[0].rel.as_str(), "a/1.png.asset.json");
        assert_eq!(d.assets[0].stat.size, 7);
        let skipped: Vec<_> = d.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["a/etc", "loop"]);
        let scoped = discover(root, Some(&RelPath::parse("b").unwrap()), &rules()).unwrap();
        assert_eq!(scoped.assets.len(), 1);
    }

    #[test]
    fn non_utf8_names_are_troubles_not_panics() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"bad\xffname.png");
        std::fs::write(dir.path().join(name), b"x").unwrap();
        let d = discover(dir.path(), None, &rules()).unwrap();
        assert!(d.assets.is_empty());
        assert_eq!(d.troubles.len(), 1);
        assert_eq!(d.troubles[0].path, "bad\u{fffd}name.png");
        assert!(d.troubles[0].message.contains("not valid UTF-8"));
    }

    #[test]
    fn missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = discover(&dir.path().join("nope"), None, &rules()).unwrap_err().to_string();
        assert!(err.contains("cannot read the assets root"), "{err}");
    }
}
