//! The scan: discover the tree, then hash files and read sidecars in parallel, using the stat cache
//! for anything unchanged.
//!
//! Each folder, as soon as the walk lists it, is split into tasks of [`TASK_FILES`] files run on
//! rayon; a task streams its files through `digest::sha256_each` (two at a time per core where the
//! CPU allows) and catches panics, redoing a task that panicked file by file so only the culprit
//! becomes a finding. Results come back in the input order (already sorted by path), so the
//! outcome does not depend on thread timing. Reads only; never writes.

use std::cell::RefCell;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::cache::{Entry, StatCache};
use super::shard::Shard;
use super::{AssetState, Facts, FileState, Scan, ScanStats, SidecarState};
use crate::registry::discover::vanished_or;
use crate::registry::discover::Folder;
use crate::registry::{sidecar, FileStat, Found, Registry, RelPath};

/// What to scan and how.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Only this folder or file below the assets root.
    pub scope: Option<RelPath>,
    /// Ignore the cache: rehash every file and re-read every sidecar.
    pub full: bool,
    /// Worker threads; 0 = one per core.
    pub jobs: usize,
    /// Only the folders of this shard.
    pub shard: Option<Shard>,
    /// Counters for a progress line, updated as files are listed and hashed.
    pub progress: Option<std::sync::Arc<Progress>>,
}

/// Live counts of a running scan, for a progress line (read from another thread).
#[derive(Debug, Default)]
pub struct Progress {
    /// Assets listed so far (the total, once the walk has ended).
    pub listed: std::sync::atomic::AtomicU64,
    /// Assets checked so far (hashed, or taken from the cache).
    pub checked: std::sync::atomic::AtomicU64,
    /// Bytes hashed so far.
    pub bytes: std::sync::atomic::AtomicU64,
    /// The walk has listed every folder.
    pub walked: std::sync::atomic::AtomicBool,
}

thread_local! {
    /// Sidecars are read whole into this (assets stream through `digest::sha256_each`'s buffers).
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The folder the previous file of this thread was in (root, folder below it): files come in
    /// path order, so most opens reuse it. The scan's worker threads end with the scan, and this
    /// with them.
    static DIR: RefCell<Option<(std::path::PathBuf, String, crate::fs::Dir)>> = const { RefCell::new(None) };
}

/// Open `rel` (a file below `root`) for reading through a cached handle on its folder.
fn open_rel(root: &Path, rel: &str) -> std::io::Result<std::fs::File> {
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    DIR.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.as_ref().is_none_or(|(r, d, _)| d != dir || r.as_path() != root) {
            let path = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
            *cached = Some((root.to_path_buf(), dir.to_string(), crate::fs::Dir::open(&path)?));
        }
        cached.as_ref().expect("set above").2.open_file(name)
    })
}

/// Scan the tree. Fails only when the assets root (or scope) cannot be read or the thread pool
/// cannot start; every per-file problem becomes part of the result.
pub fn scan(registry: &Registry, cache: &StatCache, opts: &ScanOptions) -> Result<Scan> {
    let started_at_ns = now_ns();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.jobs).build().context("cannot start worker threads")?;
    pool.install(|| {
        let root = registry.root();
        // One sorted run of assets per folder, and the orphans.
        let checked = std::sync::Mutex::new((Vec::<Vec<AssetState>>::new(), Vec::<Found>::new()));
        // Each folder is checked as soon as it is listed, so hashing overlaps the rest of the walk.
        // A full scan opens every file anyway: it takes the stat from the open handle instead.
        let (mut troubles, mut skipped) = registry.discover_each(opts.scope.as_ref(), !opts.full, &|folder| {
            if let Some(shard) = opts.shard {
                let first = folder.assets.first().or(folder.sidecars.first());
                if first.is_some_and(|f| !shard.owns(f.rel.as_str())) {
                    return;
                }
            }
            if let Some(p) = &opts.progress {
                p.listed.fetch_add(folder.assets.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            let (assets, orphans) = check_folder(root, &folder, cache, opts.full, opts.progress.as_deref());
            let mut all = checked.lock().unwrap_or_else(|p| p.into_inner());
            if !assets.is_empty() {
                all.0.push(assets);
            }
            all.1.extend(orphans);
        })?;
        if let Some(p) = &opts.progress {
            p.walked.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(shard) = opts.shard {
            troubles.retain(|t| shard.owns(&t.path));
            skipped.retain(|s| shard.owns(&s.path));
        }
        let (runs, mut orphans) = checked.into_inner().unwrap_or_else(|p| p.into_inner());
        let assets = merge_runs(runs);
        orphans.sort_by(|a, b| a.rel.cmp(&b.rel));
        let mut stats = ScanStats::default();
        for a in &assets {
            match (&a.file, a.file_cached) {
                (FileState::Hashed { bytes, .. }, false) => {
                    stats.files_hashed += 1;
                    stats.bytes_hashed += bytes;
                }
                (FileState::Hashed { .. }, true) => stats.files_cached += 1,
                _ => {}
            }
            if a.sidecar_stat.is_some() {
                if a.sidecar_cached {
                    stats.sidecars_cached += 1;
                } else {
                    stats.sidecars_read += 1;
                }
            }
        }
        Ok(Scan {
            assets,
            orphans,
            troubles,
            skipped,
            scope: opts.scope.clone(),
            shard: opts.shard,
            started_at_ns,
            stats,
        })
    })
}

/// The folders' sorted runs as one list sorted by path. Runs are ordered by their first path; when
/// they do not interleave (a folder's files all sort before or after a subfolder's, as in most trees)
/// they are concatenated without comparing or moving an asset twice, else a stable sort merges them.
fn merge_runs(mut runs: Vec<Vec<AssetState>>) -> Vec<AssetState> {
    runs.sort_unstable_by(|a, b| a[0].rel.cmp(&b[0].rel));
    let disjoint = runs.windows(2).all(|w| w[0][w[0].len() - 1].rel < w[1][0].rel);
    let mut assets = Vec::with_capacity(runs.iter().map(Vec::len).sum());
    for run in runs {
        assets.extend(run);
    }
    if !disjoint {
        assets.sort_by(|a, b| a.rel.cmp(&b.rel));
    }
    assets
}

/// Files per parallel task. A task hashes its files two at a time (see [`crate::digest::sha256_each`]):
/// whenever one file ends the next one takes its lane, so only the rest of whichever file ends last
/// is hashed alone. Small enough that a folder of a few dozen files still spreads over the cores.
const TASK_FILES: usize = 16;

/// Check one folder's assets in parallel (a panic in one becomes an `unreadable` finding for that
/// file) and pick out its orphan sidecars. Results are in path order.
pub(super) fn check_folder(
    root: &Path,
    folder: &Folder,
    cache: &StatCache,
    full: bool,
    progress: Option<&Progress>,
) -> (Vec<AssetState>, Vec<Found>) {
    let orphans: Vec<Found> = folder
        .sidecars
        .iter()
        .filter(|s| match s.rel.asset_of_sidecar() {
            Some(asset) => folder.assets.binary_search_by(|a| a.rel.cmp(&asset)).is_err(),
            None => true,
        })
        .cloned()
        .collect();
    let task = Task { root, folder, cache, full, progress };
    let assets = folder
        .assets
        .par_chunks(TASK_FILES)
        .flat_map_iter(|files| {
            catch_unwind(AssertUnwindSafe(|| task.check_all(files))).unwrap_or_else(|_| {
                // Something panicked: redo the files one by one so only the culprit is lost (it
                // panics again, so the panic hook reports it twice).
                files
                    .iter()
                    .map(|a| {
                        catch_unwind(AssertUnwindSafe(|| task.check_all(std::slice::from_ref(a)).remove(0)))
                            .unwrap_or_else(|panic| panicked(a, panic))
                    })
                    .collect()
            })
        })
        .collect();
    (assets, orphans)
}

/// The `unreadable` state of an asset whose check panicked.
fn panicked(a: &Found, panic: Box<dyn std::any::Any + Send>) -> AssetState {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    AssetState {
        rel: a.rel.clone(),
        stat: a.stat,
        file: FileState::Unreadable(format!("internal error while checking this file: {why}")),
        file_cached: false,
        sidecar: SidecarState::Absent,
        sidecar_stat: None,
        sidecar_cached: false,
    }
}

/// What checking a run of one folder's files needs.
struct Task<'a> {
    root: &'a Path,
    folder: &'a Folder,
    cache: &'a StatCache,
    full: bool,
    progress: Option<&'a Progress>,
}

impl Task<'_> {
    /// The sidecar listed beside `asset`, if any (both lists are sorted by path).
    fn sidecar_of(&self, asset: &RelPath) -> Option<&Found> {
        let name = asset.sidecar();
        let sidecars = &self.folder.sidecars;
        sidecars.binary_search_by(|s| s.rel.cmp(&name)).ok().map(|i| &sidecars[i])
    }

    /// Check `files` (consecutive, in path order); results in the same order.
    fn check_all(&self, files: &[Found]) -> Vec<AssetState> {
        let mut run = Run { task: self, files, states: Vec::with_capacity(files.len()), next_row: 0 };
        crate::digest::sha256_each(&mut run);
        debug_assert_eq!(run.states.len(), files.len());
        if let Some(p) = self.progress {
            p.checked.fetch_add(files.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        run.states
            .into_iter()
            .map(|(mut state, file)| {
                state.file = file.expect("sha256_each reports every message it was given");
                state
            })
            .collect()
    }

    /// The sidecar part of an asset's state: from the cache when its stat matches, else read.
    fn sidecar_state(&self, a: &Found, cached: Option<Entry>) -> (SidecarState, Option<FileStat>, bool) {
        let Some(s) = self.sidecar_of(&a.rel) else {
            return (SidecarState::Absent, None, false);
        };
        if let Some(facts) = cached.and_then(|e| e.sidecar(&s.stat)) {
            return (SidecarState::Valid(facts), Some(s.stat), true);
        }
        let mut stat = s.stat;
        let state = read_sidecar_rel(self.root, &s.rel, &a.rel, &mut stat);
        (state, Some(stat), false)
    }
}

/// One task's files as a stream of messages to hash: each file is opened when the hasher asks for
/// the next message; a cached hash or a file that cannot be opened yields no message and is
/// settled on the spot.
struct Run<'a> {
    task: &'a Task<'a>,
    files: &'a [Found],
    /// One per file taken so far, in order; a file being hashed holds `None` until it is done.
    states: Vec<(AssetState, Option<FileState>)>,
    /// Where the next file's cache row probably is (see [`StatCache::entry`]).
    next_row: usize,
}

impl crate::digest::Messages for Run<'_> {
    type Tag = usize;
    type Reader = std::fs::File;

    fn next(&mut self) -> Option<(usize, std::fs::File, Option<u64>)> {
        while let Some(a) = self.files.get(self.states.len()) {
            let i = self.states.len();
            #[cfg(test)]
            if a.rel.file_name() == super::tests::PANICS {
                panic!("checking {} panicked (test)", a.rel);
            }
            // A full scan ignores the cache.
            let cached = if self.task.full { None } else { self.task.cache.entry(a.rel.as_str(), &mut self.next_row) };
            let (sidecar, sidecar_stat, sidecar_cached) = self.task.sidecar_state(a, cached);
            let mut state = AssetState {
                rel: a.rel.clone(),
                stat: a.stat,
                file: FileState::Unreadable(String::new()), // replaced by the second half below
                file_cached: false,
                sidecar,
                sidecar_stat,
                sidecar_cached,
            };
            let rel = a.rel.as_str();
            if let Some(hash) = cached.and_then(|e| e.file(&a.stat)) {
                state.file_cached = true;
                self.states.push((state, Some(FileState::Hashed { hash: hash.to_string(), bytes: a.stat.size })));
                continue;
            }
            let opened = open_rel(self.task.root, rel).and_then(|file| {
                if !state.stat.is_known() {
                    state.stat = FileStat::of(&file.metadata()?);
                }
                Ok(file)
            });
            match opened {
                Ok(file) => {
                    let size = state.stat.size;
                    self.states.push((state, None));
                    return Some((i, file, Some(size)));
                }
                Err(e) => self.states.push((state, Some(FileState::Unreadable(vanished_or(&e))))),
            }
        }
        None
    }

    fn done(&mut self, i: usize, result: std::io::Result<([u8; 32], u64)>) {
        self.states[i].1 = Some(match result {
            Ok((digest, bytes)) => {
                if let Some(p) = self.task.progress {
                    p.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                }
                FileState::Hashed { hash: crate::digest::hex(&digest), bytes }
            }
            Err(e) => FileState::Unreadable(vanished_or(&e)),
        });
    }
}

/// Read and validate one sidecar (`sidecar`, of the asset `rel`) into the facts the rules need.
/// An unknown `stat` is filled from the open handle.
fn read_sidecar_rel(root: &Path, sidecar: &RelPath, rel: &RelPath, stat: &mut FileStat) -> SidecarState {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let read = open_rel(root, sidecar.as_str()).and_then(|f| {
            if !stat.is_known() {
                *stat = FileStat::of(&f.metadata()?);
            }
            read_whole(f, &mut buf, stat.size as usize)
        });
        match read {
            Ok(n) => match sidecar::quick(&buf[..n]) {
                Some(summary) => SidecarState::Valid(Facts::of_summary(summary, rel)),
                None => match sidecar::parse(&buf[..n], rel) {
                    Ok(parsed) => SidecarState::Valid(Facts::of(&parsed)),
                    Err(invalid) => SidecarState::Invalid(invalid.to_string()),
                },
            },
            Err(e) => SidecarState::Unreadable(vanished_or(&e)),
        }
    })
}

/// Read all of `f` into the front of `buf` (grown as needed, never shrunk) and return the length.
/// `size_hint` is the size the walk saw: when one `read` returns exactly that many bytes into a
/// larger buffer, that is the whole file as of the walk and the end-of-file `read` is skipped.
fn read_whole(mut f: std::fs::File, buf: &mut Vec<u8>, size_hint: usize) -> std::io::Result<usize> {
    if buf.len() < size_hint + 1 {
        buf.resize(size_hint + 1, 0);
    }
    let mut n = 0;
    loop {
        if n == size_hint && n > 0 && n < buf.len() {
            return Ok(n);
        }
        if n == buf.len() {
            let grow = buf.len().max(4096);
            buf.resize(buf.len() + grow, 0);
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The system clock in ns since the epoch (the same clock file mtimes use).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rel: &str) -> AssetState {
        AssetState {
            rel: RelPath::parse(rel).unwrap(),
            stat: FileStat { size: 1, mtime_ns: 0, ino: 0, ctime_ns: 0 },
            file: FileState::Hashed { hash: String::new(), bytes: 1 },
            file_cached: false,
            sidecar: SidecarState::Absent,
            sidecar_stat: None,
            sidecar_cached: false,
        }
    }

    fn merged(runs: &[&[&str]]) -> Vec<String> {
        let runs = runs.iter().map(|r| r.iter().map(|p| state(p)).collect()).collect();
        merge_runs(runs).into_iter().map(|a| a.rel.to_string()).collect()
    }

    #[test]
    fn folder_runs_merge_into_path_order_whether_or_not_they_interleave() {
        // Disjoint runs, in the order workers finished them.
        assert_eq!(
            merged(&[&["b/1.png", "b/2.png"], &["a/1.png"], &["c/x.png"]]),
            ["a/1.png", "b/1.png", "b/2.png", "c/x.png"]
        );
        // A folder's own files around a subfolder's: `a/m/…` sorts between `a/b.png` and `a/z.png`.
        assert_eq!(
            merged(&[&["a/m/1.png", "a/m/2.png"], &["a/b.png", "a/z.png"]]),
            ["a/b.png", "a/m/1.png", "a/m/2.png", "a/z.png"]
        );
        assert!(merged(&[]).is_empty());
    }
}
