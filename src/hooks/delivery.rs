//! Webhook delivery: a worker follows the hook history from a durable checkpoint, writes each
//! matching event into a durable outbox, and POSTs it to the receiver with retries.
//!
//! Files under `data/webhooks/`: `checkpoint.json` (the last history `seq` whose deliveries are in
//! the outbox), `outbox.jsonl` (append-only records: `enqueue`, `retry`, `ack`), `deliveries.jsonl`
//! (one line per attempt or drop, rotated at `obs.webhooks.deliveries_max_bytes`), `replay/*.json`
//! (requests from `webhooks replay`), `spill/` (each registration's backlog beyond
//! `obs.webhooks.max_in_memory`, see [`super::spill`]), `worker.lock`. Registrations belong to
//! [`super::webhook`].
//!
//! Invariants:
//! - One worker per runtime root: it holds `worker.lock` for its life and is the only writer of the
//!   outbox, the checkpoint and the delivery log. A second worker waits for the lock.
//! - The outbox (and the spill queues) are fsynced before the checkpoint moves past what they hold, so a crash (even `kill -9`)
//!   never loses an event: after a restart the worker re-reads the history from the checkpoint, and
//!   outbox ids (`msg_<seq>_<hash of registration>`) make the re-enqueue idempotent.
//! - An acked delivery is never sent again: the ack record is appended right after the 2xx, and
//!   compaction (rewrite of the outbox with only the pending records) runs only after the
//!   checkpoint covers every acked event. Delivery is at-least-once: a crash between the receiver's
//!   2xx and the ack line resends that one message with the same `webhook-id`, which receivers use to
//!   de-duplicate.
//! - Emitting never waits on delivery: emitters only append to the history; this worker runs in its
//!   own thread (or process) and sends with a small thread pool, at most
//!   `obs.webhooks.in_flight_per_receiver` requests per registration, so a slow receiver cannot hold
//!   up the others.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::spill::{self, Spill};
use super::webhook::{
    event_matcher, failing_since_ms, AttemptRun, DisablePolicy, Registration, WebhookSink, WebhookStore,
};
use super::{Bus, Envelope, Follower};
use crate::config::{Config, WebhookSettings};
use crate::outbound::checkpoint::{read as read_checkpoint, write as write_checkpoint};
use crate::outbound::queue::now_ms;
use crate::outbound::{next_delay, Client, Reply, Verdict};
pub use crate::outbound::{Outbox, Outcome, Pending};
use crate::paths::Paths;

/// Version of the replay-request documents.
pub const SCHEMA: u64 = 1;

/// The checkpoint is written at most this often while events stream in (always when idle).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How often the worker looks for replay requests.
const REPLAY_EVERY: Duration = Duration::from_millis(200);
/// Failure counts are written to the registrations at most this often (a disable is written at once).
const RUNS_EVERY: Duration = Duration::from_secs(1);

/// The files of the delivery pipeline.
#[derive(Debug, Clone)]
pub struct WebhookFiles {
    pub dir: PathBuf,
    pub outbox: PathBuf,
    pub checkpoint: PathBuf,
    pub deliveries: PathBuf,
    pub replay_dir: PathBuf,
    pub spill_dir: PathBuf,
    pub worker_lock: PathBuf,
}

impl WebhookFiles {
    pub fn new(paths: &Paths) -> WebhookFiles {
        let dir = paths.webhooks_dir();
        WebhookFiles {
            outbox: dir.join("outbox.jsonl"),
            checkpoint: dir.join("checkpoint.json"),
            deliveries: dir.join("deliveries.jsonl"),
            replay_dir: dir.join("replay"),
            spill_dir: dir.join("spill"),
            worker_lock: dir.join("worker.lock"),
            dir,
        }
    }
}

/// `deliveries.jsonl`, rotated to `deliveries.jsonl.1` at a size cap.
#[derive(Debug)]
struct DeliveryLog {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
}

impl DeliveryLog {
    fn new(path: PathBuf, max_bytes: u64) -> DeliveryLog {
        DeliveryLog { path, max_bytes: max_bytes.max(4096), file: None, size: 0 }
    }

    fn append(&mut self, entry: &Value) -> Result<()> {
        if self.file.is_none() {
            let f = crate::fs::open_append(&self.path)?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        if self.size >= self.max_bytes {
            self.file = None;
            let rotated = rotated_log(&self.path);
            std::fs::rename(&self.path, &rotated).with_context(|| format!("cannot rotate {}", self.path.display()))?;
            self.file = Some(crate::fs::open_append(&self.path)?);
            self.size = 0;
        }
        let line = serde_json::to_string(entry)?;
        self.size += line.len() as u64 + 1;
        crate::fs::write_line_whole(self.file.as_mut().expect("opened above"), &self.path, &line)
    }
}

fn rotated_log(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The last `n` delivery log entries, oldest first (reads from the end of the file).
pub fn recent_deliveries(paths: &Paths, n: usize) -> Result<Vec<Value>> {
    let path = WebhookFiles::new(paths).deliveries;
    let mut lines = tail_lines(&path, n)?;
    if lines.len() < n {
        let mut older = tail_lines(&rotated_log(&path), n - lines.len())?;
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The last `n` complete lines of a file, oldest first; a missing file has none.
fn tail_lines(path: &Path, n: usize) -> Result<Vec<String>> {
    const CHUNK: u64 = 64 * 1024;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let len = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Count complete lines in what we have (the bytes after the last newline are a torn line).
        let complete = buf.iter().rposition(|&b| b == b'\n').map(|p| &buf[..p]).unwrap_or(&[]);
        let newlines = complete.iter().filter(|&&b| b == b'\n').count();
        if start == 0 || newlines > n {
            break;
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk).with_context(|| format!("cannot read {}", path.display()))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let end = buf.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if start > 0 {
        lines.remove(0); // may be the tail of a line that started before what we read
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().filter(|l| !l.is_empty()).map(|l| l.to_string()).collect())
}

/// A request for `webhooks replay`, picked up by the worker.
#[derive(Debug, Serialize, Deserialize)]
struct ReplayDoc {
    schema: u64,
    /// Re-send events with `seq > since` …
    since: u64,
    /// … up to this one (the history's end when asked).
    until: u64,
    /// Only to this URL.
    #[serde(default)]
    url: Option<String>,
    requested_at: String,
}

/// What a replay request covers.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    pub request: PathBuf,
    pub since: u64,
    pub until: u64,
    /// Events in range that match at least one enabled registration.
    pub events: usize,
    /// Deliveries the worker will enqueue.
    pub deliveries: usize,
    /// Disabled registrations of `--url` this request enabled again (their kept deliveries are sent
    /// too), with the `disabled_seq` each had.
    pub reenabled: Vec<Value>,
    /// Disabled registrations that were left out (no `--url` named them).
    pub skipped_disabled: Vec<Value>,
}

/// Ask the worker to re-send events with `seq > since` (up to the history's end now) to every enabled
/// registration they match (optionally only to `url`), with their original `webhook-id`.
/// A replay to one URL is an explicit request to deliver there: it enables that URL's disabled
/// registrations again, which also sends the deliveries they kept.
pub fn request_replay(paths: &Paths, config: &Config, since: u64, url: Option<&str>) -> Result<ReplayPlan> {
    let bus = Bus::open(paths, config)?;
    let until = bus.history.last_seq()?;
    let store = WebhookStore::new(paths);
    let reenabled: Vec<Value> = match url {
        Some(u) => store
            .reenable(|r| r.url == u, until)?
            .into_iter()
            .map(|(r, seq)| json!({"event": r.event, "url": r.url, "disabled_seq": seq}))
            .collect(),
        None => Vec::new(),
    };
    let regs = compile(store.load()?);
    let skipped_disabled: Vec<Value> =
        regs.iter().filter(|c| !c.reg.enabled).map(|c| json!({"event": c.reg.event, "url": c.reg.url})).collect();
    let mut events = 0;
    let mut deliveries = 0;
    if until > since {
        let mut follower = bus.history.follow(since)?;
        for env in follower.poll()?.into_iter().filter(|e| e.seq <= until) {
            let n =
                regs.iter().filter(|r| r.reg.enabled && url.is_none_or(|u| u == r.reg.url) && r.matches(&env)).count();
            events += usize::from(n > 0);
            deliveries += n;
        }
    }
    let files = WebhookFiles::new(paths);
    let name = format!("{}-{}.json", crate::time::file_stamp(), crate::digest::random_hex8());
    let request = files.replay_dir.join(name);
    let doc =
        ReplayDoc { schema: SCHEMA, since, until, url: url.map(str::to_string), requested_at: crate::time::iso_now() };
    crate::fs::write_json_atomic(&request, &doc)?;
    Ok(ReplayPlan { request, since, until, events, deliveries, reenabled, skipped_disabled })
}

/// A registration with its compiled event pattern.
struct Compiled {
    reg: Registration,
    matcher: globset::GlobMatcher,
    /// First 8 hex of the sha256 of the registration key: part of every delivery id.
    tag: String,
}

impl Compiled {
    fn matches(&self, env: &Envelope) -> bool {
        self.reg.event == "*" || self.reg.event == env.event || self.matcher.is_match(&env.event)
    }

    fn pending(&self, env: &Envelope, body: &str, suffix: &str) -> Pending {
        let webhook_id = format!("msg_{}_{}", env.seq, self.tag);
        Pending {
            id: format!("{webhook_id}{suffix}"),
            webhook_id,
            seq: env.seq,
            event: env.event.clone(),
            reg_event: self.reg.event.clone(),
            url: self.reg.url.clone(),
            body: body.to_string(),
            attempts: 0,
            next_at_ms: 0,
            lane_down: false,
            parked: false,
        }
    }
}

fn compile(regs: Vec<Registration>) -> Vec<Compiled> {
    regs.into_iter()
        .filter_map(|reg| match event_matcher(&reg.event) {
            Ok(matcher) => {
                let tag = crate::digest::sha256_hex(reg.key().as_bytes())[..8].to_string();
                Some(Compiled { reg, matcher, tag })
            }
            Err(e) => {
                tracing::warn!(event = %reg.event, url = %reg.url, "skipping webhook registration: {e:#}");
                None
            }
        })
        .collect()
}

/// The exact body of a delivery: `{"event","ts","data"}`.
pub fn body_of(env: &Envelope) -> String {
    serde_json::to_string(&env.wire()).unwrap_or_default()
}

/// One request for a pool thread.
struct Job {
    id: String,
    lane: String,
    webhook_id: String,
    url: String,
    body: String,
    secret: Option<String>,
    attempt: u32,
}

/// A pool thread's answer.
struct Done {
    id: String,
    lane: String,
    attempt: u32,
    reply: Reply,
    verdict: Verdict,
}

/// One registration's deliveries in the worker.
#[derive(Default)]
struct Lane {
    /// Ready to send, oldest event first: `(seq, id)`.
    ready: BTreeSet<(u64, String)>,
    in_flight: usize,
    /// The receiver looked down (no answer, a 5xx, 408 or 429): nothing of this lane is sent before
    /// this time (epoch ms), and after it one delivery at a time, until one gets a 2xx. Then the
    /// whole backlog goes at full speed, in `seq` order.
    down_until: Option<i64>,
    /// Consecutive probes that found the receiver down: the lane's place in the retry schedule.
    down_attempts: u32,
}

impl Lane {
    /// How many may be in flight now: 0 while backing off, 1 probe once the wait is over.
    fn cap(&self, cap: usize, now: i64) -> usize {
        match self.down_until {
            Some(t) if t > now => 0,
            Some(_) => 1,
            None => cap,
        }
    }
}

/// Start the delivery worker on its own thread (for `serve`). It runs until `stop` is set; an error
/// (a full disk, a corrupt checkpoint) is logged and the worker starts again after a pause.
/// [`run_worker`] itself restarts after errors once it has started; this loop covers the first start.
pub fn spawn_worker(paths: Paths, config: Config, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("webhook-worker".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match run_worker(&paths, &config, &stop) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!("webhook delivery worker stopped: {e:#}; restarting in 5 s");
                        sleep_unless(&stop, RESTART_AFTER);
                    }
                }
            }
        })
        .context("cannot start the webhook delivery thread")
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
}

/// True when a delivery worker (in `serve` or `webhooks run`) holds this root's worker lock.
pub fn worker_active(paths: &Paths) -> Result<bool> {
    let files = WebhookFiles::new(paths);
    let lock = crate::fs::open_append(&files.worker_lock)?;
    match lock.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", files.worker_lock.display()))
        }
    }
}

/// Run the delivery worker in this thread until `stop` is set (`webhooks run`). Waits while another
/// worker holds the lock for this runtime root.
pub fn run_worker(paths: &Paths, config: &Config, stop: &AtomicBool) -> Result<()> {
    let files = WebhookFiles::new(paths);
    crate::fs::ensure_dir(&files.dir)?;
    let lock = crate::fs::open_append(&files.worker_lock)?;
    let mut told = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!("another webhook delivery worker holds {}; waiting", files.worker_lock.display());
                    told = true;
                }
                sleep_unless(stop, Duration::from_millis(250));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", files.worker_lock.display()))
            }
        }
    }
    // An error at the first start (a corrupt checkpoint, unreadable registrations) is the caller's to
    // report. After that, an error (a full disk) is logged and the worker starts again from what is on
    // disk after a pause, keeping the lock: nothing acked is lost, and it catches up by itself.
    let mut first = true;
    loop {
        let mut worker = match Worker::open(paths, config, files.clone()) {
            Ok(w) => w,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::error!("cannot restart the webhook delivery worker: {e:#}; retrying in 5 s");
                sleep_unless(stop, RESTART_AFTER);
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
        };
        if first {
            tracing::info!(
                pending = worker.outbox.len(),
                from_seq = worker.checkpoint,
                "webhook delivery worker started"
            );
        }
        first = false;
        let result = worker.run(stop);
        let finish = worker.shutdown();
        match result.and(finish) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::error!("webhook delivery worker stopped: {e:#}; restarting in 5 s");
                sleep_unless(stop, RESTART_AFTER);
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                tracing::info!("webhook delivery worker started again");
            }
        }
    }
}

/// Pause before the worker starts again after an error.
const RESTART_AFTER: Duration = Duration::from_secs(5);

struct Worker {
    files: WebhookFiles,
    settings: WebhookSettings,
    store: WebhookStore,
    bus: Bus,
    regs: HashMap<String, Compiled>,
    regs_stamp: Option<(u64, i64, i64, u64)>,
    outbox: Outbox,
    /// Backlogs beyond `max_in_memory`, per registration key.
    spills: HashMap<String, Spill>,
    log: DeliveryLog,
    follower: Follower,
    checkpoint: u64,
    checkpoint_dirty: bool,
    checkpoint_at: Instant,
    replay_at: Instant,
    lanes: HashMap<String, Lane>,
    delayed: BinaryHeap<Reverse<(i64, String)>>,
    in_flight: usize,
    /// Attempt outcomes per registration not yet written to the registrations file.
    runs: HashMap<String, AttemptRun>,
    runs_at: Instant,
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Worker {
    fn open(paths: &Paths, config: &Config, files: WebhookFiles) -> Result<Worker> {
        let settings = config.obs.webhooks.clone();
        let store = WebhookStore::new(paths);
        let bus = Bus::open(paths, config)?;
        // The stamp before the load: a registration written in between makes the first reload see a
        // change (the other way round, it was never loaded until the file changed again).
        let regs_stamp = store.stamp();
        let regs_list = store.load()?;
        let outbox = Outbox::load(&files.outbox)?;
        let spills = spill::open_all(&files.spill_dir)?;
        let checkpoint = match read_checkpoint(&files.checkpoint)? {
            Some(seq) => seq,
            // No checkpoint yet: start where the oldest enabled registration started, else at the end.
            None => match regs_list.iter().filter(|r| r.enabled).map(|r| r.since_seq).min() {
                Some(s) => s,
                None => bus.history.last_seq()?,
            },
        };
        let follower = bus.history.follow(checkpoint)?;
        let regs = compile(regs_list).into_iter().map(|c| (c.reg.key(), c)).collect();

        let workers = settings.workers.max(1);
        let client =
            Client::new(Duration::from_millis(settings.timeout_ms.max(1)), settings.in_flight_per_receiver.max(1));
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (job_rx, done_tx, client) = (Arc::clone(&job_rx), done_tx.clone(), client.clone());
            let t = std::thread::Builder::new()
                .name(format!("webhook-send-{i}"))
                .spawn(move || send_loop(&job_rx, &done_tx, &client))
                .context("cannot start a webhook delivery thread")?;
            threads.push(t);
        }

        let mut w = Worker {
            log: DeliveryLog::new(files.deliveries.clone(), settings.deliveries_max_bytes),
            files,
            settings,
            store,
            bus,
            regs,
            regs_stamp,
            outbox,
            spills,
            follower,
            checkpoint,
            checkpoint_dirty: false,
            checkpoint_at: Instant::now(),
            replay_at: Instant::now(),
            lanes: HashMap::new(),
            delayed: BinaryHeap::new(),
            in_flight: 0,
            runs: HashMap::new(),
            runs_at: Instant::now(),
            jobs: Some(job_tx),
            results: done_rx,
            threads,
        };
        let now = now_ms();
        let resumed: Vec<Pending> = w.outbox.pending().into_iter().filter(|p| !p.parked).cloned().collect();
        for p in resumed {
            let lane = w.lanes.entry(p.lane()).or_default();
            if p.lane_down && p.next_at_ms > now {
                lane.down_until = lane.down_until.max(Some(p.next_at_ms));
                lane.down_attempts = lane.down_attempts.max(p.attempts);
                lane.ready.insert((p.seq, p.id));
            } else if p.next_at_ms > now {
                w.delayed.push(Reverse((p.next_at_ms, p.id)));
            } else {
                lane.ready.insert((p.seq, p.id));
            }
        }
        w.lanes.retain(|_, l| !l.ready.is_empty());
        w.sync_parked()?;
        Ok(w)
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let poll = Duration::from_millis(self.settings.poll_ms.clamp(1, 5000));
        while !stop.load(Ordering::Relaxed) {
            self.reload_registrations();
            let new = self.pull_history()?;
            if self.replay_at.elapsed() >= REPLAY_EVERY {
                self.replay_at = Instant::now();
                self.process_replays()?;
            }
            self.refill()?;
            self.promote_due();
            self.dispatch()?;
            let next = self.delayed.peek().map(|Reverse((at, _))| *at);
            let next = self.lanes.values().filter_map(|l| l.down_until).chain(next).min();
            let wait =
                next.map_or(poll, |at| Duration::from_millis((at - now_ms()).clamp(0, poll.as_millis() as i64) as u64));
            match self.results.recv_timeout(wait) {
                Ok(done) => {
                    self.finish(done)?;
                    while let Ok(done) = self.results.try_recv() {
                        self.finish(done)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("webhook delivery threads exited"),
            }
            let idle = new == 0 && self.idle();
            self.persist(idle)?;
        }
        Ok(())
    }

    /// Stop sending, wait (up to the request timeout) for requests in flight so their outcome is
    /// recorded, write the checkpoint and stop the threads.
    fn shutdown(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(self.settings.timeout_ms) + Duration::from_millis(500);
        let mut result = Ok(());
        while self.in_flight > 0 && Instant::now() < deadline {
            match self.results.recv_timeout(Duration::from_millis(50)) {
                Ok(done) => {
                    if let Err(e) = self.finish(done) {
                        result = Err(e);
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let persisted = self.persist(true);
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        result.and(persisted)
    }

    fn reload_registrations(&mut self) {
        let stamp = self.store.stamp();
        if stamp == self.regs_stamp {
            return;
        }
        match self.store.load() {
            Ok(list) => {
                self.regs_stamp = stamp;
                let before = std::mem::take(&mut self.regs);
                self.regs = compile(list).into_iter().map(|c| (c.reg.key(), c)).collect();
                let fresh: Vec<String> = self
                    .regs
                    .iter()
                    .filter(|(k, c)| {
                        c.reg.enabled
                            && c.reg.since_seq < self.checkpoint
                            && !before.get(*k).is_some_and(|b| b.reg.enabled)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in fresh {
                    if let Err(e) = self.catch_up(&key) {
                        tracing::warn!("cannot queue the first events of a new webhook: {e:#}");
                    }
                }
            }
            Err(e) => tracing::warn!("keeping the previous webhook registrations: {e:#}"),
        }
        if let Err(e) = self.sync_parked() {
            tracing::warn!("cannot release the deliveries kept for a disabled webhook: {e:#}");
        }
    }

    /// A registration that appeared (or was enabled again) after the worker had already read past its
    /// `since_seq`: events emitted while `webhooks add` ran. Queue those the worker skipped for it.
    fn catch_up(&mut self, key: &str) -> Result<()> {
        let Some(c) = self.regs.get(key) else { return Ok(()) };
        let mut follower = self.bus.history.follow(c.reg.since_seq)?;
        let items: Vec<Pending> = follower
            .poll()?
            .iter()
            .filter(|env| env.seq <= self.checkpoint && c.matches(env))
            .map(|env| c.pending(env, &body_of(env), ""))
            .collect();
        if !items.is_empty() {
            tracing::debug!(deliveries = items.len(), "queued events a new webhook registration missed");
        }
        self.add(items)
    }

    /// Deliveries kept for a disabled registration go back to their lane once it is enabled again
    /// (`webhooks add`, `webhooks replay`), ahead of newer ones; those of a removed registration are
    /// dropped.
    fn sync_parked(&mut self) -> Result<()> {
        if self.outbox.parked_count() == 0 {
            return Ok(());
        }
        let mut resume = Vec::new();
        let mut removed = Vec::new();
        for p in self.outbox.iter().filter(|p| p.parked) {
            match self.regs.get(&p.lane()) {
                Some(c) if c.reg.enabled => resume.push((p.seq, p.id.clone(), p.lane())),
                Some(_) => {}
                None => removed.push(p.id.clone()),
            }
        }
        if !resume.is_empty() {
            let ids: Vec<String> = resume.iter().map(|(_, id, _)| id.clone()).collect();
            self.outbox.park(&ids, false)?;
            tracing::info!(deliveries = ids.len(), "sending the deliveries kept while a webhook was disabled");
            for (seq, id, lane) in resume {
                self.lanes.entry(lane).or_default().ready.insert((seq, id));
            }
        }
        if !removed.is_empty() {
            self.drop_deliveries(removed, Outcome::Dropped, "registration removed")?;
        }
        Ok(())
    }

    /// Enqueue deliveries for new history entries; returns how many entries were read.
    fn pull_history(&mut self) -> Result<usize> {
        let envs = self.follower.poll()?;
        if envs.is_empty() {
            return Ok(0);
        }
        let mut items = Vec::new();
        for env in &envs {
            let mut body = None;
            for c in self.regs.values().filter(|c| c.reg.enabled && env.seq > c.reg.since_seq && c.matches(env)) {
                let body = body.get_or_insert_with(|| body_of(env));
                items.push(c.pending(env, body, ""));
            }
        }
        self.add(items)?;
        self.checkpoint = self.follower.last_seq();
        self.checkpoint_dirty = true;
        Ok(envs.len())
    }

    /// Queue deliveries: into the outbox (and memory) while their registration has fewer than
    /// `max_in_memory` pending, else at the tail of its spill queue on disk. Once a registration
    /// spills, everything after goes to the queue until it is empty, which keeps `seq` order.
    fn add(&mut self, items: Vec<Pending>) -> Result<()> {
        let cap = self.settings.max_in_memory.max(1);
        let mut direct = Vec::new();
        let mut spilled: HashMap<String, Vec<Pending>> = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for p in items {
            if self.outbox.knows(&p.id) {
                continue;
            }
            let lane = p.lane();
            let queued = self.spills.get(&lane).is_some_and(|q| !q.is_empty()) || spilled.contains_key(&lane);
            let n = counts.entry(lane.clone()).or_insert_with(|| self.outbox.lane_len(&lane));
            if queued || *n >= cap {
                spilled.entry(lane).or_default().push(p);
            } else {
                *n += 1;
                direct.push(p);
            }
        }
        for p in self.outbox.enqueue(direct)? {
            self.lanes.entry(p.lane()).or_default().ready.insert((p.seq, p.id));
        }
        for (lane, items) in spilled {
            let queue = match self.spills.entry(lane) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    crate::fs::ensure_dir(&self.files.spill_dir)?;
                    let tag = spill::tag(e.key());
                    e.insert(Spill::open(&self.files.spill_dir, &tag)?)
                }
            };
            queue.push(&items)?;
        }
        Ok(())
    }

    /// Move the head of each spill queue into the outbox while its registration has room (in
    /// batches of at least half the cap). A removed registration's queue is thrown away.
    fn refill(&mut self) -> Result<()> {
        let cap = self.settings.max_in_memory.max(1);
        let keys: Vec<String> = self.spills.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let Some(queue) = self.spills.get_mut(&key) else { continue };
            match self.regs.get(&key) {
                None => {
                    let n = queue.discard()?;
                    let (event, url) = key.split_once('\n').unwrap_or((&key, ""));
                    tracing::warn!(event, url, deliveries = n, "dropped the queued deliveries of a removed webhook");
                    let entry = json!({"ts": crate::time::iso_now(), "registration": event, "url": url,
                        "outcome": "dropped", "count": n, "reason": "registration removed"});
                    self.log.append(&entry)?;
                    continue;
                }
                Some(c) if !c.reg.enabled => continue,
                Some(_) => {}
            }
            let room = cap.saturating_sub(self.outbox.lane_len(&key));
            if room < cap.div_ceil(2) {
                continue;
            }
            let (items, offset) = queue.read(room)?;
            let taken = items.len();
            for p in self.outbox.enqueue(items)? {
                self.lanes.entry(p.lane()).or_default().ready.insert((p.seq, p.id));
            }
            self.outbox.sync()?;
            queue.commit(offset, taken)?;
        }
        self.spills.retain(|_, q| !q.is_empty());
        Ok(())
    }

    /// Turn each request file in `replay/` into deliveries, then delete it. Replay ids carry the
    /// request's name, so a crash between the two steps does not enqueue twice.
    fn process_replays(&mut self) -> Result<()> {
        let mut requests: Vec<PathBuf> = match std::fs::read_dir(&self.files.replay_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => return Ok(()),
        };
        requests.sort();
        for path in requests {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let doc: ReplayDoc = match crate::fs::read_json_opt(&path)
                .and_then(|v| serde_json::from_value(v.unwrap_or(Value::Null)).context("not a replay request"))
            {
                Ok(doc) => doc,
                Err(e) => {
                    tracing::warn!("ignoring replay request {}: {e:#}", path.display());
                    let _ = crate::fs::quarantine(&path);
                    continue;
                }
            };
            let mut items = Vec::new();
            if doc.until > doc.since {
                let mut follower = self.bus.history.follow(doc.since)?;
                for env in follower.poll()?.into_iter().filter(|e| e.seq <= doc.until) {
                    let body = body_of(&env);
                    for c in self.regs.values().filter(|c| {
                        c.reg.enabled && doc.url.as_ref().is_none_or(|u| *u == c.reg.url) && c.matches(&env)
                    }) {
                        items.push(c.pending(&env, &body, &format!(".replay-{name}")));
                    }
                }
            }
            let n = items.len();
            self.add(items)?;
            self.outbox.sync()?;
            for queue in self.spills.values_mut() {
                queue.sync()?;
            }
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            tracing::info!(since = doc.since, until = doc.until, deliveries = n, "replay request queued");
        }
        Ok(())
    }

    fn promote_due(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.delayed.pop() else { break };
            if let Some(p) = self.outbox.get(&id).filter(|p| !p.parked) {
                self.lanes.entry(p.lane()).or_default().ready.insert((p.seq, id));
            }
        }
    }

    /// Hand ready deliveries to the pool: round-robin over lanes, each lane capped (one probe at a
    /// time while its receiver looks down), the pool capped.
    fn dispatch(&mut self) -> Result<()> {
        let cap = self.settings.in_flight_per_receiver.max(1);
        let pool = self.settings.workers.max(1);
        let now = now_ms();
        let mut dropped: Vec<String> = Vec::new();
        let mut parked: Vec<String> = Vec::new();
        loop {
            let mut progressed = false;
            for (key, lane) in self.lanes.iter_mut() {
                if self.in_flight >= pool {
                    break;
                }
                if lane.in_flight >= lane.cap(cap, now) {
                    continue;
                }
                let Some((_, id)) = lane.ready.pop_first() else { continue };
                progressed = true;
                let Some(p) = self.outbox.get(&id) else { continue };
                let Some(c) = self.regs.get(key) else {
                    dropped.push(id);
                    continue;
                };
                if !c.reg.enabled {
                    parked.push(id);
                    continue;
                }
                let job = Job {
                    id: id.clone(),
                    lane: key.clone(),
                    webhook_id: p.webhook_id.clone(),
                    url: p.url.clone(),
                    body: p.body.clone(),
                    secret: c.reg.secret.clone(),
                    attempt: p.attempts + 1,
                };
                if let Some(tx) = &self.jobs {
                    if tx.send(job).is_err() {
                        bail!("webhook delivery threads exited");
                    }
                }
                lane.in_flight += 1;
                self.in_flight += 1;
            }
            if !progressed || self.in_flight >= pool {
                break;
            }
        }
        self.lanes.retain(|_, l| !l.ready.is_empty() || l.in_flight > 0);
        if !dropped.is_empty() {
            self.drop_deliveries(dropped, Outcome::Dropped, "registration removed")?;
        }
        self.park(parked)
    }

    /// Keep deliveries for a disabled registration in the outbox (logged as `parked`).
    fn park(&mut self, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.outbox.park(&ids, true)?;
        for id in &ids {
            if let Some(p) = self.outbox.get(id) {
                let entry =
                    log_entry(p, None, "parked", None, Some("registration disabled; kept until it is enabled again"));
                self.log.append(&entry)?;
            }
        }
        Ok(())
    }

    fn drop_deliveries(&mut self, ids: Vec<String>, outcome: Outcome, reason: &str) -> Result<()> {
        let entries: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.outbox.get(id))
            .map(|p| log_entry(p, None, outcome.as_str(), None, Some(reason)))
            .collect();
        self.outbox.ack(&ids, outcome)?;
        for entry in &entries {
            self.log.append(entry)?;
        }
        Ok(())
    }

    /// Record one attempt's outcome: ack, schedule a retry (of the message, or of its whole lane when
    /// the receiver looks down), give up, or disable the registration.
    fn finish(&mut self, done: Done) -> Result<()> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(lane) = self.lanes.get_mut(&done.lane) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
        }
        let Some(p) = self.outbox.get(&done.id).cloned() else { return Ok(()) };
        let stored_failures = self.regs.get(&done.lane).map_or(0, |c| c.reg.consecutive_failures);
        if done.verdict == Verdict::Accepted {
            // Ack first: a log line saying "delivered" then always means "will not be sent again".
            self.outbox.ack(std::slice::from_ref(&done.id), Outcome::Delivered)?;
            self.log.append(&log_entry(&p, Some((&done.reply, done.attempt)), "delivered", None, None))?;
            if let Some(lane) = self.lanes.get_mut(&done.lane) {
                // The receiver is back: its whole backlog is ready now.
                lane.down_until = None;
                lane.down_attempts = 0;
            }
            let run = self
                .runs
                .entry(done.lane.clone())
                .or_insert_with(|| AttemptRun { key: done.lane.clone(), ..AttemptRun::default() });
            if stored_failures > 0 || run.failures > 0 {
                *run = AttemptRun { key: done.lane.clone(), reset: true, ..AttemptRun::default() };
            } else if !run.reset {
                self.runs.remove(&done.lane);
            }
            return Ok(());
        }
        let error = done.reply.describe();
        match self.regs.get(&done.lane) {
            None => return self.drop_deliveries(vec![done.id], Outcome::Dropped, "registration removed"),
            Some(c) if !c.reg.enabled => return self.park(vec![done.id]),
            Some(_) => {}
        }
        let run = self
            .runs
            .entry(done.lane.clone())
            .or_insert_with(|| AttemptRun { key: done.lane.clone(), ..AttemptRun::default() });
        if run.failures == 0 {
            run.first_failure_ms = Some(now_ms());
        }
        run.failures += 1;
        run.last_error = Some(error.clone());
        let count = if run.reset { 0 } else { stored_failures } + run.failures;
        let stored_since = self.regs.get(&done.lane).and_then(|c| failing_since_ms(&c.reg));
        let since = if run.reset { run.first_failure_ms } else { stored_since.or(run.first_failure_ms) };
        let policy = self.disable_policy();
        if policy.disables(count, since, now_ms()) {
            let run = self.runs.remove(&done.lane).expect("inserted above");
            if let Some(reg) = self.store.record_runs(&[run], policy)?.into_iter().next() {
                return self.disabled(&done, &p, reg, &error);
            }
        }
        let (down, retry_after) = match done.verdict {
            Verdict::Unavailable { retry_after } => (true, retry_after),
            Verdict::Paused(wait) => (true, Some(wait)),
            Verdict::Refused { retry_after } => (false, retry_after),
            Verdict::Accepted => unreachable!("handled above"),
        };
        if down {
            // The receiver looks down or overloaded (no answer, a timeout, 5xx, 408 or 429): hold the
            // whole lane back and probe with one message at a time, on the schedule and then at its
            // last interval, so an outage shorter than the disable policy loses nothing and the
            // backlog drains at once when a probe gets through.
            let now = now_ms();
            let lane = self.lanes.entry(done.lane.clone()).or_default();
            if lane.down_until.is_none_or(|t| t <= now) {
                lane.down_attempts += 1;
            }
            if let Some(delay) = next_delay(&self.settings.retry_schedule_ms, lane.down_attempts, retry_after, true) {
                let next_at = now + delay.as_millis() as i64;
                lane.down_until = lane.down_until.max(Some(next_at));
                lane.ready.insert((p.seq, done.id.clone()));
                self.outbox.retry(&done.id, done.attempt, next_at, true)?;
                self.log.append(&log_entry(&p, Some((&done.reply, done.attempt)), "retry", Some(delay), None))?;
                return Ok(());
            }
        } else if let Some(delay) = next_delay(&self.settings.retry_schedule_ms, done.attempt, retry_after, false) {
            // The receiver answered and refused this one message: retry it alone, on the schedule.
            let next_at = now_ms() + delay.as_millis() as i64;
            self.outbox.retry(&done.id, done.attempt, next_at, false)?;
            self.log.append(&log_entry(&p, Some((&done.reply, done.attempt)), "retry", Some(delay), None))?;
            self.delayed.push(Reverse((next_at, done.id)));
            return Ok(());
        }
        self.outbox.ack(std::slice::from_ref(&done.id), Outcome::Failed)?;
        self.log.append(&log_entry(&p, Some((&done.reply, done.attempt)), "failed", None, None))
    }

    /// The disable policy just disabled `reg` on this attempt: keep this delivery and the rest of its
    /// lane in the outbox (parked), note how far the worker had queued, and say so.
    fn disabled(&mut self, done: &Done, p: &Pending, reg: Registration, error: &str) -> Result<()> {
        self.log.append(&log_entry(p, Some((&done.reply, done.attempt)), "disabled", None, None))?;
        if let Some(c) = self.regs.get_mut(&done.lane) {
            c.reg.enabled = false;
        }
        self.lanes.remove(&done.lane);
        let lane: Vec<String> =
            self.outbox.pending().iter().filter(|q| q.lane() == done.lane && !q.parked).map(|q| q.id.clone()).collect();
        self.park(lane)?;
        self.store.set_disabled_seq(&done.lane, self.checkpoint)?;
        tracing::warn!(event = %reg.event, url = %reg.url, failures = reg.consecutive_failures, "webhook disabled: {error}");
        let data =
            json!({"event": reg.event, "url": reg.url, "failures": reg.consecutive_failures, "last_error": error});
        if let Err(e) = self.bus.emit("obs.webhook_disabled", data) {
            tracing::warn!("cannot record obs.webhook_disabled: {e:#}");
        }
        Ok(())
    }

    /// Move the checkpoint (outbox first), write failure counts, and compact the outbox when it is
    /// all acked. `force` writes whatever is pending (idle or shutting down).
    fn persist(&mut self, force: bool) -> Result<()> {
        let compact = self.outbox.wants_compaction() && self.in_flight == 0;
        if self.checkpoint_dirty && (force || compact || self.checkpoint_at.elapsed() >= CHECKPOINT_EVERY) {
            self.outbox.sync()?;
            for queue in self.spills.values_mut() {
                queue.sync()?;
            }
            write_checkpoint(&self.files.checkpoint, self.checkpoint)?;
            self.checkpoint_dirty = false;
            self.checkpoint_at = Instant::now();
        }
        if !self.runs.is_empty() && (force || self.runs_at.elapsed() >= RUNS_EVERY) {
            let runs: Vec<AttemptRun> = self.runs.drain().map(|(_, r)| r).collect();
            // Counts below the limit only: a run reaching it was written (and disabled) at once.
            self.store.record_runs(&runs, DisablePolicy::NEVER)?;
            self.runs_at = Instant::now();
        }
        if compact && !self.checkpoint_dirty {
            self.outbox.compact()?;
        }
        Ok(())
    }

    fn disable_policy(&self) -> DisablePolicy {
        DisablePolicy {
            min_failures: self.settings.disable_after_failures,
            after: Duration::from_secs(self.settings.disable_after_secs),
        }
    }

    /// Nothing to read or send now (lanes backing off only wait).
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.lanes.values().all(|l| l.down_until.is_some())
    }
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

fn send_loop(jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>, client: &Client) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let sink = WebhookSink { url: job.url, secret: job.secret };
        let crate::outbound::Attempt { reply, verdict } =
            crate::outbound::send(client, &sink, &job.webhook_id, job.body.as_bytes());
        if done.send(Done { id: job.id, lane: job.lane, attempt: job.attempt, reply, verdict }).is_err() {
            return;
        }
    }
}

/// One line of `deliveries.jsonl` (never holds the secret or the body).
fn log_entry(
    p: &Pending,
    attempt: Option<(&Reply, u32)>,
    outcome: &str,
    next: Option<Duration>,
    reason: Option<&str>,
) -> Value {
    let mut e = json!({
        "ts": crate::time::iso_now(),
        "id": p.id,
        "webhook_id": p.webhook_id,
        "seq": p.seq,
        "event": p.event,
        "registration": p.reg_event,
        "url": p.url,
        "outcome": outcome,
    });
    let map = e.as_object_mut().expect("built as an object");
    if let Some((reply, n)) = attempt {
        map.insert("attempt".into(), json!(n));
        map.insert("ok".into(), json!(reply.is_success()));
        if let Some(s) = reply.status {
            map.insert("status_code".into(), json!(s));
        }
        if !reply.is_success() {
            map.insert("error".into(), json!(reply.describe()));
        }
        if let Some(ra) = &reply.retry_after {
            map.insert("retry_after".into(), json!(ra));
        }
        map.insert("latency_ms".into(), json!(reply.latency.as_millis() as u64));
    }
    if let Some(d) = next {
        map.insert("next_attempt_in_ms".into(), json!(d.as_millis() as u64));
    }
    if let Some(r) = reason {
        map.insert("reason".into(), json!(r));
    }
    e
}

/// Deliveries of one registration still in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Every delivery not yet acked, the parked ones included.
    pub pending: usize,
    /// Kept while the registration is disabled.
    pub parked: usize,
}

/// Per-registration counts of deliveries still waiting, in the outbox or a spill queue (for
/// `webhooks list`). A disabled registration's queue counts as kept.
pub fn pending_counts(paths: &Paths) -> Result<HashMap<String, Waiting>> {
    let files = WebhookFiles::new(paths);
    let outbox = Outbox::load(&files.outbox)?;
    let mut counts: HashMap<String, Waiting> = HashMap::new();
    for p in outbox.iter() {
        let w = counts.entry(p.lane()).or_default();
        w.pending += 1;
        w.parked += usize::from(p.parked);
    }
    let disabled: HashSet<String> =
        WebhookStore::new(paths).load()?.iter().filter(|r| !r.enabled).map(Registration::key).collect();
    for (key, queue) in spill::open_all(&files.spill_dir)? {
        let w = counts.entry(key.clone()).or_default();
        w.pending += queue.len();
        if disabled.contains(&key) {
            w.parked += queue.len();
        }
    }
    Ok(counts)
}

/// Every registration as listed (secret masked) with its `pending` and `parked` counts: what
/// `webhooks list --json` prints and `GET /api/modder/hooks/webhooks` answers.
pub fn status_listing(paths: &Paths, regs: &[Registration]) -> Result<Vec<Value>> {
    let counts = pending_counts(paths)?;
    Ok(regs
        .iter()
        .map(|r| {
            let mut v = r.listing();
            let w = counts.get(&r.key()).copied().unwrap_or_default();
            v["pending"] = json!(w.pending);
            v["parked"] = json!(w.parked);
            v
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_reads_the_end_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)));
        }
        text.push_str("{\"torn");
        std::fs::write(&p, text).unwrap();
        let last = tail_lines(&p, 3).unwrap();
        assert_eq!(last.len(), 3);
        assert!(last[2].starts_with("{\"i\":4999,"), "{last:?}");
        assert!(last[0].starts_with("{\"i\":4997,"));
        assert_eq!(tail_lines(&p, 6000).unwrap().len(), 5000);
        assert!(tail_lines(&dir.path().join("none"), 3).unwrap().is_empty());
    }
}
