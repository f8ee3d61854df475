//! Hashing of identifying values (DESIGN §4): the keyed BLAKE2s-128 anonymiser with the original's input
//! layout, its secret in `config/telemetry/anonymizer.json`, payload anonymisation and secret masking in
//! free text (crash messages, tracebacks, command lines).
//!
//! Owns `anonymizer.json` and nothing else; it never writes the telemetry store.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac;
use serde_json::{json, Map, Value};

use crate::paths::Paths;

/// Key-name words that make a payload key sensitive (matched as substrings of the lowercased name).
pub const SENSITIVE_WORDS: [&str; 15] = [
    "id",
    "uuid",
    "token",
    "key",
    "secret",
    "serial",
    "license",
    "path",
    "email",
    "user",
    "account",
    "identifier",
    "address",
    "fingerprint",
    "password",
];

/// Strings longer than this many characters are cut (with `…`).
pub const MAX_STRING_CHARS: usize = 256;

/// The value and namespace of the installation's anonymous id.
pub const INSTALLATION_VALUE: &str = "comfyvn.installation";
pub const INSTALLATION_NAMESPACE: &str = "installation";

/// Names of the redaction rules, as counted in `redactions.json`.
pub mod rule {
    pub const SENSITIVE_KEY: &str = "sensitive_key";
    pub const EMAIL: &str = "email";
    pub const HOME_PATH: &str = "home_path";
    pub const BEARER_TOKEN: &str = "bearer_token";
    pub const TRUNCATED: &str = "truncated";
    pub const SECRET_TEXT: &str = "secret_text";
}

/// Counts of redactions by rule name.
pub type Redactions = BTreeMap<String, u64>;

/// Add `more` into `total`.
pub fn add_redactions(total: &mut Redactions, more: &Redactions) {
    for (k, v) in more {
        *total.entry(k.clone()).or_default() += v;
    }
}

/// The keyed hash: BLAKE2s with a 16-byte output, keyed with the 32-byte installation secret.
#[derive(Clone)]
pub struct Anonymiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Anonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anonymiser { key: <hidden> }")
    }
}

/// The outcome of [`Anonymiser::load_or_create`].
#[derive(Debug)]
pub struct Loaded {
    pub anonymiser: Anonymiser,
    /// Set when a broken file was moved aside: `(file, where it went, why)`.
    pub recreated: Option<(std::path::PathBuf, std::path::PathBuf, String)>,
    /// The secret file was created by this call.
    pub created: bool,
}

impl Anonymiser {
    pub fn new(key: [u8; 32]) -> Anonymiser {
        Anonymiser { key }
    }

    /// From the base64 text of a 32-byte secret.
    pub fn from_base64(secret: &str) -> Result<Anonymiser> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| anyhow!("the secret is not valid base64: {e}"))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| anyhow!("the secret must be 32 bytes, found {}", b.len()))?;
        Ok(Anonymiser { key })
    }

    /// Read `config/telemetry/anonymizer.json`, creating it with a fresh random secret when absent. A file
    /// that cannot be used (not JSON, no `secret`, wrong length) is moved aside as `*.corrupt-<stamp>`
    /// and recreated; the caller warns about it.
    pub fn load_or_create(paths: &Paths) -> Result<Loaded> {
        let file = paths.anonymizer_file();
        match read_secret_file(&file) {
            Ok(Some(anonymiser)) => Ok(Loaded { anonymiser, recreated: None, created: false }),
            Ok(None) => Ok(Loaded { anonymiser: create(&file)?, recreated: None, created: true }),
            Err(problem) => {
                let moved = crate::fs::quarantine(&file)?;
                let anonymiser = create(&file)?;
                Ok(Loaded { anonymiser, recreated: Some((file, moved, format!("{problem:#}"))), created: true })
            }
        }
    }

    /// `hash(value, namespace)`: 32 lowercase hex characters of BLAKE2s-128(key, namespace ‖ value).
    pub fn hash(&self, value: &str, namespace: Option<&str>) -> String {
        let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(&self.key).expect("BLAKE2s accepts 32-byte keys");
        if let Some(ns) = namespace {
            mac.update(ns.as_bytes());
        }
        mac.update(value.as_bytes());
        crate::digest::hex(&mac.finalize().into_bytes())
    }

    /// The installation's anonymous id.
    pub fn anonymous_id(&self) -> String {
        self.hash(INSTALLATION_VALUE, Some(INSTALLATION_NAMESPACE))
    }

    /// Anonymise a payload (DESIGN §4): strings under a sensitive key path are hashed with the dotted key
    /// path as namespace; e-mail addresses, absolute home paths and bearer tokens are hashed whatever the
    /// key; other strings are cut at [`MAX_STRING_CHARS`]; numbers, booleans and null are kept. Returns
    /// the anonymised value and the redaction counts by rule.
    pub fn anonymise(&self, payload: &Value, allow_keys: &[String]) -> (Value, Redactions) {
        let mut counts = Redactions::new();
        let out = self.walk(payload, "", false, allow_keys, &mut counts);
        (out, counts)
    }

    fn walk(&self, v: &Value, path: &str, sensitive: bool, allow: &[String], counts: &mut Redactions) -> Value {
        match v {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, child) in map {
                    let child_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    let allowed = is_allowed(k, &child_path, allow);
                    let child_sensitive = !allowed && (sensitive || is_sensitive_key(k));
                    out.insert(k.clone(), self.walk(child, &child_path, child_sensitive, allow, counts));
                }
                Value::Object(out)
            }
            // Items of a list share the list's key path, so the same value hashes the same in any position.
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.walk(i, path, sensitive, allow, counts)).collect())
            }
            Value::String(s) => {
                let namespace = (!path.is_empty()).then_some(path);
                let rule = if sensitive { Some(rule::SENSITIVE_KEY) } else { value_rule(s) };
                if let Some(rule) = rule {
                    *counts.entry(rule.to_string()).or_default() += 1;
                    return Value::String(self.hash(s, namespace));
                }
                if s.chars().count() > MAX_STRING_CHARS {
                    *counts.entry(rule::TRUNCATED.to_string()).or_default() += 1;
                    let mut cut: String = s.chars().take(MAX_STRING_CHARS).collect();
                    cut.push('…');
                    return Value::String(cut);
                }
                v.clone()
            }
            other => other.clone(),
        }
    }
}

fn read_secret_file(file: &Path) -> Result<Option<Anonymiser>> {
    // Written 0600 since it holds a secret; tighten one an older version left readable by others
    // (before parsing, so a corrupt one is tightened before it is quarantined too).
    if let Err(e) = crate::fs::make_private(file) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!(error = %format!("{e:#}"), "the anonymiser key file is readable by others"));
    }
    let Some(doc) = crate::fs::read_json_opt(file)? else { return Ok(None) };
    let secret =
        doc.get("secret").and_then(Value::as_str).ok_or_else(|| anyhow!("{}: no \"secret\" string", file.display()))?;
    Anonymiser::from_base64(secret).with_context(|| format!("{}: bad \"secret\"", file.display())).map(Some)
}

fn create(file: &Path) -> Result<Anonymiser> {
    let key = crate::digest::random_bytes::<32>();
    let secret = base64::engine::general_purpose::STANDARD.encode(key);
    crate::fs::write_json_private(file, &json!({"schema": 1, "secret": secret}))?;
    Ok(Anonymiser { key })
}

/// A key is sensitive when its lowercased name contains one of [`SENSITIVE_WORDS`].
pub fn is_sensitive_key(key: &str) -> bool {
    let k = key.to_lowercase();
    SENSITIVE_WORDS.iter().any(|w| k.contains(w))
}

/// Allow-list entries match a key name (case-insensitive) or a full dotted key path.
fn is_allowed(key: &str, path: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| a.eq_ignore_ascii_case(key) || a == path)
}

/// The value rule a string falls under whatever its key, if any.
pub fn value_rule(s: &str) -> Option<&'static str> {
    if looks_like_email(s) {
        Some(rule::EMAIL)
    } else if looks_like_home_path(s) {
        Some(rule::HOME_PATH)
    } else if contains_bearer_token(s) {
        Some(rule::BEARER_TOKEN)
    } else {
        None
    }
}

/// `local@domain.tld` with no spaces (the whole string).
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && !s.contains(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
        && domain.rsplit('.').next().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
}

/// An absolute path inside someone's home folder: `/home/…`, `/Users/…`, `/root/…`, `~/…`,
/// `C:\Users\…`, or under `$HOME`.
pub fn looks_like_home_path(s: &str) -> bool {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if ["/home/", "/users/", "/root/", "~/"].iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    let b = lower.as_bytes();
    if b.len() > 9 && b[0].is_ascii_alphabetic() && &lower[1..3] == ":\\" && lower[3..].starts_with("users\\") {
        return true;
    }
    match std::env::var("HOME") {
        Ok(home) if home.len() > 1 => s.starts_with(&format!("{}/", home.trim_end_matches('/'))),
        _ => false,
    }
}

/// `Bearer <token>` anywhere in the text (case-insensitive), with a token of at least 8 characters.
pub fn contains_bearer_token(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("bearer") {
        let start = from + at;
        let after = &s[start + "bearer".len()..];
        let boundary_ok = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        let token: String = after.strip_prefix(char::is_whitespace).map_or(String::new(), |rest| {
            rest.trim_start().chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'').collect()
        });
        if boundary_ok && token.chars().count() >= 8 {
            return true;
        }
        from = start + "bearer".len();
    }
    false
}

/// Mask secrets in free text (crash messages, tracebacks, command lines), keeping the text's layout:
/// the token after `Bearer`, the value of `token=…`/`password: …`-style pairs whose key looks secret,
/// and the word after a secret-looking flag (`--api-key XYZ`). Returns the text and the number masked.
pub fn mask_secrets_in_text(text: &str) -> (String, u64) {
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut mask_next = false;
    let mut rest = text;
    while !rest.is_empty() {
        let ws_len = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws_len]);
        rest = &rest[ws_len..];
        if rest.is_empty() {
            break;
        }
        let word_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_len];
        rest = &rest[word_len..];
        if mask_next {
            let lower = word.to_ascii_lowercase();
            if lower == "bearer" || lower == "basic" {
                // `Authorization: Bearer <token>`: the value is the word after the scheme.
                out.push_str(word);
                continue;
            }
            mask_next = false;
            if !word.starts_with('-') {
                out.push_str(&"*".repeat(word.chars().count().min(16)));
                count += 1;
                continue;
            }
        }
        let (masked, n, next) = mask_word(word);
        out.push_str(&masked);
        count += n;
        mask_next = next;
    }
    (out, count)
}

/// Mask one word; returns the word, how many values were masked, and whether the next word is a value.
fn mask_word(word: &str) -> (String, u64, bool) {
    let lower = word.to_ascii_lowercase();
    let stripped = lower.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if stripped == "bearer" || stripped == "basic" {
        return (word.to_string(), 0, true);
    }
    for sep in ['=', ':'] {
        if let Some((key, value)) = word.split_once(sep) {
            let value_trim = value.trim_matches(|c| c == '"' || c == '\'' || c == ',');
            if !value_trim.is_empty() && looks_like_secret_name(key) && !value_trim.starts_with("//") {
                return (format!("{key}{sep}{}", "*".repeat(value_trim.chars().count().min(16))), 1, false);
            }
            if value_trim.is_empty() && looks_like_secret_name(key) && sep == ':' {
                // `password: hunter2` (a YAML-ish pair): the next word is the value.
                return (word.to_string(), 0, true);
            }
        }
    }
    let is_flag = word.starts_with('-') && looks_like_secret_name(word);
    (word.to_string(), 0, is_flag)
}

/// Key words that name a secret value in free text (narrower than the payload rule: `id`, `path` and
/// friends are fine to show in a local crash dump). Leading dashes and quotes are ignored, so flags
/// (`--api-key`) and quoted keys match too.
pub fn looks_like_secret_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let k = k.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
    ["token", "secret", "password", "passwd", "api_key", "api-key", "apikey", "authorization", "private_key"]
        .iter()
        .any(|w| k.contains(w))
        || k == "key"
        || k.ends_with("_key")
        || k.ends_with("-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_anonymiser() -> Anonymiser {
        Anonymiser::from_base64("+6NTLtoMohNPd6aPkTkAfRxpjmEcKh7SzpspPLxuf58=").unwrap()
    }

    #[test]
    fn the_key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anonymizer.json");
        let mode = || std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        let made = create(&file).unwrap();
        assert_eq!(mode(), 0o600);
        // A key file left readable by others is tightened when read.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(read_secret_file(&file).unwrap().unwrap().key, made.key);
        assert_eq!(mode(), 0o600);
    }

    #[test]
    fn design_hash_vector_holds() {
        assert_eq!(vector_anonymiser().hash("hello-world", None), "8028628a352d96b5697f1b7937821fd5");
    }

    #[test]
    fn namespace_is_prefixed_without_separator() {
        let a = vector_anonymiser();
        assert_eq!(a.hash("world", Some("hello-")), a.hash("hello-world", None));
        assert_ne!(a.hash("x", Some("ns")), a.hash("x", None));
        assert_eq!(a.hash("x", Some("ns")).len(), 32);
    }

    #[test]
    fn nested_payload_anonymisation() {
        let a = vector_anonymiser();
        let long = "x".repeat(300);
        let payload = json!({
            "uid": "abc123",
            "userName": "alice",
            "count": 3,
            "ok": true,
            "nothing": null,
            "meta": {"license": "CC-BY", "title": "Hero", "note": "mail me: not-an-email"},
            "contact": "alice@example.com",
            "where": "/home/alice/project/hero.png",
            "auth": "Bearer abcdefghijklmnop",
            "tags": ["a", "b"],
            "user": {"name": "bob", "age": 4},
            "long": long,
            "width": "wide",
        });
        let (out, counts) = a.anonymise(&payload, &["width".to_string()]);
        assert_eq!(out["uid"], a.hash("abc123", Some("uid")));
        assert_eq!(out["userName"], a.hash("alice", Some("userName")));
        assert_eq!(out["meta"]["license"], a.hash("CC-BY", Some("meta.license")));
        assert_eq!(out["meta"]["title"], "Hero");
        assert_eq!(out["meta"]["note"], "mail me: not-an-email");
        assert_eq!(out["count"], 3);
        assert_eq!(out["ok"], true);
        assert_eq!(out["nothing"], Value::Null);
        assert_eq!(out["contact"], a.hash("alice@example.com", Some("contact")));
        assert_eq!(out["where"], a.hash("/home/alice/project/hero.png", Some("where")));
        assert_eq!(out["auth"], a.hash("Bearer abcdefghijklmnop", Some("auth")));
        assert_eq!(out["tags"], json!(["a", "b"]));
        // Everything under a sensitive key is hashed, with the full dotted path as namespace.
        assert_eq!(out["user"]["name"], a.hash("bob", Some("user.name")));
        assert_eq!(out["user"]["age"], 4);
        assert_eq!(out["long"].as_str().unwrap().chars().count(), 257);
        assert!(out["long"].as_str().unwrap().ends_with('…'));
        // `width` contains "id" but is allow-listed.
        assert_eq!(out["width"], "wide");
        assert_eq!(counts[rule::SENSITIVE_KEY], 4);
        assert_eq!(counts[rule::EMAIL], 1);
        assert_eq!(counts[rule::HOME_PATH], 1);
        assert_eq!(counts[rule::BEARER_TOKEN], 1);
        assert_eq!(counts[rule::TRUNCATED], 1);
    }

    #[test]
    fn sensitive_key_words() {
        for k in ["uid", "asset_path", "userName", "EMAIL", "api_key", "License", "fingerprint"] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in ["title", "count", "scene", "name"] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }

    #[test]
    fn value_patterns() {
        assert!(looks_like_email("a.b@example.co.uk"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("see a@b.com now"));
        assert!(looks_like_home_path("/Users/ann/x"));
        assert!(looks_like_home_path("C:\\Users\\ann\\x"));
        assert!(!looks_like_home_path("/opt/comfyvn"));
        assert!(contains_bearer_token("Authorization: Bearer eyJhbGciOi"));
        assert!(!contains_bearer_token("the bearer of news"));
    }

    #[test]
    fn text_masking_keeps_layout() {
        let (t, n) =
            mask_secrets_in_text("  File \"x.py\"\n    token=abcdef Bearer abcdefghij --api-key XYZ123 --name bob");
        assert_eq!(t, "  File \"x.py\"\n    token=****** Bearer ********** --api-key ****** --name bob");
        assert_eq!(n, 3);
        let (t, n) = mask_secrets_in_text("password: hunter2 url=http://x");
        assert_eq!(t, "password: ******* url=http://x");
        assert_eq!(n, 1);
        let (t, _) = mask_secrets_in_text("Authorization: Bearer abcdefghij");
        assert_eq!(t, "Authorization: Bearer **********");
    }

    #[test]
    fn secret_file_is_created_and_corrupt_one_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let first = Anonymiser::load_or_create(&paths).unwrap();
        assert!(first.created && first.recreated.is_none());
        let again = Anonymiser::load_or_create(&paths).unwrap();
        assert!(!again.created);
        assert_eq!(first.anonymiser.anonymous_id(), again.anonymiser.anonymous_id());
        std::fs::write(paths.anonymizer_file(), "{not json").unwrap();
        let fixed = Anonymiser::load_or_create(&paths).unwrap();
        let (file, moved, why) = fixed.recreated.unwrap();
        assert_eq!(file, paths.anonymizer_file());
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "{not json");
        assert!(why.contains("invalid JSON"), "{why}");
        assert_ne!(fixed.anonymiser.anonymous_id(), first.anonymiser.anonymous_id());
        std::fs::write(paths.anonymizer_file(), r#"{"secret": "c2hvcnQ="}"#).unwrap();
        let short = Anonymiser::load_or_create(&paths).unwrap();
        assert!(short.recreated.unwrap().2.contains("32 bytes"));
    }
}
