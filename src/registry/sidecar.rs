//! The sidecar document `<file>.asset.json` (DESIGN §6): its fields, their order on disk, validation
//! with messages that name the field, and the rules for machine versus human fields.
//!
//! Owns the format only: reading and writing files is done by the registry through `crate::fs`.
//! Machine fields (`schema`, `uid`, `type` when absent, `path`, `hash`, `bytes`, `version`,
//! `created_at`, `updated_at`) are filled and refreshed by the tool; human fields (`tags`, `license`,
//! the optional credit fields `author`, `source_url`, `attribution`, `license_status`, `origin`,
//! `meta`, `provenance`, and any unknown top-level key) are kept as written.

use serde::Serialize;
use serde_json::{Map, Value};

use super::relpath::RelPath;
use crate::config::kind;

/// The sidecar schema this tool reads and writes.
pub const SCHEMA: u64 = 1;
/// `hero.png` → `hero.png.asset.json`.
pub const SUFFIX: &str = ".asset.json";

/// One sidecar. Serialises in field order, then the unknown keys a person added, in their order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sidecar {
    pub schema: u64,
    pub uid: String,
    #[serde(rename = "type")]
    pub asset_type: String,
    /// Relative to the assets root, `/` separators.
    pub path: String,
    /// Lowercase hex SHA-256 of the file.
    pub hash: String,
    pub bytes: u64,
    pub tags: Vec<String>,
    /// SPDX expression, or null.
    pub license: Option<String>,
    /// `author`, `source_url`, `attribution`, `license_status`: optional, written only when set.
    #[serde(flatten)]
    pub credits: Credits,
    /// How the asset entered the registry (`register`, `copy`, `audit`, `watch`, `upload` …).
    pub origin: Option<String>,
    /// Content revision: 1 at registration, +1 each time a refresh records new content.
    pub version: u64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub meta: Map<String, Value>,
    /// Where the asset came from: `source`, `workflow_hash`, `commit_hash`, `inputs`, `created_at` …
    pub provenance: Map<String, Value>,
    /// Top-level keys this tool does not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The human fields a credits screen and the release gate read. All optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Credits {
    /// Who made the asset, as it should be credited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Where the asset was obtained (a page a person can open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// The attribution text the license requires, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// Whether a person checked the license.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_status: Option<LicenseStatus>,
}

/// `license_status`: whether the recorded license was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Verified,
    Pending,
    Rejected,
}

impl LicenseStatus {
    pub fn parse(s: &str) -> Option<LicenseStatus> {
        match s {
            "verified" => Some(LicenseStatus::Verified),
            "pending" => Some(LicenseStatus::Pending),
            "rejected" => Some(LicenseStatus::Rejected),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Verified => "verified",
            LicenseStatus::Pending => "pending",
            LicenseStatus::Rejected => "rejected",
        }
    }
}

const KNOWN: &[&str] = &[
    "schema",
    "uid",
    "type",
    "path",
    "hash",
    "bytes",
    "tags",
    "license",
    "author",
    "source_url",
    "attribution",
    "license_status",
    "origin",
    "version",
    "created_at",
    "updated_at",
    "meta",
    "provenance",
];

/// A sidecar that parsed, plus the machine fields that are missing or out of date (each fixable by a
/// refresh, e.g. `audit --fix`). Missing values are filled with placeholders in `sidecar`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub sidecar: Sidecar,
    /// `"field: why"` for each machine field a refresh would fill or correct.
    pub fixable: Vec<String>,
    /// The machine fields that were absent (`uid`, `hash`, `bytes` …).
    pub missing: Vec<&'static str>,
}

/// A field that is present but wrong: `tags: expected an array of strings, found a string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why a sidecar cannot be used; never fixed automatically (a person has to decide).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid {
    pub errors: Vec<FieldError>,
}

impl Invalid {
    fn one(field: &str, message: impl Into<String>) -> Invalid {
        Invalid { errors: vec![FieldError { field: field.to_string(), message: message.into() }] }
    }
}

/// Parse and validate sidecar bytes found beside the asset `rel`.
pub fn parse(bytes: &[u8], rel: &RelPath) -> Result<Parsed, Invalid> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() { "truncated JSON" } else { "invalid JSON" };
        Invalid::one("", format!("{what} at line {}, column {}: {}", e.line(), e.column(), strip_position(&e)))
    })?;
    let Value::Object(mut map) = value else {
        return Err(Invalid::one("", format!("expected a JSON object at the top level, found {}", kind(&value))));
    };
    let mut errors = Vec::new();
    let mut fixable = Vec::new();
    let mut missing = Vec::new();
    let mut err = |field: &str, message: String| errors.push(FieldError { field: field.to_string(), message });

    let schema = match map.get("schema") {
        None => {
            missing.push("schema");
            fixable.push("schema: missing (a sidecar of the original toolkit?)".to_string());
            SCHEMA
        }
        Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA) => SCHEMA,
        Some(Value::Number(n)) => {
            err("schema", format!("unsupported version {n} (this tool reads {SCHEMA})"));
            SCHEMA
        }
        Some(v) => {
            err("schema", format!("expected the integer {SCHEMA}, found {}", kind(v)));
            SCHEMA
        }
    };
    let uid = match map.get("uid") {
        None | Some(Value::Null) => {
            missing.push("uid");
            fixable.push("uid: missing".to_string());
            String::new()
        }
        Some(Value::String(s)) if valid_uid(s) => s.clone(),
        Some(v) => {
            err("uid", format!("expected 1-64 letters, digits, '-' or '_', found {}", describe(v)));
            String::new()
        }
    };
    let asset_type = match map.get("type") {
        None | Some(Value::Null) => {
            missing.push("type");
            fixable.push("type: missing".to_string());
            derive_type(rel)
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(v) => {
            err("type", format!("expected a non-empty string, found {}", describe(v)));
            String::new()
        }
    };
    let path = match map.get("path") {
        None | Some(Value::Null) => {
            missing.push("path");
            fixable.push("path: missing".to_string());
            rel.as_str().to_string()
        }
        Some(Value::String(s)) => {
            if s != rel.as_str() {
                fixable.push(format!("path: records {s:?} but the sidecar is beside {:?}", rel.as_str()));
            }
            s.clone()
        }
        Some(v) => {
            err("path", format!("expected a string, found {}", describe(v)));
            String::new()
        }
    };
    let hash = match map.get("hash") {
        None | Some(Value::Null) => {
            missing.push("hash");
            fixable.push("hash: missing".to_string());
            String::new()
        }
        Some(Value::String(s)) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s.to_ascii_lowercase(),
        Some(v) => {
            err("hash", format!("expected 64 hex characters (sha256), found {}", describe(v)));
            String::new()
        }
    };
    let bytes_field = match map.get("bytes") {
        None | Some(Value::Null) => {
            missing.push("bytes");
            fixable.push("bytes: missing".to_string());
            0
        }
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
        Some(v) => {
            err("bytes", format!("expected a non-negative integer, found {}", describe(v)));
            0
        }
    };
    let tags = match map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        Some(v) => {
            err("tags", format!("expected an array of strings, found {}", describe(v)));
            Vec::new()
        }
    };
    let license = opt_string(&map, "license", "a string (SPDX expression) or null", &mut err);
    let origin = opt_string(&map, "origin", "a string or null", &mut err);
    let author = opt_string(&map, "author", "a string or null", &mut err);
    let source_url = opt_string(&map, "source_url", "a string (URL) or null", &mut err);
    let attribution = opt_string(&map, "attribution", "a string or null", &mut err);
    let license_status = match map.get("license_status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if LicenseStatus::parse(s).is_some() => LicenseStatus::parse(s),
        Some(v) => {
            err("license_status", format!("expected \"verified\", \"pending\" or \"rejected\", found {}", describe(v)));
            None
        }
    };
    let version = match map.get("version") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => n.as_u64().unwrap_or(1),
        Some(v) => {
            err("version", format!("expected a positive integer, found {}", describe(v)));
            1
        }
    };
    let created_at = opt_string(&map, "created_at", "a timestamp string or null", &mut err);
    let updated_at = opt_string(&map, "updated_at", "a timestamp string or null", &mut err);
    let meta = opt_object(&map, "meta", &mut err);
    let provenance = opt_object(&map, "provenance", &mut err);

    if !errors.is_empty() {
        return Err(Invalid { errors });
    }
    for k in KNOWN {
        map.remove(*k);
    }
    let sidecar = Sidecar {
        schema,
        uid,
        asset_type,
        path,
        hash,
        bytes: bytes_field,
        tags,
        license,
        credits: Credits { author, source_url, attribution, license_status },
        origin,
        version,
        created_at,
        updated_at,
        meta,
        provenance,
        // The parsed document's map keeps its capacity for every key removed above (~1.5 KB); an index
        // holds thousands of sidecars, so keep an unallocated map when nothing unknown is left.
        extra: if map.is_empty() { Map::new() } else { map },
    };
    Ok(Parsed { sidecar, fixable, missing })
}

fn opt_string(
    map: &Map<String, Value>,
    field: &str,
    expected: &str,
    err: &mut impl FnMut(&str, String),
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            err(field, format!("expected {expected}, found {}", describe(v)));
            None
        }
    }
}

fn opt_object(map: &Map<String, Value>, field: &str, err: &mut impl FnMut(&str, String)) -> Map<String, Value> {
    match map.get(field) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(v) => {
            err(field, format!("expected an object, found {}", describe(v)));
            Map::new()
        }
    }
}

/// `a string "x"`, `an array`, … short enough for a one-line finding.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        other => kind(other).to_string(),
    }
}

/// serde_json appends " at line L column C" to its messages; the caller reports the position itself.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// What the audit needs from a sidecar, read by [`quick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub uid: String,
    pub asset_type: String,
    /// The recorded `path`.
    pub path: String,
    /// Lowercase.
    pub hash: String,
    pub bytes: u64,
    pub license: Option<String>,
    pub has_tags: bool,
    pub provenance_source: bool,
    pub license_status: Option<LicenseStatus>,
    /// A non-blank `attribution`.
    pub has_attribution: bool,
}

/// The fast path for well-formed sidecars: a typed read without building a JSON tree (a full parse
/// is most of the cost of a `--full` audit after hashing). `None` for anything unusual (a missing
/// or mistyped field, another schema, a duplicate key); the caller then uses [`parse`], which says
/// precisely what is wrong. For every document this accepts, [`parse`] accepts it too, with the same
/// values and nothing to fix except possibly `path`.
pub fn quick(bytes: &[u8]) -> Option<Summary> {
    use std::borrow::Cow;

    #[derive(serde::Deserialize)]
    struct Quick<'a> {
        schema: u64,
        #[serde(borrow)]
        uid: Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        asset_type: Cow<'a, str>,
        #[serde(borrow)]
        path: Cow<'a, str>,
        #[serde(borrow)]
        hash: Cow<'a, str>,
        bytes: u64,
        #[serde(default, borrow)]
        tags: Option<Vec<Cow<'a, str>>>,
        #[serde(default, borrow)]
        license: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        #[allow(dead_code)]
        origin: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        #[allow(dead_code)]
        author: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        #[allow(dead_code)]
        source_url: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        attribution: Option<Cow<'a, str>>,
        #[serde(default)]
        license_status: Option<LicenseStatus>,
        #[serde(default)]
        version: Option<u64>,
        #[serde(default, borrow)]
        #[allow(dead_code)]
        created_at: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        #[allow(dead_code)]
        updated_at: Option<Cow<'a, str>>,
        #[serde(default)]
        #[allow(dead_code)]
        meta: Option<AnyObject>,
        #[serde(default)]
        provenance: Option<Provenance>,
    }

    let q: Quick = serde_json::from_slice(bytes).ok()?;
    let ok = q.schema == SCHEMA
        && valid_uid(&q.uid)
        && !q.asset_type.trim().is_empty()
        && q.hash.len() == 64
        && q.hash.bytes().all(|b| b.is_ascii_hexdigit())
        && q.version.is_none_or(|v| v >= 1);
    if !ok {
        return None;
    }
    Some(Summary {
        uid: q.uid.into_owned(),
        asset_type: q.asset_type.into_owned(),
        path: q.path.into_owned(),
        hash: q.hash.to_ascii_lowercase(),
        bytes: q.bytes,
        license: q.license.map(Cow::into_owned),
        has_tags: q.tags.is_some_and(|t| !t.is_empty()),
        provenance_source: q.provenance.is_some_and(|p| p.source),
        license_status: q.license_status,
        has_attribution: q.attribution.is_some_and(|a| !a.trim().is_empty()),
    })
}

/// Accepts any JSON object (and nothing else), keeping none of it.
struct AnyObject;

impl<'de> serde::Deserialize<'de> for AnyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// A provenance object; remembers whether `source` is a non-blank string (the last `source` wins,
/// as in a full parse).
struct Provenance {
    source: bool,
}

impl<'de> serde::Deserialize<'de> for Provenance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Provenance;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Provenance, A::Error> {
                let mut source = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "source" {
                        source = map.next_value::<Value>()?.as_str().is_some_and(|s| !s.trim().is_empty());
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Provenance { source })
            }
        }
        d.deserialize_map(V)
    }
}

/// Allowed uid spelling: 1-64 ASCII letters, digits, `-` or `_` (it appears in URLs).
pub fn valid_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Sidecar {
    /// The on-disk bytes: pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a sidecar always serialises");
        out.push(b'\n');
        out
    }

    /// The `meta` object of API records and hook payloads: `tags`, `license`, `origin`, `version`,
    /// then the sidecar's own `meta` keys (which never override those four).
    pub fn record_meta(&self) -> Value {
        let mut m = Map::new();
        m.insert("tags".into(), Value::from(self.tags.clone()));
        m.insert("license".into(), self.license.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("origin".into(), self.origin.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("version".into(), Value::from(self.version));
        for (k, v) in &self.meta {
            if !m.contains_key(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        Value::Object(m)
    }

    /// The `provenance.source`, when it is a non-blank string.
    pub fn provenance_source(&self) -> Option<&str> {
        self.provenance.get("source").and_then(Value::as_str).filter(|s| !s.trim().is_empty())
    }

    /// The attribution text when it is present and not blank.
    pub fn attribution_text(&self) -> Option<&str> {
        self.credits.attribution.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The license when it is present and not blank.
    pub fn license_text(&self) -> Option<&str> {
        self.license.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// De-duplicate tags case-insensitively keeping the first spelling; trims and drops blanks.
pub fn normalise_tags<S: AsRef<str>>(tags: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in tags {
        let t = t.as_ref().trim();
        if !t.is_empty() && seen.insert(t.to_lowercase()) {
            out.push(t.to_string());
        }
    }
    out
}

/// `type` for a new asset: the first folder under the assets root, else by file extension.
pub fn derive_type(rel: &RelPath) -> String {
    derived_type_of(rel.as_str()).to_string()
}

/// [`derive_type`] without an allocation, of a path already known to be a valid [`RelPath`] string
/// (the audit's stat cache compares it for every asset).
pub fn derived_type_of(rel: &str) -> &str {
    if let Some((first, _)) = rel.split_once('/') {
        return first;
    }
    let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
    let is = |list: &[&str]| list.iter().any(|x| x.eq_ignore_ascii_case(ext));
    if is(&["png", "jpg", "jpeg", "gif", "webp", "bmp", "tga", "tif", "tiff", "svg", "avif", "psd"]) {
        "image"
    } else if is(&["wav", "mp3", "ogg", "flac", "m4a", "aac", "opus", "mid", "midi"]) {
        "audio"
    } else if is(&["json"]) {
        "json"
    } else {
        "generic"
    }
}

/// Tags derived from a path for `--fill-metadata`: the folders, then the words of the file stem
/// (split on `_ - . space`), skipping numbers and one-letter words.
pub fn tags_from_path(rel: &RelPath) -> Vec<String> {
    let stem = rel.file_name().rsplit_once('.').map(|(s, _)| s).unwrap_or(rel.file_name());
    let words =
        stem.split(['_', '-', '.', ' ']).filter(|w| w.chars().count() > 1 && !w.chars().all(|c| c.is_ascii_digit()));
    normalise_tags(rel.dirs().chain(words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn full() -> Value {
        json!({
            "schema": 1, "uid": "0123456789abcdef", "type": "characters", "path": "characters/hero.png",
            "hash": "a".repeat(64), "bytes": 3, "tags": ["Hero"], "license": "CC-BY-4.0", "origin": "register",
            "version": 1, "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
            "meta": {"title": "Hero"}, "provenance": {"source": "studio"}, "x-note": "kept"
        })
    }

    #[test]
    fn round_trip_keeps_order_and_unknown_keys() {
        let bytes = serde_json::to_vec(&full()).unwrap();
        let p = parse(&bytes, &rel("characters/hero.png")).unwrap();
        assert!(p.fixable.is_empty(), "{:?}", p.fixable);
        let out: Value = serde_json::from_slice(&p.sidecar.to_bytes()).unwrap();
        assert_eq!(out, full());
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.last().unwrap(), "x-note");
        assert_eq!(keys[..3], ["schema", "uid", "type"]);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = full();
        v["tags"] = json!("hero");
        v["bytes"] = json!(-1);
        let err = parse(&serde_json::to_vec(&v).unwrap(), &rel("characters/hero.png")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bytes: expected a non-negative integer, found the number -1; tags: expected an array of strings, found the string \"hero\""
        );
        let err = parse(b"{\"schema\": 2}", &rel("a.png")).unwrap_err();
        assert_eq!(err.errors[0].to_string(), "schema: unsupported version 2 (this tool reads 1)");
        let err = parse(b"{\"schema\": 1,", &rel("a.png")).unwrap_err();
        assert!(err.to_string().starts_with("truncated JSON at line 1"), "{err}");
        let err = parse(b"[]", &rel("a.png")).unwrap_err();
        assert_eq!(err.to_string(), "expected a JSON object at the top level, found an array");
    }

    #[test]
    fn missing_machine_fields_are_fixable() {
        let p = parse(br#"{"tags": ["x"], "license": "MIT"}"#, &rel("audio/theme.ogg")).unwrap();
        assert_eq!(p.missing, ["schema", "uid", "type", "path", "hash", "bytes"]);
        assert_eq!(p.sidecar.asset_type, "audio");
        assert_eq!(p.sidecar.path, "audio/theme.ogg");
        let moved = parse(&serde_json::to_vec(&full()).unwrap(), &rel("characters/copy.png")).unwrap();
        assert_eq!(
            moved.fixable,
            ["path: records \"characters/hero.png\" but the sidecar is beside \"characters/copy.png\""]
        );
    }

    #[test]
    fn quick_agrees_with_parse_or_declines() {
        let r = rel("characters/hero.png");
        let full_doc = serde_json::to_vec(&full()).unwrap();
        let q = quick(&full_doc).unwrap();
        let p = parse(&full_doc, &r).unwrap().sidecar;
        assert_eq!((q.uid, q.hash, q.bytes, q.license), (p.uid, p.hash, p.bytes, p.license));
        assert!(q.has_tags && q.provenance_source);
        let variants = [
            json!({"tags": "x"}),
            json!({"schema": 2}),
            json!({"meta": 5}),
            json!({"provenance": []}),
            json!({"bytes": 1.5}),
            json!({"uid": "has space"}),
            json!({"version": 0}),
            json!({"origin": 7}),
            json!({"license_status": "maybe"}),
            json!({"attribution": 1}),
            json!({"author": []}),
        ];
        for patch in variants {
            let mut v = full();
            crate::config::merge(&mut v, patch.clone());
            let bytes = serde_json::to_vec(&v).unwrap();
            assert!(quick(&bytes).is_none(), "{patch}");
            assert!(parse(&bytes, &r).is_err(), "{patch}");
        }
        let mut v = full();
        v.as_object_mut().unwrap().remove("hash");
        assert!(quick(&serde_json::to_vec(&v).unwrap()).is_none(), "missing fields go the slow way");
        let mut v = full();
        v["provenance"] = json!({"source": "  ", "other": 1});
        v["tags"] = Value::Null;
        let q = quick(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(!q.provenance_source && !q.has_tags);
        assert!(quick(b"{\"schema\": 1, \"schema\": 1}").is_none());
    }

    #[test]
    fn credit_fields_round_trip_and_reach_the_fast_path() {
        let mut v = full();
        crate::config::merge(
            &mut v,
            json!({"author": "Ann", "source_url": "https://example.org/hero", "attribution": "Hero by Ann",
                   "license_status": "pending"}),
        );
        let bytes = serde_json::to_vec(&v).unwrap();
        let p = parse(&bytes, &rel("characters/hero.png")).unwrap().sidecar;
        assert_eq!(p.credits.author.as_deref(), Some("Ann"));
        assert_eq!(p.credits.license_status, Some(LicenseStatus::Pending));
        assert!(p.extra.contains_key("x-note") && !p.extra.contains_key("author"));
        let out: Value = serde_json::from_slice(&p.to_bytes()).unwrap();
        assert_eq!(out, v);
        let q = quick(&bytes).unwrap();
        assert_eq!((q.license_status, q.has_attribution), (Some(LicenseStatus::Pending), true));
        let plain = quick(&serde_json::to_vec(&full()).unwrap()).unwrap();
        assert_eq!((plain.license_status, plain.has_attribution), (None, false));
        let written: Value = serde_json::from_slice(
            &parse(&serde_json::to_vec(&full()).unwrap(), &rel("characters/hero.png")).unwrap().sidecar.to_bytes(),
        )
        .unwrap();
        assert!(written.get("license_status").is_none(), "unset credit fields are not written");
    }

    #[test]
    fn tags_and_types() {
        assert_eq!(normalise_tags(["Hero", "hero", " ", "HERO", "Smile"]), ["Hero", "Smile"]);
        assert_eq!(derive_type(&rel("backgrounds/sky.png")), "backgrounds");
        assert_eq!(derive_type(&rel("sky.PNG")), "image");
        assert_eq!(derive_type(&rel("theme.ogg")), "audio");
        assert_eq!(derive_type(&rel("scene.json")), "json");
        assert_eq!(derive_type(&rel("notes")), "generic");
        assert_eq!(
            tags_from_path(&rel("characters/alice/hero_smile_01.png")),
            ["characters", "alice", "hero", "smile"]
        );
    }

    #[test]
    fn record_meta_puts_tags_and_license_first() {
        let p = parse(&serde_json::to_vec(&full()).unwrap(), &rel("characters/hero.png")).unwrap();
        let m = p.sidecar.record_meta();
        assert_eq!(m["tags"], json!(["Hero"]));
        assert_eq!(m["license"], "CC-BY-4.0");
        assert_eq!(m["title"], "Hero");
    }
}
