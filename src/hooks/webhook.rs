//! Webhook registrations (`data/webhooks.json`) and request signing.
//!
//! A registration is `{event, url, secret}` keyed by `event` + `url` (upsert); `event` is a catalogue
//! name, `*`, or a glob such as `on_asset_*`. Only `http`/`https` URLs are accepted. This module owns
//! the registrations file and the signature rules; delivery (outbox, worker, retries) lives in
//! [`super::delivery`] and never writes this file except through [`WebhookStore`].
//!
//! Invariants: every change is a read-modify-write under `data/webhooks/registrations.lock` followed by
//! an atomic replace, so the CLI, the API and the delivery worker never lose each other's edits. A
//! secret never leaves this module unmasked except to sign a request: listings mask it, and
//! `Debug` prints it masked so it cannot reach a log by accident.
//!
//! Signing (see `docs/webhooks-providers.md`): `X-Comfy-Signature` is the lowercase hex HMAC-SHA256 of
//! the exact body keyed by the secret's UTF-8 bytes (the original toolkit's header). The Standard
//! Webhooks `webhook-signature` is `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` where the
//! key is the base64-decoded part after `whsec_` for `whsec_` secrets, else the secret's UTF-8 bytes.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Bus;
use crate::paths::Paths;

/// Version of the `data/webhooks.json` document.
pub const SCHEMA: u64 = 1;

/// Prefix of Standard Webhooks secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Standard base64 that accepts the secret with or without `=` padding.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One registration as stored.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    /// Event name, `*`, or a glob.
    pub event: String,
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Events with a `seq` up to this one happened before the registration and are not delivered
    /// (use `webhooks replay` for those).
    #[serde(default)]
    pub since_seq: u64,
    /// Failed attempts since the last 2xx.
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// Set with `disabled_at`: the last history `seq` the worker had queued for it. Events after it
    /// were not queued while it was disabled; `webhooks replay --since` sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_seq: Option<u64>,
    /// When the current run of failures began (the first failed attempt after the last 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

fn enabled_default() -> bool {
    true
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("event", &self.event)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|s| mask(s)))
            .field("enabled", &self.enabled)
            .field("since_seq", &self.since_seq)
            .field("consecutive_failures", &self.consecutive_failures)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The identity used for upserts, outbox lanes and delivery ids.
    pub fn key(&self) -> String {
        registration_key(&self.event, &self.url)
    }

    /// The listing form: everything but the secret, which is masked.
    pub fn listing(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.insert("secret".into(), self.secret.as_ref().map(|s| Value::String(mask(s))).unwrap_or(Value::Null));
        }
        v
    }
}

impl Registration {
    /// Enabled, with no failure run: as re-adding it leaves it. A disabled one gets only the events
    /// after `since_seq` (the history's end now). Returns the `disabled_seq` it had.
    fn start_afresh(&mut self, since_seq: u64, now: String) -> Option<u64> {
        if !self.enabled {
            self.since_seq = since_seq;
        }
        self.enabled = true;
        self.consecutive_failures = 0;
        self.last_error = None;
        self.disabled_at = None;
        self.failing_since = None;
        self.updated_at = now;
        self.disabled_seq.take()
    }
}

/// `event` + `url`, joined by a character neither can contain.
pub fn registration_key(event: &str, url: &str) -> String {
    crate::outbound::queue::lane_key(event, url)
}

/// The listing mask: `*` repeated to the value's length (as the original masked secrets).
pub fn mask(secret: &str) -> String {
    "*".repeat(secret.chars().count())
}

/// Compile an event pattern: `*`, a glob, or a plain name (which matches only itself).
pub fn event_matcher(pattern: &str) -> Result<globset::GlobMatcher> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .with_context(|| format!("bad event pattern {pattern:?}"))?;
    Ok(glob.compile_matcher())
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// Why a registration request was refused (the API maps these to HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An exact event name that is not in the catalogue.
    #[error("unsupported event")]
    UnsupportedEvent(String),
    #[error("webhook url required")]
    UrlRequired,
    /// Any other bad field: the message names it.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to remove.
    #[error("no webhook registered for event {event:?} and url {url:?}")]
    NotFound { event: String, url: String },
    /// The registrations file could not be read or written.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

impl WebhookError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::UnsupportedEvent(_) | WebhookError::UrlRequired | WebhookError::Invalid(_) => 400,
            WebhookError::NotFound { .. } => 404,
            WebhookError::Io(_) => 500,
        }
    }
}

/// A registration request, already parsed from the CLI or an API body.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub event: String,
    pub url: String,
    pub secret: Option<String>,
}

impl NewWebhook {
    /// Check the event against the catalogue, the URL scheme and the secret's form.
    pub fn validate(&self, bus: &Bus) -> Result<(), WebhookError> {
        if self.event.trim().is_empty() {
            return Err(WebhookError::UnsupportedEvent(self.event.clone()));
        }
        if is_glob(&self.event) {
            event_matcher(&self.event).map_err(|e| WebhookError::Invalid(format!("{e:#}")))?;
        } else if !bus.catalogue.contains(&self.event) {
            return Err(WebhookError::UnsupportedEvent(self.event.clone()));
        }
        if self.url.trim().is_empty() {
            return Err(WebhookError::UrlRequired);
        }
        crate::outbound::check_url(&self.url).map_err(|e| WebhookError::Invalid(e.to_string()))?;
        if let Some(secret) = &self.secret {
            check_secret(secret).map_err(|e| WebhookError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

/// A secret must be non-empty; a `whsec_` secret must carry valid base64 after the prefix.
pub fn check_secret(secret: &str) -> Result<()> {
    if secret.is_empty() {
        bail!("the webhook secret is empty");
    }
    if let Some(rest) = secret.strip_prefix(WHSEC_PREFIX) {
        let key = LENIENT_B64.decode(rest).map_err(|_| anyhow!("a whsec_ secret must be base64 after the prefix"))?;
        if key.is_empty() {
            bail!("a whsec_ secret must carry at least one key byte");
        }
    }
    Ok(())
}

/// A new `whsec_` secret: 24 random bytes, base64.
pub fn generate_secret() -> String {
    format!("{WHSEC_PREFIX}{}", STANDARD.encode(crate::digest::random_bytes::<24>()))
}

/// The Standard Webhooks signing key for a secret (see the module doc).
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(WHSEC_PREFIX)
        .and_then(|rest| LENIENT_B64.decode(rest).ok())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `X-Comfy-Signature`: lowercase hex HMAC-SHA256 of the body, keyed by the secret's bytes.
pub fn comfy_signature(secret: &str, body: &[u8]) -> String {
    crate::digest::hex(&crate::digest::hmac_sha256(secret.as_bytes(), body))
}

/// `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(crate::digest::hmac_sha256(key, &msg)))
}

/// The headers of one delivery attempt. The signatures are only present when a secret is set.
pub fn signed_headers(
    secret: Option<&str>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Content-Type", "application/json".to_string()),
        ("webhook-id", webhook_id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        h.push(("webhook-signature", standard_signature(&standard_key(secret), webhook_id, timestamp, body)));
        h.push(("X-Comfy-Signature", comfy_signature(secret, body)));
    }
    h
}

/// The webhook sink of the outbound pipeline: a POST of the exact body to the registration's URL,
/// signed (Standard Webhooks and `X-Comfy-Signature`) when it has a secret, at the moment it is sent.
#[derive(Debug)]
pub struct WebhookSink {
    pub url: String,
    pub secret: Option<String>,
}

impl crate::outbound::Sink for WebhookSink {
    fn request<'a>(&'a self, message_id: &str, body: &'a [u8]) -> crate::outbound::Request<'a> {
        let timestamp = chrono::Utc::now().timestamp();
        crate::outbound::Request {
            url: &self.url,
            headers: signed_headers(self.secret.as_deref(), message_id, timestamp, body),
            body: std::borrow::Cow::Borrowed(body),
        }
    }
}

/// On-disk form of `data/webhooks.json`.
#[derive(Serialize, Deserialize)]
struct Document {
    schema: u64,
    webhooks: Vec<Registration>,
}

/// Attempt outcomes for one registration since they were last recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptRun {
    pub key: String,
    /// A 2xx arrived: the failure run starts again from zero.
    pub reset: bool,
    /// Failed attempts after the reset (or since the last record).
    pub failures: u32,
    pub last_error: Option<String>,
    /// Epoch milliseconds of the first of `failures` (after the reset, if any).
    pub first_failure_ms: Option<i64>,
}

/// When a failing registration is disabled (`obs.webhooks.disable_after_*`): only after it has failed
/// continuously for `after` and over at least `min_failures` attempts, so one burst of failures while
/// a receiver restarts never disables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablePolicy {
    /// 0 = never disable.
    pub min_failures: u32,
    pub after: std::time::Duration,
}

impl DisablePolicy {
    /// Never disable (used when only counts are written).
    pub const NEVER: DisablePolicy = DisablePolicy { min_failures: 0, after: std::time::Duration::ZERO };

    /// Whether `failures` consecutive failures that began at `since_ms` (epoch ms) disable, at `now_ms`.
    pub fn disables(&self, failures: u32, since_ms: Option<i64>, now_ms: i64) -> bool {
        if self.min_failures == 0 || failures < self.min_failures {
            return false;
        }
        let elapsed = since_ms.map_or(0, |s| now_ms.saturating_sub(s).max(0) as u128);
        elapsed >= self.after.as_millis()
    }
}

/// Epoch milliseconds of a registration's `failing_since`.
pub fn failing_since_ms(reg: &Registration) -> Option<i64> {
    let s = reg.failing_since.as_deref()?;
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// What an upsert did.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub created: bool,
    pub registration: Registration,
    /// It was disabled and is enabled again: the worker sends the deliveries it kept waiting.
    pub reenabled: bool,
    /// With `reenabled`, the `disabled_seq` it had: events after it were not queued.
    pub disabled_seq: Option<u64>,
}

/// The registrations file and its lock.
#[derive(Debug, Clone)]
pub struct WebhookStore {
    file: PathBuf,
    lock: PathBuf,
}

impl WebhookStore {
    pub fn new(paths: &Paths) -> WebhookStore {
        WebhookStore { file: paths.webhooks_file(), lock: paths.webhooks_dir().join("registrations.lock") }
    }

    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    /// All registrations (empty when the file does not exist). Accepts the original's bare array.
    pub fn load(&self) -> Result<Vec<Registration>> {
        // Written 0600 since it holds secrets; tighten one an older version (or a person) left
        // readable by others, before parsing so a corrupt one is tightened too.
        if let Err(e) = crate::fs::make_private(&self.file) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(
                || tracing::warn!(error = %format!("{e:#}"), "the webhook registrations are readable by others"),
            );
        }
        let Some(doc) = crate::fs::read_json_opt(&self.file)? else { return Ok(Vec::new()) };
        let list = match doc {
            Value::Array(items) => Value::Array(items),
            Value::Object(mut map) => match map.remove("webhooks") {
                Some(v) => v,
                None => bail!("{}: expected a \"webhooks\" array", self.file.display()),
            },
            other => bail!("{}: expected an object, found {}", self.file.display(), crate::config::kind(&other)),
        };
        serde_path_to_error::deserialize(list).map_err(|e| {
            anyhow!("{}: webhooks{}: {}", self.file.display(), index_path(&e.path().to_string()), e.inner())
        })
    }

    /// Read-modify-write under the lock; the file is rewritten only when `edit` changed something.
    pub fn update<R>(&self, edit: impl FnOnce(&mut Vec<Registration>) -> R) -> Result<R> {
        let _lock = lock_file(&self.lock)?;
        let mut regs = self.load()?;
        let before = regs.clone();
        let out = edit(&mut regs);
        if regs != before {
            // Owner-only: the registrations hold the signing secrets.
            crate::fs::write_json_private(&self.file, &Document { schema: SCHEMA, webhooks: regs })?;
        }
        Ok(out)
    }

    /// Insert or replace by `event` + `url`. `since_seq` is the history's end now: a new (or
    /// re-enabled) registration gets only what happens from here on.
    pub fn upsert(&self, new: &NewWebhook, since_seq: u64) -> Result<Upserted> {
        let now = crate::time::iso_now();
        self.update(|regs| {
            if let Some(reg) = regs.iter_mut().find(|r| r.event == new.event && r.url == new.url) {
                reg.secret = new.secret.clone();
                let reenabled = !reg.enabled;
                let disabled_seq = reg.start_afresh(since_seq, now);
                return Upserted { created: false, registration: reg.clone(), reenabled, disabled_seq };
            }
            let reg = Registration {
                event: new.event.clone(),
                url: new.url.clone(),
                secret: new.secret.clone(),
                enabled: true,
                since_seq,
                consecutive_failures: 0,
                last_error: None,
                disabled_at: None,
                disabled_seq: None,
                failing_since: None,
                created_at: now.clone(),
                updated_at: now,
            };
            regs.push(reg.clone());
            Upserted { created: true, registration: reg, reenabled: false, disabled_seq: None }
        })
    }

    /// Remove by `event` + `url`; false when there was none.
    pub fn remove(&self, event: &str, url: &str) -> Result<bool> {
        self.update(|regs| {
            let before = regs.len();
            regs.retain(|r| !(r.event == event && r.url == url));
            regs.len() != before
        })
    }

    /// Apply the delivery worker's attempt counts in one write: per registration key, an optional
    /// reset (a 2xx since the last call) followed by more failed attempts. A registration whose run of
    /// failures meets `policy` is disabled; those are returned.
    pub fn record_runs(&self, runs: &[AttemptRun], policy: DisablePolicy) -> Result<Vec<Registration>> {
        let now_t = crate::time::now();
        let now = crate::time::iso(now_t);
        self.update(|regs| {
            let mut disabled = Vec::new();
            for run in runs {
                let Some(reg) = regs.iter_mut().find(|r| r.key() == run.key && r.enabled) else { continue };
                if run.reset {
                    reg.consecutive_failures = 0;
                    reg.last_error = None;
                    reg.failing_since = None;
                }
                if run.failures > 0 {
                    if reg.consecutive_failures == 0 || reg.failing_since.is_none() {
                        let first = run.first_failure_ms.and_then(chrono::DateTime::from_timestamp_millis);
                        reg.failing_since = Some(crate::time::iso(first.unwrap_or(now_t)));
                    }
                    reg.consecutive_failures = reg.consecutive_failures.saturating_add(run.failures);
                    reg.last_error = run.last_error.clone();
                }
                if policy.disables(reg.consecutive_failures, failing_since_ms(reg), now_t.timestamp_millis()) {
                    reg.enabled = false;
                    reg.disabled_at = Some(now.clone());
                    reg.updated_at = now.clone();
                    disabled.push(reg.clone());
                }
            }
            disabled
        })
    }

    /// Enable again every disabled registration `pick` selects, as re-adding it does (`since_seq`: the
    /// history's end now); returns them with the `disabled_seq` each had.
    pub fn reenable(
        &self,
        pick: impl Fn(&Registration) -> bool,
        since_seq: u64,
    ) -> Result<Vec<(Registration, Option<u64>)>> {
        let now = crate::time::iso_now();
        self.update(|regs| {
            let mut out = Vec::new();
            for reg in regs.iter_mut().filter(|r| !r.enabled && pick(r)) {
                let seq = reg.start_afresh(since_seq, now.clone());
                out.push((reg.clone(), seq));
            }
            out
        })
    }

    /// Note, on a registration just disabled, the last `seq` queued for it.
    pub fn set_disabled_seq(&self, key: &str, seq: u64) -> Result<()> {
        self.update(|regs| {
            if let Some(reg) = regs.iter_mut().find(|r| r.key() == key && !r.enabled) {
                reg.disabled_seq = Some(seq);
            }
        })
    }

    /// Size, mtime and inode of the file: the worker reloads when these change.
    pub fn stamp(&self) -> Option<(u64, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.file).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    }
}

/// `[3].event` → `[3].event`; serde_path_to_error prints `[3].event` already, `.` for the root.
fn index_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else if p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    }
}

/// Take an exclusive advisory lock on `path` (created when absent) for as long as the file lives.
pub(crate) fn lock_file(path: &std::path::Path) -> Result<File> {
    let f = crate::fs::open_append(path)?;
    f.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(f)
}

/// The masked registrations for listings (`GET /api/modder/hooks` → `webhooks`).
pub fn api_listing(paths: &Paths) -> Result<Value> {
    Ok(Value::Array(WebhookStore::new(paths).load()?.iter().map(Registration::listing).collect()))
}

/// Read `{"event", "url", "secret"?}` from an API body.
pub fn parse_body(body: &Value) -> Result<NewWebhook, WebhookError> {
    let Some(map) = body.as_object() else {
        return Err(WebhookError::Invalid(format!("expected a JSON object, found {}", crate::config::kind(body))));
    };
    let text = |k: &str| -> Result<Option<String>, WebhookError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(WebhookError::Invalid(format!("{k}: expected a string, found {}", crate::config::kind(other))))
            }
        }
    };
    Ok(NewWebhook {
        event: text("event")?.unwrap_or_default(),
        url: text("url")?.unwrap_or_default(),
        secret: text("secret")?.filter(|s| !s.is_empty()),
    })
}

/// `POST /api/modder/hooks/webhooks`: validate and upsert; answers `{"ok": true}`.
pub fn api_register(paths: &Paths, bus: &Bus, body: &Value) -> Result<Value, WebhookError> {
    let new = parse_body(body)?;
    new.validate(bus)?;
    let since = bus.history.last_seq()?;
    let done = WebhookStore::new(paths).upsert(&new, since)?;
    Ok(json!({"ok": true, "created": done.created, "webhook": done.registration.listing()}))
}

/// `DELETE /api/modder/hooks/webhooks` with the same body: answers `{"ok": true, "removed": bool}`.
pub fn api_remove(paths: &Paths, body: &Value) -> Result<Value, WebhookError> {
    let new = parse_body(body)?;
    if new.url.trim().is_empty() {
        return Err(WebhookError::UrlRequired);
    }
    let removed = WebhookStore::new(paths).remove(&new.event, &new.url)?;
    Ok(json!({"ok": true, "removed": removed}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn standard_webhooks_reference_vector() {
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            standard_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn comfy_signature_is_hex_hmac_of_the_body_with_the_secret_bytes() {
        // RFC 4231 test case 2 with the secret as the key.
        assert_eq!(
            comfy_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A whsec_ secret is still used as its UTF-8 bytes for the original header.
        let s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(comfy_signature(s, b"x"), crate::digest::hex(&crate::digest::hmac_sha256(s.as_bytes(), b"x")));
    }

    #[test]
    fn plain_secrets_sign_with_their_bytes_and_headers_need_a_secret() {
        assert_eq!(standard_key("plain-secret"), b"plain-secret");
        let h = signed_headers(None, "msg_1_x", 5, b"{}");
        assert!(h.iter().all(|(k, _)| *k != "webhook-signature" && *k != "X-Comfy-Signature"));
        let h = signed_headers(Some("s"), "msg_1_x", 5, b"{}");
        assert!(h.iter().any(|(k, _)| *k == "X-Comfy-Signature"));
    }

    #[test]
    fn generated_secrets_are_whsec_with_24_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(standard_key(&s).len(), 24);
        assert_ne!(s, generate_secret());
        assert!(check_secret(&s).is_ok());
        assert!(check_secret("whsec_***").is_err());
        assert!(check_secret("").is_err());
    }

    #[test]
    fn upsert_by_event_and_url_and_listing_masks() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = WebhookStore::new(&paths);
        let new = NewWebhook { event: "*".into(), url: "http://127.0.0.1:1/h".into(), secret: Some("abc".into()) };
        assert!(store.upsert(&new, 3).unwrap().created);
        let again = NewWebhook { secret: Some("defg".into()), ..new.clone() };
        assert!(!store.upsert(&again, 9).unwrap().created);
        let regs = store.load().unwrap();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].since_seq, 3, "an enabled registration keeps its starting point");
        let listing = api_listing(&paths).unwrap();
        assert_eq!(listing[0]["secret"], "****");
        assert!(!format!("{:?}", regs[0]).contains("defg"));
        let doc = crate::fs::read_json_opt(store.file()).unwrap().unwrap();
        assert_eq!(doc["schema"], 1);
        assert!(store.remove("*", "http://127.0.0.1:1/h").unwrap());
        assert!(!store.remove("*", "http://127.0.0.1:1/h").unwrap());
    }

    #[test]
    fn disabling_needs_both_the_attempts_and_the_time_failing() {
        let p = DisablePolicy { min_failures: 10, after: std::time::Duration::from_secs(5 * 86_400) };
        let day = 86_400_000;
        // 500 failures in one burst, an hour long: not disabled.
        assert!(!p.disables(500, Some(0), 3_600_000));
        // Five days of failures but only 3 attempts: not disabled.
        assert!(!p.disables(3, Some(0), 5 * day));
        assert!(p.disables(10, Some(0), 5 * day));
        assert!(!DisablePolicy::NEVER.disables(u32::MAX, Some(0), i64::MAX));
        let dir = tempfile::tempdir().unwrap();
        let store = WebhookStore::new(&Paths::under(dir.path()));
        let new = NewWebhook { event: "*".into(), url: "http://x/h".into(), secret: None };
        let key = store.upsert(&new, 0).unwrap().registration.key();
        let started = crate::time::now().timestamp_millis() - 6 * day;
        let run = AttemptRun { key, failures: 12, first_failure_ms: Some(started), ..AttemptRun::default() };
        let disabled = store.record_runs(&[run], p).unwrap();
        assert_eq!(disabled.len(), 1, "failing for six days over 12 attempts disables");
        assert_eq!(failing_since_ms(&disabled[0]), Some(started));
    }

    #[test]
    fn failures_disable_after_the_threshold_and_success_resets() {
        let dir = tempfile::tempdir().unwrap();
        let store = WebhookStore::new(&Paths::under(dir.path()));
        let new = NewWebhook { event: "on_*".into(), url: "http://x/h".into(), secret: None };
        let key = store.upsert(&new, 0).unwrap().registration.key();
        let fail = |n| AttemptRun {
            key: key.clone(),
            reset: false,
            failures: n,
            last_error: Some("http 500".into()),
            first_failure_ms: None,
        };
        let three = DisablePolicy { min_failures: 3, after: std::time::Duration::ZERO };
        assert!(store.record_runs(&[fail(2)], three).unwrap().is_empty());
        assert_eq!(store.load().unwrap()[0].consecutive_failures, 2);
        let reset = AttemptRun { key: key.clone(), reset: true, ..AttemptRun::default() };
        assert!(store.record_runs(&[reset], three).unwrap().is_empty());
        assert_eq!(
            (store.load().unwrap()[0].consecutive_failures, store.load().unwrap()[0].last_error.clone()),
            (0, None)
        );
        assert!(store.record_runs(&[fail(2)], three).unwrap().is_empty());
        let disabled = store.record_runs(&[fail(1)], three).unwrap();
        assert!(!disabled[0].enabled && disabled[0].consecutive_failures == 3);
        assert!(store.record_runs(&[fail(5)], three).unwrap().is_empty(), "a disabled registration is left alone");
        // Re-registering enables it again from the history's current end.
        let up = store.upsert(&new, 42).unwrap().registration;
        assert!(up.enabled && up.since_seq == 42 && up.consecutive_failures == 0);
    }

    #[test]
    fn api_validation_matches_the_original_messages() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let bus = Bus::open(&paths, &Config::defaults()).unwrap();
        let err = api_register(&paths, &bus, &json!({"event": "on_nothing", "url": "http://x/"})).unwrap_err();
        assert_eq!((err.status(), err.to_string()), (400, "unsupported event".to_string()));
        let err = api_register(&paths, &bus, &json!({"event": "on_scene_enter"})).unwrap_err();
        assert_eq!(err.to_string(), "webhook url required");
        let err = api_register(&paths, &bus, &json!({"event": "on_scene_enter", "url": "ftp://x/"})).unwrap_err();
        assert_eq!(err.status(), 400);
        let ok =
            api_register(&paths, &bus, &json!({"event": "on_asset_*", "url": "http://x/", "secret": "s3"})).unwrap();
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["webhook"]["secret"], "**");
        assert_eq!(api_remove(&paths, &json!({"event": "on_asset_*", "url": "http://x/"})).unwrap()["removed"], true);
    }

    #[test]
    fn bad_file_names_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.data_dir).unwrap();
        std::fs::write(paths.webhooks_file(), r#"{"schema":1,"webhooks":[{"event":"*","url":5}]}"#).unwrap();
        let err = WebhookStore::new(&paths).load().unwrap_err().to_string();
        assert!(err.contains("webhooks.json") && err.contains("[0].url"), "{err}");
        // The original's bare list is read as is.
        std::fs::write(paths.webhooks_file(), r#"[{"event":"*","url":"http://x/","secret":null}]"#).unwrap();
        assert_eq!(WebhookStore::new(&paths).load().unwrap()[0].url, "http://x/");
    }
}
