//! The durable outbox: messages waiting for their destination, one append-only `outbox.jsonl` per
//! pipeline (`data/webhooks/`, `data/crash-upload/`).
//!
//! Records are `enqueue` (the whole message, body as sent), `retry` (attempts and the next time),
//! `park` / unpark, and `ack` (delivered, failed or dropped). Loading replays them; torn or
//! unreadable lines are skipped. Compaction rewrites the file atomically with only what is pending.
//!
//! Invariants:
//! - One writer per file (the pipeline's lock file says who).
//! - An id is enqueued at most once between compactions ([`Outbox::knows`]), so re-enqueueing after
//!   a crash is idempotent.
//! - An acked message is never pending again; the caller fsyncs ([`Outbox::sync`]) before anything
//!   that depends on the records being durable (a checkpoint, a state line).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Version of the outbox header record.
pub const SCHEMA: u64 = 1;

/// Rewrite the outbox once it is this big and mostly acked, even with messages still pending.
const COMPACT_BYTES: u64 = 4 * 1024 * 1024;

/// What happened to a message in the end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver refused it (a 4xx other than 408 and 429) through the whole retry schedule.
    Failed,
    /// The registration was removed before delivery.
    Dropped,
}

/// One delivery waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// Unique outbox id (the `webhook-id`, plus a suffix for replays).
    pub id: String,
    /// The Standard Webhooks message id: the same for every attempt and every replay of a message.
    pub webhook_id: String,
    pub seq: u64,
    pub event: String,
    /// The registration's event pattern and URL (its identity).
    pub reg_event: String,
    pub url: String,
    /// The exact request body, kept as sent so every attempt signs the same bytes.
    pub body: String,
    #[serde(default)]
    pub attempts: u32,
    /// Epoch milliseconds before which the next attempt must not start.
    #[serde(default)]
    pub next_at_ms: i64,
    /// The last attempt found the receiver down, so `next_at_ms` holds its whole lane back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lane_down: bool,
    /// Kept for a disabled registration: not sent until it is enabled again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parked: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Pending {
    /// The queue this message waits in: its destination's identity.
    pub fn lane(&self) -> String {
        lane_key(&self.reg_event, &self.url)
    }
}

/// A lane's key: the registration's event pattern (or the sink's name) and its URL.
pub fn lane_key(reg_event: &str, url: &str) -> String {
    format!("{reg_event}\n{url}")
}

/// One line of `outbox.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Header {
        schema: u64,
    },
    Enqueue(Pending),
    Retry {
        id: String,
        attempts: u32,
        next_at_ms: i64,
        #[serde(default, skip_serializing_if = "is_false")]
        lane_down: bool,
    },
    Ack {
        id: String,
        outcome: Outcome,
        at: String,
    },
    /// Kept for a disabled registration (`parked`), or sent again once it is enabled (`!parked`).
    Park {
        id: String,
        parked: bool,
    },
}

/// Milliseconds since the epoch (the outbox's clock for `next_at_ms`).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The durable outbox (see the module doc).
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: Option<File>,
    pending: HashMap<String, Pending>,
    /// Every id enqueued since the last compaction (acked or not): makes re-enqueue idempotent.
    seen: HashSet<String>,
    bytes: u64,
    acked: u64,
    parked: usize,
    /// Pending deliveries per registration key.
    per_lane: HashMap<String, usize>,
}

impl Outbox {
    /// Read the outbox (a missing file is empty). Torn or unreadable lines are skipped.
    pub fn load(path: &Path) -> Result<Outbox> {
        let mut ob = Outbox {
            path: path.to_path_buf(),
            file: None,
            pending: HashMap::new(),
            seen: HashSet::new(),
            bytes: 0,
            acked: 0,
            parked: 0,
            per_lane: HashMap::new(),
        };
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ob),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        for line in BufReader::new(f).split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            ob.bytes += line.len() as u64 + 1;
            match serde_json::from_slice::<Record>(&line) {
                Ok(Record::Enqueue(p)) => {
                    if ob.seen.insert(p.id.clone()) {
                        ob.pending.insert(p.id.clone(), p);
                    }
                }
                Ok(Record::Retry { id, attempts, next_at_ms, lane_down }) => {
                    if let Some(p) = ob.pending.get_mut(&id) {
                        p.attempts = attempts;
                        p.next_at_ms = next_at_ms;
                        p.lane_down = lane_down;
                    }
                }
                Ok(Record::Ack { id, .. }) => {
                    ob.pending.remove(&id);
                    ob.acked += 1;
                }
                Ok(Record::Park { id, parked }) => {
                    if let Some(p) = ob.pending.get_mut(&id) {
                        p.parked = parked;
                    }
                }
                Ok(Record::Header { .. }) | Err(_) => {}
            }
        }
        ob.parked = ob.pending.values().filter(|p| p.parked).count();
        for p in ob.pending.values() {
            *ob.per_lane.entry(p.lane()).or_default() += 1;
        }
        Ok(ob)
    }

    /// Deliveries not yet acked, oldest event first.
    pub fn pending(&self) -> Vec<&Pending> {
        let mut v: Vec<&Pending> = self.pending.values().collect();
        v.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        v
    }

    /// Messages not yet acked, in no order (cheaper than [`Outbox::pending`]).
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.pending.values()
    }

    /// How many messages are not yet acked.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many pending messages are parked.
    pub fn parked_count(&self) -> usize {
        self.parked
    }

    pub fn get(&self, id: &str) -> Option<&Pending> {
        self.pending.get(id)
    }

    /// Whether `id` was enqueued since the last compaction (acked or not).
    pub fn knows(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Pending deliveries of one registration.
    pub fn lane_len(&self, lane: &str) -> usize {
        self.per_lane.get(lane).copied().unwrap_or(0)
    }

    fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let fresh = !self.path.exists();
            let mut f = crate::fs::open_append(&self.path)?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if fresh || len == 0 {
                let header = serde_json::to_string(&Record::Header { schema: SCHEMA })?;
                crate::fs::write_line(&mut f, &self.path, &header)?;
                self.bytes += header.len() as u64 + 1;
            } else if !crate::fs::ends_with_newline(&self.path, len)? {
                // Close a line torn by a crash so the next record starts on its own line.
                crate::fs::write_line(&mut f, &self.path, "")?;
            }
            self.file = Some(f);
        }
        let lines = records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot serialize an outbox record")?
            .join("\n");
        self.bytes += lines.len() as u64 + 1;
        let f = self.file.as_mut().expect("opened above");
        crate::fs::write_line_whole(f, &self.path, &lines)
    }

    /// Add deliveries; those whose id is already known are skipped. Returns the ones added.
    pub fn enqueue(&mut self, items: Vec<Pending>) -> Result<Vec<Pending>> {
        let fresh: Vec<Pending> = items.into_iter().filter(|p| !self.seen.contains(&p.id)).collect();
        let records: Vec<Record> = fresh.iter().cloned().map(Record::Enqueue).collect();
        self.append(&records)?;
        for p in &fresh {
            self.seen.insert(p.id.clone());
            self.pending.insert(p.id.clone(), p.clone());
            *self.per_lane.entry(p.lane()).or_default() += 1;
        }
        Ok(fresh)
    }

    /// Remember a failed attempt and when to try again; `lane_down`: the receiver looked down.
    pub fn retry(&mut self, id: &str, attempts: u32, next_at_ms: i64, lane_down: bool) -> Result<()> {
        self.append(&[Record::Retry { id: id.to_string(), attempts, next_at_ms, lane_down }])?;
        if let Some(p) = self.pending.get_mut(id) {
            p.attempts = attempts;
            p.next_at_ms = next_at_ms;
            p.lane_down = lane_down;
        }
        Ok(())
    }

    /// Keep deliveries for a disabled registration (`parked`), or release them again.
    pub fn park(&mut self, ids: &[String], parked: bool) -> Result<()> {
        let records: Vec<Record> = ids.iter().map(|id| Record::Park { id: id.clone(), parked }).collect();
        self.append(&records)?;
        for id in ids {
            if let Some(p) = self.pending.get_mut(id) {
                if p.parked != parked {
                    p.parked = parked;
                    if parked {
                        self.parked += 1;
                    } else {
                        self.parked -= 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close deliveries for good.
    pub fn ack(&mut self, ids: &[String], outcome: Outcome) -> Result<()> {
        let at = crate::time::iso_now();
        let records: Vec<Record> =
            ids.iter().map(|id| Record::Ack { id: id.clone(), outcome, at: at.clone() }).collect();
        self.append(&records)?;
        for id in ids {
            let Some(p) = self.pending.remove(id) else { continue };
            self.parked -= usize::from(p.parked);
            let lane = p.lane();
            if let Some(n) = self.per_lane.get_mut(&lane) {
                *n -= 1;
                if *n == 0 {
                    self.per_lane.remove(&lane);
                }
            }
        }
        self.acked += ids.len() as u64;
        Ok(())
    }

    /// Make everything appended so far durable (before the checkpoint moves past it).
    pub fn sync(&self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Worth compacting: acks exist and either nothing is pending or the file is big and mostly acks.
    pub fn wants_compaction(&self) -> bool {
        self.acked > 0
            && (self.pending.is_empty() || (self.bytes > COMPACT_BYTES && self.acked > self.pending.len() as u64))
    }

    /// Rewrite the file with only the pending deliveries (atomically). The caller must have written a
    /// checkpoint covering every acked event first.
    pub fn compact(&mut self) -> Result<()> {
        let mut text = serde_json::to_string(&Record::Header { schema: SCHEMA })?;
        text.push('\n');
        for p in self.pending() {
            text.push_str(&serde_json::to_string(&Record::Enqueue(p.clone()))?);
            text.push('\n');
        }
        self.file = None;
        crate::fs::write_atomic(&self.path, text.as_bytes())?;
        self.bytes = text.len() as u64;
        self.acked = 0;
        self.seen = self.pending.keys().cloned().collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn pending(id: &str, seq: u64) -> Pending {
        Pending {
            id: id.into(),
            webhook_id: id.into(),
            seq,
            event: "on_scene_enter".into(),
            reg_event: "*".into(),
            url: "http://127.0.0.1:9/".into(),
            body: r#"{"event":"on_scene_enter","ts":1.5,"data":{}}"#.into(),
            attempts: 0,
            next_at_ms: 0,
            lane_down: false,
            parked: false,
        }
    }

    #[test]
    fn outbox_survives_reload_and_ignores_reenqueue_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut ob = Outbox::load(&path).unwrap();
        assert_eq!(ob.enqueue(vec![pending("a", 1), pending("b", 2), pending("c", 3)]).unwrap().len(), 3);
        ob.retry("b", 2, 12345, true).unwrap();
        ob.ack(&["a".into()], Outcome::Delivered).unwrap();
        drop(ob);
        // A crash mid-write leaves a torn last line.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"op\":\"ack\",\"id\":\"c").unwrap();
        let mut ob = Outbox::load(&path).unwrap();
        let ids: Vec<&str> = ob.pending().iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!((ob.get("b").unwrap().attempts, ob.get("b").unwrap().next_at_ms), (2, 12345));
        // Re-enqueueing after a restart (checkpoint behind the outbox) adds nothing, acked or not.
        assert!(ob.enqueue(vec![pending("a", 1), pending("b", 2)]).unwrap().is_empty());
        ob.ack(&["c".into()], Outcome::Delivered).unwrap();
        let ob = Outbox::load(&path).unwrap();
        assert_eq!(ob.pending().len(), 1, "the torn line was closed, later records still parse");
    }

    #[test]
    fn compaction_keeps_only_pending_with_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut ob = Outbox::load(&path).unwrap();
        ob.enqueue(vec![pending("a", 1), pending("b", 2)]).unwrap();
        ob.retry("b", 1, 99, false).unwrap();
        ob.ack(&["a".into()], Outcome::Delivered).unwrap();
        assert!(!ob.wants_compaction());
        ob.compact().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().next().unwrap().contains("\"schema\":1"));
        let ob2 = Outbox::load(&path).unwrap();
        assert_eq!(ob2.get("b").unwrap().next_at_ms, 99);
        ob.ack(&["b".into()], Outcome::Failed).unwrap();
        assert!(ob.wants_compaction());
        ob.compact().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn lane_holds_and_parking_survive_reload_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut ob = Outbox::load(&path).unwrap();
        ob.enqueue(vec![pending("a", 1), pending("b", 2), pending("c", 3)]).unwrap();
        ob.retry("a", 3, 777, true).unwrap();
        ob.park(&["b".into(), "c".into()], true).unwrap();
        ob.park(&["c".into()], false).unwrap();
        assert_eq!(ob.parked, 1);
        let reloaded = Outbox::load(&path).unwrap();
        let a = reloaded.get("a").unwrap();
        assert_eq!((a.attempts, a.next_at_ms, a.lane_down, a.parked), (3, 777, true, false));
        assert_eq!((reloaded.get("b").unwrap().parked, reloaded.get("c").unwrap().parked), (true, false));
        assert_eq!(reloaded.parked, 1);
        ob.ack(&["b".into()], Outcome::Delivered).unwrap();
        assert_eq!(ob.parked, 0);
        ob.park(&["c".into()], true).unwrap();
        ob.compact().unwrap();
        let compacted = Outbox::load(&path).unwrap();
        assert_eq!((compacted.get("a").unwrap().lane_down, compacted.get("c").unwrap().parked), (true, true));
        assert_eq!(compacted.parked, 1);
    }
}
