//! The Sentry protocol (DSNs, envelopes, rate limits), the only module that imports `sentry-types`.
//!
//! A crash dump becomes one envelope holding one event: the exception type and value, the frames of
//! the dump's Rust backtrace or Python traceback (oldest call first, in-app frames marked as the
//! fingerprint marks them), the dump's fingerprint as the grouping fingerprint, the log tail as
//! breadcrumbs, os/app/runtime contexts, and the dump's `context` as tags (strings) or extra (the
//! rest). The dump is already masked when written; nothing here adds a value the dump did not hold,
//! except the anonymous id standing in for the user. Any Sentry-compatible server (Sentry, GlitchTip,
//! Bugsink) accepts the result. No I/O here: the caller reads the dump and sends the bytes.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use sentry_types::protocol::v7 as proto;
use serde_json::Value;

/// A parsed DSN: where envelopes go and how they are authenticated.
#[derive(Debug, Clone)]
pub struct Dsn {
    inner: sentry_types::Dsn,
}

impl Dsn {
    /// Parse `https://<public key>@<host>[:port]/[path/]<project id>`.
    pub fn parse(text: &str) -> Result<Dsn> {
        let text = text.trim();
        if text.is_empty() {
            bail!("the DSN is empty");
        }
        let inner: sentry_types::Dsn = text
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| "not a valid DSN (expected https://<public key>@<host>/<project id>)".to_string())?;
        Ok(Dsn { inner })
    }

    /// The envelope endpoint: `<scheme>://<host>[:port]/[path/]api/<project>/envelope/`.
    pub fn envelope_url(&self) -> String {
        self.inner.envelope_api_url().to_string()
    }

    /// The `X-Sentry-Auth` header value.
    pub fn auth_header(&self) -> String {
        let client = concat!("comfyvn-obs/", env!("CARGO_PKG_VERSION"));
        let mut v = format!("Sentry sentry_key={}, sentry_version=7, sentry_client={client}", self.inner.public_key());
        if let Some(secret) = self.inner.secret_key() {
            v.push_str(&format!(", sentry_secret={secret}"));
        }
        v
    }

    /// `scheme://host[:port]` without the key, for messages.
    pub fn server(&self) -> String {
        let mut s = format!("{}://{}", self.inner.scheme(), self.inner.host());
        if self.inner.port() != self.inner.scheme().default_port() {
            s.push_str(&format!(":{}", self.inner.port()));
        }
        s
    }

    pub fn project_id(&self) -> String {
        self.inner.project_id().to_string()
    }

    fn to_inner(&self) -> sentry_types::Dsn {
        self.inner.clone()
    }
}

/// What the envelope says beyond the dump.
#[derive(Debug, Clone, Default)]
pub struct EnvelopeOptions {
    pub dsn: Option<Dsn>,
    pub release: String,
    pub environment: String,
    /// The installation's anonymous id, sent as the user id.
    pub anonymous_id: String,
}

/// The Sentry event id of a dump: a UUID derived from the dump's own id, timestamp and fingerprint,
/// so every attempt and every re-upload of one dump carries the same id (servers de-duplicate on it).
pub fn event_id_of(dump: &Value) -> String {
    uuid_of(dump).simple().to_string()
}

fn uuid_of(dump: &Value) -> sentry_types::Uuid {
    let s = |k: &str| dump.get(k).and_then(Value::as_str).unwrap_or_default();
    let basis = format!("{}\n{}\n{}", s("event_id"), s("timestamp"), s("fingerprint"));
    let digest = crate::digest::sha256_hex(basis.as_bytes());
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    // A version-4 layout (random-looking), as the SDKs send.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    sentry_types::Uuid::from_bytes(bytes)
}

fn parse_time(text: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| {
            let nanos = t.timestamp_nanos_opt()?;
            let nanos = u64::try_from(nanos).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The exact envelope bytes for one crash dump.
pub fn envelope(dump: &Value, opts: &EnvelopeOptions) -> Result<Vec<u8>> {
    let event = event(dump, opts);
    let mut headers = proto::EnvelopeHeaders::new().with_event_id(event.event_id).with_sdk(sdk());
    if let Some(dsn) = &opts.dsn {
        headers = headers.with_dsn(dsn.to_inner());
    }
    let mut envelope = proto::Envelope::new().with_headers(headers);
    envelope.add_item(event);
    let mut out = Vec::new();
    envelope.to_writer(&mut out).context("cannot serialize the envelope")?;
    Ok(out)
}

fn sdk() -> proto::ClientSdkInfo {
    proto::ClientSdkInfo {
        name: "comfyvn-obs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        integrations: Vec::new(),
        packages: Vec::new(),
    }
}

/// The event for one dump (see the module doc).
pub fn event(dump: &Value, opts: &EnvelopeOptions) -> proto::Event<'static> {
    let s = |k: &str| dump.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let exc_type = s("exc_type");
    let traceback = s("traceback");
    let (frames, platform, runtime) = frames_of(&traceback);
    let is_panic = exc_type == "panic";
    let mechanism = proto::Mechanism {
        ty: if is_panic { "panic".into() } else { "generic".into() },
        handled: Some(false),
        ..Default::default()
    };
    let exception = proto::Exception {
        ty: if exc_type.is_empty() { "Error".into() } else { exc_type.clone() },
        value: Some(s("message")),
        stacktrace: (!frames.is_empty()).then(|| proto::Stacktrace { frames, ..Default::default() }),
        mechanism: Some(mechanism),
        ..Default::default()
    };

    let mut tags = proto::Map::new();
    let mut extra = proto::Map::new();
    if let Some(Value::Object(context)) = dump.get("context") {
        for (k, v) in context {
            match v {
                Value::String(text) if text.chars().count() <= 200 => {
                    tags.insert(k.clone(), text.clone());
                }
                other => {
                    extra.insert(k.clone(), other.clone());
                }
            }
        }
    }
    for key in ["arch", "thread"] {
        if !s(key).is_empty() {
            tags.insert(key.into(), s(key));
        }
    }
    tags.insert("dump_id".into(), s("event_id"));
    for key in ["location", "child", "args", "attachments"] {
        if let Some(v) = dump.get(key).filter(|v| !v.is_null()) {
            extra.insert(key.into(), v.clone());
        }
    }

    let mut contexts = proto::Map::new();
    contexts.insert(
        "os".into(),
        proto::Context::Os(Box::new(proto::OsContext { name: Some(s("os")), ..Default::default() })),
    );
    contexts.insert(
        "app".into(),
        proto::Context::App(Box::new(proto::AppContext {
            app_name: Some("comfyvn-obs".into()),
            app_version: Some(s("app_version")),
            ..Default::default()
        })),
    );
    contexts.insert("runtime".into(), proto::Context::Runtime(Box::new(runtime)));

    let breadcrumbs: Vec<proto::Breadcrumb> = match dump.get("log_tail") {
        Some(Value::Array(records)) => records.iter().map(breadcrumb).collect(),
        _ => Vec::new(),
    };

    let fingerprint = s("fingerprint");
    proto::Event {
        event_id: uuid_of(dump),
        level: if is_panic { proto::Level::Fatal } else { proto::Level::Error },
        fingerprint: if fingerprint.is_empty() {
            vec!["{{ default }}".into()].into()
        } else {
            vec![fingerprint.into()].into()
        },
        logger: Some("comfyvn-obs.crash".into()),
        platform: platform.into(),
        timestamp: parse_time(&s("timestamp")),
        release: (!opts.release.is_empty()).then(|| opts.release.clone().into()),
        environment: (!opts.environment.is_empty()).then(|| opts.environment.clone().into()),
        user: (!opts.anonymous_id.is_empty())
            .then(|| proto::User { id: Some(opts.anonymous_id.clone()), ..Default::default() }),
        contexts,
        breadcrumbs: breadcrumbs.into(),
        exception: vec![exception].into(),
        tags,
        extra,
        sdk: Some(std::borrow::Cow::Owned(sdk())),
        ..Default::default()
    }
}

/// A log record (`{event, logger, component, level, timestamp, …fields}`) as a breadcrumb.
fn breadcrumb(record: &Value) -> proto::Breadcrumb {
    let s = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let level = match s("level").as_str() {
        "debug" | "trace" => proto::Level::Debug,
        "warning" | "warn" => proto::Level::Warning,
        "error" => proto::Level::Error,
        "critical" | "fatal" => proto::Level::Fatal,
        _ => proto::Level::Info,
    };
    let mut data = proto::Map::new();
    if let Value::Object(fields) = record {
        for (k, v) in fields {
            if !matches!(k.as_str(), "event" | "logger" | "component" | "level" | "timestamp") {
                data.insert(k.clone(), v.clone());
            }
        }
    }
    let category = if s("logger").is_empty() { s("component") } else { s("logger") };
    proto::Breadcrumb {
        timestamp: parse_time(&s("timestamp")),
        ty: "default".into(),
        category: (!category.is_empty()).then_some(category),
        level,
        message: Some(s("event")),
        data,
    }
}

/// The frames of a traceback (oldest call first, as Sentry wants them), the event's platform and the
/// runtime context: a Python traceback when there is one, else a Rust backtrace.
fn frames_of(traceback: &str) -> (Vec<proto::Frame>, &'static str, proto::RuntimeContext) {
    let python = python_frames(traceback);
    if !python.is_empty() {
        let runtime = proto::RuntimeContext { name: Some("CPython".into()), ..Default::default() };
        return (python, "python", runtime);
    }
    let runtime = proto::RuntimeContext { name: Some("rust".into()), ..Default::default() };
    let rust = rust_frames(traceback);
    (rust, "native", runtime)
}

/// `  File "/app/scene.py", line 40, in load` lines (with the source line after them), in order.
fn python_frames(traceback: &str) -> Vec<proto::Frame> {
    let Some(start) = traceback.rfind("Traceback (most recent call last):") else { return Vec::new() };
    let mut frames: Vec<proto::Frame> = Vec::new();
    let mut last_was_file = false;
    for line in traceback[start..].lines().skip(1) {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("File \"") {
            let Some((file, tail)) = rest.split_once('"') else { continue };
            let mut lineno = None;
            let mut function = None;
            for part in tail.split(',').map(str::trim) {
                if let Some(n) = part.strip_prefix("line ") {
                    lineno = n.trim().parse().ok();
                } else if let Some(f) = part.strip_prefix("in ") {
                    function = Some(f.trim().to_string());
                }
            }
            let base = file.rsplit(['/', '\\']).next().unwrap_or(file).to_string();
            let module = base.strip_suffix(".py").map(str::to_string);
            frames.push(proto::Frame {
                function,
                module,
                filename: Some(base),
                abs_path: Some(file.to_string()),
                lineno,
                in_app: Some(!crate::crash::is_python_library(file)),
                ..Default::default()
            });
            last_was_file = true;
        } else if last_was_file && line.starts_with(char::is_whitespace) && !t.is_empty() {
            if let Some(f) = frames.last_mut() {
                f.context_line = Some(t.to_string());
            }
            last_was_file = false;
        } else {
            last_was_file = false;
        }
    }
    frames
}

/// `   3: crate::module::function::h0123…` lines with their `at path:line:col` lines; Rust prints the
/// innermost frame first, so the result is reversed.
fn rust_frames(backtrace: &str) -> Vec<proto::Frame> {
    let mut frames: Vec<proto::Frame> = Vec::new();
    for line in backtrace.lines() {
        let t = line.trim();
        if let Some(at) = t.strip_prefix("at ") {
            if let Some(f) = frames.last_mut() {
                if f.abs_path.is_none() {
                    let mut parts = at.rsplitn(3, ':');
                    let col = parts.next().and_then(|c| c.parse::<u64>().ok());
                    let line_no = parts.next().and_then(|l| l.parse::<u64>().ok());
                    match (parts.next(), line_no, col) {
                        (Some(path), Some(l), Some(c)) => {
                            f.abs_path = Some(path.to_string());
                            f.filename = Some(path.rsplit('/').next().unwrap_or(path).to_string());
                            f.lineno = Some(l);
                            f.colno = Some(c);
                        }
                        _ => f.abs_path = Some(at.to_string()),
                    }
                }
            }
            continue;
        }
        let Some((index, symbol)) = t.split_once(": ") else { continue };
        if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let raw = symbol.trim();
        let function = crate::crash::strip_symbol_hash(raw).to_string();
        let module = function.rsplit_once("::").map(|(m, _)| m.to_string());
        frames.push(proto::Frame {
            in_app: Some(crate::crash::is_rust_in_app(&function)),
            symbol: (raw != function).then(|| raw.to_string()),
            function: Some(function),
            module,
            ..Default::default()
        });
    }
    frames.reverse();
    frames
}

/// How long the server asked us to wait before sending another error event, from
/// `X-Sentry-Rate-Limits` (`<seconds>:<categories>:<scope>[:…], …`; an empty category list or one
/// naming `error` or `default` covers crash events) or, failing that, `Retry-After` on a 429.
pub fn rate_limit_delay(
    rate_limits: Option<&str>,
    retry_after: Option<Duration>,
    status: Option<u16>,
) -> Option<Duration> {
    let mut longest: Option<Duration> = None;
    if let Some(header) = rate_limits {
        for limit in header.split(',') {
            let mut parts = limit.trim().split(':');
            let Some(Ok(secs)) = parts.next().map(|s| s.trim().parse::<f64>()) else { continue };
            let categories = parts.next().unwrap_or_default();
            let covers =
                categories.trim().is_empty() || categories.split(';').any(|c| matches!(c.trim(), "error" | "default"));
            if covers && secs.is_finite() && secs >= 0.0 {
                let d = Duration::from_secs_f64(secs.min(86_400.0));
                longest = Some(longest.map_or(d, |l| l.max(d)));
            }
        }
    }
    if longest.is_none() && status == Some(429) {
        // A 429 without either header: the SDKs' default of one minute.
        return Some(retry_after.unwrap_or(Duration::from_secs(60)));
    }
    longest
}

/// The server's event id from an envelope answer (`{"id": "…"}`), if it sent one.
pub fn server_event_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("id").and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump() -> Value {
        json!({
            "schema": 1,
            "event_id": "0a1b2c3d",
            "timestamp": "2026-01-02T03:04:05.250000Z",
            "exc_type": "panic",
            "message": "index out of range with Bearer ************",
            "traceback": "   0: comfyvn_obs::commands::crash::simulate::h1111111111111111\n             at ./src/commands/crash.rs:40:5\n   1: comfyvn_obs::commands::crash::run\n   2: std::rt::lang_start\n",
            "cwd": "/home/someone/studio",
            "pid": 42,
            "context": {"plugin": "asset_sync", "api_token": "****", "job": {"n": 3}},
            "attachments": [],
            "app_version": "0.1.0",
            "os": "linux",
            "arch": "x86_64",
            "args": ["comfyvn-obs", "crash", "simulate"],
            "thread": "main",
            "fingerprint": "00112233aabbccdd",
            "log_tail": [{"event": "simulating a crash on purpose", "logger": "comfyvn.obs.crash", "component": "crash", "level": "warning", "timestamp": "2026-01-02T03:04:05.000000Z", "scene": 7}],
            "location": "src/commands/crash.rs:40:5"
        })
    }

    fn opts() -> EnvelopeOptions {
        EnvelopeOptions {
            dsn: Some(Dsn::parse("http://abc123@127.0.0.1:9000/7").unwrap()),
            release: "comfyvn-obs@0.1.0".into(),
            environment: "studio".into(),
            anonymous_id: "anon-1".into(),
        }
    }

    #[test]
    fn dsn_gives_the_envelope_url_and_auth() {
        let dsn = Dsn::parse("https://key1@sentry.example.com/prefix/42").unwrap();
        assert_eq!(dsn.envelope_url(), "https://sentry.example.com/prefix/api/42/envelope/");
        assert!(dsn.auth_header().starts_with("Sentry sentry_key=key1, sentry_version=7, sentry_client=comfyvn-obs/"));
        assert_eq!(dsn.server(), "https://sentry.example.com");
        let local = Dsn::parse("http://k@127.0.0.1:9000/7").unwrap();
        assert_eq!(local.envelope_url(), "http://127.0.0.1:9000/api/7/envelope/");
        for bad in ["", "not a dsn", "https://sentry.example.com/42", "ftp://k@h/1", "https://k@h/"] {
            assert!(Dsn::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The exact bytes: a change to the envelope shows up here first.
    #[test]
    fn envelope_bytes_are_pinned() {
        let bytes = envelope(&dump(), &opts()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            format!(
                r#"{{"event_id":"{}","dsn":"http://abc123:@127.0.0.1:9000/7","sdk":{{"name":"comfyvn-obs","version":"{}"}}}}"#,
                uuid_of(&dump()).hyphenated(),
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(lines[1], format!(r#"{{"type":"event","length":{}}}"#, lines[2].len()));
        let expected = concat!(
            r#"{"event_id":"EVENT_ID","level":"fatal","fingerprint":["00112233aabbccdd"],"logger":"comfyvn-obs.crash","platform":"native","timestamp":1767323045.25,"#,
            r#""release":"comfyvn-obs@0.1.0","environment":"studio","user":{"id":"anon-1"},"#,
            r#""contexts":{"app":{"type":"app","app_name":"comfyvn-obs","app_version":"0.1.0"},"os":{"type":"os","name":"linux"},"runtime":{"type":"runtime","name":"rust"}},"#,
            r#""breadcrumbs":{"values":[{"timestamp":1767323045,"category":"comfyvn.obs.crash","level":"warning","message":"simulating a crash on purpose","data":{"scene":7}}]},"#,
            r#""exception":{"values":[{"type":"panic","value":"index out of range with Bearer ************","stacktrace":{"frames":["#,
            r#"{"function":"std::rt::lang_start","module":"std::rt","in_app":false},"#,
            r#"{"function":"comfyvn_obs::commands::crash::run","module":"comfyvn_obs::commands::crash","in_app":true},"#,
            r#"{"function":"comfyvn_obs::commands::crash::simulate","symbol":"comfyvn_obs::commands::crash::simulate::h1111111111111111","module":"comfyvn_obs::commands::crash","filename":"crash.rs","abs_path":"./src/commands/crash.rs","lineno":40,"colno":5,"in_app":true}"#,
            r#"]},"mechanism":{"type":"panic","handled":false}}]},"#,
            r#""tags":{"api_token":"****","arch":"x86_64","dump_id":"0a1b2c3d","plugin":"asset_sync","thread":"main"},"#,
            r#""extra":{"args":["comfyvn-obs","crash","simulate"],"attachments":[],"job":{"n":3},"location":"src/commands/crash.rs:40:5"},"#,
            r#""sdk":{"name":"comfyvn-obs","version":"VERSION"}}"#
        )
        .replace("EVENT_ID", &event_id_of(&dump()))
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(lines[2], expected);
        // Nothing the dump did not hold for identity: no cwd, no pid, no host name.
        assert!(!text.contains("/home/someone") && !text.contains("server_name"), "{text}");
    }

    #[test]
    fn event_ids_are_stable_per_dump_and_differ_between_dumps() {
        let a = event_id_of(&dump());
        assert_eq!(a, event_id_of(&dump()));
        assert_eq!(a.len(), 32);
        let mut other = dump();
        other["event_id"] = json!("ffffffff");
        assert_ne!(a, event_id_of(&other));
    }

    #[test]
    fn python_tracebacks_become_python_frames() {
        let mut d = dump();
        d["exc_type"] = json!("ValueError");
        d["traceback"] = json!("Traceback (most recent call last):\n  File \"/app/studio.py\", line 12, in <module>\n    main()\n  File \"/usr/lib/python3.12/json/__init__.py\", line 3, in loads\n  File \"/app/scene.py\", line 40, in load\n    raise ValueError(\"bad scene 42\")\nValueError: bad scene 42\n");
        let e = event(&d, &EnvelopeOptions::default());
        assert_eq!(e.platform, "python");
        assert_eq!(e.level, proto::Level::Error);
        let frames = &e.exception.values[0].stacktrace.as_ref().unwrap().frames;
        let got: Vec<_> = frames
            .iter()
            .map(|f| (f.filename.clone().unwrap(), f.function.clone().unwrap(), f.lineno.unwrap(), f.in_app.unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("studio.py".to_string(), "<module>".to_string(), 12, true),
                ("__init__.py".to_string(), "loads".to_string(), 3, false),
                ("scene.py".to_string(), "load".to_string(), 40, true),
            ]
        );
        assert_eq!(frames[2].context_line.as_deref(), Some("raise ValueError(\"bad scene 42\")"));
        assert!(e.user.is_none() && e.release.is_none());
    }

    #[test]
    fn rate_limits_cover_error_events_and_429_defaults() {
        let d = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(rate_limit_delay(Some("60:error;transaction:key"), None, Some(429)), d(60));
        assert_eq!(rate_limit_delay(Some("30:transaction:key, 90::organization"), None, Some(200)), d(90));
        assert_eq!(rate_limit_delay(Some("30:transaction:key"), None, Some(200)), None);
        assert_eq!(rate_limit_delay(Some("2700:default:organization:quota"), None, Some(429)), d(2700));
        assert_eq!(rate_limit_delay(None, d(5), Some(429)), d(5));
        assert_eq!(rate_limit_delay(None, None, Some(429)), d(60));
        assert_eq!(rate_limit_delay(None, d(5), Some(503)), None);
    }

    #[test]
    fn server_event_ids_are_read_from_the_answer() {
        assert_eq!(server_event_id(br#"{"id":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(server_event_id(b"ok"), None);
    }
}
