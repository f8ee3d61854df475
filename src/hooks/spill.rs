//! The overflow of one registration's backlog: a FIFO queue on disk, so the delivery worker holds at
//! most `obs.webhooks.max_in_memory` undelivered messages per registration however long its receiver
//! is down.
//!
//! Files under `data/webhooks/spill/`: `<tag>.jsonl` (append-only, one delivery per line, in the
//! order they were queued) and `<tag>.cursor` (`{"schema", "offset"}`: where the next read starts).
//! `<tag>` is 16 hex of the sha256 of the registration key.
//!
//! Invariants:
//! - Once a registration spills, every later delivery for it is appended here until the queue is
//!   empty, so moving the queue's head into the outbox keeps `seq` order.
//! - A line moves to the outbox before the cursor passes it: the outbox is fsynced, then the cursor is
//!   written (atomically). A crash in between reads the same lines again, and the outbox's ids drop
//!   the repeats. A fully read queue is removed file first, cursor second.
//! - Re-queueing the same delivery (the worker re-reading the history after a crash) is a no-op: per
//!   id suffix (plain or one replay request), the queue remembers the highest `seq` it holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::outbound::Pending;

#[derive(Serialize, Deserialize)]
struct CursorDoc {
    schema: u64,
    offset: u64,
}

/// One registration's queue on disk.
#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    cursor_path: PathBuf,
    file: Option<File>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes in the file.
    len: u64,
    /// Deliveries after `offset`.
    count: usize,
    /// Per id suffix, the highest `seq` queued: a repeat at or below it is skipped.
    high: HashMap<String, u64>,
    /// Appended to since the last `sync`.
    dirty: bool,
}

/// The file name part of a registration's queue.
pub fn tag(lane: &str) -> String {
    crate::digest::sha256_hex(lane.as_bytes())[..16].to_string()
}

/// The part of an outbox id after its `webhook-id` (empty, or `.replay-<request>`).
fn suffix(p: &Pending) -> &str {
    p.id.strip_prefix(&p.webhook_id).unwrap_or("")
}

impl Spill {
    /// Open (or start) the queue at `dir/<tag>.jsonl`. A torn last line is closed and skipped.
    pub fn open(dir: &Path, tag: &str) -> Result<Spill> {
        let path = dir.join(format!("{tag}.jsonl"));
        let cursor_path = dir.join(format!("{tag}.cursor"));
        let offset = match crate::fs::read_json_opt(&cursor_path)? {
            Some(v) => {
                serde_json::from_value::<CursorDoc>(v)
                    .with_context(|| format!("{}: offset: expected a non-negative integer", cursor_path.display()))?
                    .offset
            }
            None => 0,
        };
        let mut spill =
            Spill { path, cursor_path, file: None, offset, len: 0, count: 0, high: HashMap::new(), dirty: false };
        let f = match File::open(&spill.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                spill.offset = 0;
                return Ok(spill);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", spill.path.display())),
        };
        spill.len = f.metadata().with_context(|| format!("cannot stat {}", spill.path.display()))?.len();
        if spill.len > 0 && !crate::fs::ends_with_newline(&spill.path, spill.len)? {
            // Close a line torn by a crash (it was never synced, so the history still has it).
            let mut a = crate::fs::open_append(&spill.path)?;
            crate::fs::write_line(&mut a, &spill.path, "")?;
            spill.len += 1;
        }
        spill.offset = spill.offset.min(spill.len);
        let mut at = 0u64;
        for line in BufReader::new(f).split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", spill.path.display()))?;
            let start = at;
            at += line.len() as u64 + 1;
            let Ok(p) = serde_json::from_slice::<Pending>(&line) else { continue };
            let high = spill.high.entry(suffix(&p).to_string()).or_insert(0);
            *high = (*high).max(p.seq);
            if start >= spill.offset {
                spill.count += 1;
            }
        }
        Ok(spill)
    }

    /// Deliveries waiting here.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Any delivery in the queue, to tell whose queue it is (`None` when empty).
    pub fn peek(&self) -> Result<Option<Pending>> {
        Ok(self.read(1)?.0.into_iter().next())
    }

    /// Append deliveries at the tail; repeats are skipped. Returns how many were added.
    pub fn push(&mut self, items: &[Pending]) -> Result<usize> {
        let mut lines = String::new();
        let mut added = 0;
        for p in items {
            let high = self.high.entry(suffix(p).to_string()).or_insert(0);
            if p.seq <= *high && *high > 0 {
                continue;
            }
            *high = p.seq;
            lines.push_str(&serde_json::to_string(p).context("cannot serialize a delivery")?);
            lines.push('\n');
            added += 1;
        }
        if added == 0 {
            return Ok(0);
        }
        if self.file.is_none() {
            self.file = Some(crate::fs::open_append(&self.path)?);
        }
        let lines = lines.strip_suffix('\n').unwrap_or(&lines);
        crate::fs::write_line_whole(self.file.as_mut().expect("opened above"), &self.path, lines)?;
        self.len += lines.len() as u64 + 1;
        self.count += added;
        self.dirty = true;
        Ok(added)
    }

    /// Make what was appended durable (before the checkpoint moves past it).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            if let Some(f) = &self.file {
                f.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Up to `n` deliveries from the head, and the offset just past them. Nothing moves until
    /// [`Spill::commit`].
    pub fn read(&self, n: usize) -> Result<(Vec<Pending>, u64)> {
        let mut out = Vec::new();
        if n == 0 || self.offset >= self.len {
            return Ok((out, self.offset));
        }
        let mut f = File::open(&self.path).with_context(|| format!("cannot open {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(f);
        let mut at = self.offset;
        let mut line = Vec::new();
        while out.len() < n && at < self.len {
            line.clear();
            let read =
                reader.read_until(b'\n', &mut line).with_context(|| format!("cannot read {}", self.path.display()))?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            at += read as u64;
            match serde_json::from_slice::<Pending>(&line[..read - 1]) {
                Ok(p) => out.push(p),
                Err(e) => tracing::warn!("skipping a corrupt line of {}: {e}", self.path.display()),
            }
        }
        Ok((out, at))
    }

    /// The head up to `offset` has moved to the outbox (which is synced): move the cursor, or remove
    /// the queue when it is all read. `taken` is how many deliveries that was.
    pub fn commit(&mut self, offset: u64, taken: usize) -> Result<()> {
        self.count = self.count.saturating_sub(taken);
        if offset >= self.len {
            self.file = None;
            remove_if_present(&self.path)?;
            remove_if_present(&self.cursor_path)?;
            self.offset = 0;
            self.len = 0;
            self.count = 0;
            self.high.clear();
            return Ok(());
        }
        crate::fs::write_json_atomic(&self.cursor_path, &CursorDoc { schema: super::delivery::SCHEMA, offset })?;
        self.offset = offset;
        Ok(())
    }

    /// Throw the whole queue away (its registration was removed); returns how many it held.
    pub fn discard(&mut self) -> Result<usize> {
        let n = self.count;
        self.commit(self.len, n)?;
        Ok(n)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Every queue in `dir` with a delivery in it, keyed by registration key. Empty leftovers are
/// removed.
pub fn open_all(dir: &Path) -> Result<HashMap<String, Spill>> {
    let mut out = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let Some(tag) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let mut spill = Spill::open(dir, tag)?;
        match spill.peek()? {
            Some(p) => {
                out.insert(super::webhook::registration_key(&p.reg_event, &p.url), spill);
            }
            None => spill.commit(spill.len, 0)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, suffix: &str) -> Pending {
        serde_json::from_value(serde_json::json!({
            "id": format!("msg_{seq}_t{suffix}"), "webhook_id": format!("msg_{seq}_t"), "seq": seq,
            "event": "on_scene_enter", "reg_event": "*", "url": "http://127.0.0.1:9/", "body": "{}",
        }))
        .unwrap()
    }

    #[test]
    fn a_queue_is_fifo_across_reopen_and_skips_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Spill::open(dir.path(), "t").unwrap();
        assert_eq!(q.push(&[item(1, ""), item(2, ""), item(3, "")]).unwrap(), 3);
        // Re-reading the history after a crash queues the same deliveries again: skipped.
        assert_eq!(q.push(&[item(2, ""), item(3, ""), item(4, "")]).unwrap(), 1);
        // A replay's ids are their own sequence.
        assert_eq!(q.push(&[item(1, ".replay-r")]).unwrap(), 1);
        q.sync().unwrap();
        let (head, at) = q.read(2).unwrap();
        assert_eq!(head.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2]);
        // Not committed: a reopen starts at the head again.
        let q2 = Spill::open(dir.path(), "t").unwrap();
        assert_eq!((q2.len(), q2.read(1).unwrap().0[0].seq), (5, 1));
        q.commit(at, 2).unwrap();
        let mut q3 = Spill::open(dir.path(), "t").unwrap();
        assert_eq!(q3.len(), 3);
        assert_eq!(q3.push(&[item(4, "")]).unwrap(), 0, "the high-water mark survives a reopen");
        let (rest, end) = q3.read(10).unwrap();
        assert_eq!(rest.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["msg_3_t", "msg_4_t", "msg_1_t.replay-r"]);
        q3.commit(end, 3).unwrap();
        assert!(q3.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "an empty queue leaves no files");
    }

    #[test]
    fn a_torn_tail_is_closed_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Spill::open(dir.path(), "t").unwrap();
        q.push(&[item(1, "")]).unwrap();
        drop(q);
        use std::io::Write;
        let path = dir.path().join("t.jsonl");
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"id\":\"msg_2").unwrap();
        let mut q = Spill::open(dir.path(), "t").unwrap();
        assert_eq!(q.read(10).unwrap().0.len(), 1);
        q.push(&[item(3, "")]).unwrap();
        let (items, _) = q.read(10).unwrap();
        assert_eq!(items.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 3]);
        let all = open_all(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert!(all.contains_key(&crate::hooks::webhook::registration_key("*", "http://127.0.0.1:9/")));
    }
}
