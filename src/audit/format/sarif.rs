//! `--format sarif`: a SARIF 2.1.0 log with one run. Every rule is listed in `tool.driver.rules`
//! (with its help text); every finding is a result whose location is the file relative to the
//! checkout (`uriBaseId` `%SRCROOT%`), line 1, so GitHub code scanning and other SARIF consumers
//! accept it. `partialFingerprints` are derived from rule and path so alerts track across runs.

use serde_json::{json, Value};

use crate::audit::rules::ALL;
use crate::audit::Report;

pub const SCHEMA_URI: &str = "https://json.schemastore.org/sarif-2.1.0.json";

pub fn render(r: &Report) -> String {
    let rules: Vec<Value> = ALL
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": camel(rule.id),
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": format!("{}.", capitalise(rule.summary))},
                "help": {"text": format!("Fix: {}.", rule.fix)},
                "defaultConfiguration": {"level": rule.severity.as_str()},
            })
        })
        .collect();
    let results: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            let index = ALL.iter().position(|x| x.id == f.rule).unwrap_or(0);
            let shown = r.display_path(&f.path);
            let mut location = json!({"uri": uri(&shown)});
            if !shown.starts_with('/') {
                location["uriBaseId"] = json!("%SRCROOT%");
            }
            let fingerprint = &crate::digest::sha256_hex(format!("{}\0{}", f.rule, f.path).as_bytes())[..32];
            json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": f.severity.as_str(),
                "message": {"text": f.message},
                "locations": [{"physicalLocation": {"artifactLocation": location, "region": {"startLine": 1}}}],
                "partialFingerprints": {"comfyvnFinding/v1": fingerprint},
                "properties": {"fixable": f.fixable},
            })
        })
        .collect();
    let log = json!({
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": r.tool,
                "version": r.version,
                "semanticVersion": r.version,
                "rules": rules,
            }},
            "columnKind": "utf16CodeUnits",
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&log).expect("SARIF always serialises");
    s.push('\n');
    s
}

/// `missing-sidecar` → `MissingSidecar`.
fn camel(id: &str) -> String {
    id.split('-').map(capitalise).collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A URI reference for a path: unreserved characters and `/` kept, everything else percent-encoded
/// (UTF-8); absolute paths become `file://` URIs.
fn uri(path: &str) -> String {
    let mut out = String::new();
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_names() {
        assert_eq!(uri("assets/my hero.png"), "assets/my%20hero.png");
        assert_eq!(uri("/abs/é.png"), "file:///abs/%C3%A9.png");
        assert_eq!(camel("missing-sidecar"), "MissingSidecar");
    }
}
