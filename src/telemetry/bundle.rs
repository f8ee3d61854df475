//! The diagnostics bundle: a zip under `logs/diagnostics/` (DESIGN §4). The only module that imports
//! `zip`.
//!
//! It packs documents the caller has already assembled and anonymised; it decides nothing about consent
//! or content. The zip is built in memory and written atomically, so a half-written bundle never exists
//! under its final name.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use zip::write::SimpleFileOptions;

/// The JSON documents of one bundle, each written as `<name>` (pretty JSON).
#[derive(Debug, Clone)]
pub struct BundleParts {
    pub manifest: Value,
    pub telemetry: Value,
    pub crashes: Value,
    pub redactions: Value,
}

impl BundleParts {
    /// Entry names in the order they are written.
    pub const ENTRIES: [&'static str; 4] = ["manifest.json", "telemetry.json", "crashes.json", "redactions.json"];
}

/// `comfyvn-diagnostics-YYYYmmdd_HHMMSS-<first 8 of the anonymous id>.zip`.
pub fn bundle_name(anonymous_id: &str) -> String {
    let anon8: String = anonymous_id.chars().take(8).collect();
    format!("comfyvn-diagnostics-{}-{anon8}.zip", crate::time::file_stamp())
}

/// Write the bundle into `dir` and return its path.
pub fn write_bundle(dir: &Path, anonymous_id: &str, parts: &BundleParts) -> Result<PathBuf> {
    let path = dir.join(bundle_name(anonymous_id));
    let docs = [&parts.manifest, &parts.telemetry, &parts.crashes, &parts.redactions];
    let mut entries = Vec::with_capacity(docs.len());
    for (name, doc) in BundleParts::ENTRIES.iter().zip(docs) {
        entries.push((name.to_string(), crate::fs::to_pretty_json(doc)?));
    }
    let bytes = zip_bytes(&entries).with_context(|| format!("cannot build {}", path.display()))?;
    crate::fs::write_atomic(&path, &bytes)?;
    Ok(path)
}

fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), options)?;
        writer.write_all(bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// Every entry of a zip as `(name, bytes)`, in archive order (tests, doctor, the HTTP layer's checks).
pub fn read_entries(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip file", path.display()))?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).with_context(|| format!("{}: entry {i}", path.display()))?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).with_context(|| format!("{}: cannot read {}", path.display(), entry.name()))?;
        out.push((entry.name().to_string(), bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bundle_round_trips_with_the_four_entries() {
        let dir = tempfile::tempdir().unwrap();
        let parts = BundleParts {
            manifest: json!({"schema": 1}),
            telemetry: json!({"features": {}}),
            crashes: json!([]),
            redactions: json!({"by_rule": {}}),
        };
        let path = write_bundle(dir.path(), "0123456789abcdef", &parts).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("comfyvn-diagnostics-") && name.ends_with("-01234567.zip"), "{name}");
        let entries = read_entries(&path).unwrap();
        let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, BundleParts::ENTRIES);
        let manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
        assert_eq!(manifest["schema"], 1);
    }
}
