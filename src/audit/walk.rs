//! The scan: discover the tree, then hash files and read sidecars in parallel, using the stat cache
//! for anything unchanged.
//!
//! The pipeline is collect → rayon `par_iter` with a panic catch per item → results in the input
//! order (already sorted by path), so the outcome does not depend on thread timing. Reads only;
//! never writes.

use std::cell::RefCell;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::cache::StatCache;
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
}

/// Files up to this size are read whole into a per-thread buffer and hashed in one call; larger ones
/// stream through `digest::sha256_file`.
const WHOLE_READ_MAX: u64 = 16 * 1024 * 1024;

thread_local! {
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
        let checked = std::sync::Mutex::new((Vec::<AssetState>::new(), Vec::<Found>::new()));
        // Each folder is checked as soon as it is listed, so hashing overlaps the rest of the walk.
        // A full scan opens every file anyway: it takes the stat from the open handle instead.
        let (troubles, skipped) = registry.discover_each(opts.scope.as_ref(), !opts.full, &|folder| {
            let (assets, orphans) = check_folder(root, &folder, cache, opts.full);
            let mut all = checked.lock().unwrap_or_else(|p| p.into_inner());
            all.0.extend(assets);
            all.1.extend(orphans);
        })?;
        let (mut assets, mut orphans) = checked.into_inner().unwrap_or_else(|p| p.into_inner());
        // Concatenated sorted runs (one per folder): the stable sort merges runs in linear passes.
        assets.sort_by(|a, b| a.rel.cmp(&b.rel));
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
        Ok(Scan { assets, orphans, troubles, skipped, scope: opts.scope.clone(), started_at_ns, stats })
    })
}

/// Check one folder's assets in parallel (a panic in one becomes an `unreadable` finding for that
/// file) and pick out its orphan sidecars. Results are in path order.
fn check_folder(root: &Path, folder: &Folder, cache: &StatCache, full: bool) -> (Vec<AssetState>, Vec<Found>) {
    // Both lists are sorted by path: pair assets and sidecars by binary search, no hashing.
    let sidecar_of = |asset: &RelPath| -> Option<&Found> {
        let name = asset.sidecar();
        folder.sidecars.binary_search_by(|s| s.rel.cmp(&name)).ok().map(|i| &folder.sidecars[i])
    };
    let orphans: Vec<Found> = folder
        .sidecars
        .iter()
        .filter(|s| match s.rel.asset_of_sidecar() {
            Some(asset) => folder.assets.binary_search_by(|a| a.rel.cmp(&asset)).is_err(),
            None => true,
        })
        .cloned()
        .collect();
    let assets = folder
        .assets
        .par_iter()
        .map(|a| {
            let side = sidecar_of(&a.rel);
            catch_unwind(AssertUnwindSafe(|| check_one(root, a, side, cache, full))).unwrap_or_else(|panic| {
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
            })
        })
        .collect();
    (assets, orphans)
}

fn check_one(root: &Path, a: &Found, side: Option<&Found>, cache: &StatCache, full: bool) -> AssetState {
    let rel = a.rel.as_str();
    let mut stat = a.stat;
    let (file, file_cached) = match (!full).then(|| cache.file(rel, &a.stat)).flatten() {
        Some(hash) => (FileState::Hashed { hash: hash.to_string(), bytes: a.stat.size }, true),
        None => match hash_rel(root, rel, &mut stat) {
            Ok((hash, bytes)) => (FileState::Hashed { hash, bytes }, false),
            Err(e) => (FileState::Unreadable(vanished_or(&e)), false),
        },
    };
    let (sidecar, sidecar_stat, sidecar_cached) = match side {
        None => (SidecarState::Absent, None, false),
        Some(s) => match (!full).then(|| cache.sidecar(rel, &s.stat)).flatten() {
            Some(facts) => (SidecarState::Valid(facts), Some(s.stat), true),
            None => {
                let mut side_stat = s.stat;
                let state = read_sidecar_rel(root, &s.rel, &a.rel, &mut side_stat);
                (state, Some(side_stat), false)
            }
        },
    };
    AssetState { rel: a.rel.clone(), stat, file, file_cached, sidecar, sidecar_stat, sidecar_cached }
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

/// SHA-256 and length of the file `rel` below `root`. Small files are read whole into a reused
/// per-thread buffer: no allocation and no extra `statx`/`lseek` per file (what `read_to_end` would
/// add); large ones are streamed. An unknown `stat` is filled from the open handle.
fn hash_rel(root: &Path, rel: &str, stat: &mut FileStat) -> std::io::Result<(String, u64)> {
    let mut file = open_rel(root, rel)?;
    if !stat.is_known() {
        *stat = FileStat::of(&file.metadata()?);
    }
    if stat.size > WHOLE_READ_MAX {
        return crate::digest::sha256_reader(&mut file);
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = read_whole(file, &mut buf, stat.size as usize)?;
        let out = (crate::digest::sha256_hex(&buf[..n]), n as u64);
        if buf.len() > 2 * WHOLE_READ_MAX as usize {
            *buf = Vec::new(); // a file grew while read: do not keep a huge buffer around
        }
        Ok(out)
    })
}

/// SHA-256 and length of a file at `path` (same buffering as the scan, no folder handle cache).
pub fn hash_file(path: &Path, size_hint: u64) -> std::io::Result<(String, u64)> {
    if size_hint > WHOLE_READ_MAX {
        return crate::digest::sha256_file(path);
    }
    let file = std::fs::File::open(path)?;
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = read_whole(file, &mut buf, size_hint as usize)?;
        Ok((crate::digest::sha256_hex(&buf[..n]), n as u64))
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
