//! The asset routes (DESIGN §6, §9): `GET /assets` (filters, paging), detail, sidecar, download with the
//! license/provenance guard (451), `POST /assets/register`, `POST /assets/upload` (multipart, streamed to
//! a temp file inside the assets root and renamed into place after its sidecar was written, so the
//! watcher never registers it a second time) and `DELETE /assets/{uid}` (to the trash).
//!
//! [`Assets`] holds the registry handle and the in-memory [`Index`] behind a `RwLock`: built once at
//! start, updated right after each write made here, and kept in step with every other writer (the
//! watcher, `comfyvn-obs assets …`, `audit --fix`, another server) by following the hook history, whose
//! asset events name the sidecar to re-read. Every write publishes the registry's hook events through
//! `Bus::emit_batch`. Sidecars and asset files are written only by the `registry` module and through
//! `crate::fs`; this file decides no registry rules beyond refusing unsafe destinations.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::hooks::{Envelope, History};
use crate::http::multipart::{self, Multipart, MultipartError};
use crate::http::router::{schema_ref, Route};
use crate::http::{ApiError, AppState, Reply, Req};
use crate::paths::Paths;
use crate::registry::{
    self, Index, PathError, Policy, Query, RegisterOptions, Registry, RegistryError, RegistryEvent, RelPath, Sidecar,
    Verdict,
};

const LIST_DEFAULT: i64 = 200;
const LIST_MAX: i64 = 1000;
/// How often the history is polled for asset events written by other processes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The registry as the server sees it.
pub struct Assets {
    pub registry: Registry,
    index: RwLock<Index>,
    /// Serialises the writes made through the API, so the uid check and the index update of one
    /// registration never interleave with another's.
    writes: Mutex<()>,
    policy: Policy,
    require_provenance: bool,
}

impl Assets {
    /// Open the registry and build the index from the sidecars on disk (an absent assets root is an
    /// empty registry). Problems found while building are logged, not fatal.
    pub fn open(paths: &Paths, config: &Config) -> Result<Assets> {
        let registry = Registry::open(paths, config)?;
        let index = if registry.root().exists() {
            let (index, problems) = Index::build(&registry)?;
            if !problems.is_empty() {
                tracing::warn!(count = problems.len(), "sidecar problems; run `comfyvn-obs audit` for details");
            }
            index
        } else {
            Index::default()
        };
        tracing::debug!(assets = index.len(), "asset index built");
        index.prepare_search(); // before the trim, and so the first `?q=` request does not pay for it
        crate::memory::release_free(); // the build's read buffers and parse trees

        Ok(Assets {
            registry,
            index: RwLock::new(index),
            writes: Mutex::new(()),
            policy: Policy::new(&config.obs.audit.licenses),
            require_provenance: config.obs.audit.require_provenance,
        })
    }

    /// Apply what a registry operation did to the index.
    pub fn apply(&self, events: &[RegistryEvent]) {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for e in events {
            index.apply(e);
        }
    }

    /// Follow the hook history from `after_seq` on a background thread and bring the index in line
    /// with each asset event (re-reading the sidecar it names). The thread ends once `self` is gone.
    pub fn follow_history(self: &Arc<Self>, history: &History, after_seq: u64) -> Result<()> {
        let mut follower = history.follow(after_seq)?;
        let weak: Weak<Assets> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("asset-index".into())
            .spawn(move || loop {
                std::thread::sleep(FOLLOW_POLL);
                let Some(assets) = weak.upgrade() else { return };
                match follower.poll() {
                    Ok(envelopes) => assets.sync_from(&envelopes),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "asset index: cannot read the hook history"),
                }
            })
            .context("cannot start the asset index thread")?;
        Ok(())
    }

    /// Re-read the sidecars named by asset hook events (from any process).
    fn sync_from(&self, envelopes: &[Envelope]) {
        let mut touched: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in envelopes {
            if !e.event.starts_with("on_asset_") {
                continue;
            }
            let field = |k: &str| e.data.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let path = Some(field("path")).filter(|p| !p.is_empty()).unwrap_or_else(|| field("rel_path"));
            let uid = field("uid");
            if !uid.is_empty() && !path.is_empty() && seen.insert((uid.clone(), path.clone())) {
                touched.push((uid, path));
            }
        }
        if touched.is_empty() {
            return;
        }
        let fresh: Vec<(String, Option<Sidecar>)> = touched
            .into_iter()
            .map(|(uid, path)| {
                let current = RelPath::parse(&path).ok().and_then(|rel| match self.registry.read_sidecar(&rel) {
                    Ok(Some(parsed)) if self.registry.abs(&rel).is_file() => {
                        let mut s = parsed.sidecar;
                        s.path = rel.to_string();
                        Some(s)
                    }
                    _ => None,
                });
                (uid, current)
            })
            .collect();
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (uid, current) in fresh {
            match current {
                Some(s) if !s.uid.is_empty() => {
                    index.upsert(s);
                }
                // Gone from that path: drop the uid only if the index still places it there.
                _ => {
                    let stale = index.get(&uid).is_some_and(|a| {
                        RelPath::parse(&a.path).is_ok_and(|r| {
                            self.registry.read_sidecar(&r).ok().flatten().is_none_or(|p| p.sidecar.uid != uid)
                        })
                    });
                    if stale {
                        index.remove(&uid);
                    }
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why a download of `asset` is refused, if it is.
    fn download_refusal(&self, asset: &Sidecar) -> Option<String> {
        match asset.license_text() {
            Some(license) => match self.policy.check(license) {
                Verdict::Allowed => {}
                Verdict::Denied(why) => return Some(format!("license {license}: {why}")),
                Verdict::Invalid(why) => {
                    return Some(format!("license {license:?} cannot be checked against obs.audit.licenses: {why}"))
                }
            },
            None if self.policy.require => {
                return Some("the asset has no license and obs.audit.licenses.require is true".into())
            }
            None => {}
        }
        if self.require_provenance && asset.provenance_source().is_none() {
            return Some(
                "provenance is required (obs.audit.require_provenance) and the asset has no provenance.source".into(),
            );
        }
        None
    }
}

pub fn routes() -> Vec<Route> {
    let record = schema_ref("AssetRecord");
    let one = json!({"type": "object", "required": ["ok", "asset"],
        "properties": {"ok": {"const": true}, "asset": record}});
    let a = |r: Route| r.tag("assets").component("AssetRecord", record_schema());
    vec![
        a(Route::get("/assets", list))
            .summary("List assets (also answers at /assets/)")
            .describe(
                "Filters combine with AND and are case-insensitive; results are in path order. Tag filters \
                require every given tag; license filters accept any of the given licenses.",
            )
            .query("type", json!({"type": "string"}), "Asset type.")
            .query("tags", json!({"type": "string"}), "Tags, comma-separated or repeated; all must be present.")
            .query("tag", json!({"type": "string"}), "Alias of `tags`.")
            .query("licenses", json!({"type": "string"}), "Licenses, comma-separated or repeated; any may match.")
            .query("license", json!({"type": "string"}), "Alias of `licenses`.")
            .query("hash", json!({"type": "string"}), "SHA-256 of the content.")
            .query("q", json!({"type": "string"}), "Substring of the path or of a top-level string in the metadata.")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": LIST_MAX, "default": LIST_DEFAULT}),
                "Page size.",
            )
            .query(
                "offset",
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 0}),
                "Matches to skip.",
            )
            .ok(json!({"type": "object", "required": ["ok", "items", "total"], "properties": {
                "ok": {"const": true},
                "items": {"type": "array", "items": record},
                "total": {"type": "integer", "description": "Matches before offset and limit."}}}))
            .error(422, "`limit` outside 1..1000, or `offset` not a non-negative integer."),
        a(Route::get("/assets/{uid}", detail))
            .summary("One asset")
            .path_param("uid", "The asset's stable uid.")
            .ok(one.clone())
            .error(404, "Asset not found."),
        a(Route::get("/assets/{uid}/sidecar", sidecar))
            .summary("The asset's sidecar document as stored")
            .path_param("uid", "The asset's stable uid.")
            .ok(json!({"type": "object", "required": ["ok", "uid", "path", "sidecar"], "properties": {
                "ok": {"const": true}, "uid": {"type": "string"},
                "path": {"type": "string", "description": "The sidecar's path relative to the assets root."},
                "sidecar": {"type": "object"}}}))
            .error(404, "Asset not found."),
        a(Route::get("/assets/{uid}/download", download))
            .summary("The asset's bytes")
            .describe(
                "Streams the file with Content-Disposition: attachment. Refused with 451 when the license is \
                denied by obs.audit.licenses (or missing while `require` is true), or when \
                obs.audit.require_provenance is true and the asset has no provenance.source.",
            )
            .path_param("uid", "The asset's stable uid.")
            .response(
                200,
                "The file, as stored.",
                Some((
                    "application/octet-stream",
                    json!({"type": "string", "contentMediaType": "application/octet-stream"}),
                )),
            )
            .error(404, "Asset not found, or its file is missing.")
            .error(451, "Unavailable for legal reasons: license or provenance policy."),
        a(Route::post("/assets/register", register))
            .summary("Register a file (copied into the assets root by default)")
            .describe(
                "`path` is a file on the server (absolute, or relative to the server's working directory). \
                With `copy` (default) it is copied to `dest_path` (default `<asset_type>/<file name>`) under the \
                assets root; without, it must already be inside the assets root. `metadata` keys `tags`, \
                `license` and `provenance` fill those sidecar fields; the rest goes to `meta`.",
            )
            .json_body(
                json!({"type": "object", "required": ["path"], "properties": {
                    "path": {"type": "string", "pattern": "\\S"},
                    "asset_type": {"type": ["string", "null"], "description": "Absent: derived from the file \
                        name (`image`, `audio`, `json`, else `generic`)."},
                    "dest_path": {"type": ["string", "null"],
                        "description": "Relative to the assets root; no `..`, not absolute."},
                    "metadata": {"type": ["object", "null"], "properties": {
                        "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": ["string", "null"],
                            "description": "Comma-separated."}]},
                        "license": {"type": ["string", "null"]},
                        "provenance": {"type": ["object", "null"]}}},
                    "copy": {"type": ["boolean", "null"], "default": true}}}),
                true,
            )
            .ok(one.clone())
            .error(
                400,
                "Bad `dest_path` (absolute, `..`, through a symbolic link, a sidecar name) or a source that \
                cannot be registered.",
            )
            .error(404, "Source file does not exist.")
            .error(
                409,
                "The destination exists with different content, or has an invalid sidecar, or another \
                 process kept changing its sidecar (or held it locked for over 10 s).",
            ),
        a(Route::post("/assets/upload", upload))
            .summary("Upload and register a file (multipart/form-data)")
            .describe(
                "Fields: `file` (required), `asset_type` (default: derived from the file name, `image`, `audio`, \
                `json`, else `generic`), `dest_path` (default `<asset_type>/<file name>`), `metadata` (a JSON object as a string). The file is streamed to a \
                temp file inside the assets root and renamed into place, so a failed or cut upload leaves \
                nothing behind.",
            )
            .upload_body(json!({"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                "asset_type": {"type": "string", "description": "Absent: derived from the file name."},
                "dest_path": {"type": "string"},
                "metadata": {"type": "string", "description": "A JSON object."}}}))
            .ok(one)
            .error(400, "Broken or truncated multipart body, bad `metadata` JSON, bad `dest_path`.")
            .error(409, "The destination exists with different content.")
            .error(415, "Not multipart/form-data."),
        a(Route::delete("/assets/{uid}", delete))
            .summary("Remove an asset: its file and sidecar move to the trash (logs/trash/)")
            .path_param("uid", "The asset's stable uid.")
            .ok(json!({"type": "object", "required": ["ok", "trashed"],
                "properties": {"ok": {"const": true}, "trashed": {"const": true}}}))
            .error(404, "Asset not found.")
            .error(409, "Another process kept changing the sidecar, or held it locked for over 10 s."),
    ]
}

fn record_schema() -> Value {
    json!({
        "type": "object",
        "required": ["uid", "type", "hash", "bytes", "path", "sidecar", "meta", "links", "created_at"],
        "properties": {
            "uid": {"type": "string"},
            "type": {"type": "string"},
            "hash": {"type": "string", "description": "SHA-256 hex of the content."},
            "bytes": {"type": "integer"},
            "path": {"type": "string", "description": "Relative to the assets root."},
            "sidecar": {"type": "string", "description": "Relative to the assets root."},
            "meta": {"type": "object", "required": ["tags", "license"], "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "license": {"type": ["string", "null"]}}},
            "links": {"type": "object", "properties": {"file": {"type": "string"}, "sidecar": {"type": "string"}}},
            "created_at": {"type": ["string", "null"]}
        }
    })
}

fn not_found(uid: &str) -> ApiError {
    ApiError::not_found("Asset not found.").with_details(json!({"uid": uid}))
}

fn list(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let mut tags = req.query_list("tags");
    tags.extend(req.query_list("tag"));
    let mut licenses = req.query_list("licenses");
    licenses.extend(req.query_list("license"));
    let limit = req.query_int_in("limit", LIST_DEFAULT, 1, LIST_MAX)? as usize;
    let offset = req.query_u64("offset")?.unwrap_or(0);
    let query = Query {
        asset_type: req.query("type").map(str::to_string),
        tags,
        licenses,
        hash: req.query("hash").map(str::to_string),
        q: req.query("q").map(str::to_string),
        limit: Some(limit),
        offset: usize::try_from(offset).unwrap_or(usize::MAX),
    };
    let index = state.assets.read();
    let page = index.query(&query);
    let items: Vec<RecordRef<'_>> = page.items.iter().map(RecordRef).collect();
    Ok(Reply::json(&Listing { ok: true, items, total: page.total }))
}

/// The body of `GET /assets`.
#[derive(Serialize)]
struct Listing<'a> {
    ok: bool,
    items: Vec<RecordRef<'a>>,
    total: usize,
}

/// [`registry::record`], serialised straight from the sidecar instead of through a `Value` per record:
/// building 200 `Value` maps (allocations and key hashing) was most of a listing's time. A test keeps
/// the two byte-for-byte identical.
struct RecordRef<'a>(&'a Sidecar);

impl Serialize for RecordRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let sidecar = format!("{}{}", a.path, registry::SUFFIX);
        let mut m = s.serialize_map(Some(9))?;
        m.serialize_entry("uid", &a.uid)?;
        m.serialize_entry("type", &a.asset_type)?;
        m.serialize_entry("hash", &a.hash)?;
        m.serialize_entry("bytes", &a.bytes)?;
        m.serialize_entry("path", &a.path)?;
        m.serialize_entry("sidecar", &sidecar)?;
        m.serialize_entry("meta", &MetaRef(a))?;
        m.serialize_entry("links", &LinksRef { file: &a.path, sidecar: &sidecar })?;
        m.serialize_entry("created_at", &a.created_at)?;
        m.end()
    }
}

/// `Sidecar::record_meta`: `tags`, `license`, `origin`, `version`, then the sidecar's own `meta` keys
/// (which never override those four).
struct MetaRef<'a>(&'a Sidecar);

impl Serialize for MetaRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const FIXED: [&str; 4] = ["tags", "license", "origin", "version"];
        let a = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("tags", &a.tags)?;
        m.serialize_entry("license", &a.license)?;
        m.serialize_entry("origin", &a.origin)?;
        m.serialize_entry("version", &a.version)?;
        for (k, v) in a.meta.iter().filter(|(k, _)| !FIXED.contains(&k.as_str())) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct LinksRef<'a> {
    file: &'a str,
    sidecar: &'a str,
}

/// The indexed asset with this uid.
fn find(state: &AppState, uid: &str) -> Result<Sidecar, ApiError> {
    state.assets.read().get(uid).ok_or_else(|| not_found(uid))
}

fn detail(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let asset = find(state, req.param("uid"))?;
    Ok(Reply::json(&json!({"ok": true, "asset": registry::record(&asset)})))
}

fn sidecar(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let uid = req.param("uid").to_string();
    let asset = find(state, &uid)?;
    let rel = RelPath::parse(&asset.path).map_err(|e| ApiError::internal(e.into()))?;
    let side = rel.sidecar();
    let file = open_inside(state.assets.registry.root(), &side).map_err(|_| not_found(&uid))?;
    let doc: Value = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| ApiError::new(409, &format!("sidecar {side} is not valid JSON: {e}")))?;
    Ok(Reply::json(&json!({"ok": true, "uid": uid, "path": side.to_string(), "sidecar": doc})))
}

fn download(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let uid = req.param("uid").to_string();
    let asset = find(state, &uid)?;
    if let Some(why) = state.assets.download_refusal(&asset) {
        return Err(ApiError::new(451, &format!("Download refused: {why}."))
            .with_details(json!({"uid": uid, "license": asset.license, "reason": why})));
    }
    let rel = RelPath::parse(&asset.path).map_err(|e| ApiError::internal(e.into()))?;
    let file = open_inside(state.assets.registry.root(), &rel)
        .map_err(|e| ApiError::not_found("Asset file is missing.").with_details(json!({"uid": uid, "error": e})))?;
    let len = file.metadata().map(|m| m.len()).map_err(|e| ApiError::internal(e.into()))?;
    Ok(Reply::file(file, len, content_type(rel.file_name()))
        .with_header("Content-Disposition", &attachment(rel.file_name())))
}

/// Open `rel` under `root` for reading, refusing symbolic links anywhere below the root and anything
/// but a regular file; the opened file is checked to be the one that was inspected.
fn open_inside(root: &Path, rel: &RelPath) -> Result<File, String> {
    use std::os::unix::fs::MetadataExt;
    let mut p = root.to_path_buf();
    for part in rel.dirs() {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{part} is not a folder (links are not followed)")),
            Err(e) => return Err(e.to_string()),
        }
    }
    let path = rel.under(root);
    let before = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
    if !before.is_file() {
        return Err("not a regular file (links are not followed)".into());
    }
    let file = File::open(&path).map_err(|e| e.to_string())?;
    let after = file.metadata().map_err(|e| e.to_string())?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err("the file changed while it was opened".into());
    }
    Ok(file)
}

/// `attachment; filename="…"`, with an RFC 6266 `filename*` for names that are not plain ASCII.
fn attachment(name: &str) -> String {
    let plain = name.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ');
    if plain {
        return format!("attachment; filename=\"{name}\"");
    }
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ogg" | "oga" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "woff2" => "font/woff2",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Registration options from the API's `metadata` object: `tags`, `license` and `provenance` fill
/// those sidecar fields, everything else goes to `meta`. Errors name the field (`metadata.tags`).
/// The registry's reading of a `metadata` object (shared with the CLI's `--meta`).
fn options(
    metadata: Map<String, Value>,
    asset_type: Option<String>,
    origin: &str,
) -> Result<RegisterOptions, (String, String)> {
    RegisterOptions::from_metadata(metadata, asset_type, origin)
}

/// A destination path from the API: relative, `/`-separated, no `.`/`..`/empty parts, not a sidecar.
fn dest_rel(dest: &str) -> Result<RelPath, ApiError> {
    let rel = RelPath::parse(dest.trim()).map_err(|e| bad_dest(&e.to_string()))?;
    if rel.is_sidecar() {
        return Err(bad_dest(&format!("{rel} is a sidecar name, not an asset")));
    }
    Ok(rel)
}

fn bad_dest(why: &str) -> ApiError {
    ApiError::bad_request(&format!("dest_path: {why}")).with_details(json!({"field": "dest_path"}))
}

/// `<asset_type>/<file name>` for a file name as a client sent it (its last component only).
fn default_dest(asset_type: Option<&str>, file_name: &str) -> Result<RelPath, ApiError> {
    let dest = crate::registry::copy_destination(asset_type, file_name).map_err(|_| {
        ApiError::bad_request("the file has no usable name; give dest_path").with_details(json!({"field": "dest_path"}))
    })?;
    dest_rel(dest.as_str())
}

/// The status of a registry refusal.
fn registry_error(err: anyhow::Error) -> ApiError {
    if let Some(busy) = err.downcast_ref::<crate::fs::Busy>() {
        return ApiError::new(409, &busy.to_string());
    }
    let Some(e) = err.downcast_ref::<RegistryError>() else { return ApiError::internal(err) };
    let msg = e.to_string();
    match e {
        RegistryError::Path(PathError::OutsideRoot(..)) | RegistryError::Path(_) | RegistryError::Ignored(_) => {
            ApiError::bad_request(&msg)
        }
        RegistryError::NoSuchFile(_) | RegistryError::NotRegistered(_) => ApiError::not_found(&msg),
        RegistryError::Exists(_)
        | RegistryError::InvalidSidecar { .. }
        | RegistryError::Changed(_)
        | RegistryError::Appeared(_)
        | RegistryError::Busy(_) => ApiError::new(409, &msg),
    }
}

/// Publish a write: the index first (so the caller's next read sees it), then the hook events.
fn publish(state: &AppState, events: &[RegistryEvent]) -> Result<(), ApiError> {
    state.assets.apply(events);
    if events.is_empty() {
        return Ok(());
    }
    state
        .bus
        .emit_batch(registry::to_hooks(events))
        .map(|_| ())
        .map_err(|e| ApiError::internal(e.context("the asset was written but its hook events could not be appended")))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    path: Option<String>,
    asset_type: Option<String>,
    dest_path: Option<String>,
    metadata: Option<Map<String, Value>>,
    copy: Option<bool>,
}

fn register(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let body: RegisterBody = req.json()?;
    let path = body.path.filter(|p| !p.trim().is_empty()).ok_or_else(|| ApiError::validation("path", "required"))?;
    let copy = body.copy.unwrap_or(true);
    let source = PathBuf::from(&path);
    let meta = std::fs::metadata(&source)
        .map_err(|_| ApiError::not_found("Source file does not exist.").with_details(json!({"path": path})))?;
    if !meta.is_file() {
        return Err(ApiError::bad_request("the source is not a regular file").with_details(json!({"path": path})));
    }
    let origin = if copy { "copy" } else { "register" };
    let opts = options(body.metadata.unwrap_or_default(), body.asset_type.clone(), origin)
        .map_err(|(f, m)| ApiError::validation(&f, &m))?;
    let assets = &state.assets;
    let (asset, events) = if copy {
        let dest = match body.dest_path.as_deref() {
            Some(d) => dest_rel(d)?,
            None => {
                default_dest(body.asset_type.as_deref(), &source.file_name().unwrap_or_default().to_string_lossy())?
            }
        };
        // Copied into a temp file inside the root first (outside the write lock: it may be large),
        // then placed like an upload.
        let temp = copy_to_temp(&source, assets.registry.root())?;
        let _writing = assets.writes.lock().unwrap_or_else(PoisonError::into_inner);
        ingest(assets, temp, &dest, &opts)?
    } else {
        if body.dest_path.is_some() {
            return Err(ApiError::bad_request(
                "dest_path needs copy: true (without copying, the file stays where it is)",
            )
            .with_details(json!({"field": "dest_path"})));
        }
        let rel = assets.registry.locate(&source).map_err(|e| registry_error(e.into()))?;
        let _writing = assets.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let index = assets.read();
        let outcome = assets.registry.register(&rel, &opts, &|u| index.contains_uid(u)).map_err(registry_error)?;
        (outcome.asset, outcome.events)
    };
    publish(state, &events)?;
    Ok(Reply::json(&json!({"ok": true, "asset": registry::record(&asset)})))
}

/// Stream `source` into a new temp file inside the assets root.
fn copy_to_temp(source: &Path, root: &Path) -> Result<crate::fs::TempFile, ApiError> {
    let mut from =
        File::open(source).map_err(|e| ApiError::bad_request(&format!("cannot read {}: {e}", source.display())))?;
    let mut temp = crate::fs::TempFile::create_in(root, "register").map_err(ApiError::internal)?;
    std::io::copy(&mut from, &mut temp)
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context(format!("cannot copy {}", source.display()))))?;
    Ok(temp)
}

fn delete(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let uid = req.param("uid").to_string();
    let assets = &state.assets;
    let _writing = assets.writes.lock().unwrap_or_else(PoisonError::into_inner);
    let asset = find(state, &uid)?;
    let rel = RelPath::parse(&asset.path).map_err(|e| ApiError::internal(e.into()))?;
    let outcome = assets.registry.remove(&rel).map_err(registry_error)?;
    publish(state, &outcome.events)?;
    Ok(Reply::json(&json!({"ok": true, "trashed": true})))
}

/// The fields of an upload, the file already streamed to its temp file.
struct UploadForm {
    file: Option<(crate::fs::TempFile, String)>,
    asset_type: Option<String>,
    dest_path: Option<String>,
    metadata: Option<String>,
}

fn upload(state: &AppState, req: &mut Req<'_>) -> Result<Reply, ApiError> {
    let ct = req.header("content-type").unwrap_or_default().to_string();
    let Some(boundary) = multipart::boundary(&ct) else {
        return Err(if req.content_type().as_deref() == Some("multipart/form-data") {
            ApiError::bad_request("multipart/form-data without a usable boundary parameter")
        } else {
            ApiError::new(
                415,
                &format!(
                    "expected Content-Type: multipart/form-data, found {}",
                    req.content_type().unwrap_or_else(|| "none".into())
                ),
            )
        });
    };
    let limits = req.limits();
    let root = state.assets.registry.root().to_path_buf();
    let form = read_form(req.body_reader(), &boundary, &root, limits.upload, limits.json)?;
    let (temp, file_name) = form.file.ok_or_else(|| ApiError::validation("file", "required"))?;
    let metadata = match form.metadata.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(ApiError::bad_request(&format!(
                    "metadata: expected a JSON object, found {}",
                    crate::config::kind(&other)
                ))
                .with_details(json!({"field": "metadata"})))
            }
            Err(e) => {
                return Err(ApiError::bad_request(&format!("metadata is not valid JSON: {e}"))
                    .with_details(json!({"field": "metadata"})))
            }
        },
    };
    let opts = options(metadata, form.asset_type.clone(), "upload")
        .map_err(|(f, m)| ApiError::bad_request(&format!("{f}: {m}")).with_details(json!({"field": f})))?;
    let dest = match form.dest_path.as_deref() {
        Some(d) => dest_rel(d)?,
        None => default_dest(form.asset_type.as_deref(), &file_name)?,
    };
    let _writing = state.assets.writes.lock().unwrap_or_else(PoisonError::into_inner);
    let (asset, events) = ingest(&state.assets, temp, &dest, &opts)?;
    publish(state, &events)?;
    Ok(Reply::json(&json!({"ok": true, "asset": registry::record(&asset)})))
}

/// Read the multipart body: the `file` part streams to a temp file in the assets root, text fields
/// are kept (each at most `field_limit` bytes). Any failure drops (removes) the temp file.
fn read_form(
    body: impl std::io::Read,
    boundary: &str,
    root: &Path,
    upload_limit: u64,
    field_limit: u64,
) -> Result<UploadForm, ApiError> {
    let mut parts = Multipart::new(Capped { inner: body, left: upload_limit }, boundary);
    let mut form = UploadForm { file: None, asset_type: None, dest_path: None, metadata: None };
    let failed = |e: MultipartError, write_failed: Option<&std::io::Error>| match (e, write_failed) {
        (_, Some(w)) => ApiError::internal(anyhow::anyhow!("cannot write the upload into the assets root: {w}")),
        (MultipartError::Io(e), None) if e.get_ref().is_some_and(|x| x.is::<OverLimit>()) => {
            ApiError::too_large(upload_limit)
        }
        (MultipartError::Malformed(m), None) => ApiError::bad_request(&format!("broken multipart body: {m}")),
        (MultipartError::PartTooLarge { limit, .. }, None) => ApiError::too_large(limit),
        (MultipartError::Io(e), None) => ApiError::bad_request(&format!("cannot read the upload: {e}")),
    };
    loop {
        let part = match parts.next_part() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return Err(failed(e, None)),
        };
        match part.name.as_str() {
            "file" if form.file.is_none() => {
                let temp = crate::fs::TempFile::create_in(root, "upload").map_err(ApiError::internal)?;
                let mut sink = Sink { temp, failed: None };
                if let Err(e) = parts.read_body(&mut sink, upload_limit) {
                    return Err(failed(e, sink.failed.as_ref()));
                }
                form.file = Some((sink.temp, part.filename.unwrap_or_default()));
            }
            "file" => return Err(ApiError::bad_request("more than one `file` part")),
            "asset_type" => form.asset_type = Some(parts.read_text(field_limit).map_err(|e| failed(e, None))?),
            "dest_path" => form.dest_path = Some(parts.read_text(field_limit).map_err(|e| failed(e, None))?),
            "metadata" => form.metadata = Some(parts.read_text(field_limit).map_err(|e| failed(e, None))?),
            // Unknown fields are skipped by the next `next_part`.
            _ => {}
        }
    }
    Ok(form)
}

/// The marker error of a body longer than the upload limit.
#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the upload limit")
    }
}

impl std::error::Error for OverLimit {}

/// A body reader that fails with [`OverLimit`] once more than `left` bytes arrive (chunked bodies
/// declare no length the server could check up front).
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(OverLimit));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The temp file, remembering a write failure (a full disk is the server's problem, not the client's).
struct Sink {
    temp: crate::fs::TempFile,
    failed: Option<std::io::Error>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.temp.write(buf).inspect_err(|e| self.failed = Some(std::io::Error::new(e.kind(), e.to_string())))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.flush()
    }
}

/// Put the file in `temp` at `dest` and register it ([`registry::Registry::import_temp`]: nothing is
/// ever replaced, and a new asset's sidecar is written before its file appears).
fn ingest(
    assets: &Assets,
    temp: crate::fs::TempFile,
    dest: &RelPath,
    opts: &RegisterOptions,
) -> Result<(Sidecar, Vec<RegistryEvent>), ApiError> {
    let index = assets.read();
    assets
        .registry
        .import_temp(temp, dest, opts, &|u| index.contains_uid(u))
        .map(|o| (o.asset, o.events))
        .map_err(registry_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_names() {
        assert_eq!(attachment("hero.png"), "attachment; filename=\"hero.png\"");
        assert_eq!(attachment("my hero.png"), "attachment; filename=\"my hero.png\"");
        assert_eq!(attachment("桜.png"), "attachment; filename=\"_.png\"; filename*=UTF-8''%E6%A1%9C.png");
        assert_eq!(attachment("a\"b.png"), "attachment; filename=\"a_b.png\"; filename*=UTF-8''a%22b.png");
    }

    #[test]
    fn metadata_fills_tags_license_provenance_and_meta() {
        let m = json!({"tags": ["Hero", "main"], "license": "MIT", "provenance": {"source": "studio"}, "mood": "calm"});
        let o = options(m.as_object().unwrap().clone(), Some("image".into()), "upload").unwrap();
        assert_eq!(o.tags, ["Hero", "main"]);
        assert_eq!(o.license.as_deref(), Some("MIT"));
        assert_eq!(o.provenance["source"], "studio");
        assert_eq!(o.meta["mood"], "calm");
        assert_eq!(o.asset_type.as_deref(), Some("image"));
        let o = options(json!({"tags": "a, b"}).as_object().unwrap().clone(), None, "copy").unwrap();
        assert_eq!(o.tags, ["a", "b"]);
        let (field, _) = options(json!({"tags": [1]}).as_object().unwrap().clone(), None, "x").unwrap_err();
        assert_eq!(field, "metadata.tags");
        let (field, _) = options(json!({"license": 5}).as_object().unwrap().clone(), None, "x").unwrap_err();
        assert_eq!(field, "metadata.license");
    }

    #[test]
    fn listing_records_are_the_registry_records() {
        let rel = RelPath::parse("characters/hero.png").unwrap();
        let mut opts = options(
            json!({"tags": ["Hero"], "license": "MIT", "mood": "brave", "version": 9, "tags_extra": [1]})
                .as_object()
                .unwrap()
                .clone(),
            Some("characters".into()),
            "upload",
        )
        .unwrap();
        opts.meta.insert("origin".into(), json!("shadowed"));
        let a = registry::new_sidecar(&rel, &"ab".repeat(32), 12, "u1".into(), &opts);
        let bare = registry::new_sidecar(&rel, &"cd".repeat(32), 0, "u2".into(), &RegisterOptions::default());
        for s in [&a, &bare] {
            assert_eq!(serde_json::to_string(&RecordRef(s)).unwrap(), registry::record(s).to_string());
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(default_dest(Some("image"), "C:\\Users\\me\\hero.png").unwrap().as_str(), "image/hero.png");
        assert_eq!(default_dest(None, "../../etc/passwd").unwrap().as_str(), "generic/passwd");
        assert!(default_dest(None, "..").is_err());
        assert!(default_dest(None, "").is_err());
        for bad in ["/etc/x", "a/../b", "..", "a//b", "a\\b", "x.png.asset.json", ""] {
            assert_eq!(dest_rel(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
