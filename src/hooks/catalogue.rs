//! The hook catalogue: the 63 ComfyVN modder hooks (built in from `catalogue.json`), this tool's own
//! `obs.*` events, and any events declared in config (`obs.hooks.events`). Data-driven: adding an
//! event is a config change, not a code change.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const BUILTIN_JSON: &str = include_str!("catalogue.json");

/// One hook event's description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookSpec {
    pub name: String,
    pub ws_topic: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub payload_fields: Vec<String>,
}

/// The tool's own events (watcher, webhooks), always present.
const OWN_EVENTS: &[(&str, &str, &[&str])] = &[
    (
        "obs.watch_started",
        "the file watcher started; says which mode (native or polling) and which roots",
        &["mode", "roots", "settle_ms", "reason"],
    ),
    (
        "obs.watch_rescanned",
        "the watcher reconciled sidecars with the disk; counts of what changed",
        &["reason", "registered", "updated", "removed", "unchanged", "errors"],
    ),
    (
        "obs.watch_root_lost",
        "a watched folder was deleted, moved away or replaced; nothing in it is watched until it is back",
        &["root", "reason"],
    ),
    (
        "obs.watch_root_restored",
        "a watched folder is at its path again and is watched again (a reconcile follows)",
        &["root", "mode"],
    ),
    (
        "obs.history_reset",
        "the hook history file was deleted or replaced; seq goes on after the last one issued",
        &["after_seq", "previous_last_seq_found"],
    ),
    (
        "obs.sidecar_invalid",
        "a sidecar edited by hand failed validation; names the file and field",
        &["path", "sidecar", "field", "error"],
    ),
    (
        "obs.webhook_disabled",
        "a webhook registration was disabled after repeated delivery failures",
        &["event", "url", "failures", "last_error"],
    ),
];

#[derive(Debug, Clone)]
pub struct Catalogue {
    specs: Vec<HookSpec>,
}

#[derive(Deserialize)]
struct BuiltinFile {
    hooks: Vec<HookSpec>,
}

impl Catalogue {
    /// Built-in hooks and the tool's own events.
    pub fn builtin() -> Catalogue {
        let file: BuiltinFile = serde_json::from_str(BUILTIN_JSON).expect("built-in hook catalogue is valid");
        let mut specs = file.hooks;
        for spec in &mut specs {
            if spec.description.is_empty() {
                spec.description = describe(&spec.name);
            }
        }
        specs.extend(OWN_EVENTS.iter().map(|(name, desc, fields)| HookSpec {
            name: (*name).to_string(),
            ws_topic: (*name).to_string(),
            description: (*desc).to_string(),
            payload_fields: fields.iter().map(|f| (*f).to_string()).collect(),
        }));
        Catalogue { specs }
    }

    /// Built-ins plus the events declared in config; a malformed declaration names its index and field.
    pub fn with_declared(declared: &[Value]) -> Result<Catalogue> {
        let mut cat = Catalogue::builtin();
        for (i, v) in declared.iter().enumerate() {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| anyhow!("obs.hooks.events[{i}].name: expected a non-empty string"))?;
            if !valid_name(name) {
                bail!("obs.hooks.events[{i}].name: {name:?} may only use letters, digits, '_', '.', '-'");
            }
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let fields = match v.get("payload_fields") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => {
                    a.iter()
                        .map(|f| f.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| anyhow!("obs.hooks.events[{i}].payload_fields: expected an array of strings"))?
                }
                Some(_) => bail!("obs.hooks.events[{i}].payload_fields: expected an array of strings"),
            };
            let spec = HookSpec {
                name: name.to_string(),
                ws_topic: text("ws_topic").unwrap_or_else(|| format!("modder.{name}")),
                description: text("description").unwrap_or_else(|| describe(name)),
                payload_fields: fields,
            };
            match cat.specs.iter_mut().find(|s| s.name == spec.name) {
                Some(existing) => *existing = spec,
                None => cat.specs.push(spec),
            }
        }
        Ok(cat)
    }

    pub fn specs(&self) -> &[HookSpec] {
        &self.specs
    }

    pub fn get(&self, name: &str) -> Option<&HookSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Resolve a name or a WebSocket topic label to the event name.
    pub fn resolve_topic(&self, topic: &str) -> Option<&str> {
        self.specs.iter().find(|s| s.name == topic || s.ws_topic == topic).map(|s| s.name.as_str())
    }
}

fn valid_name(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A readable default description from the event name: `on_scene_enter` → "Fired on scene enter.".
fn describe(name: &str) -> String {
    let words = name.strip_prefix("on_").unwrap_or(name).replace(['_', '.'], " ");
    format!("Fired on {words}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_has_the_63_studio_hooks_and_own_events() {
        let c = Catalogue::builtin();
        assert_eq!(c.specs().iter().filter(|s| !s.name.starts_with("obs.")).count(), 63);
        assert!(c.contains("on_scene_enter"));
        assert!(c.contains("obs.watch_rescanned"));
        assert_eq!(c.resolve_topic("audio.tts.cached"), Some("on_audio_tts_cached"));
        assert_eq!(c.get("on_asset_registered").unwrap().payload_fields[0], "uid");
    }

    #[test]
    fn declared_events_extend_and_errors_name_the_field() {
        let c = Catalogue::with_declared(&[json!({"name": "on_custom", "payload_fields": ["a"]})]).unwrap();
        assert_eq!(c.get("on_custom").unwrap().ws_topic, "modder.on_custom");
        let err = Catalogue::with_declared(&[json!({"payload_fields": []})]).unwrap_err().to_string();
        assert!(err.contains("obs.hooks.events[0].name"), "{err}");
        let err = Catalogue::with_declared(&[json!({"name": "x", "payload_fields": "a"})]).unwrap_err().to_string();
        assert!(err.contains("payload_fields"), "{err}");
    }
}
