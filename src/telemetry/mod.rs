//! Opt-in, local-only telemetry (DESIGN §4): consent gates, the usage store, anonymised recording and the
//! diagnostics bundle. Every public method returns a `serde_json::Value` shaped like the original's
//! `/api/telemetry/*` answer (`seed/api_shapes.md`), so the HTTP routes and the CLI just print them.
//!
//! Owns `logs/telemetry/` (through [`store`]), `config/telemetry/anonymizer.json` (through
//! [`anonymise`]) and `logs/diagnostics/` (through [`bundle`]). Consent lives in `config/comfyvn.json`
//! and is changed only through `config::update_file`. Nothing here sends anything off the machine; the
//! crash uploader (`crash_upload`) reads the crash-upload gate computed here, and `dry_run` means
//! "write the envelope locally, never send".

pub mod anonymise;
pub mod bundle;
pub mod store;

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, Consent, Features};
use crate::log::Logger;
use crate::paths::Paths;
use anonymise::{Anonymiser, Redactions};
use bundle::BundleParts;
use store::{CrashDigest, EventRecord, Store, Usage};

/// The version recorded in the store, bundles and crash dumps.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The feature flag every answer names (`feature_flag`).
pub const FEATURE_FLAG: &str = "enable_observability";

/// Limits of `GET /events?limit=`.
pub const EVENTS_LIMIT_DEFAULT: usize = 20;

/// Refusals callers branch on (HTTP 403/422, CLI exit 1/2).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The original's 403 text.
    #[error("Diagnostics export requires opt-in (see /api/telemetry/settings).")]
    DiagnosticsRefused,
    #[error("payload must be a JSON object, found {0}")]
    PayloadNotObject(&'static str),
    #[error("{0} must not be empty")]
    EmptyName(&'static str),
}

/// The consent gates (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gates {
    pub flag_enabled: bool,
    /// flag && telemetry_opt_in
    pub telemetry_active: bool,
    /// flag && enable_crash_uploader && telemetry_opt_in && crash_opt_in
    pub crash_uploads_active: bool,
    /// flag && telemetry_opt_in && diagnostics_opt_in
    pub diagnostics_active: bool,
}

impl Gates {
    pub fn compute(features: &Features, consent: &Consent) -> Gates {
        let flag = features.enable_observability;
        Gates {
            flag_enabled: flag,
            telemetry_active: flag && consent.telemetry_opt_in,
            crash_uploads_active: flag
                && features.enable_crash_uploader
                && consent.telemetry_opt_in
                && consent.crash_opt_in,
            diagnostics_active: flag && consent.telemetry_opt_in && consent.diagnostics_opt_in,
        }
    }
}

/// `POST /settings` body: absent or null fields stay unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SettingsPatch {
    pub telemetry_opt_in: Option<bool>,
    pub crash_opt_in: Option<bool>,
    pub diagnostics_opt_in: Option<bool>,
    pub dry_run: Option<bool>,
}

/// `POST /opt_in` body: each flag defaults to false and is written as given; `telemetry_opt_in`
/// becomes true.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OptIn {
    pub crash: Option<bool>,
    pub diagnostics: Option<bool>,
    pub dry_run: Option<bool>,
}

/// Telemetry for one runtime root and configuration.
pub struct Telemetry {
    paths: Paths,
    config: Config,
    store: Store,
    log: Logger,
    anonymiser: Mutex<Option<Anonymiser>>,
}

impl Telemetry {
    pub fn new(paths: &Paths, config: &Config) -> Telemetry {
        Telemetry {
            paths: paths.clone(),
            config: config.clone(),
            store: Store::new(paths),
            log: Logger::new("comfyvn.obs.telemetry", "telemetry"),
            anonymiser: Mutex::new(None),
        }
    }

    /// The configuration as of the last consent change.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn consent(&self) -> Consent {
        self.config.telemetry
    }

    pub fn gates(&self) -> Gates {
        Gates::compute(&self.config.features, &self.config.telemetry)
    }

    /// The anonymiser, creating its secret on first need (a broken secret file is moved aside and
    /// replaced, with a warning naming it).
    pub fn anonymiser(&self) -> Result<Anonymiser> {
        let mut slot = self.anonymiser.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let loaded = Anonymiser::load_or_create(&self.paths)?;
        if let Some((file, moved, reason)) = &loaded.recreated {
            self.log.warn(
                &format!("{} was unusable and has been recreated; the broken file is kept", file.display()),
                json!({"file": file, "moved_to": moved, "reason": reason}),
            );
        } else if loaded.created {
            self.log.debug("anonymiser secret created", json!({"file": self.paths.anonymizer_file()}));
        }
        *slot = Some(loaded.anonymiser.clone());
        Ok(loaded.anonymiser)
    }

    /// `hash(value, namespace)` with this installation's secret.
    pub fn hash(&self, value: &str, namespace: Option<&str>) -> Result<String> {
        Ok(self.anonymiser()?.hash(value, namespace))
    }

    pub fn anonymous_id(&self) -> Result<String> {
        Ok(self.anonymiser()?.anonymous_id())
    }

    fn warn_recreated(&self, recreated: Option<store::Recreated>) {
        if let Some(r) = recreated {
            self.log.warn(
                &format!("{} was unreadable and has been recreated; the broken file is kept", r.file.display()),
                json!({"file": r.file, "moved_to": r.moved_to, "reason": r.reason}),
            );
        }
    }

    /// The stored document (a fresh one when none exists yet).
    pub fn usage(&self) -> Result<Usage> {
        let (mut usage, recreated) = self.store.load()?;
        self.warn_recreated(recreated);
        usage.anonymous_id = self.anonymous_id()?;
        Ok(usage)
    }

    fn update<T>(&self, edit: impl FnOnce(&mut Usage) -> T) -> Result<T> {
        let id = self.anonymous_id()?;
        let (out, recreated) = self.store.update(|u| {
            u.anonymous_id = id;
            u.app_version = APP_VERSION.to_string();
            edit(u)
        })?;
        self.warn_recreated(recreated);
        Ok(out)
    }

    fn consent_json(&self) -> Value {
        let c = self.consent();
        json!({
            "telemetry_opt_in": c.telemetry_opt_in,
            "crash_opt_in": c.crash_opt_in,
            "diagnostics_opt_in": c.diagnostics_opt_in,
            "dry_run": c.dry_run,
        })
    }

    /// `GET /health`.
    pub fn health(&self) -> Result<Value> {
        let g = self.gates();
        let c = self.consent();
        let usage = self.usage()?;
        let preview: String = usage.anonymous_id.chars().take(8).collect();
        Ok(json!({
            "ok": true,
            "flag_enabled": g.flag_enabled,
            "telemetry_opt_in": c.telemetry_opt_in,
            "telemetry_active": g.telemetry_active,
            "crash_opt_in": c.crash_opt_in,
            "crash_active": g.crash_uploads_active,
            "diagnostics_opt_in": c.diagnostics_opt_in,
            "diagnostics_active": g.diagnostics_active,
            "dry_run": c.dry_run,
            "last_settings_update": usage.meta.settings_updated_at,
            "anonymous_preview": preview,
            "feature_flag": FEATURE_FLAG,
        }))
    }

    /// `GET /summary` (`events` stays empty unless asked for).
    pub fn summary(&self, include_events: bool) -> Result<Value> {
        let g = self.gates();
        let usage = self.usage()?;
        let events = if include_events { serde_json::to_value(&usage.events)? } else { json!([]) };
        Ok(json!({
            "anonymous_id": usage.anonymous_id,
            "app_version": APP_VERSION,
            "flag_enabled": g.flag_enabled,
            "telemetry_active": g.telemetry_active,
            "crash_uploads_active": g.crash_uploads_active,
            "diagnostics_opt_in": self.consent().diagnostics_opt_in,
            "diagnostics_active": g.diagnostics_active,
            "dry_run": self.consent().dry_run,
            "consent": self.consent_json(),
            "features": usage.features,
            "hooks": usage.hooks,
            "crashes": usage.crashes,
            "events": events,
            "meta": usage.meta,
            "feature_flag": FEATURE_FLAG,
        }))
    }

    /// `GET /settings`.
    pub fn settings(&self) -> Result<Value> {
        let g = self.gates();
        Ok(json!({
            "settings": self.consent_json(),
            "features": {
                "enable_observability": self.config.features.enable_observability,
                "enable_crash_uploader": self.config.features.enable_crash_uploader,
            },
            "telemetry_active": g.telemetry_active,
            "crash_uploads_active": g.crash_uploads_active,
            "diagnostics_opt_in": self.consent().diagnostics_opt_in,
            "diagnostics_active": g.diagnostics_active,
            "health": self.health()?,
            "feature_flag": FEATURE_FLAG,
        }))
    }

    /// `POST /settings`: change the given consent fields, then answer as [`Telemetry::settings`].
    pub fn update_settings(&mut self, patch: &SettingsPatch) -> Result<Value> {
        let c = self.consent();
        self.write_consent(Consent {
            telemetry_opt_in: patch.telemetry_opt_in.unwrap_or(c.telemetry_opt_in),
            crash_opt_in: patch.crash_opt_in.unwrap_or(c.crash_opt_in),
            diagnostics_opt_in: patch.diagnostics_opt_in.unwrap_or(c.diagnostics_opt_in),
            dry_run: patch.dry_run.unwrap_or(c.dry_run),
        })?;
        self.settings()
    }

    /// `POST /opt_in`.
    pub fn opt_in(&mut self, req: &OptIn) -> Result<Value> {
        self.write_consent(Consent {
            telemetry_opt_in: true,
            crash_opt_in: req.crash.unwrap_or(false),
            diagnostics_opt_in: req.diagnostics.unwrap_or(false),
            dry_run: req.dry_run.unwrap_or(false),
        })?;
        self.consent_answer()
    }

    /// Withdraw every consent (`dry_run` is left as it is). Answers like [`Telemetry::opt_in`].
    pub fn opt_out(&mut self) -> Result<Value> {
        let dry_run = self.consent().dry_run;
        self.write_consent(Consent {
            telemetry_opt_in: false,
            crash_opt_in: false,
            diagnostics_opt_in: false,
            dry_run,
        })?;
        self.consent_answer()
    }

    fn consent_answer(&self) -> Result<Value> {
        let g = self.gates();
        Ok(json!({
            "ok": true,
            "settings": self.consent_json(),
            "telemetry_active": g.telemetry_active,
            "crash_uploads_active": g.crash_uploads_active,
            "diagnostics_active": g.diagnostics_active,
            "health": self.health()?,
            "feature_flag": FEATURE_FLAG,
        }))
    }

    /// Write the consent block through `config::update_file`, reload the configuration and stamp
    /// `meta.settings_updated_at`.
    fn write_consent(&mut self, c: Consent) -> Result<()> {
        crate::config::update_file(&self.paths, |doc| {
            let block = doc.entry("telemetry").or_insert_with(|| json!({}));
            if !block.is_object() {
                *block = json!({});
            }
            block["telemetry_opt_in"] = json!(c.telemetry_opt_in);
            block["crash_opt_in"] = json!(c.crash_opt_in);
            block["diagnostics_opt_in"] = json!(c.diagnostics_opt_in);
            block["dry_run"] = json!(c.dry_run);
        })?;
        self.config = Config::load(&self.paths)?;
        self.update(|u| u.meta.settings_updated_at = Some(crate::time::iso_now()))?;
        self.log.info("telemetry consent changed", self.consent_json());
        Ok(())
    }

    fn recorded(&self, recorded: bool) -> Value {
        json!({
            "ok": true,
            "recorded": recorded,
            "telemetry_active": self.gates().telemetry_active,
            "feature_flag": FEATURE_FLAG,
        })
    }

    /// `POST /features`: count a feature use (and its variant).
    pub fn record_feature(&self, name: &str, variant: Option<&str>) -> Result<Value> {
        let name = name.trim();
        if name.is_empty() {
            bail!(TelemetryError::EmptyName("feature"));
        }
        if !self.gates().telemetry_active {
            return Ok(self.recorded(false));
        }
        let ts = crate::time::iso_now();
        let variant = variant.map(str::trim).filter(|v| !v.is_empty());
        self.update(|u| u.record_feature(name, variant, &ts))?;
        Ok(self.recorded(true))
    }

    /// `POST /events`: append an event (name lowercased, payload anonymised) to the ring.
    pub fn record_event(&self, event: &str, payload: Option<&Value>, category: Option<&str>) -> Result<Value> {
        let event = event.trim().to_lowercase();
        if event.is_empty() {
            bail!(TelemetryError::EmptyName("event"));
        }
        let payload = payload.cloned().unwrap_or_else(|| json!({}));
        if !payload.is_object() {
            bail!(TelemetryError::PayloadNotObject(crate::config::kind(&payload)));
        }
        if !self.gates().telemetry_active {
            return Ok(self.recorded(false));
        }
        let (payload, counts) = self.anonymise(&payload)?;
        let category = category.map(str::trim).filter(|c| !c.is_empty()).unwrap_or("custom").to_string();
        let record = EventRecord { event, category, ts: crate::time::iso_now(), payload };
        self.update(|u| {
            u.add_redactions(&counts);
            u.record_event(record);
        })?;
        Ok(self.recorded(true))
    }

    /// Sample a hook event (payload anonymised). Returns whether anything was recorded.
    pub fn record_hook(&self, event: &str, payload: &Value) -> Result<bool> {
        if !self.gates().telemetry_active {
            return Ok(false);
        }
        let (payload, counts) = self.anonymise(payload)?;
        let ts = crate::time::iso_now();
        self.update(|u| {
            u.add_redactions(&counts);
            u.record_hook(event, payload, &ts);
        })?;
        Ok(true)
    }

    /// Keep the digest of a crash dump (its file name, hashed) when crash uploads are active.
    pub fn record_crash(&self, dump_file_name: &str, ts: &str) -> Result<bool> {
        if !self.gates().crash_uploads_active {
            return Ok(false);
        }
        let report = self.hash(dump_file_name, Some("crash"))?;
        self.update(|u| u.record_crash(CrashDigest { report, ts: ts.to_string() }))?;
        Ok(true)
    }

    /// Anonymise a payload with this installation's secret and the configured allow-list.
    pub fn anonymise(&self, payload: &Value) -> Result<(Value, Redactions)> {
        Ok(self.anonymiser()?.anonymise(payload, &self.config.obs.telemetry.allow_keys))
    }

    /// `GET /events?limit=`: the newest `limit` (clamped to 1..=200) events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Value> {
        let limit = limit.clamp(1, store::EVENTS_KEEP);
        let usage = self.usage()?;
        let skip = usage.events.len().saturating_sub(limit);
        let events: Vec<&EventRecord> = usage.events.iter().skip(skip).collect();
        Ok(json!({"events": events, "feature_flag": FEATURE_FLAG}))
    }

    /// `GET /features`.
    pub fn features(&self) -> Result<Value> {
        Ok(json!({"features": self.usage()?.features, "feature_flag": FEATURE_FLAG}))
    }

    /// `GET /hooks`.
    pub fn hooks(&self) -> Result<Value> {
        Ok(json!({"hooks": self.usage()?.hooks, "feature_flag": FEATURE_FLAG}))
    }

    /// `GET /crashes`.
    pub fn crashes(&self) -> Result<Value> {
        Ok(json!({"crashes": self.usage()?.crashes, "feature_flag": FEATURE_FLAG}))
    }

    /// Build the diagnostics bundle and return its path; [`TelemetryError::DiagnosticsRefused`] without
    /// diagnostics consent.
    pub fn diagnostics(&self) -> Result<PathBuf> {
        let parts = self.diagnostics_parts()?;
        let id = parts.manifest["anonymous_id"].as_str().unwrap_or_default().to_string();
        let path = bundle::write_bundle(&self.paths.diagnostics_dir(), &id, &parts)?;
        self.log.debug("diagnostics bundle written", json!({"bundle": path}));
        Ok(path)
    }

    /// The four documents of the bundle (refused without diagnostics consent).
    pub fn diagnostics_parts(&self) -> Result<BundleParts> {
        if !self.gates().diagnostics_active {
            bail!(TelemetryError::DiagnosticsRefused);
        }
        let anonymiser = self.anonymiser()?;
        let mut bundle_counts = Redactions::new();

        let mut telemetry = self.summary(true)?;
        let masked = count_secret_strings(&telemetry);
        crate::config::mask_secrets(&mut telemetry);
        if masked > 0 {
            bundle_counts.insert("secret_key".into(), masked);
        }

        let mut crashes = Vec::new();
        for entry in crate::crash::recent_dumps(&self.paths, 10)? {
            let d = &entry.dump;
            let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            crashes.push(json!({
                "event_id": text("event_id"),
                "timestamp": text("timestamp"),
                "exc_type": text("exc_type"),
                "message_digest": anonymiser.hash(&text("message"), Some("crash.message")),
                "fingerprint": text("fingerprint"),
            }));
        }
        if !crashes.is_empty() {
            bundle_counts.insert("crash_message".into(), crashes.len() as u64);
        }

        let usage = self.usage()?;
        let mut by_rule = usage.redactions.clone();
        anonymise::add_redactions(&mut by_rule, &bundle_counts);
        let manifest = json!({
            "schema": 1,
            "generated_at": crate::time::iso_now(),
            "anonymous_id": usage.anonymous_id,
            "app_version": APP_VERSION,
            "feature_flag": FEATURE_FLAG,
            "flag_enabled": self.gates().flag_enabled,
            "consent": self.consent_json(),
            "health": self.health()?,
            "files": BundleParts::ENTRIES,
        });
        Ok(BundleParts {
            manifest,
            telemetry,
            crashes: json!({"schema": 1, "crashes": crashes}),
            redactions: json!({
                "schema": 1,
                "by_rule": by_rule,
                "recorded_payloads": usage.redactions,
                "bundle": bundle_counts,
            }),
        })
    }
}

/// How many strings sit under secret-looking keys (what `config::mask_secrets` will mask).
fn count_secret_strings(v: &Value) -> u64 {
    fn strings(v: &Value) -> u64 {
        match v {
            Value::String(_) => 1,
            Value::Object(m) => m.values().map(strings).sum(),
            Value::Array(a) => a.iter().map(strings).sum(),
            _ => 0,
        }
    }
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| if crate::config::is_secret_key(k) { strings(c) } else { count_secret_strings(c) })
            .sum(),
        Value::Array(a) => a.iter().map(count_secret_strings).sum(),
        _ => 0,
    }
}

/// Record the digest of every crash dump this process writes, when crash uploads are active
/// (installed by the command runner after the configuration is loaded).
pub fn record_crashes(paths: &Paths, config: &Config) {
    let (paths, config) = (paths.clone(), config.clone());
    crate::crash::set_listener(move |dump| {
        // From the panic hook, a thread that already holds the store lock must not wait for it again.
        if store::lock_held_by_this_thread() {
            return Ok(());
        }
        let t = Telemetry::new(&paths, &config);
        t.record_crash(&dump.file_name, &dump.timestamp).map(|_| ())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(config_json: &str) -> (tempfile::TempDir, Paths, Telemetry) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.config_file(), config_json).unwrap();
        let config = Config::load_files(&[paths.config_file()]).unwrap();
        let t = Telemetry::new(&paths, &config);
        (dir, paths, t)
    }

    const ON: &str = r#"{"features": {"enable_observability": true, "enable_crash_uploader": true},
        "telemetry": {"telemetry_opt_in": true, "crash_opt_in": true, "diagnostics_opt_in": true}}"#;

    #[test]
    fn gates_follow_the_design_table() {
        let f = |o, c| Features { enable_observability: o, enable_crash_uploader: c };
        let consent = |t, c, d| Consent { telemetry_opt_in: t, crash_opt_in: c, diagnostics_opt_in: d, dry_run: true };
        let all = consent(true, true, true);
        assert_eq!(
            Gates::compute(&f(true, true), &all),
            Gates { flag_enabled: true, telemetry_active: true, crash_uploads_active: true, diagnostics_active: true }
        );
        assert!(!Gates::compute(&f(false, true), &all).telemetry_active);
        assert!(!Gates::compute(&f(false, true), &all).diagnostics_active);
        assert!(!Gates::compute(&f(true, false), &all).crash_uploads_active);
        assert!(Gates::compute(&f(true, false), &all).diagnostics_active);
        let no_tel = consent(false, true, true);
        let g = Gates::compute(&f(true, true), &no_tel);
        assert!(!g.telemetry_active && !g.crash_uploads_active && !g.diagnostics_active);
        assert!(!Gates::compute(&f(true, true), &consent(true, false, true)).crash_uploads_active);
        assert!(!Gates::compute(&f(true, true), &consent(true, true, false)).diagnostics_active);
    }

    #[test]
    fn nothing_is_recorded_without_consent() {
        let (_d, paths, t) = env(r#"{"features": {"enable_observability": true}}"#);
        let r = t.record_feature("toolkit.launch", None).unwrap();
        assert_eq!(r["recorded"], false);
        assert_eq!(t.record_event("x", Some(&json!({"a": 1})), None).unwrap()["recorded"], false);
        assert!(!t.record_hook("on_x", &json!({})).unwrap());
        assert!(!t.record_crash("crash-x.json", "t").unwrap());
        assert!(!paths.telemetry_file().exists());
        let err = t.diagnostics().unwrap_err();
        assert!(matches!(err.downcast_ref::<TelemetryError>(), Some(TelemetryError::DiagnosticsRefused)));
    }

    #[test]
    fn recording_anonymises_and_shapes_match_the_original() {
        let (_d, _paths, t) = env(ON);
        assert_eq!(t.record_feature("toolkit.launch", Some("cli")).unwrap()["recorded"], true);
        let r = t
            .record_event(
                "Modder.Asset.Packaged",
                Some(&json!({"uid": "abc123", "path": "mods/hero.png", "n": 2})),
                None,
            )
            .unwrap();
        assert_eq!(r, json!({"ok": true, "recorded": true, "telemetry_active": true, "feature_flag": FEATURE_FLAG}));
        let events = t.events(20).unwrap();
        let e = &events["events"][0];
        assert_eq!(e["event"], "modder.asset.packaged");
        assert_eq!(e["category"], "custom");
        assert_eq!(e["payload"]["uid"], t.hash("abc123", Some("uid")).unwrap());
        assert_eq!(e["payload"]["n"], 2);
        assert!(t.record_hook("on_asset_registered", &json!({"uid": "u1", "type": "image"})).unwrap());
        let summary = t.summary(false).unwrap();
        let keys: Vec<_> = summary.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "anonymous_id",
                "app_version",
                "flag_enabled",
                "telemetry_active",
                "crash_uploads_active",
                "diagnostics_opt_in",
                "diagnostics_active",
                "dry_run",
                "consent",
                "features",
                "hooks",
                "crashes",
                "events",
                "meta",
                "feature_flag"
            ]
        );
        assert_eq!(summary["events"], json!([]));
        assert_eq!(summary["features"]["toolkit.launch"]["variants"]["cli"], 1);
        assert_eq!(summary["hooks"]["on_asset_registered"]["samples"][0]["payload"]["type"], "image");
        assert_eq!(summary["anonymous_id"], t.anonymous_id().unwrap());
        let health = t.health().unwrap();
        assert_eq!(health["anonymous_preview"].as_str().unwrap().len(), 8);
        assert_eq!(health["crash_active"], true);
    }

    #[test]
    fn bad_events_are_refused() {
        let (_d, _p, t) = env(ON);
        let err = t.record_event("x", Some(&json!([1])), None).unwrap_err();
        assert!(matches!(err.downcast_ref::<TelemetryError>(), Some(TelemetryError::PayloadNotObject(_))));
        assert!(t.record_event("  ", None, None).is_err());
        assert!(t.record_feature("", None).is_err());
    }

    #[test]
    fn opt_in_and_out_rewrite_the_config_and_stamp_the_store() {
        let (_d, paths, mut t) = env(r#"{"features": {"enable_observability": true}, "studio": {"name": "桜"}}"#);
        let r = t.opt_in(&OptIn { diagnostics: Some(true), ..Default::default() }).unwrap();
        assert_eq!(r["settings"]["telemetry_opt_in"], true);
        assert_eq!(r["settings"]["dry_run"], false);
        assert_eq!(r["diagnostics_active"], true);
        assert!(r["health"]["last_settings_update"].is_string());
        let text = std::fs::read_to_string(paths.config_file()).unwrap();
        assert!(text.contains("桜"));
        let r = t.update_settings(&SettingsPatch { dry_run: Some(true), ..Default::default() }).unwrap();
        assert_eq!(r["settings"]["dry_run"], true);
        assert_eq!(r["settings"]["diagnostics_opt_in"], true);
        let r = t.opt_out().unwrap();
        assert_eq!(r["settings"]["telemetry_opt_in"], false);
        assert_eq!(r["telemetry_active"], false);
        assert_eq!(r["settings"]["dry_run"], true);
    }

    #[test]
    fn events_limit_is_clamped_and_newest_kept() {
        let (_d, _p, t) = env(ON);
        for i in 0..5 {
            t.record_event(&format!("e{i}"), None, Some("test")).unwrap();
        }
        let two = t.events(2).unwrap();
        let names: Vec<_> = two["events"].as_array().unwrap().iter().map(|e| e["event"].clone()).collect();
        assert_eq!(names, [json!("e3"), json!("e4")]);
        assert_eq!(t.events(0).unwrap()["events"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn diagnostics_bundle_contents() {
        let (_d, paths, t) = env(ON);
        t.record_event("e", Some(&json!({"email": "a@b.example", "note": "hi"})), None).unwrap();
        let path = t.diagnostics().unwrap();
        assert!(path.starts_with(paths.diagnostics_dir()));
        let entries = bundle::read_entries(&path).unwrap();
        let doc = |name: &str| -> Value {
            serde_json::from_slice(&entries.iter().find(|(n, _)| n == name).unwrap().1).unwrap()
        };
        let manifest = doc("manifest.json");
        assert_eq!(manifest["anonymous_id"], t.anonymous_id().unwrap());
        assert_eq!(manifest["consent"]["diagnostics_opt_in"], true);
        assert_eq!(manifest["health"]["ok"], true);
        assert_eq!(doc("telemetry.json")["events"][0]["event"], "e");
        assert_eq!(doc("crashes.json")["crashes"], json!([]));
        assert_eq!(doc("redactions.json")["by_rule"]["sensitive_key"], 1);
    }
}
