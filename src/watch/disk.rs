//! What the watcher looks at on disk, behind a trait: `stat`, hash, read and list. The real
//! implementation is a thin layer over `std::fs` and `digest`; tests use an in-memory disk so the
//! planner's decisions (settle, grace, re-association) are checked from small data cases.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The parts of a file's metadata the watcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub is_dir: bool,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl Stat {
    /// What "the file did not change" compares: size and mtime.
    pub fn key(&self) -> (u64, i128) {
        (self.size, self.mtime_ns)
    }
}

/// Read-only access to the filesystem.
pub trait Disk: Sync {
    /// `None` when the path does not exist, cannot be stat'ed, or is a symbolic link.
    fn stat(&self, path: &Path) -> Option<Stat>;
    /// SHA-256 (lowercase hex) of the file's contents and the number of bytes read.
    fn hash(&self, path: &Path) -> io::Result<(String, u64)>;
    /// The whole file, `None` when it cannot be read.
    fn read(&self, path: &Path) -> Option<Vec<u8>>;
    /// Every regular file below `dir`, at any depth, in a stable order, with its stat; folders for
    /// which `enter` says no are skipped whole. Unreadable entries are counted in the second value.
    fn walk(&self, dir: &Path, enter: &dyn Fn(&Path) -> bool) -> (Vec<(PathBuf, Stat)>, usize);

    /// Every regular file below `dir` (no pruning).
    fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.walk(dir, &|_| true).0.into_iter().map(|(p, _)| p).collect()
    }
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn stat(&self, path: &Path) -> Option<Stat> {
        let m = std::fs::symlink_metadata(path).ok()?;
        if m.file_type().is_symlink() {
            // Symbolic links are never followed and never assets (the registry refuses them).
            return None;
        }
        Some(Stat {
            is_dir: m.is_dir(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    fn hash(&self, path: &Path) -> io::Result<(String, u64)> {
        crate::digest::sha256_file(path)
    }

    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    fn walk(&self, dir: &Path, enter: &dyn Fn(&Path) -> bool) -> (Vec<(PathBuf, Stat)>, usize) {
        let mut files = Vec::new();
        let mut errors = 0;
        let walker = walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_type().is_dir() || enter(e.path()));
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() => {
                    // A file removed between listing and stat is not an error: it is just gone.
                    if let Ok(m) = e.metadata() {
                        let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                        files.push((e.into_path(), Stat { is_dir: false, size: m.len(), mtime_ns }));
                    }
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
        }
        (files, errors)
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory disk for planner tests.

    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub struct FakeDisk {
        files: Mutex<BTreeMap<PathBuf, (Vec<u8>, i128)>>,
        dirs: Mutex<Vec<PathBuf>>,
        clock: Mutex<i128>,
    }

    impl FakeDisk {
        pub fn new() -> FakeDisk {
            FakeDisk::default()
        }
        /// Write a file with the next mtime (every write is newer than the one before).
        pub fn write(&self, path: &str, bytes: &[u8]) {
            let mtime = {
                let mut c = self.clock.lock().unwrap();
                *c += 1;
                *c
            };
            self.write_at(path, bytes, mtime);
        }
        /// Write a file with the mtime the test says.
        pub fn write_at(&self, path: &str, bytes: &[u8], mtime: i128) {
            self.files.lock().unwrap().insert(PathBuf::from(path), (bytes.to_vec(), mtime));
        }
        pub fn remove(&self, path: &str) {
            self.files.lock().unwrap().remove(Path::new(path));
        }
        pub fn rename(&self, from: &str, to: &str) {
            let mut files = self.files.lock().unwrap();
            let moved: Vec<(PathBuf, (Vec<u8>, i128))> =
                files.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, v)| (p.clone(), v.clone())).collect();
            for (p, v) in moved {
                files.remove(&p);
                let rest = p.strip_prefix(from).unwrap();
                let target = if rest.as_os_str().is_empty() { PathBuf::from(to) } else { Path::new(to).join(rest) };
                files.insert(target, v);
            }
            let mut dirs = self.dirs.lock().unwrap();
            for d in dirs.iter_mut() {
                if d.starts_with(from) {
                    let rest = d.strip_prefix(from).unwrap().to_path_buf();
                    *d = Path::new(to).join(rest);
                }
            }
        }
        pub fn mkdir(&self, path: &str) {
            self.dirs.lock().unwrap().push(PathBuf::from(path));
        }
    }

    impl Disk for FakeDisk {
        fn stat(&self, path: &Path) -> Option<Stat> {
            if let Some((b, m)) = self.files.lock().unwrap().get(path) {
                return Some(Stat { is_dir: false, size: b.len() as u64, mtime_ns: *m });
            }
            let is_dir = self.dirs.lock().unwrap().iter().any(|d| d == path)
                || self.files.lock().unwrap().keys().any(|p| p.starts_with(path) && p != path);
            is_dir.then_some(Stat { is_dir: true, size: 0, mtime_ns: 0 })
        }
        fn hash(&self, path: &Path) -> io::Result<(String, u64)> {
            let files = self.files.lock().unwrap();
            let (b, _) = files.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            Ok((crate::digest::sha256_hex(b), b.len() as u64))
        }
        fn read(&self, path: &Path) -> Option<Vec<u8>> {
            self.files.lock().unwrap().get(path).map(|(b, _)| b.clone())
        }
        fn walk(&self, dir: &Path, enter: &dyn Fn(&Path) -> bool) -> (Vec<(PathBuf, Stat)>, usize) {
            let files = self.files.lock().unwrap();
            let out = files
                .iter()
                .filter(|(p, _)| p.starts_with(dir) && p.as_path() != dir)
                .filter(|(p, _)| p.ancestors().skip(1).take_while(|a| *a != dir).all(enter))
                .map(|(p, (b, m))| (p.clone(), Stat { is_dir: false, size: b.len() as u64, mtime_ns: *m }))
                .collect();
            (out, 0)
        }
    }
}
