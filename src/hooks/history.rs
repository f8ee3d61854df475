//! The hook history: `logs/hooks/history.jsonl`, one envelope per line, append-only, rotated at a size
//! cap into `history.jsonl.1` … `.N` (newest first).
//!
//! Invariants:
//! - Appends hold an exclusive lock on `history.lock` while they read the last `seq`, rotate and write,
//!   so concurrent processes never interleave lines and `seq` stays unique and increasing.
//! - Each line is written whole within one `write` call (a batch's lines share writes of about
//!   256 KiB; a failed write is cut back to the length before it); a torn last line (a writer killed
//!   mid-write) is closed with a newline by the next writer and skipped by readers.
//! - Reads of the last N entries and seeks by `seq` scan backwards from the end of the file: cost is
//!   O(what is read), not O(history).
//! - `seq` never goes back, even when `logs/` is deleted: `data/hooks/seq.json` (the mark) reserves
//!   blocks of `seq`s ahead of use and records the live file's inode. A live file that is not the one
//!   the mark knows (deleted or replaced behind the tool's back) restarts after the reserved block,
//!   with an `obs.history_reset` entry first, so a consumer's checkpoint never points past new events.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::HookSettings;
use crate::paths::Paths;

/// One line of the history: `{"seq", "event", "ts", "data"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub seq: u64,
    pub event: String,
    /// Seconds since the epoch.
    pub ts: f64,
    pub data: Value,
}

impl Envelope {
    /// The original toolkit's wire form, without `seq` (webhook bodies).
    pub fn wire(&self) -> Value {
        serde_json::json!({"event": self.event, "ts": self.ts, "data": self.data})
    }
}

/// Which entries a read wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Event-name glob (`on_asset_*`).
    pub event: Option<globset::GlobMatcher>,
    /// Only entries with `seq` greater than this.
    pub since: Option<u64>,
}

impl Filter {
    pub fn with_event_glob(mut self, glob: &str) -> Result<Self> {
        let g = globset::Glob::new(glob).with_context(|| format!("bad event glob {glob:?}"))?;
        self.event = Some(g.compile_matcher());
        Ok(self)
    }

    pub fn matches(&self, e: &Envelope) -> bool {
        self.since.is_none_or(|s| e.seq > s) && self.event.as_ref().is_none_or(|g| g.is_match(&e.event))
    }
}

/// How many bytes of whole lines [`History::append_batch`] gathers into one `write`.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

const CHUNK: usize = 64 * 1024;

/// Handle on the history files. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// The `seq` high-water mark (`None`: no protection against a deleted history).
    mark: Option<PathBuf>,
}

/// `seq`s reserved at a time in the mark (its write is one small atomic file write per block).
const SEQ_BLOCK: u64 = 1000;

/// `data/hooks/seq.json`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Mark {
    #[serde(default)]
    schema: u64,
    /// Every `seq` issued so far is at most this.
    reserved: u64,
    /// Inode of the live file the mark belongs to (0: not known yet).
    #[serde(default)]
    live_ino: u64,
}

impl History {
    pub fn new(paths: &Paths, settings: &HookSettings) -> History {
        History::at(paths.history_file(), settings.history_max_bytes, settings.history_keep)
            .with_mark(paths.history_mark())
    }

    pub fn at(path: PathBuf, max_bytes: u64, keep: usize) -> History {
        History { path, max_bytes: max_bytes.max(1), keep, mark: None }
    }

    /// Keep the `seq` high-water mark at `mark` (see the module doc).
    pub fn with_mark(mut self, mark: PathBuf) -> History {
        self.mark = Some(mark);
        self
    }

    fn read_mark(&self) -> Result<Option<Mark>> {
        let Some(path) = &self.mark else { return Ok(None) };
        match crate::fs::read_json_opt(path)? {
            Some(v) => serde_json::from_value(v).map(Some).with_context(|| {
                format!(
                    "{}: reserved: expected a non-negative integer (delete the file to start it again)",
                    path.display()
                )
            }),
            None => Ok(Some(Mark::default())),
        }
    }

    fn write_mark(&self, mark: &Mark) -> Result<()> {
        match &self.mark {
            Some(path) => crate::fs::write_json_atomic(path, mark),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `history.jsonl.i` (i ≥ 1).
    pub fn rotated(&self, i: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    }

    fn lock(&self) -> Result<File> {
        let lock_path = self.path.with_file_name("history.lock");
        let f = crate::fs::open_append(&lock_path)?;
        f.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(f)
    }

    /// Append one event; returns its envelope.
    pub fn append(&self, event: &str, data: Value) -> Result<Envelope> {
        Ok(self.append_batch(vec![(event.to_string(), data)])?.remove(0))
    }

    /// Append events in order under one lock hold (one `write` per line).
    pub fn append_batch(&self, items: Vec<(String, Value)>) -> Result<Vec<Envelope>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let mut file = crate::fs::open_append(&self.path)?;
        let meta = file.metadata().with_context(|| format!("cannot stat {}", self.path.display()))?;
        let mut len = meta.len();
        let mut ino = meta.ino();
        let mut rotated = false;
        if len >= self.max_bytes {
            drop(file);
            self.rotate()?;
            file = crate::fs::open_append(&self.path)?;
            len = 0;
            ino = file.metadata().with_context(|| format!("cannot stat {}", self.path.display()))?.ino();
            rotated = true;
        }
        let mut last = self.last_seq_locked()?;
        if len > 0 && !crate::fs::ends_with_newline(&self.path, len)? {
            file.write_all(b"\n").with_context(|| format!("cannot append to {}", self.path.display()))?;
        }
        let mut items = items;
        if let Some(mut mark) = self.read_mark()? {
            let before = mark;
            if mark.live_ino != ino {
                if mark.live_ino != 0 && !rotated && mark.reserved > last {
                    // The live file is not the one the tool was writing: deleted or replaced.
                    tracing::warn!(
                        path = %self.path.display(),
                        after_seq = mark.reserved,
                        "the hook history was deleted or replaced; seq goes on after the last one issued"
                    );
                    let reset = serde_json::json!({"after_seq": mark.reserved, "previous_last_seq_found": last});
                    items.insert(0, ("obs.history_reset".to_string(), reset));
                    last = mark.reserved;
                }
                mark.live_ino = ino;
            }
            let needed = last + items.len() as u64;
            if needed > mark.reserved {
                mark.reserved = needed + SEQ_BLOCK;
            }
            mark.schema = 1;
            if mark != before {
                self.write_mark(&mark)?;
            }
        }
        // Whole lines gathered into writes of about 256 KiB, not one `write` (and `fstat`) a line:
        // an `audit --fix` of 20,000 files appends 60,000 events. The lock keeps other writers out,
        // and a follower reads only up to the last newline, as with any append.
        let mut out = Vec::with_capacity(items.len());
        let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES.min(items.len() * 512));
        for (seq, (event, data)) in (last + 1..).zip(items) {
            let env = Envelope { seq, event, ts: crate::time::epoch_secs(), data };
            serde_json::to_writer(&mut buf, &env).context("cannot serialize hook envelope")?;
            buf.push(b'\n');
            out.push(env);
            if buf.len() >= WRITE_BATCH_BYTES {
                crate::fs::write_lines_whole(&mut file, &self.path, &buf)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            crate::fs::write_lines_whole(&mut file, &self.path, &buf)?;
        }
        Ok(out)
    }

    fn rotate(&self) -> Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(&self.path).with_context(|| format!("cannot remove {}", self.path.display()));
        }
        let oldest = self.rotated(self.keep);
        if oldest.exists() {
            std::fs::remove_file(&oldest).with_context(|| format!("cannot remove {}", oldest.display()))?;
        }
        for i in (1..self.keep).rev() {
            let from = self.rotated(i);
            if from.exists() {
                let to = self.rotated(i + 1);
                std::fs::rename(&from, &to).with_context(|| format!("cannot rename {}", from.display()))?;
            }
        }
        let to = self.rotated(1);
        std::fs::rename(&self.path, &to).with_context(|| format!("cannot rotate {}", self.path.display()))
    }

    /// The newest files first: the live file, then `.1`, `.2` …
    fn files_newest_first(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.clone()).chain((1..=self.keep).map(|i| self.rotated(i))).collect()
    }

    /// The highest `seq` in the history (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        self.last_seq_locked()
    }

    fn last_seq_locked(&self) -> Result<u64> {
        for file in self.files_newest_first() {
            let mut found = None;
            scan_back(&file, |env, _| {
                found = Some(env.seq);
                false
            })?;
            if let Some(s) = found {
                return Ok(s);
            }
        }
        Ok(0)
    }

    /// The last `n` entries matching `filter`, oldest first. Reads backwards from the end.
    pub fn tail(&self, n: usize, filter: &Filter) -> Result<Vec<Envelope>> {
        let mut out = Vec::with_capacity(n.min(4096));
        if n == 0 {
            return Ok(out);
        }
        'files: for file in self.files_newest_first() {
            let mut done = false;
            scan_back(&file, |env, _| {
                if filter.since.is_some_and(|s| env.seq <= s) {
                    done = true;
                    return false;
                }
                if filter.matches(&env) {
                    out.push(env);
                    if out.len() >= n {
                        done = true;
                        return false;
                    }
                }
                true
            })?;
            if done {
                break 'files;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// A reader that yields every entry with `seq > after`, oldest first, then follows new appends
    /// (across rotation).
    pub fn follow(&self, after: u64) -> Result<Follower> {
        let queue = self.segments_after(after)?;
        Ok(Follower { history: self.clone(), queue, current: None, buf: Vec::new(), last_seq: after })
    }

    /// The files holding the entries after `after`, oldest first, each already open (so a rotation
    /// from here on renames them under us without changing what we read) with the offset just past
    /// the last line at or below `after`. Walks back from the live file to the file holding `after`;
    /// when no file does (it was rotated out), every file there is, from its start.
    fn segments_after(&self, after: u64) -> Result<VecDeque<Segment>> {
        let mut queue = VecDeque::new();
        for path in self.files_newest_first() {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
            };
            let ino = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.ino();
            let mut start = None;
            scan_back_file(&mut file, &path, |env, next| {
                if env.seq <= after {
                    start = Some(next);
                    return false;
                }
                true
            })?;
            queue.push_front(Segment { file, ino, offset: start.unwrap_or(0), path });
            if start.is_some() {
                break;
            }
        }
        Ok(queue)
    }
}

/// One history file a follower still has to read: open, with where to start.
#[derive(Debug)]
struct Segment {
    file: File,
    ino: u64,
    offset: u64,
    path: PathBuf,
}

/// Visit the complete, valid lines of `path` from the last to the first until `visit` returns false.
/// A missing file has no lines. Invalid lines are skipped.
/// `visit` also gets the file offset just past the line (where the next line starts).
fn scan_back(path: &Path, visit: impl FnMut(Envelope, u64) -> bool) -> Result<()> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    scan_back_file(&mut f, path, visit)
}

/// [`scan_back`] on a file already open (`path` names it in errors).
fn scan_back_file(f: &mut File, path: &Path, mut visit: impl FnMut(Envelope, u64) -> bool) -> Result<()> {
    let mut end = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
    // `carry` holds the start of the line that continues into the chunk read before.
    let mut carry: Vec<u8> = Vec::new();
    let mut first_chunk = true;
    let mut chunk = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk[..size]).with_context(|| format!("cannot read {}", path.display()))?;
        let mut data = chunk[..size].to_vec();
        data.extend_from_slice(&carry);
        // The bytes after the last newline of the file are a torn line: skip them.
        let mut stop = data.len();
        if first_chunk {
            stop = data.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0);
            first_chunk = false;
        }
        let mut line_end = stop;
        let mut i = stop;
        while i > 0 {
            i -= 1;
            if data[i] == b'\n' && i + 1 < line_end {
                let next = start + line_end as u64 + 1;
                if !visit_line(&data[i + 1..line_end], next, &mut visit) {
                    return Ok(());
                }
                line_end = i;
            } else if data[i] == b'\n' {
                line_end = i;
            }
        }
        carry = data[..line_end].to_vec();
        end = start;
    }
    if !carry.is_empty() {
        let next = carry.len() as u64 + 1;
        visit_line(&carry, next, &mut visit);
    }
    Ok(())
}

fn visit_line(line: &[u8], next: u64, visit: &mut impl FnMut(Envelope, u64) -> bool) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match serde_json::from_slice::<Envelope>(line) {
        Ok(env) => visit(env, next),
        Err(_) => true,
    }
}

/// Yields history entries in order as they appear; see [`History::follow`].
///
/// Rotation: the follower reads an open handle, so a file renamed to `.1` is still read to its end.
/// When the live path names another file than the one being read, the follower does not jump to it
/// (more than one rotation may have happened since the last poll, and lines may have been appended
/// between the last read and the rename): it finds its place again from the last `seq` it yielded,
/// through the rotated files, exactly as [`History::follow`] starts.
#[derive(Debug)]
pub struct Follower {
    history: History,
    /// Files still to read after `current`, oldest first, already open.
    queue: VecDeque<Segment>,
    current: Option<Segment>,
    buf: Vec<u8>,
    last_seq: u64,
}

impl Follower {
    /// The `seq` of the last entry yielded (or the starting point).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Read everything appended since the last call. Never blocks; returns an empty list when
    /// nothing is new.
    pub fn poll(&mut self) -> Result<Vec<Envelope>> {
        self.poll_at_most(usize::MAX)
    }

    /// Read at most `limit` of the entries appended since the last call, in order; the rest wait for
    /// the next call. Memory stays at about `limit` entries plus one read chunk however far behind the
    /// follower is (an exporter whose collector was down for hours). Never blocks.
    pub fn poll_at_most(&mut self, limit: usize) -> Result<Vec<Envelope>> {
        const CHUNK: u64 = 1 << 20;
        let mut out = Vec::new();
        loop {
            if self.current.is_none() {
                if self.queue.is_empty() {
                    self.queue = self.history.segments_after(self.last_seq)?;
                    self.warn_on_gap();
                }
                let Some(mut seg) = self.queue.pop_front() else { return Ok(out) }; // no history yet
                seg.file
                    .seek(SeekFrom::Start(seg.offset))
                    .with_context(|| format!("cannot seek in {}", seg.path.display()))?;
                self.buf.clear();
                self.current = Some(seg);
            }
            // Whole lines already read but not yet handed out come first.
            let mut start = 0;
            while out.len() < limit {
                let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') else { break };
                let line = &self.buf[start..start + nl];
                if let Ok(env) = serde_json::from_slice::<Envelope>(line) {
                    if env.seq > self.last_seq {
                        self.last_seq = env.seq;
                        out.push(env);
                    }
                }
                start += nl + 1;
            }
            self.buf.drain(..start);
            if out.len() >= limit {
                return Ok(out);
            }
            let seg = self.current.as_mut().expect("opened above");
            let read = (&mut seg.file)
                .take(CHUNK)
                .read_to_end(&mut self.buf)
                .with_context(|| format!("cannot read {}", seg.path.display()))?;
            if read > 0 {
                continue; // parse what was read; the file may hold more
            }
            if !self.queue.is_empty() {
                self.current = None; // an older file is drained; move on
                continue;
            }
            // The newest file we hold: if the live path has moved on, find our place again.
            let live_ino = std::fs::metadata(&self.history.path).map(|m| m.ino()).ok();
            if live_ino.is_some_and(|ino| ino != seg.ino) {
                self.current = None;
                continue;
            }
            return Ok(out);
        }
    }

    /// Entries after `last_seq` that were rotated out before they were read are gone; say so once.
    fn warn_on_gap(&mut self) {
        let Some(first) = self.queue.front_mut() else { return };
        if first.offset != 0 || self.last_seq == 0 {
            return;
        }
        let mut line = String::new();
        let _ = first.file.seek(SeekFrom::Start(0));
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&first.file), &mut line);
        let _ = first.file.seek(SeekFrom::Start(0));
        if let Ok(env) = serde_json::from_str::<Envelope>(line.trim_end()) {
            if env.seq > self.last_seq + 1 {
                tracing::warn!(
                    after = self.last_seq,
                    next = env.seq,
                    "hook history entries were rotated out before this follower read them"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hist(dir: &Path, max: u64) -> History {
        History::at(dir.join("hooks/history.jsonl"), max, 3)
    }

    #[test]
    fn a_bounded_poll_hands_out_everything_in_order_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 128 * 1024); // small files: the backlog spans rotated segments
        let mut follower = h.follow(0).unwrap();
        for i in 0..5000 {
            h.append("on_scene_enter", json!({"i": i})).unwrap();
        }
        assert!(h.rotated(2).exists(), "the backlog should span rotated files");
        let mut seen = Vec::new();
        loop {
            let got = follower.poll_at_most(300).unwrap();
            assert!(got.len() <= 300, "{}", got.len());
            if got.is_empty() {
                break;
            }
            seen.extend(got.iter().map(|e| e.seq));
        }
        assert_eq!(seen, (1..=5000).collect::<Vec<u64>>());
        h.append("on_scene_enter", json!({})).unwrap();
        assert_eq!(follower.poll_at_most(300).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [5001]);
    }

    #[test]
    fn seq_continues_across_instances_and_tail_reads_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 1 << 20);
        for i in 0..5 {
            h.append("on_scene_enter", json!({"i": i})).unwrap();
        }
        let h2 = hist(dir.path(), 1 << 20);
        let e = h2.append("on_choice_render", json!({})).unwrap();
        assert_eq!(e.seq, 6);
        let last = h2.tail(2, &Filter::default()).unwrap();
        assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
        let only = h2.tail(10, &Filter::default().with_event_glob("on_choice_*").unwrap()).unwrap();
        assert_eq!(only.len(), 1);
        let since = h2.tail(10, &Filter { since: Some(4), ..Default::default() }).unwrap();
        assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn rotation_keeps_seq_and_tail_spans_files() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 300);
        for i in 0..20 {
            h.append("on_scene_enter", json!({"i": i})).unwrap();
        }
        assert!(h.rotated(1).exists());
        assert_eq!(h.last_seq().unwrap(), 20);
        let all = h.tail(1000, &Filter::default()).unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        // keep = 3 rotated files: the oldest entries are gone, the rest are contiguous.
        assert_eq!(*seqs.last().unwrap(), 20);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }

    #[test]
    fn torn_last_line_is_skipped_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 1 << 20);
        h.append("a", json!({})).unwrap();
        let mut f = crate::fs::open_append(h.path()).unwrap();
        f.write_all(b"{\"seq\":2,\"event\":\"b\",\"ts\":1.0,\"da").unwrap();
        assert_eq!(h.tail(5, &Filter::default()).unwrap().len(), 1);
        let e = h.append("c", json!({})).unwrap();
        assert_eq!(e.seq, 2);
        let all = h.tail(5, &Filter::default()).unwrap();
        assert_eq!(all.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn follower_reads_backlog_then_new_lines_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 400);
        for i in 0..6 {
            h.append("e", json!({"i": i})).unwrap();
        }
        let mut f = h.follow(2).unwrap();
        let first: Vec<u64> = f.poll().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(first, [3, 4, 5, 6]);
        assert!(f.poll().unwrap().is_empty());
        for i in 0..6 {
            h.append("e", json!({"i": i})).unwrap();
        }
        let next: Vec<u64> = f.poll().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(next, [7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn follower_starts_just_past_the_requested_seq_instead_of_rereading_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 1 << 20);
        // An out-of-order first line proves the follower seeks: reading from byte 0 would yield it.
        let mut text = String::from("{\"seq\":100,\"event\":\"early\",\"ts\":1.0,\"data\":{}}\n");
        for seq in 1..=10 {
            text.push_str(&format!("{{\"seq\":{seq},\"event\":\"e\",\"ts\":1.0,\"data\":{{}}}}\n"));
        }
        crate::fs::write_atomic(h.path(), text.as_bytes()).unwrap();
        let mut f = h.follow(5).unwrap();
        let seqs: Vec<u64> = f.poll().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [6, 7, 8, 9, 10]);
        let mut at_end = h.follow(10).unwrap();
        assert!(at_end.poll().unwrap().is_empty());
    }

    #[test]
    fn concurrent_appenders_never_share_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let h = hist(dir.path(), 1 << 30);
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        h.append("e", json!({"t": t, "i": i})).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(h.path()).unwrap();
        let seqs: Vec<u64> = text.lines().map(|l| serde_json::from_str::<Envelope>(l).unwrap().seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod follow_rotation_tests {
    use super::*;
    use serde_json::json;

    fn seqs(v: &[Envelope]) -> Vec<u64> {
        v.iter().map(|e| e.seq).collect()
    }

    /// Several rotations between two polls: the follower reads the rotated files it never opened.
    #[test]
    fn follower_reads_every_file_when_several_rotations_happen_between_polls() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::at(dir.path().join("hooks/history.jsonl"), 300, 20);
        h.append("e", json!({})).unwrap();
        let mut f = h.follow(0).unwrap();
        assert_eq!(seqs(&f.poll().unwrap()), [1]);
        for _ in 0..40 {
            h.append("e", json!({"pad": "xxxxxxxxxxxxxxxxxxxxxxxx"})).unwrap();
        }
        assert!(h.rotated(3).exists(), "the test needs several rotations");
        assert_eq!(seqs(&f.poll().unwrap()), (2..=41).collect::<Vec<_>>());
        assert!(f.poll().unwrap().is_empty());
    }

    /// The probe from the bug report: 4 KiB rotation, 4,000 appends from another thread, a follower
    /// polling every 15 ms (so some polls see one rotation, some several, some a rotation racing the
    /// read). Every seq arrives once, in order.
    #[test]
    fn follower_loses_nothing_under_fast_rotation() {
        let dir = tempfile::tempdir().unwrap();
        // keep is large enough that nothing is rotated out of retention: only the follower is tested.
        let h = History::at(dir.path().join("hooks/history.jsonl"), 4096, 400);
        h.append("e", json!({})).unwrap();
        let mut f = h.follow(0).unwrap();
        const N: u64 = 4000;
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 1..N {
                    h.append("e", json!({"i": i})).unwrap();
                }
            })
        };
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while got.len() < N as usize && std::time::Instant::now() < deadline {
            got.extend(seqs(&f.poll().unwrap()));
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        writer.join().unwrap();
        got.extend(seqs(&f.poll().unwrap()));
        let missing = (1..=N).filter(|s| got.binary_search(s).is_err()).count();
        assert_eq!(missing, 0, "{missing} seqs lost");
        assert_eq!(got, (1..=N).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    fn history(dir: &Path, max_bytes: u64) -> History {
        History::at(dir.join("logs/history.jsonl"), max_bytes, 3).with_mark(dir.join("data/seq.json"))
    }

    #[test]
    fn a_deleted_history_goes_on_after_the_last_seq_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let h = history(dir.path(), 1 << 20);
        for i in 0..3 {
            h.append("on_scene_enter", serde_json::json!({"i": i})).unwrap();
        }
        let mut follower = h.follow(3).unwrap();
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        let got = h.append_batch(vec![("on_scene_enter".into(), serde_json::json!({"i": 3}))]).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].event, "obs.history_reset");
        assert!(got[0].seq > 3 && got[1].seq == got[0].seq + 1, "{got:?}");
        assert_eq!(got[0].data["previous_last_seq_found"], 0);
        // A consumer whose checkpoint says 3 gets the new entries, not nothing.
        let seen: Vec<u64> = follower.poll().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seen, [got[0].seq, got[1].seq]);
        // The next append is an ordinary one.
        let next = h.append("on_scene_enter", serde_json::json!({})).unwrap();
        assert_eq!(next.seq, got[1].seq + 1);
    }

    #[test]
    fn rotation_and_a_first_run_without_a_mark_are_not_resets() {
        let dir = tempfile::tempdir().unwrap();
        // An existing history from before the mark existed.
        let plain = History::at(dir.path().join("logs/history.jsonl"), 512, 3);
        for _ in 0..5 {
            plain.append("on_scene_enter", serde_json::json!({})).unwrap();
        }
        let h = history(dir.path(), 512);
        let mut last = 5;
        for _ in 0..200 {
            let e = h.append("on_scene_enter", serde_json::json!({"pad": "x".repeat(40)})).unwrap();
            assert_eq!(e.seq, last + 1, "{e:?}");
            last = e.seq;
        }
        assert!(h.rotated(1).exists(), "the test must rotate");
        // A second handle (another process) sees the same mark and goes on from the same place.
        let other = history(dir.path(), 512);
        assert_eq!(other.append("on_scene_enter", serde_json::json!({})).unwrap().seq, last + 1);
    }
}
