//! The live hook stream (DESIGN §8): Server-Sent Events at `/api/modder/hooks/stream` and a WebSocket
//! at `/api/modder/hooks/ws`.
//!
//! Data flow: one broadcaster thread follows the history *file* (`History::follow`), so events appended
//! by any process reach every client; it fans each new envelope out to the subscribed clients' bounded
//! queues and keeps the last `stream_buffer` envelopes for `since`/`Last-Event-ID` resumes. Each client
//! runs on its own thread, never on a request worker. A client whose queue overflows gets
//! `{"resync_required": true, "next_seq": N}`: everything before `N` that it had not received was
//! dropped for it, and the stream goes on from `N`.
//!
//! This module owns the stream threads and the tungstenite framing; it never writes the history.

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::request::Req;
use super::response::{ApiError, Reply};
use super::router::{schema_ref, Route};
use super::{AppState, Shared, StreamSettings};
use crate::hooks::{Catalogue, Envelope, Filter, History};

/// One envelope, serialised once for all clients.
#[derive(Debug)]
pub(crate) struct Item {
    pub seq: u64,
    pub event: String,
    pub json: String,
}

impl Item {
    fn new(e: &Envelope) -> Item {
        Item { seq: e.seq, event: e.event.clone(), json: serde_json::to_string(e).unwrap_or_default() }
    }
}

#[derive(Debug, Default)]
struct SubState {
    queue: VecDeque<Arc<Item>>,
    /// Event names this client wants; `None` = all.
    topics: Option<HashSet<String>>,
    /// Set when events were dropped for this client: the seq the stream continues from.
    resync: Option<u64>,
    closed: bool,
}

/// One stream client's queue.
#[derive(Debug)]
pub(crate) struct Subscriber {
    state: Mutex<SubState>,
    cond: Condvar,
    cap: usize,
}

/// What a client thread takes from its queue in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub items: Vec<Arc<Item>>,
    pub resync: Option<u64>,
    pub closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscriber {
    fn wants(state: &SubState, event: &str) -> bool {
        state.topics.as_ref().is_none_or(|t| t.contains(event))
    }

    fn push(&self, item: &Arc<Item>) {
        let mut s = lock(&self.state);
        if !Subscriber::wants(&s, &item.event) {
            return;
        }
        if s.queue.len() >= self.cap {
            s.queue.clear();
            s.resync = Some(item.seq);
        }
        s.queue.push_back(Arc::clone(item));
        self.cond.notify_one();
    }

    fn take(s: &mut SubState) -> Batch {
        Batch { items: s.queue.drain(..).collect(), resync: s.resync.take(), closed: s.closed }
    }

    /// Wait up to `timeout` for something to send.
    pub fn wait(&self, timeout: Duration) -> Batch {
        let s = lock(&self.state);
        let (mut s, _) = self
            .cond
            .wait_timeout_while(s, timeout, |s| s.queue.is_empty() && s.resync.is_none() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        Subscriber::take(&mut s)
    }

    /// Whatever is queued now, without waiting.
    pub fn try_take(&self) -> Batch {
        Subscriber::take(&mut lock(&self.state))
    }

    /// Change the topic filter; queued events the new filter excludes are dropped.
    pub fn set_topics(&self, topics: Option<HashSet<String>>) {
        let mut s = lock(&self.state);
        if let Some(t) = &topics {
            let kept: VecDeque<Arc<Item>> = s.queue.drain(..).filter(|i| t.contains(&i.event)).collect();
            s.queue = kept;
        }
        s.topics = topics;
    }
}

#[derive(Debug, Default)]
struct HubState {
    subscribers: Vec<Arc<Subscriber>>,
    /// The last `buffer` envelopes, for resumes.
    ring: VecDeque<Arc<Item>>,
    last_seq: u64,
    closed: bool,
}

/// Fan-out from the broadcaster to the clients, and the client count.
#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// Signalled when a client leaves (shutdown waits for them).
    left: Condvar,
    max_clients: usize,
    buffer: usize,
}

/// Why a client could not subscribe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    Full(usize),
    Closed,
}

/// A subscription; dropping it leaves the hub.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    pub sub: Arc<Subscriber>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut s = lock(&self.hub.state);
        s.subscribers.retain(|x| !Arc::ptr_eq(x, &self.sub));
        self.hub.left.notify_all();
    }
}

impl Hub {
    pub fn new(settings: &StreamSettings) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(HubState::default()),
            left: Condvar::new(),
            max_clients: settings.max_clients,
            buffer: settings.buffer,
        })
    }

    /// The history's recent past, before the broadcaster starts following.
    pub fn seed(&self, recent: &[Envelope], last_seq: u64) {
        let mut s = lock(&self.state);
        s.ring = recent.iter().map(|e| Arc::new(Item::new(e))).collect();
        while s.ring.len() > self.buffer {
            s.ring.pop_front();
        }
        s.last_seq = last_seq;
    }

    /// New envelopes from the history, in order.
    pub fn publish(&self, envelopes: &[Envelope]) {
        let mut s = lock(&self.state);
        for e in envelopes {
            let item = Arc::new(Item::new(e));
            for sub in &s.subscribers {
                sub.push(&item);
            }
            s.ring.push_back(item);
            if s.ring.len() > self.buffer {
                s.ring.pop_front();
            }
            s.last_seq = s.last_seq.max(e.seq);
        }
    }

    /// Join the stream. With `since`, the envelopes after it are queued first when the hub still has
    /// them; when it does not, the client is told to resync and gets what the hub has.
    pub fn subscribe(
        self: &Arc<Self>,
        topics: Option<HashSet<String>>,
        since: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let mut s = lock(&self.state);
        if s.closed {
            return Err(SubscribeError::Closed);
        }
        if s.subscribers.len() >= self.max_clients {
            return Err(SubscribeError::Full(self.max_clients));
        }
        let sub = Arc::new(Subscriber {
            state: Mutex::new(SubState { topics, ..Default::default() }),
            cond: Condvar::new(),
            cap: self.buffer,
        });
        if let Some(since) = since.filter(|&n| n < s.last_seq) {
            let oldest = s.ring.front().map(|i| i.seq).unwrap_or(s.last_seq + 1);
            let mut st = lock(&sub.state);
            if oldest > since + 1 {
                st.resync = Some(oldest);
            }
            for item in s.ring.iter().filter(|i| i.seq > since) {
                if Subscriber::wants(&st, &item.event) {
                    st.queue.push_back(Arc::clone(item));
                }
            }
        }
        s.subscribers.push(Arc::clone(&sub));
        Ok(Subscription { hub: Arc::clone(self), sub })
    }

    /// Tell every client to stop; refuse new ones.
    pub fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        for sub in &s.subscribers {
            lock(&sub.state).closed = true;
            sub.cond.notify_all();
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    #[cfg(test)]
    pub fn clients(&self) -> usize {
        lock(&self.state).subscribers.len()
    }

    /// Wait until every client thread has let go, at most `timeout`.
    pub fn wait_for_clients(&self, timeout: Duration) {
        let s = lock(&self.state);
        let _ = self.left.wait_timeout_while(s, timeout, |s| !s.subscribers.is_empty());
    }
}

/// Start the thread that follows the history file and feeds the hub.
pub(crate) fn start_broadcaster(shared: Arc<Shared>, history: History) -> Result<JoinHandle<()>> {
    let last = history.last_seq()?;
    let recent = history.tail(shared.settings.stream.buffer, &Filter::default())?;
    shared.hub.seed(&recent, last);
    let mut follower = history.follow(last)?;
    let poll = shared.settings.stream.poll;
    std::thread::Builder::new()
        .name("hook-stream".into())
        .spawn(move || {
            let mut warned = false;
            while !shared.hub.is_closed() {
                match follower.poll() {
                    Ok(items) => {
                        warned = false;
                        if !items.is_empty() {
                            shared.hub.publish(&items);
                        }
                    }
                    // Keep following: the file may be rotated or repaired under us; say it once.
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the hook history for the stream");
                    }
                    Err(_) => {}
                }
                std::thread::sleep(poll);
            }
        })
        .context("cannot start the hook stream thread")
}

/// The stream routes.
pub fn routes(catalogue: &Catalogue) -> Vec<Route> {
    let mut labels: Vec<&str> = catalogue.specs().iter().flat_map(|s| [s.name.as_str(), s.ws_topic.as_str()]).collect();
    labels.sort_unstable();
    labels.dedup();
    let topics = json!({"type": "array", "items": {"enum": labels}});
    let topics_doc = "Hook names or ws_topic labels, repeated or comma-separated (default: all).";
    let since = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    vec![
        Route::get("/api/modder/hooks/stream", sse)
            .tag("hooks")
            .summary("Live hook events as Server-Sent Events")
            .describe(
                "Follows the hook history file, so events from any process arrive. Each event is \
                 `id: <seq>`, `event: <name>`, `data: <envelope JSON>`; a comment line every \
                 `obs.server.sse_keepalive_secs` idle seconds; `event: resync_required` when the client \
                 fell more than `obs.server.stream_buffer` events behind. `Last-Event-ID` (or `since`) \
                 resumes after that seq. The response schema describes one event as a client parses it.",
            )
            .query("topics", topics.clone(), topics_doc)
            .query("since", since.clone(), "Resume after this seq.")
            .header(
                "Last-Event-ID",
                json!({"type": "string", "pattern": "^[0-9]{0,19}$"}),
                "Resume after this seq (wins over `since`; empty is absent).",
            )
            .response(200, "An endless `text/event-stream`.", Some(("text/event-stream", sse_event_schema())))
            .error(422, "Unknown topic, or a bad `since` or `Last-Event-ID`.")
            .error(503, "Too many stream clients.")
            .component("HookEnvelope", hook_envelope_schema())
            .component("ResyncRequired", resync_schema()),
        Route::get("/api/modder/hooks/ws", ws)
            .tag("hooks")
            .summary("Live hook events over a WebSocket")
            .describe(
                "RFC 6455. Optional first client frame `{\"topics\": [names or ws_topic labels]}`, answered \
                 `{\"ok\": true, \"subscribed\": [names]}` or `{\"ok\": false, \"error\": \"Unsupported modder \
                 hook topics: …\"}` and a close. `?topics=&since=` start without sending. Server frames are \
                 hook envelopes, `{\"ping\": true}` after `obs.server.ws_ping_secs` idle seconds, and \
                 `{\"resync_required\": true, \"next_seq\": N}` when the client fell behind.",
            )
            .query("topics", topics, topics_doc)
            .query("since", since, "Resume after this seq.")
            .response(101, "Switching Protocols: the WebSocket stream.", None)
            .error(400, "Not a valid WebSocket handshake.")
            .error(422, "Unknown topic or bad `since`.")
            .error(426, "Upgrade required (plain GET or unsupported WebSocket version).")
            .error(503, "Too many stream clients, or the connection cannot be taken over.")
            .component("HookEnvelope", hook_envelope_schema())
            .component("ResyncRequired", resync_schema()),
    ]
}

/// One SSE event as a client parses it (`event`, `data`, and `id`, which a client keeps from the last
/// event that had one), in the form OpenAPI 3.1 tools validate a `text/event-stream` schema against.
/// Comment lines (the opening line, keepalives, the shutdown notice) carry no data and are no events.
pub fn sse_event_schema() -> Value {
    let json_data = |name: &str| json!({"type": "string", "contentMediaType": "application/json", "contentSchema": schema_ref(name)});
    json!({
        "oneOf": [
            {
                "title": "hook event",
                "type": "object",
                "required": ["id", "event", "data"],
                "additionalProperties": false,
                "properties": {
                    "id": {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The envelope's seq."},
                    "event": {"type": "string", "description": "The hook name (the envelope's `event`)."},
                    "data": json_data("HookEnvelope")
                }
            },
            {
                "title": "resync_required",
                "type": "object",
                "required": ["event", "data"],
                "additionalProperties": false,
                "properties": {
                    "id": {"type": "string", "description": "None of its own: the last hook event's, kept by the client."},
                    "event": {"const": "resync_required"},
                    "data": json_data("ResyncRequired")
                }
            }
        ]
    })
}

/// What a client that fell behind is told, on both streams.
pub fn resync_schema() -> Value {
    json!({
        "type": "object",
        "required": ["resync_required", "next_seq"],
        "additionalProperties": false,
        "properties": {
            "resync_required": {"const": true},
            "next_seq": {"type": "integer", "minimum": 1,
                "description": "The stream goes on from this seq; what came before it and was not received was dropped."}
        }
    })
}

/// JSON Schema of a history envelope.
pub fn hook_envelope_schema() -> Value {
    json!({
        "type": "object",
        "required": ["seq", "event", "ts", "data"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1, "description": "Monotonic sequence number (survives restarts)."},
            "event": {"type": "string"},
            "ts": {"type": "number", "description": "Seconds since the epoch."},
            "data": {"type": "object"}
        }
    })
}

/// Resolve names or ws_topic labels to event names; unknown ones are listed in the error. An empty
/// list means every event.
pub(crate) fn resolve_topics(catalogue: &Catalogue, topics: &[String]) -> Result<Option<HashSet<String>>, String> {
    if topics.is_empty() {
        return Ok(None);
    }
    let mut out = HashSet::new();
    let mut unknown = Vec::new();
    for t in topics {
        match catalogue.resolve_topic(t) {
            Some(name) => {
                out.insert(name.to_string());
            }
            None => unknown.push(t.as_str()),
        }
    }
    if unknown.is_empty() {
        Ok(Some(out))
    } else {
        Err(format!("Unsupported modder hook topics: {}", unknown.join(", ")))
    }
}

fn subscribed_names(catalogue: &Catalogue, topics: &Option<HashSet<String>>) -> Vec<String> {
    catalogue
        .specs()
        .iter()
        .filter(|s| topics.as_ref().is_none_or(|t| t.contains(&s.name)))
        .map(|s| s.name.clone())
        .collect()
}

fn subscribe(req: &Req<'_>, topics: Option<HashSet<String>>, since: Option<u64>) -> Result<Subscription, ApiError> {
    req.shared.hub.subscribe(topics, since).map_err(|e| match e {
        SubscribeError::Full(n) => {
            ApiError::new(503, &format!("too many stream clients (limit {n}, obs.server.max_stream_clients)"))
                .with_header("Retry-After", "5")
        }
        SubscribeError::Closed => ApiError::new(503, "the server is shutting down"),
    })
}

fn stream_params(state: &AppState, req: &Req<'_>) -> Result<(Option<HashSet<String>>, Option<u64>), ApiError> {
    let topics = resolve_topics(&state.bus.catalogue, &req.query_list("topics"))
        .map_err(|m| ApiError::validation("topics", &m))?;
    let since = req.query_u64("since")?;
    Ok((topics, since))
}

fn sse(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let (topics, mut since) = stream_params(state, req)?;
    if let Some(id) = req.header("last-event-id").map(str::trim).filter(|s| !s.is_empty()) {
        since = Some(id.parse().map_err(|_| {
            ApiError::validation("Last-Event-ID", &format!("expected a sequence number, found {id:?}"))
        })?);
    }
    // To notice a client that left while the stream is idle (no write fails until the next keepalive,
    // and until then it holds one of `max_stream_clients`). Without it, the write failing is the sign.
    let socket = req.remote.and_then(|peer| super::socket::find_client_socket(peer, req.shared.local_addr.port()));
    let subscription = subscribe(req, topics, since)?;
    let keepalive = req.shared.settings.stream.sse_keepalive;
    Ok(Reply::takeover(
        200,
        Box::new(move |rq, _shared, _state, request_id| {
            let spawned = std::thread::Builder::new()
                .name("sse-client".into())
                .spawn(move || run_sse(rq, socket, &subscription, &request_id, keepalive));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an SSE client thread");
            }
        }),
    ))
}

/// How often an idle SSE stream looks whether its client is still there.
const SSE_HANGUP_CHECK: Duration = Duration::from_millis(250);

fn run_sse(
    rq: tiny_http::Request,
    socket: Option<TcpStream>,
    subscription: &Subscription,
    request_id: &str,
    keepalive: Duration,
) {
    let started = Instant::now();
    let mut w = rq.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\nX-Request-ID: {request_id}\r\n\r\n: comfyvn-obs hook stream\n\n"
    );
    if w.write_all(head.as_bytes()).and_then(|_| w.flush()).is_err() {
        return;
    }
    let mut sent = 0u64;
    let mut last_write = Instant::now();
    loop {
        let mut wait = keepalive.saturating_sub(last_write.elapsed());
        if socket.is_some() {
            wait = wait.min(SSE_HANGUP_CHECK);
        }
        let batch = subscription.sub.wait(wait);
        let mut out = String::new();
        if let Some(next) = batch.resync {
            out.push_str(&format!(
                "event: resync_required\ndata: {}\n\n",
                json!({"resync_required": true, "next_seq": next})
            ));
        }
        for item in &batch.items {
            out.push_str(&format!("id: {}\nevent: {}\ndata: {}\n\n", item.seq, item.event, item.json));
        }
        sent += batch.items.len() as u64;
        if batch.closed {
            out.push_str(": server shutting down\n\n");
        } else if out.is_empty() {
            if socket.as_ref().is_some_and(super::socket::peer_gone) {
                break;
            }
            if last_write.elapsed() < keepalive {
                continue;
            }
            out.push_str(": keepalive\n\n");
        }
        if w.write_all(out.as_bytes()).and_then(|_| w.flush()).is_err() || batch.closed {
            break;
        }
        last_write = Instant::now();
    }
    tracing::info!(request_id, events = sent, duration_ms = started.elapsed().as_millis() as u64, "sse stream closed");
}

fn ws(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let has_token = |name: &str, token: &str| {
        req.header(name).is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return Err(ApiError::new(426, "this route speaks WebSocket: send `Upgrade: websocket`")
            .with_header("Upgrade", "websocket"));
    }
    if !has_token("connection", "upgrade") {
        return Err(ApiError::bad_request("a WebSocket handshake needs `Connection: Upgrade`"));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(
            ApiError::new(426, "only WebSocket version 13 is supported").with_header("Sec-WebSocket-Version", "13")
        );
    }
    let Some(key) = req.header("sec-websocket-key").map(str::trim).filter(|k| !k.is_empty()) else {
        return Err(ApiError::bad_request("a WebSocket handshake needs `Sec-WebSocket-Key`"));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let (topics, since) = stream_params(state, req)?;
    // The WebSocket must read with a short timeout while it writes events; that needs the socket.
    let socket = req
        .remote
        .and_then(|peer| super::socket::find_client_socket(peer, req.shared.local_addr.port()))
        .ok_or_else(|| ApiError::new(503, "cannot take over this connection for a WebSocket"))?;
    let subscription = subscribe(req, topics, since)?;
    let ping = req.shared.settings.stream.ws_ping;
    let catalogue = state.bus.catalogue.clone();
    Ok(Reply::takeover(
        101,
        Box::new(move |rq, _shared, _state, request_id| {
            let mut headers = Vec::new();
            super::response::push_header(&mut headers, "Sec-WebSocket-Accept", &accept);
            super::response::push_header(&mut headers, "X-Request-ID", &request_id);
            let mut response = tiny_http::Response::empty(101);
            for h in headers {
                response.add_header(h);
            }
            let stream = rq.upgrade("websocket", response);
            let spawned = std::thread::Builder::new().name("ws-client".into()).spawn(move || {
                run_ws(stream, socket, &subscription, &catalogue, ping, &request_id);
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a WebSocket client thread");
            }
        }),
    ))
}

/// How long one WebSocket read waits before the thread looks at its queue again.
const WS_READ_SLICE: Duration = Duration::from_millis(50);

fn run_ws(
    stream: Box<dyn tiny_http::ReadWrite + Send>,
    socket: TcpStream,
    subscription: &Subscription,
    catalogue: &Catalogue,
    ping: Duration,
    request_id: &str,
) {
    let started = Instant::now();
    if socket.set_read_timeout(Some(WS_READ_SLICE)).is_err() {
        return;
    }
    let config = WebSocketConfig::default().max_message_size(Some(64 << 10)).max_frame_size(Some(64 << 10));
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut last_write = Instant::now();
    let mut sent = 0u64;
    let mut closing: Option<Instant> = None;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) if closing.is_none() => {
                if let Some((reply, fatal)) = client_frame(text.as_str(), catalogue, &subscription.sub) {
                    if ws.send(Message::text(reply.to_string())).is_err() {
                        break;
                    }
                    if fatal {
                        let frame = CloseFrame { code: CloseCode::Policy, reason: "unsupported topics".into() };
                        let _ = ws.close(Some(frame));
                        closing = Some(Instant::now());
                    }
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if let Some(since) = closing {
            // Waiting for the client's close reply; give up after a few seconds.
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
            continue;
        }
        let batch = subscription.sub.try_take();
        if batch.closed {
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() }));
            let _ = ws.flush();
            break;
        }
        let mut wrote = false;
        if let Some(next) = batch.resync {
            wrote |= ws.write(Message::text(json!({"resync_required": true, "next_seq": next}).to_string())).is_ok();
        }
        for item in &batch.items {
            if ws.write(Message::text(item.json.clone())).is_err() {
                break;
            }
            wrote = true;
            sent += 1;
        }
        if !wrote && last_write.elapsed() >= ping {
            wrote = ws.write(Message::text(json!({"ping": true}).to_string())).is_ok();
        }
        if wrote {
            if ws.flush().is_err() {
                break;
            }
            last_write = Instant::now();
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
    tracing::info!(
        request_id,
        events = sent,
        duration_ms = started.elapsed().as_millis() as u64,
        "websocket stream closed"
    );
}

/// A client frame: `{"topics": [...]}` changes the subscription and is answered; anything else is
/// ignored. Returns the answer and whether the connection must close after it.
fn client_frame(text: &str, catalogue: &Catalogue, sub: &Subscriber) -> Option<(Value, bool)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let topics = v.get("topics")?;
    let names: Option<Vec<String>> =
        topics.as_array().and_then(|a| a.iter().map(|t| t.as_str().map(str::to_string)).collect());
    let Some(names) = names else {
        return Some((json!({"ok": false, "error": "topics must be a list of hook names"}), true));
    };
    match resolve_topics(catalogue, &names) {
        Ok(set) => {
            let subscribed = subscribed_names(catalogue, &set);
            sub.set_topics(set);
            Some((json!({"ok": true, "subscribed": subscribed}), false))
        }
        Err(message) => Some((json!({"ok": false, "error": message}), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_clients: usize, buffer: usize) -> StreamSettings {
        StreamSettings {
            max_clients,
            buffer,
            sse_keepalive: Duration::from_secs(15),
            ws_ping: Duration::from_secs(20),
            poll: Duration::from_millis(100),
        }
    }

    fn env(seq: u64, event: &str) -> Envelope {
        Envelope { seq, event: event.into(), ts: 1.0, data: json!({}) }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.items.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn fan_out_filters_by_topic_and_limits_clients() {
        let hub = Hub::new(&settings(2, 10));
        hub.seed(&[], 0);
        let all = hub.subscribe(None, None).unwrap();
        let some = hub.subscribe(Some(["b".to_string()].into()), None).unwrap();
        assert_eq!(hub.subscribe(None, None).err(), Some(SubscribeError::Full(2)));
        hub.publish(&[env(1, "a"), env(2, "b")]);
        assert_eq!(seqs(&all.sub.try_take()), [1, 2]);
        assert_eq!(seqs(&some.sub.try_take()), [2]);
        drop(some);
        assert_eq!(hub.clients(), 1);
        hub.close();
        assert!(all.sub.wait(Duration::from_secs(5)).closed);
        assert_eq!(hub.subscribe(None, None).err(), Some(SubscribeError::Closed));
    }

    #[test]
    fn overflow_becomes_resync_and_the_stream_goes_on() {
        let hub = Hub::new(&settings(4, 3));
        hub.seed(&[], 0);
        let slow = hub.subscribe(None, None).unwrap();
        hub.publish(&(1..=5).map(|i| env(i, "a")).collect::<Vec<_>>());
        let b = slow.sub.try_take();
        assert_eq!(b.resync, Some(4));
        assert_eq!(seqs(&b), [4, 5]);
        hub.publish(&[env(6, "a")]);
        let b = slow.sub.try_take();
        assert_eq!((b.resync, seqs(&b)), (None, vec![6]));
    }

    #[test]
    fn since_resumes_from_the_ring_or_asks_for_resync() {
        let hub = Hub::new(&settings(4, 3));
        hub.seed(&[env(8, "a"), env(9, "b"), env(10, "a")], 10);
        let near = hub.subscribe(None, Some(8)).unwrap();
        assert_eq!((near.sub.try_take().resync, seqs(&near.sub.try_take())), (None, vec![]));
        let near = hub.subscribe(None, Some(8)).unwrap();
        assert_eq!(seqs(&near.sub.try_take()), [9, 10]);
        let far = hub.subscribe(Some(["a".to_string()].into()), Some(2)).unwrap();
        let b = far.sub.try_take();
        assert_eq!((b.resync, seqs(&b)), (Some(8), vec![8, 10]));
        let live = hub.subscribe(None, Some(10)).unwrap();
        assert!(live.sub.try_take().items.is_empty());
    }

    #[test]
    fn topics_resolve_names_and_labels() {
        let c = Catalogue::builtin();
        let t = resolve_topics(&c, &["audio.tts.cached".into(), "on_scene_enter".into()]).unwrap().unwrap();
        assert!(t.contains("on_audio_tts_cached") && t.contains("on_scene_enter"));
        assert_eq!(resolve_topics(&c, &[]).unwrap(), None);
        let e = resolve_topics(&c, &["x".into(), "on_scene_enter".into(), "y".into()]).unwrap_err();
        assert_eq!(e, "Unsupported modder hook topics: x, y");
    }

    #[test]
    fn client_frames() {
        let c = Catalogue::builtin();
        let sub = Subscriber { state: Mutex::new(SubState::default()), cond: Condvar::new(), cap: 4 };
        let (v, fatal) = client_frame(r#"{"topics": ["modder.on_scene_enter"]}"#, &c, &sub).unwrap();
        assert_eq!(v, json!({"ok": true, "subscribed": ["on_scene_enter"]}));
        assert!(!fatal);
        let (v, fatal) = client_frame(r#"{"topics": ["nope"]}"#, &c, &sub).unwrap();
        assert_eq!(v, json!({"ok": false, "error": "Unsupported modder hook topics: nope"}));
        assert!(fatal);
        assert!(client_frame("not json", &c, &sub).is_none());
        assert!(client_frame(r#"{"hello": 1}"#, &c, &sub).is_none());
        assert!(client_frame(r#"{"topics": "x"}"#, &c, &sub).unwrap().1);
    }
}
