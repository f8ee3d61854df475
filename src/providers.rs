//! The compute/API provider registry (`config/settings/providers.json`) and its diagnostics: health
//! probes and quota inspection (DESIGN §9).
//!
//! When the file is absent the registry holds one built-in entry, the local ComfyUI at
//! `http://127.0.0.1:8188`. Probes run in parallel, each bounded by `obs.providers.timeout_ms`; a
//! probe that answers below 400 is `ok` (`slow` above `obs.providers.slow_ms`), anything else is
//! `down`. The last result per provider is kept in `data/providers/health.json`.
//!
//! Invariants: this module never writes the registry file; every value it returns for display has
//! secrets masked at any depth (`config::mask_secrets`, plus secret-looking query parameters and
//! passwords inside URLs); `Debug` of a provider masks its config too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{Config, ProviderSettings};
use crate::outbound::{Client, Reply};
use crate::paths::Paths;

/// Version of `data/providers/health.json` and of the registry document.
pub const SCHEMA: u64 = 1;

/// One registry entry.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Provider {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_url: Option<String>,
    #[serde(default = "active_default")]
    pub active: bool,
    /// Provider-specific settings, often with API keys (masked in every listing).
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Keys this tool does not know, kept for listings.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn active_default() -> bool {
    true
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("base_url", &mask_url(&self.base_url))
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// The display name: `name`, else the id.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// What a health probe requests: `health_url`, else `base_url`.
    pub fn health_endpoint(&self) -> &str {
        self.health_url.as_deref().unwrap_or(&self.base_url)
    }

    /// The listing form, secrets masked at any depth.
    pub fn masked(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        crate::config::mask_secrets(&mut v);
        if let Some(map) = v.as_object_mut() {
            for key in ["base_url", "health_url", "quota_url"] {
                if let Some(Value::String(u)) = map.get_mut(key) {
                    *u = mask_url(u);
                }
            }
        }
        v
    }
}

/// The built-in entry used when `providers.json` does not exist.
pub fn builtin_local() -> Provider {
    Provider {
        id: "local".into(),
        name: "Local ComfyUI".into(),
        kind: "comfyui".into(),
        base_url: "http://127.0.0.1:8188".into(),
        health_url: Some("http://127.0.0.1:8188/system_stats".into()),
        quota_url: None,
        active: true,
        config: Map::new(),
        extra: Map::new(),
    }
}

/// The loaded registry and where it came from (`None` = built-in).
#[derive(Debug, Clone)]
pub struct Registry {
    pub providers: Vec<Provider>,
    pub source: Option<PathBuf>,
}

impl Registry {
    /// Read `config/settings/providers.json` (`{"schema": 1, "providers": [...]}` or a bare list);
    /// the built-in `local` entry when the file is absent. Errors name the file, entry and field.
    pub fn load(paths: &Paths) -> Result<Registry> {
        let file = paths.providers_file();
        let Some(doc) = crate::fs::read_json_opt(&file)? else {
            return Ok(Registry { providers: vec![builtin_local()], source: None });
        };
        let list = match doc {
            Value::Array(items) => Value::Array(items),
            Value::Object(mut map) => match map.remove("providers") {
                Some(v) => v,
                None => bail!("{}: expected a \"providers\" array", file.display()),
            },
            other => bail!("{}: expected an object, found {}", file.display(), crate::config::kind(&other)),
        };
        let providers: Vec<Provider> = serde_path_to_error::deserialize(list).map_err(|e| {
            anyhow!("{}: providers{}: {}", file.display(), field_path(&e.path().to_string()), e.inner())
        })?;
        let mut ids = HashSet::new();
        for (i, p) in providers.iter().enumerate() {
            if p.id.trim().is_empty() {
                bail!("{}: providers[{i}].id: expected a non-empty string", file.display());
            }
            if !ids.insert(p.id.as_str()) {
                bail!("{}: providers[{i}].id: {:?} is used twice", file.display(), p.id);
            }
            for (field, url) in [
                ("base_url", Some(&p.base_url)),
                ("health_url", p.health_url.as_ref()),
                ("quota_url", p.quota_url.as_ref()),
            ] {
                if let Some(url) = url {
                    crate::outbound::check_url(url)
                        .map_err(|e| anyhow!("{}: providers[{i}].{field}: {e}", file.display()))?;
                }
            }
        }
        Ok(Registry { providers, source: Some(file) })
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }
}

fn field_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else if p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    }
}

/// Mask a password in the URL's user info and the values of secret-looking query parameters.
pub fn mask_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h.to_string(), Some(q)),
        None => (url.to_string(), None),
    };
    let mut head = head;
    if let Some(scheme_end) = head.find("://") {
        let rest = &head[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let pass = &rest[colon + 1..at];
                let masked =
                    format!("{}{}:{}{}", &head[..scheme_end + 3], &rest[..colon], "*".repeat(pass.len()), &rest[at..]);
                head = masked;
            }
        }
    }
    match query {
        None => head,
        Some(q) => {
            let parts: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if crate::config::is_secret_key(k) => format!("{k}={}", "*".repeat(v.len())),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{head}?{}", parts.join("&"))
        }
    }
}

/// `ok`, `slow` or `down`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Slow,
    Down,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Slow => "slow",
            Status::Down => "down",
        }
    }
}

/// One probe's result (`results[]` of `GET /api/providers/health`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub provider_id: String,
    pub provider_name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    pub status: Status,
    /// The probed URL (masked).
    pub endpoint: String,
    pub checked_at: String,
}

/// Why a provider request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider not found")]
    NotFound(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ProviderError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ProviderError::NotFound(_) => 404,
            ProviderError::Other(_) => 500,
        }
    }
}

fn judge(p: &Provider, reply: &Reply, slow_ms: u64) -> Health {
    let latency_ms = reply.latency.as_millis() as u64;
    let ok = reply.status.is_some_and(|s| s < 400);
    let status = match (ok, latency_ms > slow_ms) {
        (false, _) => Status::Down,
        (true, true) => Status::Slow,
        (true, false) => Status::Ok,
    };
    Health {
        provider_id: p.id.clone(),
        provider_name: p.display_name().to_string(),
        ok,
        status_code: reply.status,
        error: if ok { None } else { Some(reply.describe()) },
        latency_ms,
        status,
        endpoint: mask_url(p.health_endpoint()),
        checked_at: crate::time::iso_now(),
    }
}

/// Probe every active provider (or only `id`, active or not) in parallel and persist the results.
pub fn check_health(
    paths: &Paths,
    settings: &ProviderSettings,
    id: Option<&str>,
) -> Result<Vec<Health>, ProviderError> {
    let registry = Registry::load(paths)?;
    let targets: Vec<&Provider> = match id {
        Some(id) => vec![registry.get(id).ok_or_else(|| ProviderError::NotFound(id.to_string()))?],
        None => registry.providers.iter().filter(|p| p.active).collect(),
    };
    let client = Client::new(Duration::from_millis(settings.timeout_ms.max(1)), 1);
    let results: Vec<Health> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|p| {
                let client = client.clone();
                s.spawn(move || judge(p, &client.get(p.health_endpoint(), 64 * 1024), settings.slow_ms))
            })
            .collect();
        handles
            .into_iter()
            .zip(&targets)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| {
                    let reply = Reply { error: Some("probe failed".into()), ..Reply::default() };
                    judge(p, &reply, settings.slow_ms)
                })
            })
            .collect()
    });
    save_health(paths, &results)?;
    Ok(results)
}

fn health_file(paths: &Paths) -> PathBuf {
    paths.data_dir.join("providers").join("health.json")
}

/// Merge results into `data/providers/health.json` (under a lock, atomically).
fn save_health(paths: &Paths, results: &[Health]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let file = health_file(paths);
    let lock_path = file.with_file_name("health.lock");
    let lock = crate::fs::open_append(&lock_path)?;
    lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut doc = load_health_doc(&file).unwrap_or_default();
    for h in results {
        doc.insert(h.provider_id.clone(), serde_json::to_value(h).map_err(|e| anyhow!("cannot serialize: {e}"))?);
    }
    crate::fs::write_json_atomic(&file, &json!({"schema": SCHEMA, "providers": doc}))
}

fn load_health_doc(file: &Path) -> Result<Map<String, Value>> {
    match crate::fs::read_json_opt(file)? {
        Some(Value::Object(mut m)) => match m.remove("providers") {
            Some(Value::Object(p)) => Ok(p),
            _ => Ok(Map::new()),
        },
        _ => Ok(Map::new()),
    }
}

/// The last persisted result per provider id.
pub fn last_health(paths: &Paths) -> Result<Map<String, Value>> {
    load_health_doc(&health_file(paths))
}

/// Ask a provider's `quota_url` for its quota: `{ok, quota, latency_ms, endpoint, provider_id}`, or
/// `{ok: false, error: "quota inspection not supported", provider_id}` without one.
pub fn quota(paths: &Paths, settings: &ProviderSettings, id: &str) -> Result<Value, ProviderError> {
    let registry = Registry::load(paths)?;
    let p = registry.get(id).ok_or_else(|| ProviderError::NotFound(id.to_string()))?;
    let Some(url) = &p.quota_url else {
        return Ok(json!({"ok": false, "error": "quota inspection not supported", "provider_id": p.id}));
    };
    let reply = Client::new(Duration::from_millis(settings.timeout_ms.max(1)), 1).get(url, 1024 * 1024);
    let latency_ms = reply.latency.as_millis() as u64;
    let endpoint = mask_url(url);
    if !reply.is_success() {
        let mut v = json!({"ok": false, "error": reply.describe(), "latency_ms": latency_ms, "endpoint": endpoint, "provider_id": p.id});
        if let Some(s) = reply.status {
            v["status_code"] = json!(s);
        }
        return Ok(v);
    }
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(mut quota) => {
            crate::config::mask_secrets(&mut quota);
            Ok(json!({"ok": true, "quota": quota, "latency_ms": latency_ms, "endpoint": endpoint, "provider_id": p.id}))
        }
        Err(e) => Ok(json!({
            "ok": false, "error": format!("quota endpoint did not answer JSON: {e}"),
            "latency_ms": latency_ms, "endpoint": endpoint, "provider_id": p.id,
        })),
    }
}

/// `GET /api/providers`: `{"ok": true, "providers": [masked entries]}`.
pub fn api_list(paths: &Paths) -> Result<Value> {
    let registry = Registry::load(paths)?;
    Ok(json!({"ok": true, "providers": registry.providers.iter().map(Provider::masked).collect::<Vec<_>>()}))
}

/// `GET /api/providers/health[?id=]`: `{"ok": <any ok>, "results": [...]}`, or with an id
/// `{"ok", "status": {...}}`; an unknown id is [`ProviderError::NotFound`] (404 `provider not found`).
pub fn api_health(paths: &Paths, config: &Config, id: Option<&str>) -> Result<Value, ProviderError> {
    let results = check_health(paths, &config.obs.providers, id)?;
    match id {
        Some(_) => {
            let h = &results[0];
            Ok(json!({"ok": h.ok, "status": h}))
        }
        None => Ok(json!({"ok": results.iter().any(|h| h.ok), "results": results})),
    }
}

/// `GET /api/providers/quota?id=`.
pub fn api_quota(paths: &Paths, config: &Config, id: &str) -> Result<Value, ProviderError> {
    quota(paths, &config.obs.providers, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_gives_the_builtin_local_entry() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::load(&Paths::under(dir.path())).unwrap();
        assert!(r.source.is_none());
        assert_eq!(r.providers[0].id, "local");
        assert_eq!(r.providers[0].base_url, "http://127.0.0.1:8188");
    }

    #[test]
    fn listing_masks_config_at_any_depth_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.providers_file().parent().unwrap()).unwrap();
        std::fs::write(
            paths.providers_file(),
            r#"{"schema":1,"providers":[{"id":"runpod","name":"RunPod","kind":"runpod",
                "base_url":"https://user:hunter2@api.runpod.io/v2?api_key=abc123&region=eu",
                "active":true,"config":{"api_key":"sk-1234","auth":{"nested":{"token":"tk"}},"region":"eu"},
                "notes":{"password":"pw"}}]}"#,
        )
        .unwrap();
        let listing = api_list(&paths).unwrap();
        let text = listing.to_string();
        for secret in ["sk-1234", "hunter2", "abc123", "\"tk\"", "\"pw\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let p = &listing["providers"][0];
        assert_eq!(p["config"]["api_key"], "*******");
        assert_eq!(p["config"]["region"], "eu");
        assert_eq!(p["base_url"], "https://user:*******@api.runpod.io/v2?api_key=******&region=eu");
        assert!(!format!("{:?}", Registry::load(&paths).unwrap()).contains("sk-1234"));
    }

    #[test]
    fn bad_entries_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.providers_file().parent().unwrap()).unwrap();
        std::fs::write(paths.providers_file(), r#"[{"id":"a","base_url":"ftp://x"}]"#).unwrap();
        let err = Registry::load(&paths).unwrap_err().to_string();
        assert!(err.contains("providers[0].base_url"), "{err}");
        std::fs::write(paths.providers_file(), r#"[{"id":"a","base_url":"http://x","active":"yes"}]"#).unwrap();
        let err = Registry::load(&paths).unwrap_err().to_string();
        assert!(err.contains("providers[0].active"), "{err}");
        std::fs::write(
            paths.providers_file(),
            r#"[{"id":"a","base_url":"http://x"},{"id":"a","base_url":"http://y"}]"#,
        )
        .unwrap();
        assert!(Registry::load(&paths).unwrap_err().to_string().contains("used twice"));
    }

    #[test]
    fn judging_latency_and_status() {
        let p = builtin_local();
        let reply = |status: Option<u16>, ms: u64| Reply {
            status,
            error: status.is_none().then(|| "connection refused".to_string()),
            latency: Duration::from_millis(ms),
            ..Reply::default()
        };
        assert_eq!(judge(&p, &reply(Some(200), 5), 100).status, Status::Ok);
        assert_eq!(judge(&p, &reply(Some(200), 500), 100).status, Status::Slow);
        let down = judge(&p, &reply(Some(500), 5), 100);
        assert_eq!((down.status, down.ok, down.error.as_deref()), (Status::Down, false, Some("http 500")));
        let refused = judge(&p, &reply(None, 1), 100);
        assert_eq!((refused.status, refused.status_code), (Status::Down, None));
    }
}
