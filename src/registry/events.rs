//! Registry events (DESIGN §6) and their bridge to hook events (§8).
//!
//! Registry operations return these as plain data; the caller decides where they go (the CLI and
//! the audit append them to the hook history with `Bus::emit_batch`, the server also feeds its index
//! with [`super::Index::apply`]). Nothing here writes files.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::sidecar::{Sidecar, SUFFIX};

/// What a registry operation changed, in the order it happened. The JSON form (`kind` + fields) is
/// pinned by a test.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A sidecar was (re)written; `sidecar` is its absolute path.
    AssetSidecarWritten { asset: Sidecar, sidecar: PathBuf },
    /// A file got its first sidecar.
    AssetRegistered { asset: Sidecar },
    /// An existing sidecar changed (human fields, or machine fields refreshed). `previous_hash` and
    /// `previous_path` are set only when those changed.
    AssetMetaUpdated { asset: Sidecar, previous_hash: Option<String>, previous_path: Option<String> },
    /// The asset left the registry; its sidecar (and file, when present) moved to `trashed_to`.
    AssetRemoved { asset: Sidecar, trashed_to: PathBuf },
}

impl RegistryEvent {
    /// The registry event name (`asset_registered` …), the `hook_event` field of hook payloads.
    pub fn name(&self) -> &'static str {
        match self {
            RegistryEvent::AssetSidecarWritten { .. } => "asset_sidecar_written",
            RegistryEvent::AssetRegistered { .. } => "asset_registered",
            RegistryEvent::AssetMetaUpdated { .. } => "asset_meta_updated",
            RegistryEvent::AssetRemoved { .. } => "asset_removed",
        }
    }

    /// The sidecar as it is after the event (before removal for `AssetRemoved`).
    pub fn asset(&self) -> &Sidecar {
        match self {
            RegistryEvent::AssetSidecarWritten { asset, .. }
            | RegistryEvent::AssetRegistered { asset }
            | RegistryEvent::AssetMetaUpdated { asset, .. }
            | RegistryEvent::AssetRemoved { asset, .. } => asset,
        }
    }
}

/// Bridge registry events to hook `(event, payload)` pairs in the original order:
/// registered → `on_asset_saved`, `on_asset_registered`; meta updated → `on_asset_meta_updated`;
/// removed → `on_asset_removed`; sidecar written → `on_asset_sidecar_written`. Payload fields follow
/// the hook catalogue; `timestamp` is epoch seconds.
pub fn to_hooks(events: &[RegistryEvent]) -> Vec<(String, Value)> {
    let ts = crate::time::epoch_secs();
    let mut out = Vec::with_capacity(events.len() * 2);
    for e in events {
        let a = e.asset();
        let sidecar_rel = format!("{}{SUFFIX}", a.path);
        let base = |extra: &[(&str, Value)]| {
            let mut m = Map::new();
            m.insert("uid".into(), json!(a.uid));
            m.insert("type".into(), json!(a.asset_type));
            m.insert("path".into(), json!(a.path));
            m.insert("meta".into(), a.record_meta());
            m.insert("sidecar".into(), json!(sidecar_rel));
            for (k, v) in extra {
                m.insert((*k).into(), v.clone());
            }
            m.insert("hook_event".into(), json!(e.name()));
            m.insert("timestamp".into(), json!(ts));
            Value::Object(m)
        };
        match e {
            RegistryEvent::AssetSidecarWritten { sidecar, .. } => {
                let payload = json!({
                    "uid": a.uid,
                    "type": a.asset_type,
                    "sidecar": sidecar.to_string_lossy(),
                    "rel_path": a.path,
                    "hook_event": e.name(),
                    "timestamp": ts,
                });
                out.push(("on_asset_sidecar_written".to_string(), payload));
            }
            RegistryEvent::AssetRegistered { .. } => {
                let payload = base(&[("bytes", json!(a.bytes))]);
                out.push(("on_asset_saved".to_string(), payload.clone()));
                out.push(("on_asset_registered".to_string(), payload));
            }
            RegistryEvent::AssetMetaUpdated { previous_hash, previous_path, .. } => {
                let mut extra = vec![("bytes", json!(a.bytes)), ("hash", json!(a.hash))];
                if let Some(h) = previous_hash {
                    extra.push(("previous_hash", json!(h)));
                }
                if let Some(p) = previous_path {
                    extra.push(("previous_path", json!(p)));
                }
                out.push(("on_asset_meta_updated".to_string(), base(&extra)));
            }
            RegistryEvent::AssetRemoved { trashed_to, .. } => {
                let payload = base(&[("bytes", json!(a.bytes)), ("trashed_to", json!(trashed_to.to_string_lossy()))]);
                out.push(("on_asset_removed".to_string(), payload));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset() -> Sidecar {
        let rel = super::super::RelPath::parse("characters/hero.png").unwrap();
        let mut s = super::super::sidecar::parse(br#"{"tags": ["Hero"]}"#, &rel).unwrap().sidecar;
        s.uid = "0123456789abcdef".into();
        s.hash = "ab".repeat(32);
        s.bytes = 5;
        s
    }

    #[test]
    fn new_asset_bridges_in_the_original_order() {
        let a = asset();
        let events = vec![
            RegistryEvent::AssetSidecarWritten {
                asset: a.clone(),
                sidecar: "/r/assets/characters/hero.png.asset.json".into(),
            },
            RegistryEvent::AssetRegistered { asset: a },
        ];
        let hooks = to_hooks(&events);
        let names: Vec<_> = hooks.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["on_asset_sidecar_written", "on_asset_saved", "on_asset_registered"]);
        let written = &hooks[0].1;
        assert_eq!(written["rel_path"], "characters/hero.png");
        assert_eq!(written["sidecar"], "/r/assets/characters/hero.png.asset.json");
        assert_eq!(written["hook_event"], "asset_sidecar_written");
        let reg = &hooks[2].1;
        let keys: Vec<_> = reg.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["uid", "type", "path", "meta", "sidecar", "bytes", "hook_event", "timestamp"]);
        assert_eq!(reg["sidecar"], "characters/hero.png.asset.json");
        assert_eq!(reg["meta"]["tags"], json!(["Hero"]));
        assert_eq!(reg["hook_event"], "asset_registered");
    }

    #[test]
    fn update_payload_names_previous_values_only_when_changed() {
        let a = asset();
        let hooks = to_hooks(&[RegistryEvent::AssetMetaUpdated {
            asset: a.clone(),
            previous_hash: Some("cd".repeat(32)),
            previous_path: None,
        }]);
        assert_eq!(hooks[0].0, "on_asset_meta_updated");
        assert_eq!(hooks[0].1["previous_hash"], "cd".repeat(32));
        assert!(hooks[0].1.get("previous_path").is_none());
    }

    #[test]
    fn event_json_form_is_pinned() {
        let mut a = asset();
        a.created_at = Some("2026-01-01T00:00:00.000000Z".into());
        a.updated_at = a.created_at.clone();
        let e = RegistryEvent::AssetRemoved { asset: a, trashed_to: "/r/logs/trash/20260101_000000".into() };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({
                "kind": "asset_removed",
                "asset": {
                    "schema": 1, "uid": "0123456789abcdef", "type": "characters", "path": "characters/hero.png",
                    "hash": "ab".repeat(32), "bytes": 5, "tags": ["Hero"], "license": null, "origin": null,
                    "version": 1, "created_at": "2026-01-01T00:00:00.000000Z",
                    "updated_at": "2026-01-01T00:00:00.000000Z", "meta": {}, "provenance": {}
                },
                "trashed_to": "/r/logs/trash/20260101_000000"
            })
        );
    }
}
