//! Output formats of the audit report: `text` (people), `json` (the report document), `sarif`
//! (SARIF 2.1.0 for code scanning), `junit` (JUnit XML for GitLab/Jenkins/GitHub test reporters) and
//! `github` (workflow command annotations). Each renders a [`Report`] to a string; none reads files
//! or the clock, so output is byte-for-byte reproducible.

use super::Report;

pub mod github;
pub mod json;
pub mod junit;
pub mod sarif;
pub mod text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Sarif,
    Junit,
    Github,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            "sarif" => Some(Format::Sarif),
            "junit" => Some(Format::Junit),
            "github" => Some(Format::Github),
            _ => None,
        }
    }
}

/// Render `report` in `format` (always ends with a newline).
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => text::render(report),
        Format::Json => json::render(report),
        Format::Sarif => sarif::render(report),
        Format::Junit => junit::render(report),
        Format::Github => github::render(report),
    }
}

/// The one-line verdict shared by `text` and `github`.
pub fn summary_line(r: &Report) -> String {
    let s = &r.summary;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut line = format!(
        "audit {}: {}, {} in {}, {} (fail-on {})",
        if s.passed { "passed" } else { "failed" },
        plural(s.errors, "error"),
        plural(s.warnings, "warning"),
        plural(s.assets, "asset"),
        plural(s.sidecars, "sidecar"),
        match r.fail_on {
            super::FailOn::Error => "error",
            super::FailOn::Warning => "warning",
            super::FailOn::Never => "never",
        }
    );
    if s.fixable > 0 && r.mode == super::report::Mode::Check {
        line.push_str(&format!("; {} fixable with --fix", s.fixable));
    }
    if let Some(b) = &r.baseline {
        line.push_str(&format!("; {} known in the baseline, {} resolved", b.known, b.resolved.len()));
    }
    line
}
