//! Mechanical checks of the invariants in ARCHITECTURE.md: each external crate has one home module,
//! all whole-file writes go through `fs`, `unsafe` stays in its reviewed homes, and every source file
//! opens with a `//!` paragraph.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let rel = p.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_path_buf();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

/// Lines that are code (not comments), up to the unit-test module (tests may write fixtures directly):
/// the first `#[cfg(test)]` at the start of a line, not an indented one on a single item.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().take_while(|(_, l)| l.trim_end() != "#[cfg(test)]").filter(|(_, l)| {
        let t = l.trim_start();
        !(t.starts_with("//") || t.starts_with("///") || t.starts_with("//!"))
    })
}

#[test]
fn each_external_crate_has_one_home() {
    let homes: &[(&str, &[&str])] = &[
        ("tiny_http", &["src/http/"]),
        ("tungstenite", &["src/http/"]),
        ("notify", &["src/watch"]),
        ("notify_debouncer_full", &["src/watch"]),
        ("zip", &["src/telemetry/bundle.rs"]),
        ("sha2", &["src/digest.rs"]),
        ("hmac", &["src/digest.rs"]),
        ("ureq", &["src/outbound/client.rs"]),
        ("flate2", &["src/outbound/sink.rs"]),
        ("sentry_types", &["src/sentry.rs"]),
        ("opentelemetry_proto", &["src/otlp.rs"]),
        ("prost", &["src/otlp.rs"]),
        ("rustix", &["src/fs.rs"]),
        ("memchr", &["src/registry/index.rs"]),
    ];
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let p = path.to_string_lossy().replace('\\', "/");
        for (krate, allowed) in homes {
            if allowed.iter().any(|a| p.starts_with(a)) {
                continue;
            }
            for (n, line) in code_lines(&text) {
                let uses = line.contains(&format!("use {krate}::"))
                    || line.contains(&format!("use {krate};"))
                    || line.contains(&format!(" {krate}::"))
                    || line.contains(&format!("({krate}::"));
                if uses {
                    bad.push(format!("{p}:{}: uses {krate} outside {allowed:?}", n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "crate-home violations:\n{}", bad.join("\n"));
}

#[test]
fn whole_file_writes_go_through_fs() {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let p = path.to_string_lossy().replace('\\', "/");
        // fs.rs is the writer; unit-test files (`tests.rs`) write their fixtures directly.
        if p == "src/fs.rs" || p.ends_with("/tests.rs") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if line.contains("std::fs::write(") || line.contains("fs::write(") && !line.contains("crate::fs::") {
                bad.push(format!("{p}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "writes outside src/fs.rs:\n{}", bad.join("\n"));
}

#[test]
fn unsafe_code_stays_in_its_reviewed_homes() {
    // The SHA kernel is unsafe throughout (intrinsics); everywhere else each `unsafe` block says why
    // it is sound in a `SAFETY:` comment just above it.
    let homes = [
        "src/digest/sha256x2.rs",
        "src/digest.rs",
        "src/http/socket.rs",
        "src/doctor.rs",
        "src/crash.rs",
        "src/memory.rs",
    ];
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let p = path.to_string_lossy().replace('\\', "/");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in code_lines(&text) {
            if !["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern"].iter().any(|u| line.contains(u)) {
                continue;
            }
            if !homes.contains(&p.as_str()) {
                bad.push(format!("{p}:{}: unsafe outside {homes:?}", n + 1));
            } else if p != homes[0] && !lines[n.saturating_sub(4)..=n].iter().any(|l| l.contains("SAFETY:")) {
                bad.push(format!("{p}:{}: unsafe without a SAFETY: comment in the 4 lines above", n + 1));
            }
        }
    }
    assert!(bad.is_empty(), "unsafe-code violations:\n{}", bad.join("\n"));
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! paragraph: {missing:?}");
}

#[test]
fn every_config_key_is_documented_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defaults: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("config/comfyvn.json")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    fn leaves(v: &serde_json::Value, prefix: String, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(child, p, out);
                }
            }
            _ => out.push(prefix),
        }
    }
    let mut keys = Vec::new();
    leaves(&defaults, String::new(), &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            // `obs.*` keys are documented by their full path, the compatibility blocks by their key name.
            let shown = if k.starts_with("obs.") { (*k).clone() } else { k.rsplit('.').next().unwrap().to_string() };
            !readme.contains(&format!("`{shown}`"))
        })
        .collect();
    assert!(missing.is_empty(), "config keys missing from README.md: {missing:?}");
}
