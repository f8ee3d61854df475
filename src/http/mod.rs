//! The HTTP API (DESIGN §9): a tiny_http server with a fixed pool of worker threads, one route table
//! (`routes::table`) from which both the router and `/openapi.json` are built, and the live event
//! stream (`stream`), which runs on its own threads so long-lived clients never occupy a worker.
//!
//! Per request, in order: request id → `Host` check → route (404/405) → bearer token on state-changing
//! routes (401/403) → body limit (413) → handler inside `catch_unwind` (a panic is a 500 envelope and
//! the worker keeps serving) → response with `X-Request-ID` → one access-log line.
//!
//! Only this module tree imports tiny_http and tungstenite. It calls the domain modules (`hooks`, and
//! later registry/telemetry/crash) and is never called by them.

// ApiError is ~160 bytes (message, details, headers, cause). It is only built on the error path, where
// the response I/O dwarfs a move; boxing it would cost every handler's ergonomics for nothing.
#![allow(clippy::result_large_err)]

pub mod multipart;
pub mod openapi;
pub mod request;
pub mod response;
pub mod router;
pub mod routes;
pub mod security;
pub mod socket;
pub mod stream;
mod writers;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::config::{Config, ServerSettings};
use crate::exit_code::hinted;
use crate::hooks::Bus;
use crate::paths::Paths;

pub use request::{Limits, Req};
pub use response::{ApiError, Reply};
pub use router::{Method, Route};

/// What every handler can reach: the domain state, built once per server.
///
/// To give handlers something new (the registry index, the telemetry store), add a `pub` field here
/// and build it in [`AppState::new`]; shared mutable state goes behind its own `Mutex`/`RwLock`, since
/// handlers run on several workers at once.
pub struct AppState {
    pub paths: Paths,
    pub config: Config,
    /// The hook catalogue and history (emit, tail).
    pub bus: Bus,
    /// Telemetry, following consent changes made in `config/comfyvn.json` by any process.
    pub telemetry: routes::telemetry::LiveTelemetry,
    /// The asset registry and its in-memory index (kept current by the API's writes and by following
    /// the hook history).
    pub assets: Arc<routes::assets::Assets>,
}

impl AppState {
    pub fn new(paths: Paths, config: Config) -> Result<AppState> {
        let bus = Bus::open(&paths, &config)?;
        let telemetry = routes::telemetry::LiveTelemetry::new(&paths, &config);
        // Events appended while the index is built are replayed by the follower (applying one twice
        // is harmless), so nothing falls between the build and the follow.
        let after = bus.history.last_seq()?;
        let assets = Arc::new(routes::assets::Assets::open(&paths, &config)?);
        assets.follow_history(&bus.history, after)?;
        Ok(AppState { paths, config, bus, telemetry, assets })
    }
}

/// The settings of the live stream (`obs.server.*`).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub max_clients: usize,
    pub buffer: usize,
    pub sse_keepalive: Duration,
    pub ws_ping: Duration,
    /// How often the history file is polled for new lines.
    pub poll: Duration,
}

/// Everything the server needs to start, resolved from config, flags and environment by the caller.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub bind: SocketAddr,
    pub workers: usize,
    /// `COMFYVN_API_TOKEN`; `None` or empty = no token.
    pub token: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
    pub io_timeout: Duration,
    pub stream: StreamSettings,
    /// Register `GET /__test/panic` (a debug aid for the 500 path; `COMFYVN_TEST_PANIC_ROUTE=1`).
    pub test_panic_route: bool,
}

impl ServeSettings {
    /// Settings from the `obs.server` block (bind and workers may be overridden afterwards).
    pub fn from_config(s: &ServerSettings) -> Result<ServeSettings> {
        let bind =
            s.bind.parse().with_context(|| format!("obs.server.bind: expected host:port, found {:?}", s.bind))?;
        Ok(ServeSettings {
            bind,
            workers: s.workers.max(1),
            token: None,
            allowed_hosts: s.allowed_hosts.clone(),
            limits: Limits { json: s.max_json_bytes, upload: s.max_upload_bytes },
            io_timeout: Duration::from_millis(s.io_timeout_ms.max(100)),
            stream: StreamSettings {
                max_clients: s.max_stream_clients,
                buffer: s.stream_buffer.max(1),
                sse_keepalive: Duration::from_secs(s.sse_keepalive_secs.max(1)),
                ws_ping: Duration::from_secs(s.ws_ping_secs.max(1)),
                poll: Duration::from_millis(100),
            },
            test_panic_route: false,
        })
    }
}

/// Server internals the request path and the stream threads share.
pub(crate) struct Shared {
    pub(crate) router: router::Router,
    pub(crate) security: security::Security,
    pub(crate) settings: ServeSettings,
    pub(crate) hub: Arc<stream::Hub>,
    pub(crate) ids: Arc<request::RequestIds>,
    pub(crate) openapi: Vec<u8>,
    /// Writes the responses, so no worker waits on a client (`writers`).
    writers: writers::Writers,
    pub(crate) local_addr: SocketAddr,
    pub(crate) stopping: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(why);
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves the threads running.
pub struct Server {
    tiny: Arc<tiny_http::Server>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    broadcaster: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind, start the workers and the stream broadcaster. Refuses a non-loopback bind without a token.
    pub fn start(state: AppState, settings: ServeSettings) -> Result<Server> {
        security::check_bind(&settings.bind, settings.token.as_deref())?;
        let listener = TcpListener::bind(settings.bind).map_err(|e| {
            hinted(
                format!("cannot listen on {}: {e}", settings.bind),
                "is another server running there? pick another address with --bind (port 0 picks a free port)",
            )
        })?;
        let local_addr = listener.local_addr().context("cannot read the listening address")?;
        let ids = Arc::new(request::RequestIds::default());
        let hooks = accept_hooks(settings.io_timeout, Arc::clone(&ids));
        let tiny = tiny_http::Server::from_listener_with(listener, None, hooks)
            .map_err(|e| anyhow!("cannot start the HTTP server on {local_addr}: {e}"))?;
        let router = router::Router::new(routes::table(&settings, &state.bus.catalogue))
            .map_err(|e| anyhow!("route table: {e}"))?;
        let openapi = serde_json::to_vec_pretty(&openapi::document(router.routes()))?;
        let shared = Arc::new(Shared {
            router,
            security: security::Security::new(&settings.bind, &settings.allowed_hosts, settings.token.as_deref()),
            hub: stream::Hub::new(&settings.stream),
            ids,
            openapi,
            writers: writers::Writers::new(settings.workers),
            local_addr,
            stopping: AtomicBool::new(false),
            failure: Mutex::new(None),
            settings,
        });
        let state = Arc::new(state);
        let tiny = Arc::new(tiny);
        let broadcaster = stream::start_broadcaster(Arc::clone(&shared), state.bus.history.clone())?;
        let mut workers = Vec::new();
        for i in 0..shared.settings.workers {
            let (tiny, shared, state) = (Arc::clone(&tiny), Arc::clone(&shared), Arc::clone(&state));
            let handle = std::thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || worker_loop(&tiny, &shared, &state))
                .context("cannot start an HTTP worker thread")?;
            workers.push(handle);
        }
        Ok(Server { tiny, shared, workers, broadcaster: Some(broadcaster) })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Why the server stopped serving on its own (the listener failed), if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop: workers finish their request and exit, stream clients are told and closed (waiting at
    /// most a couple of seconds for them), the listener closes. Errors if the listener had failed.
    pub fn shutdown(mut self) -> Result<()> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.tiny.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Responses the workers handed over are still being written; a client that does not read
        // gives up its answer here rather than holding the shutdown.
        self.shared.writers.wait_idle(Duration::from_secs(3));
        self.shared.hub.close();
        if let Some(b) = self.broadcaster.take() {
            let _ = b.join();
        }
        self.shared.hub.wait_for_clients(Duration::from_secs(3));
        match self.failure() {
            Some(why) => Err(anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// The accept policy (docs/http-server.md, "Accepting connections"): timeouts on each accepted
/// connection, and an accept loop that backs off on errors and never ends on one.
fn accept_hooks(io_timeout: Duration, ids: Arc<request::RequestIds>) -> tiny_http::AcceptHooks {
    let errors = Arc::new(socket::AcceptErrors::default());
    let on_accepted = Arc::clone(&errors);
    tiny_http::AcceptHooks {
        prepare: Box::new(move |sock| {
            socket::prepare_accepted(sock, io_timeout)?;
            on_accepted.on_accepted();
            Ok(())
        }),
        on_error: Box::new(move |e| errors.on_error(e)),
        // A head trickled a byte at a time keeps every read inside the I/O timeout; this bounds it.
        head_timeout: Some(io_timeout),
        // Its own answers are the envelope too; no route saw them, so no access-log line either.
        refusal: Arc::new(move |status| {
            let request_id = ids.pick(None);
            tracing::debug!(status = status.0, request_id, "request refused before routing");
            response::refusal(status.0, &request_id)
        }),
    }
}

fn worker_loop(tiny: &tiny_http::Server, shared: &Arc<Shared>, state: &Arc<AppState>) {
    loop {
        match tiny.recv() {
            Ok(rq) => handle(shared, state, rq),
            Err(e) => {
                // Our own unblock() during shutdown. The patched accept loop never ends on an accept
                // error, so anything else is a bug worth stopping for rather than running deaf.
                if !shared.stopping.load(Ordering::SeqCst) {
                    tracing::error!(error = %e, "the HTTP listener failed; stopping the server");
                    shared.fail(format!("the HTTP listener failed: {e}"));
                }
                return;
            }
        }
    }
}

/// Bodies that tiny_http would drain by allocating their declared size on drop: above this, the
/// connection is cut instead (see `cut_connection`).
const DRAIN_ALLOC_MAX: u64 = 64 * 1024 * 1024;
/// tiny_http buffers bodies up to this size when it reads the headers; nothing is left to drain.
const PREBUFFERED: u64 = 1024;

/// What happened to the request body.
#[derive(Debug, Default)]
struct BodyState {
    declared: Option<u64>,
    consumed: u64,
    done: bool,
    /// Rejected by size before reading: the rest must not be read.
    oversize: bool,
}

/// One request, start to finish. Never panics out: handler panics are caught inside.
fn handle(shared: &Arc<Shared>, state: &Arc<AppState>, mut rq: tiny_http::Request) {
    let started = Instant::now();
    let headers: Vec<(String, String)> = rq
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .collect();
    let request_id = shared.ids.pick(header(&headers, "x-request-id"));
    let method = rq.method().as_str().to_string();
    let url = rq.url().to_string();
    let path = url.split_once('?').map(|(p, _)| p).unwrap_or(&url).to_string();
    let mut body = BodyState { declared: rq.body_length().map(|n| n as u64), ..Default::default() };

    let result = dispatch(shared, state, &mut rq, &headers, &request_id, &mut body);
    let mut reply = match result {
        Ok(reply) => reply,
        Err(mut err) => {
            if err.status >= 500 && err.source.is_some() {
                let error_id = crate::digest::random_hex8();
                if let Some(source) = &err.source {
                    tracing::error!(error_id = %error_id, request_id = %request_id, method = %method,
                        path = %path, error = %format!("{source:#}"), "handler failed");
                }
                let mut details = err.details.take().unwrap_or_else(|| json!({}));
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("error_id".into(), json!(error_id));
                }
                err.details = Some(details);
            }
            err.into_reply(&request_id)
        }
    };

    if matches!(reply.body, response::Body::Takeover(_)) && method == "HEAD" {
        // A stream answers HEAD with its status only; dropping the hand-off ends the subscription.
        reply = Reply::empty(reply.status);
    }
    if let response::Body::Takeover(_) = reply.body {
        let response::Body::Takeover(f) = std::mem::replace(&mut reply.body, response::Body::Empty) else {
            return;
        };
        access_log(&method, &path, reply.status, started, &request_id, 0);
        f(rq, Arc::clone(shared), Arc::clone(state), request_id);
        return;
    }

    let status = reply.status;
    let bytes = reply.body_len();
    let leftover = match (body.declared, body.done) {
        (Some(d), false) => d.saturating_sub(body.consumed),
        _ => 0,
    };
    // A body left unread would be taken for the next request on the connection (tiny_http strips
    // `Connection` headers from responses, so the connection cannot simply be marked to close).
    let unread_chunked = body.declared.is_none() && !body.done && header(&headers, "transfer-encoding").is_some();
    let cut = unread_chunked || (leftover > 0 && body.declared.unwrap_or(0) > PREBUFFERED);
    // The write can block for as long as the client does not read: not on this worker.
    let sh = Arc::clone(shared);
    shared.writers.run(move || {
        if cut {
            cut_connection(&sh, rq, reply, &request_id, leftover);
        } else if let Err(e) = rq.respond(reply.into_response(&request_id)) {
            tracing::debug!(request_id = %request_id, error = %e, "client went away before the response was sent");
        }
        access_log(&method, &path, status, started, &request_id, bytes);
    });
}

/// Answer a request whose body was not read to the end, without letting tiny_http drain it: its
/// `EqualReader` allocates the whole unread remainder at once when dropped (tiny_http 0.12), so a
/// declared `Content-Length` of terabytes would abort the process, and a client that trickles its body
/// would hold the worker. The read side of the socket is shut first, so the drain ends at once; above
/// [`DRAIN_ALLOC_MAX`] the response is written straight to the socket and the request object is
/// deliberately leaked (one parked tiny_http thread and its two descriptors) instead of dropped.
fn cut_connection(shared: &Shared, rq: tiny_http::Request, reply: Reply, request_id: &str, leftover: u64) {
    let sock = rq.remote_addr().and_then(|peer| socket::find_client_socket(*peer, shared.local_addr.port()));
    if leftover <= DRAIN_ALLOC_MAX {
        if let Some(s) = &sock {
            let _ = s.shutdown(Shutdown::Read);
        }
        if let Err(e) = rq.respond(reply.into_response(request_id)) {
            tracing::debug!(request_id = %request_id, error = %e, "client went away before the response was sent");
        }
        return;
    }
    tracing::warn!(request_id = %request_id, leftover_bytes = leftover,
        "request declared a body too large to drain; cutting the connection");
    if let Some(mut s) = sock {
        let (ct, data) = match &reply.body {
            response::Body::Bytes { data, content_type } => (content_type.as_str(), data.as_slice()),
            _ => ("application/json", &[][..]),
        };
        let mut raw = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nX-Request-ID: {request_id}\r\n\
             Connection: close\r\n\r\n",
            reply.status,
            reason(reply.status),
            data.len()
        )
        .into_bytes();
        raw.extend_from_slice(data);
        let _ = s.write_all(&raw);
        let _ = s.shutdown(Shutdown::Both);
    }
    std::mem::forget(rq);
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Response",
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The request path up to the handler's reply.
fn dispatch(
    shared: &Arc<Shared>,
    state: &Arc<AppState>,
    rq: &mut tiny_http::Request,
    headers: &[(String, String)],
    request_id: &str,
    body: &mut BodyState,
) -> Result<Reply, ApiError> {
    shared.security.check_host(header(headers, "host"))?;
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let raw_method = rq.method().clone();
    let method = match raw_method {
        tiny_http::Method::Head => Some(Method::Get),
        ref m => Method::parse(m.as_str()),
    };
    let (route, params) = match shared.router.find(method, path) {
        router::Match::Found { route, params } => (route, params),
        router::Match::NotFound => {
            return Err(ApiError::not_found(&format!("no route for {} {path}", raw_method.as_str())))
        }
        router::Match::WrongMethod(allowed) => {
            let mut names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            if allowed.contains(&Method::Get) {
                names.insert(1, "HEAD");
            }
            let allow = names.join(", ");
            if raw_method == tiny_http::Method::Options {
                return Ok(Reply::empty(204).with_header("Allow", &allow));
            }
            return Err(ApiError::new(405, &format!("{} is not allowed on {path}", raw_method.as_str()))
                .with_details(json!({"allowed": names}))
                .with_header("Allow", &allow));
        }
    };
    if route.state_changing || header(headers, "upgrade").is_some() {
        shared.security.check_origin(
            header(headers, "origin"),
            header(headers, "host"),
            header(headers, "sec-fetch-site"),
        )?;
    }
    if route.state_changing {
        shared.security.check_token(header(headers, "authorization"))?;
    }
    let limits = shared.settings.limits;
    let limit = match route.body_limit() {
        router::BodyLimit::Json => limits.json,
        router::BodyLimit::Upload => limits.upload,
    };
    if body.declared.is_some_and(|n| n > limit) {
        body.oversize = true;
        return Err(ApiError::too_large(limit));
    }
    let query = request::parse_query(query)?;
    let mut decoded = Vec::with_capacity(params.len());
    for (k, v) in params {
        let v = request::decode(&v, false)
            .ok_or_else(|| ApiError::bad_request(&format!("path parameter {k:?} is not valid UTF-8")))?;
        decoded.push((k, v));
    }
    let remote = rq.remote_addr().copied();
    let mut req = Req {
        method: route.method,
        path: path.to_string(),
        request_id: request_id.to_string(),
        remote,
        params: decoded,
        query,
        headers: headers.to_vec(),
        raw: rq,
        declared_len: body.declared,
        limits,
        consumed: 0,
        body_done: body.declared == Some(0) || (body.declared.is_none() && !has_chunked(headers)),
        shared,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| (route.handler)(state, &mut req)));
    body.consumed = req.consumed;
    body.done = req.body_done;
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            let error_id = crate::digest::random_hex8();
            let dump = on_handler_panic(
                state,
                &PanicReport {
                    error_id: error_id.clone(),
                    request_id: request_id.to_string(),
                    method: route.method.as_str().to_string(),
                    path: path.to_string(),
                    route: route.path.clone(),
                    message,
                },
            );
            Err(ApiError {
                code: "internal_error".into(),
                details: Some(match dump {
                    Some(name) => json!({"error_id": error_id, "crash_dump": name}),
                    None => json!({"error_id": error_id}),
                }),
                ..ApiError::new(500, "internal server error")
            })
        }
    }
}

fn has_chunked(headers: &[(String, String)]) -> bool {
    header(headers, "transfer-encoding").is_some()
}

/// What is known about a handler panic.
#[derive(Debug, Clone)]
pub struct PanicReport {
    /// The id sent to the client in `details.error_id`.
    pub error_id: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The route template that matched.
    pub route: String,
    pub message: String,
}

/// Called once per handler panic, after it was caught and before the 500 envelope is sent. Logs it
/// with the error id; this is where the crash module (DESIGN §3) writes the crash dump for the panic,
/// with `report` as the dump's context.
/// A handler panicked: make sure a crash dump exists (the process-wide panic hook normally wrote one on
/// this thread; otherwise write it here with the request's context), log it, and return the dump's file
/// name for the 500 envelope. The server keeps serving.
fn on_handler_panic(_state: &AppState, report: &PanicReport) -> Option<String> {
    let dump = crate::crash::take_panic_dump().or_else(|| {
        let mut context = serde_json::Map::new();
        for (k, v) in [
            ("request_id", &report.request_id),
            ("method", &report.method),
            ("path", &report.path),
            ("route", &report.route),
            ("error_id", &report.error_id),
        ] {
            context.insert(k.to_string(), json!(v));
        }
        let err = anyhow::anyhow!("handler panicked: {}", report.message);
        crate::crash::capture_error(&err, context, &[]).ok()
    });
    let name = dump.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    tracing::error!(error_id = %report.error_id, request_id = %report.request_id, method = %report.method,
        path = %report.path, route = %report.route, panic = %report.message,
        crash_dump = name.as_deref().unwrap_or(""), "handler panicked");
    name
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// The access-log line: one per request.
fn access_log(method: &str, path: &str, status: u16, started: Instant, request_id: &str, bytes: u64) {
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(target: "comfyvn_obs::http::access", method, path, status, duration_ms, request_id, bytes,
        "request");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

    /// One event's fields as text.
    type Recorded = Vec<(String, String)>;

    /// Records every event's fields.
    struct Capture(Arc<Mutex<Vec<Recorded>>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_string(), format!("{value:?}").trim_matches('"').to_string()));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
            let mut f = Fields(Vec::new());
            event.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
    }

    #[test]
    fn access_log_is_one_structured_line_with_the_documented_fields() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            access_log("GET", "/health", 200, Instant::now(), "rid-1", 15);
        });
        let events = seen.lock().unwrap();
        assert_eq!(events.len(), 1);
        let names: Vec<&str> = events[0].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["message", "method", "path", "status", "duration_ms", "request_id", "bytes"]);
        let get = |k: &str| events[0].iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!((get("method"), get("path"), get("status")), ("GET".into(), "/health".into(), "200".into()));
        assert_eq!((get("request_id"), get("bytes")), ("rid-1".into(), "15".into()));
        assert!(get("duration_ms").parse::<f64>().unwrap() >= 0.0);
    }

    #[test]
    fn settings_come_from_the_obs_server_block() {
        let s = ServeSettings::from_config(&Config::defaults().obs.server).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8001");
        assert_eq!((s.workers, s.limits.json, s.stream.max_clients), (8, 1 << 20, 64));
        assert_eq!(s.stream.ws_ping, Duration::from_secs(20));
        assert_eq!(s.stream.sse_keepalive, Duration::from_secs(15));
        assert!(s.token.is_none() && !s.test_panic_route);
    }
}
