//! Every write the tool makes goes through here: atomic whole-file writes, append-only JSONL lines and
//! directory creation, each error naming the path.
//!
//! Invariants: a JSON document is written to a temp file in the same directory, fsynced, renamed over
//! the target and the directory fsynced, so a reader (or a crash) sees the old or the new file, never a
//! torn one. A JSONL line is written with a single `write` call on a file opened with `O_APPEND`.
//! Batches ([`stage`], [`sync_filesystem`], [`Staged::commit`]) keep the same guarantee with one
//! durability barrier for many files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;

/// Create `dir` and its parents.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Create the parent directory of `path`.
pub fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => ensure_dir(p),
        _ => Ok(()),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temp file name beside `path`; unique per process and call so concurrent writers never share one.
fn temp_path(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}-{n}", std::process::id()))
}

/// The process id in a temp file name made by [`temp_path`] (`.<name>.tmp<pid>-<n>`), or `None` for any
/// other name.
pub fn temp_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (stem, tail) = rest.rsplit_once(".tmp")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if stem.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is running. Without `/proc` (not Linux) every process counts as running, so
/// nothing is ever removed on a guess.
pub fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// What [`sweep_stale_temps`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Temp files of processes that are gone, removed.
    pub removed: Vec<PathBuf>,
    /// Such files that could not be removed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Remove the temp files that a process killed mid-write (`kill -9`, a power cut) left behind under
/// `dirs`: names made by this module (`.<name>.tmp<pid>-<n>`) whose process is no longer running. A
/// temp file of a live process, this one included, is never touched. Hidden folders (`.git`) are not
/// entered; a folder that is missing is skipped.
pub fn sweep_stale_temps(dirs: &[&Path]) -> Sweep {
    let mut sweep = Sweep::default();
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        let walker = walkdir::WalkDir::new(dir).into_iter().filter_entry(|e| {
            e.depth() == 0 || !e.file_type().is_dir() || !e.file_name().to_string_lossy().starts_with('.')
        });
        for entry in walker.flatten() {
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(pid) = temp_owner(&entry.file_name().to_string_lossy()) else { continue };
            if process_alive(pid) || !seen.insert(entry.path().to_path_buf()) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => sweep.removed.push(entry.into_path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => sweep.failed.push((entry.into_path(), e.to_string())),
            }
        }
    }
    sweep
}

/// Atomically replace `path` with `bytes` (temp file, fsync, rename, fsync directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, true, 0o666)
}

/// As [`write_atomic`] without the fsyncs: for rebuildable caches where only tearing matters, not
/// durability across power loss (a crash still leaves the old or the new file).
pub fn write_atomic_nosync(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, false, 0o666)
}

/// As [`write_json_atomic`], readable and writable by the owner only (mode 0600 whatever the
/// umask): for files holding secrets (webhook signing secrets, the telemetry anonymiser's key). The
/// file is created with that mode, so there is no moment when others could read it.
pub fn write_json_private<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic_inner(path, &to_pretty_json(value)?, true, PRIVATE)
}

/// The mode of files holding secrets.
const PRIVATE: u32 = 0o600;

/// Take the permissions of others off an existing file that holds secrets (one written by an
/// older version, or copied in); the group's are left as they are, since granting them is a
/// deliberate choice. A missing file is fine. Returns whether the mode changed.
pub fn make_private(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    let mode = meta.permissions().mode();
    if mode & 0o007 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o007))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))?;
    Ok(true)
}

/// `mode` is for a new file (the umask applies); a replaced file keeps its permission bits, so a
/// `chmod 600` a person gave a config file survives the tool's edits. [`write_json_private`]
/// passes `PRIVATE`, which is applied whatever was there.
fn write_atomic_inner(path: &Path, bytes: &[u8], sync: bool, mode: u32) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes), sync, mode)
}

/// [`write_atomic_inner`] with the content written by `body` into the temp file.
fn write_atomic_with(path: &Path, body: impl FnOnce(&mut File) -> io::Result<()>, sync: bool, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    ensure_parent(path)?;
    let tmp = temp_path(path);
    let keep = match std::fs::metadata(path) {
        Ok(m) if mode != PRIVATE => Some(m.permissions().mode() & 0o7777),
        _ => None,
    };
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        if let Some(bits) = keep {
            f.set_permissions(std::fs::Permissions::from_mode(bits))?;
        }
        body(&mut f)?;
        if sync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)?;
        if sync {
            if let Some(dir) = path.parent() {
                // Directory fsync makes the rename durable; some filesystems refuse it, which is harmless.
                if let Ok(d) = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Serialize `value` as pretty JSON (trailing newline) and write it atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &to_pretty_json(value)?)
}

/// As [`write_atomic_nosync`] of a JSON document with one list entry a line (see [`ListsFormatter`]),
/// serialised straight into the temp file: for large derived documents (the audit's `latest.json`
/// has 300,000 findings in a large tree), whose bytes would otherwise sit in memory whole beside the
/// value they were made from.
pub fn write_json_streamed_nosync<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic_with(
        path,
        |f| {
            let mut w = io::BufWriter::with_capacity(1 << 16, f);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut w, ListsFormatter::default()))?;
            w.write_all(b"\n")?;
            w.flush()
        },
        false,
        0o666,
    )
}

/// JSON laid out like `to_writer_pretty` at the top: the document's fields one a line, and each
/// entry of a list among them on a line of its own, but every entry (and every other nested value)
/// compact. A report with 300,000 findings stays readable with `grep` and `less`, and is a third
/// smaller and quicker to write than indenting every field.
#[derive(Debug, Default)]
pub struct ListsFormatter {
    /// One per open array or object: (laid out one entry a line, has an entry yet).
    open: Vec<(bool, bool)>,
}

impl ListsFormatter {
    fn begin<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8], lines: bool) -> io::Result<()> {
        self.open.push((lines, false));
        w.write_all(bracket)
    }

    fn end<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        if let Some((true, true)) = self.open.pop() {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    /// Before an entry: a comma after the first, and a new line in a container laid out in lines.
    fn entry<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if let Some(top) = self.open.last_mut() {
            top.1 = true;
            if top.0 {
                self.newline(w)?;
            }
        }
        Ok(())
    }

    /// A new line indented two spaces per open container.
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.open.len() {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// Within a container laid out in lines.
    fn in_lines(&self) -> bool {
        self.open.last().is_some_and(|o| o.0)
    }
}

impl serde_json::ser::Formatter for ListsFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        // The document itself, or a list that is one of its fields.
        let lines = self.open.is_empty() || (self.open.len() == 1 && self.in_lines());
        self.begin(w, b"[", lines)
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.entry(w, first)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        let lines = self.open.is_empty();
        self.begin(w, b"{", lines)
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.entry(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.in_lines() { b": " } else { b":" })
    }
}

/// Pretty JSON bytes with a trailing newline, the on-disk form of every JSON document.
pub fn to_pretty_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).context("cannot serialize JSON")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Open `path` for appending (creating it and its parent).
pub fn open_append(path: &Path) -> Result<File> {
    ensure_parent(path)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))
}

/// Append one line (a `\n` is added) with a single `write` call.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = open_append(path)?;
    write_line(&mut f, path, line)
}

/// [`write_line`] for a file with one writer (or written under a lock): when the write fails part
/// way (a full disk), the file is cut back to its length before, so a line is either all there or
/// not at all, and the next append does not glue a record onto a torn one.
pub fn write_line_whole(f: &mut File, path: &Path, line: &str) -> Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    write_lines_whole(f, path, &buf)
}

/// Like [`write_line_whole`] for a buffer of whole lines (each ending in `\n`), in one `write_all`:
/// when it fails part way, the file is cut back to its length before, so no line of the buffer is
/// left torn.
pub fn write_lines_whole(f: &mut File, path: &Path, lines: &[u8]) -> Result<()> {
    debug_assert!(lines.ends_with(b"\n"));
    let before = f.metadata().map(|m| m.len()).ok();
    let result = f.write_all(lines).with_context(|| format!("cannot append to {}", path.display()));
    if result.is_err() {
        if let Some(len) = before {
            let _ = f.set_len(len);
        }
    }
    result
}

/// Write one line to an already open append handle with a single `write` call.
pub fn write_line(f: &mut File, path: &Path, line: &str) -> Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    // O_APPEND makes each write land at the end atomically for regular files; write_all only loops on a
    // short write, which regular local files do not produce for line-sized buffers.
    f.write_all(&buf).with_context(|| format!("cannot append to {}", path.display()))
}

/// Whether the byte at `len - 1` is a newline: a JSONL writer checks this before appending, so a torn
/// last line (a writer killed mid-write) is closed instead of being glued to the next line.
pub fn ends_with_newline(path: &Path, len: u64) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(len.saturating_sub(1)))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(b[0] == b'\n')
}

/// Read a whole file as UTF-8 text, naming the path on error.
pub fn read_string(path: &Path) -> Result<String> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(s)
}

/// Read a JSON document; `Ok(None)` when the file does not exist. Parse errors name the path, line and
/// column.
pub fn read_json_opt(path: &Path) -> Result<Option<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        anyhow::anyhow!("{}: invalid JSON at line {}, column {}: {e}", path.display(), e.line(), e.column())
    })
}

/// Move a broken file aside as `<name>.corrupt-<UTC stamp>` so nothing is silently lost; returns the
/// new path.
pub fn quarantine(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut target = path.with_file_name(format!("{name}.corrupt-{}", crate::time::file_stamp()));
    let mut n = 1;
    while target.exists() {
        target = path.with_file_name(format!("{name}.corrupt-{}-{n}", crate::time::file_stamp()));
        n += 1;
    }
    std::fs::rename(path, &target)
        .with_context(|| format!("cannot move {} aside to {}", path.display(), target.display()))?;
    Ok(target)
}

/// A file written beside its target but not yet renamed over it (see [`stage`]).
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

/// First half of a batched atomic write: write `bytes` to a temp file beside `path` without fsync.
///
/// Batches of thousands of small files (the audit's `--fix`) cannot afford one fsync each (~4 ms on a
/// virtual disk): the caller stages every file, calls [`sync_filesystem`] once, then [`Staged::commit`]s
/// each and finally [`sync_dir`]s the parents. After a crash the target holds the old or the new
/// content, as with [`write_atomic`]; only leftover hidden temp files may remain.
pub fn stage(path: &Path, bytes: &[u8]) -> Result<Staged> {
    let tmp = temp_path(path);
    let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
    // The folder usually exists (a sidecar sits beside its asset): create it only when missing.
    let file = match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ensure_parent(path)?;
            create()
        }
        other => other,
    };
    let result = file.and_then(|mut f| f.write_all(bytes));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(Staged { tmp, target: path.to_path_buf() })
}

impl Staged {
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Rename the temp file over the target. Call only after [`sync_filesystem`].
    pub fn commit(self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.target).map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            anyhow::Error::new(e).context(format!("cannot write {}", self.target.display()))
        })
    }

    /// Like [`Staged::commit`], but never replaces an existing target: `Ok(false)` (and the temp
    /// file is removed) when the target appeared in the meantime. Uses `renameat2(RENAME_NOREPLACE)`,
    /// falling back to a check-then-rename on filesystems without it.
    pub fn commit_new(self) -> Result<bool> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, &self.tmp, CWD, &self.target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => {
                self.abort();
                Ok(false)
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP) => {
                if self.target.symlink_metadata().is_ok() {
                    self.abort();
                    return Ok(false);
                }
                self.commit().map(|()| true)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(io::Error::from(e)).with_context(|| format!("cannot write {}", self.target.display()))
            }
        }
    }

    /// Drop the temp file without touching the target.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Flush every dirty file of the filesystem holding `path` to disk (one `syncfs`). Falls back to an
/// fsync of each file in `files` where `syncfs` is unavailable.
pub fn sync_filesystem(path: &Path, files: &[&Path]) -> Result<()> {
    let dir = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::syncfs(&dir).is_ok() {
        return Ok(());
    }
    for f in files {
        File::open(f).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", f.display()))?;
    }
    Ok(())
}

/// Like [`write_atomic`] (temp file, fsync, rename, folder fsync) but never replaces an existing
/// file: `Ok(false)`, nothing written, when `path` exists (or appears meanwhile).
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<bool> {
    let staged = stage(path, bytes)?;
    if let Err(e) = File::open(&staged.tmp).and_then(|f| f.sync_all()) {
        staged.abort();
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    let created = staged.commit_new()?;
    if created {
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
    }
    Ok(created)
}

/// How long [`lock_in_place`] waits for another process's edit before giving up.
const EDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive advisory lock on the file that is at a path, for a read-modify-write of files that
/// are replaced by renaming (sidecars); released when dropped. Holds nothing on filesystems that
/// cannot lock (see [`lock_in_place`]).
#[derive(Debug)]
pub struct EditLock {
    _file: Option<File>,
}

/// [`lock_in_place`] gave up waiting for another holder.
#[derive(Debug, thiserror::Error)]
#[error("{} is being changed by another process (still locked after {} s)", .0.display(), EDIT_WAIT.as_secs())]
pub struct Busy(pub PathBuf);

/// Lock the file at `path` for a read-modify-write among writers that all lock it this way: read
/// it, write its replacement (rename over `path`), then drop the lock. `Ok(None)` when there is no
/// file at `path`.
///
/// The lock is on the file (`flock`), and a replacement is a new file, so after waiting the lock
/// is checked to be on the file now at `path`; if that was replaced meanwhile, the new one is
/// locked instead. Waits up to 10 s for another holder, then fails with [`Busy`]. Where the
/// filesystem cannot lock this way (NFS emulates `flock` with `fcntl` locks, which refuse a file
/// opened read-only) the edit goes ahead unlocked, with a warning once.
pub fn lock_in_place(path: &Path) -> Result<Option<EditLock>> {
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + EDIT_WAIT;
    let mut pause = std::time::Duration::from_millis(1);
    'reopen: loop {
        // Read-only: closing a descriptor opened for writing is a close-write event for watchers
        // (ours included), even when nothing was written.
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(Busy(path.to_path_buf()).into()),
                Err(std::fs::TryLockError::Error(e)) if cannot_lock_here(&e) => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(path = %path.display(), error = %e,
                            "this filesystem cannot lock files; concurrent edits of one sidecar are not protected")
                    });
                    return Ok(path.exists().then_some(EditLock { _file: None }));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
        }
        let held = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                return Ok(Some(EditLock { _file: Some(file) }))
            }
            Ok(_) => continue 'reopen, // replaced while we waited: lock the new file
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
        }
    }
}

/// Lock errors that mean "this filesystem does not do locks", not "something is wrong".
fn cannot_lock_here(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(code) if code == libc::ENOLCK || code == libc::EBADF || code == libc::EOPNOTSUPP)
}

/// Make renames inside `dir` durable (some filesystems refuse a directory fsync, which is harmless).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Copy `src` to `dst` atomically (temp file beside `dst`, fsync, rename) without holding the whole
/// file in memory; returns the number of bytes copied. The bytes are copied as they are.
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<u64> {
    ensure_parent(dst)?;
    let tmp = temp_path(dst);
    let result = (|| -> io::Result<u64> {
        let mut from = File::open(src)?;
        let mut to = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let n = io::copy(&mut from, &mut to)?;
        to.sync_all()?;
        drop(to);
        std::fs::rename(&tmp, dst)?;
        if let Some(dir) = dst.parent() {
            sync_dir(dir);
        }
        Ok(n)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot copy {} to {}", src.display(), dst.display()))
    })
}

/// Move `src` to `dst` (creating `dst`'s parent), across filesystems by an atomic copy and a removal.
/// Refuses to replace an existing `dst`.
pub fn move_file(src: &Path, dst: &Path) -> Result<()> {
    ensure_parent(dst)?;
    if dst.symlink_metadata().is_ok() {
        anyhow::bail!("cannot move {} to {}: the target exists", src.display(), dst.display());
    }
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            copy_atomic(src, dst)?;
            std::fs::remove_file(src).with_context(|| format!("cannot remove {}", src.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot move {} to {}", src.display(), dst.display())),
    }
}

/// An open folder, for reading many files in it without a path walk from `/` for each one (the
/// audit opens 40,000 files; the walk was a visible share of its time).
#[derive(Debug)]
pub struct Dir {
    fd: std::os::fd::OwnedFd,
}

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Dir { fd })
    }

    /// Open `name` (a plain file name in this folder) for reading. A symbolic link is refused
    /// (`O_NOFOLLOW`), so a file swapped for a link after it was listed is not followed.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        use rustix::fs::{openat, Mode, OFlags};
        let fd = openat(&self.fd, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        Ok(File::from(fd))
    }
}

/// A file that arrives as a stream (an upload), written under a hidden temp name in a folder and
/// renamed into place by [`TempFile::persist_new`]. Dropped without persisting (a failed or cut
/// upload), it is removed, so a partial file never appears under a real name.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// A new empty temp file in `dir` (created when missing), named like the other temp files
    /// (`.<stem>.tmp<pid>-<n>`, hidden, so scans and the watcher ignore it).
    pub fn create_in(dir: &Path, stem: &str) -> Result<TempFile> {
        ensure_dir(dir)?;
        let path = temp_path(&dir.join(stem));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempFile { file, path, persisted: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync, then rename to `target` (creating its parent) unless `target` exists: `Ok(false)` and
    /// the temp file is removed then. Never replaces a file.
    pub fn persist_new(mut self, target: &Path) -> Result<bool> {
        self.file.sync_all().with_context(|| format!("cannot write {}", self.path.display()))?;
        ensure_parent(target)?;
        self.persisted = true;
        let staged = Staged { tmp: self.path.clone(), target: target.to_path_buf() };
        let placed = staged.commit_new()?;
        if placed {
            if let Some(dir) = target.parent() {
                sync_dir(dir);
            }
        }
        Ok(placed)
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_formatter_puts_each_entry_of_a_top_level_list_on_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        let doc = serde_json::json!({
            "schema": 1,
            "summary": {"errors": 0, "passed": true},
            "findings": [{"path": "a.png", "tags": ["x", "y"]}, {"path": "b \"q\".png", "tags": []}],
            "none": [],
            "nested": [[1, 2], {}],
        });
        write_json_streamed_nosync(&path, &doc).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            concat!(
                "{\n",
                "  \"schema\": 1,\n",
                "  \"summary\": {\"errors\":0,\"passed\":true},\n",
                "  \"findings\": [\n",
                "    {\"path\":\"a.png\",\"tags\":[\"x\",\"y\"]},\n",
                "    {\"path\":\"b \\\"q\\\".png\",\"tags\":[]}\n",
                "  ],\n",
                "  \"none\": [],\n",
                "  \"nested\": [\n",
                "    [1,2],\n",
                "    {}\n",
                "  ]\n",
                "}\n",
            )
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        // A top-level list, and scalars.
        write_json_streamed_nosync(&path, &serde_json::json!([{"a": 1}, 2])).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  {\"a\":1},\n  2\n]\n");
        write_json_streamed_nosync(&path, &serde_json::json!("s")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\"s\"\n");
    }

    use super::*;

    #[test]
    fn streamed_json_replaces_the_file_with_the_same_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("r.json");
        let v = serde_json::json!({"b": [1, {"c": "é\n"}], "a": null, "big": "x".repeat(100_000)});
        write_atomic(&p, b"old").unwrap();
        write_json_streamed_nosync(&p, &v).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, v);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["r.json"], "no temp file left behind");
    }

    #[test]
    fn edit_locks_exclude_each_other_and_follow_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        assert!(lock_in_place(&p).unwrap().is_none(), "no file, no lock");
        write_atomic(&p, b"v1").unwrap();
        let held = lock_in_place(&p).unwrap().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _second = lock_in_place(&p).unwrap().unwrap();
                // Granted only after the first holder replaced the file and let go: on the new file.
                tx.send(std::fs::read(&p).unwrap()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(rx.try_recv().is_err(), "the second locker waits");
            write_atomic(&p, b"v2").unwrap();
            drop(held);
            assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), b"v2");
        });
        // A file removed while waiting: no lock.
        let held = lock_in_place(&p).unwrap().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| lock_in_place(&p).unwrap().is_none());
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::remove_file(&p).unwrap();
            drop(held);
            assert!(waiter.join().unwrap());
        });
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.json");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        write_json_atomic(&p, &serde_json::json!({"open": true})).unwrap();
        assert_ne!(mode(&p) & 0o044, 0, "an ordinary file is readable by others (umask 022)");
        write_json_private(&p, &serde_json::json!({"secret": "s"})).unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(make_private(&p).unwrap());
        assert_eq!(mode(&p), 0o640, "others lose access; the group keeps what it was given");
        assert!(!make_private(&p).unwrap());
        assert!(!make_private(&dir.path().join("missing")).unwrap());
        // An ordinary rewrite keeps the bits a person chose.
        write_json_atomic(&p, &serde_json::json!({"again": true})).unwrap();
        assert_eq!(mode(&p), 0o640);
        // A private rewrite forces 0600.
        write_json_private(&p, &serde_json::json!({"secret": "t"})).unwrap();
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/new.json");
        assert!(write_new(&p, b"first").unwrap());
        assert!(!write_new(&p, b"second").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn temp_files_are_removed_unless_persisted_and_never_replace() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TempFile::create_in(dir.path(), "upload").unwrap();
        t.write_all(b"partial").unwrap();
        let tmp = t.path().to_path_buf();
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with(".upload.tmp"));
        drop(t);
        assert!(!tmp.exists());
        let mut t = TempFile::create_in(dir.path(), "upload").unwrap();
        t.write_all(b"whole").unwrap();
        assert!(t.persist_new(&dir.path().join("a/b.bin")).unwrap());
        assert_eq!(std::fs::read(dir.path().join("a/b.bin")).unwrap(), b"whole");
        let mut t = TempFile::create_in(dir.path(), "upload").unwrap();
        t.write_all(b"other").unwrap();
        assert!(!t.persist_new(&dir.path().join("a/b.bin")).unwrap());
        assert_eq!(std::fs::read(dir.path().join("a/b.bin")).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/doc.json");
        write_json_atomic(&p, &serde_json::json!({"v": 1})).unwrap();
        write_json_atomic(&p, &serde_json::json!({"v": 2})).unwrap();
        assert_eq!(read_json_opt(&p).unwrap().unwrap()["v"], 2);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("doc.json")]);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{\n  \"a\": ,\n}").unwrap();
        let err = read_json_opt(&p).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("line 2"), "{err}");
        let missing = read_string(&dir.path().join("nope.txt")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope.txt"));
    }

    #[test]
    fn append_line_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/h.jsonl");
        append_line(&p, "{\"a\":1}").unwrap();
        append_line(&p, "{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
    }

    #[test]
    fn quarantine_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("usage.json");
        std::fs::write(&p, "garbage").unwrap();
        let moved = quarantine(&p).unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "garbage");
        assert!(moved.file_name().unwrap().to_string_lossy().starts_with("usage.json.corrupt-"));
    }

    #[test]
    fn staged_writes_commit_after_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("d/f{i}.json"))).collect();
        let staged: Vec<Staged> = targets.iter().map(|t| stage(t, b"{}\n").unwrap()).collect();
        assert!(targets.iter().all(|t| !t.exists()));
        let refs: Vec<&Path> = targets.iter().map(PathBuf::as_path).collect();
        sync_filesystem(dir.path(), &refs).unwrap();
        for s in staged {
            s.commit().unwrap();
        }
        sync_dir(&dir.path().join("d"));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "no temp files left: {names:?}");
        let aborted = stage(&targets[0], b"x").unwrap();
        aborted.abort();
        assert_eq!(std::fs::read(&targets[0]).unwrap(), b"{}\n");
        // commit_new never replaces.
        assert!(!stage(&targets[0], b"new").unwrap().commit_new().unwrap());
        assert_eq!(std::fs::read(&targets[0]).unwrap(), b"{}\n");
        assert!(stage(&dir.path().join("d/fresh.json"), b"1").unwrap().commit_new().unwrap());
        let count = std::fs::read_dir(dir.path().join("d")).unwrap().count();
        assert_eq!(count, 4, "no temp files left");
    }

    #[test]
    fn dir_opens_files_by_name_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("link.txt")).unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let mut s = String::new();
        d.open_file("a.txt").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(d.open_file("link.txt").is_err());
        assert_eq!(d.open_file("missing").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn copy_atomic_copies_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.bin");
        std::fs::write(&src, [0u8, 1, 2, 255]).unwrap();
        let n = copy_atomic(&src, &dir.path().join("x/b.bin")).unwrap();
        assert_eq!(n, 4);
        assert_eq!(std::fs::read(dir.path().join("x/b.bin")).unwrap(), [0u8, 1, 2, 255]);
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn temp_names_are_recognised_with_their_process() {
        assert_eq!(temp_owner(".hero.png.asset.json.tmp8058-419"), Some(8058));
        assert_eq!(temp_owner(".upload.tmp12-0"), Some(12));
        for other in ["hero.png.tmp1-2", ".tmp1-2", ".a.tmp-2", ".a.tmp1-", ".a.tmp1-x", ".a.tmpx-1", ".a.json"] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn sweep_removes_only_temps_of_processes_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        let sub = dir.path().join("chars");
        ensure_dir(&sub).unwrap();
        ensure_dir(&dir.path().join(".git")).unwrap();
        let stale = sub.join(format!(".hero.png.asset.json.tmp{dead}-3"));
        let live = sub.join(format!(".hero.png.asset.json.tmp{me}-4"));
        let in_git = dir.path().join(".git").join(format!(".x.tmp{dead}-1"));
        let asset = sub.join("hero.png");
        for p in [&stale, &live, &in_git, &asset] {
            std::fs::write(p, b"x").unwrap();
        }
        let missing = dir.path().join("nope");
        let sweep = sweep_stale_temps(&[dir.path(), &sub, &missing]);
        assert_eq!(sweep.removed, vec![stale.clone()], "listed once although two dirs cover it");
        assert!(sweep.failed.is_empty());
        assert!(!stale.exists() && live.exists() && in_git.exists() && asset.exists());
    }
}
