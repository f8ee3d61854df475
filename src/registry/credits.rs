//! Credits and NOTICE text from the sidecars (`assets credits`): per asset its title, author,
//! source URL, license (SPDX expression and full name) and required attribution, grouped by
//! license, type or author, rendered as Markdown, plain text or JSON.
//!
//! Deterministic: groups sorted by key, assets by title (case-insensitive) then path; nothing depends on the clock or
//! the order sidecars were read in. Pure: takes sidecars, returns strings.

use serde::Serialize;
use serde_json::Value;

use super::license;
use super::sidecar::{LicenseStatus, Sidecar};

/// Schema of the JSON document.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    License,
    Type,
    Author,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Json,
}

/// One credited asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credit {
    /// `meta.title` when set, else the file name.
    pub title: String,
    pub path: String,
    #[serde(rename = "type")]
    pub asset_type: String,
    pub author: Option<String>,
    pub source_url: Option<String>,
    /// The SPDX expression as recorded.
    pub license: Option<String>,
    /// The SPDX full name of a single known id, else the expression.
    pub license_name: Option<String>,
    pub attribution: Option<String>,
    pub license_status: Option<LicenseStatus>,
}

/// Assets sharing a license, type or author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The license expression, the type or the author; empty for "none recorded".
    pub key: String,
    /// For people: the license's full name with its id, the type, the author, or "no license" …
    pub heading: String,
    pub assets: Vec<Credit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credits {
    pub schema: u32,
    pub group_by: GroupBy,
    pub total: usize,
    pub groups: Vec<Group>,
}

fn blank_to_none(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

impl Credit {
    pub fn of(s: &Sidecar) -> Credit {
        let file_name = s.path.rsplit_once('/').map_or(s.path.as_str(), |(_, f)| f);
        let title = blank_to_none(s.meta.get("title").and_then(Value::as_str)).unwrap_or_else(|| file_name.to_string());
        let license = blank_to_none(s.license.as_deref());
        Credit {
            title,
            path: s.path.clone(),
            asset_type: s.asset_type.clone(),
            author: blank_to_none(s.credits.author.as_deref()),
            source_url: blank_to_none(s.credits.source_url.as_deref()),
            license_name: license.as_deref().map(license::display_name),
            license,
            attribution: blank_to_none(s.credits.attribution.as_deref()),
            license_status: s.credits.license_status,
        }
    }
}

/// Group the sidecars' credits. Groups without a key (no license, no author) come last.
pub fn build<'a>(sidecars: impl IntoIterator<Item = &'a Sidecar>, group_by: GroupBy) -> Credits {
    let mut credits: Vec<Credit> = sidecars.into_iter().map(Credit::of).collect();
    // Titles in the order people expect (case-insensitive), ties broken exactly, so the order is total.
    credits.sort_by_cached_key(|c| (c.title.to_lowercase(), c.title.clone(), c.path.clone()));
    let key_of = |c: &Credit| -> String {
        match group_by {
            GroupBy::License => c.license.clone().unwrap_or_default(),
            GroupBy::Type => c.asset_type.clone(),
            GroupBy::Author => c.author.clone().unwrap_or_default(),
        }
    };
    let mut map: std::collections::BTreeMap<(bool, String), Vec<Credit>> = Default::default();
    let total = credits.len();
    for c in credits {
        let key = key_of(&c);
        map.entry((key.is_empty(), key)).or_default().push(c);
    }
    let groups = map
        .into_iter()
        .map(|((_, key), assets)| {
            let heading = match (group_by, key.is_empty()) {
                (GroupBy::License, true) => "No license recorded".to_string(),
                (GroupBy::Author, true) => "Author not recorded".to_string(),
                (GroupBy::License, false) => {
                    let name = license::display_name(&key);
                    if name == key {
                        key.clone()
                    } else {
                        format!("{name} ({key})")
                    }
                }
                _ => key.clone(),
            };
            Group { key, heading, assets }
        })
        .collect();
    Credits { schema: SCHEMA, group_by, total, groups }
}

/// Render in `format` (always ends with a newline).
pub fn render(c: &Credits, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(c).expect("credits always serialise");
            s.push('\n');
            s
        }
        Format::Markdown => markdown(c),
        Format::Text => text(c),
    }
}

/// The parts of one credit line after the title: `by A`, `from URL`, and the license unless the
/// group is the license.
fn details(c: &Credit, group_by: GroupBy) -> Vec<String> {
    let mut parts = Vec::new();
    if let (Some(a), false) = (&c.author, group_by == GroupBy::Author) {
        parts.push(format!("by {a}"));
    }
    if group_by != GroupBy::License {
        match (&c.license, &c.license_name) {
            (Some(id), Some(name)) if name != id => parts.push(format!("{name} ({id})")),
            (Some(id), _) => parts.push(id.clone()),
            (None, _) => parts.push("no license recorded".into()),
        }
    }
    parts
}

fn markdown(c: &Credits) -> String {
    let mut out = String::from("# Credits\n");
    for g in &c.groups {
        out.push_str(&format!("\n## {}\n\n", md_escape(&g.heading)));
        for a in &g.assets {
            let mut line = format!("- **{}**", md_escape(&a.title));
            for d in details(a, c.group_by) {
                line.push_str(&format!(", {}", md_escape(&d)));
            }
            if let Some(u) = &a.source_url {
                line.push_str(&format!(", <{u}>"));
            }
            line.push_str(&format!(" (`{}`)", a.path.replace('`', "'")));
            out.push_str(&line);
            out.push('\n');
            if let Some(text) = &a.attribution {
                for l in text.lines() {
                    out.push_str(&format!("  > {}\n", md_escape(l)));
                }
            }
        }
    }
    out
}

fn text(c: &Credits) -> String {
    let mut out = String::from("CREDITS\n");
    for g in &c.groups {
        out.push_str(&format!("\n{}\n", g.heading));
        for a in &g.assets {
            let mut line = format!("  {}", a.title);
            for d in details(a, c.group_by) {
                line.push_str(&format!(", {d}"));
            }
            out.push_str(&line);
            out.push('\n');
            out.push_str(&format!("    file: {}\n", a.path));
            if let Some(u) = &a.source_url {
                out.push_str(&format!("    source: {u}\n"));
            }
            if let Some(text) = &a.attribution {
                for (i, l) in text.lines().enumerate() {
                    out.push_str(&format!("    {}{l}\n", if i == 0 { "attribution: " } else { "             " }));
                }
            }
        }
    }
    out
}

/// Backslash-escape the characters Markdown would read as markup.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#' | '|') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::sidecar::parse;
    use crate::registry::RelPath;
    use serde_json::json;

    fn sidecar(path: &str, extra: Value) -> Sidecar {
        let mut v = json!({"schema": 1, "uid": "0123456789abcdef", "type": "art", "path": path,
                           "hash": "a".repeat(64), "bytes": 1});
        crate::config::merge(&mut v, extra);
        parse(&serde_json::to_vec(&v).unwrap(), &RelPath::parse(path).unwrap()).unwrap().sidecar
    }

    fn sample() -> Vec<Sidecar> {
        vec![
            sidecar("art/z.png", json!({"license": "CC0-1.0"})),
            sidecar(
                "art/hero.png",
                json!({"license": "CC-BY-4.0", "author": "Ann", "source_url": "https://example.org/hero",
                       "attribution": "Hero by Ann (CC BY 4.0)", "meta": {"title": "Hero"}}),
            ),
            sidecar("art/a.png", json!({"license": "CC-BY-4.0", "author": "Bo"})),
            sidecar("art/none.png", json!({})),
        ]
    }

    #[test]
    fn markdown_groups_by_license_and_is_independent_of_input_order() {
        let md = render(&build(&sample(), GroupBy::License), Format::Markdown);
        assert_eq!(
            md,
            "# Credits\n\
             \n## Creative Commons Attribution 4.0 International (CC-BY-4.0)\n\n\
             - **a.png**, by Bo (`art/a.png`)\n\
             - **Hero**, by Ann, <https://example.org/hero> (`art/hero.png`)\n  > Hero by Ann (CC BY 4.0)\n\
             \n## Creative Commons Zero v1.0 Universal (CC0-1.0)\n\n\
             - **z.png** (`art/z.png`)\n\
             \n## No license recorded\n\n\
             - **none.png** (`art/none.png`)\n"
        );
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(render(&build(&reversed, GroupBy::License), Format::Markdown), md);
    }

    #[test]
    fn text_and_json_by_author() {
        let c = build(&sample(), GroupBy::Author);
        let keys: Vec<_> = c.groups.iter().map(|g| g.heading.as_str()).collect();
        assert_eq!(keys, ["Ann", "Bo", "Author not recorded"]);
        let txt = render(&c, Format::Text);
        assert!(txt.contains(
            "\nAnn\n  Hero, Creative Commons Attribution 4.0 International (CC-BY-4.0)\n    file: art/hero.png\n    source: https://example.org/hero\n    attribution: Hero by Ann (CC BY 4.0)\n"
        ), "{txt}");
        let v: Value = serde_json::from_str(&render(&c, Format::Json)).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["total"], 4);
        assert_eq!(v["group_by"], "author");
        assert_eq!(v["groups"][0]["assets"][0]["license_name"], "Creative Commons Attribution 4.0 International");
    }

    #[test]
    fn markdown_markup_in_fields_is_escaped() {
        let s = sidecar("art/x.png", json!({"license": "MIT", "meta": {"title": "*bold* [link]"}}));
        let md = render(&build([&s], GroupBy::Type), Format::Markdown);
        assert!(md.contains("- **\\*bold\\* \\[link\\]**, MIT License (MIT)"), "{md}");
    }
}
