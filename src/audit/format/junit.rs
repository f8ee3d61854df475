//! `--format junit`: JUnit XML. One `<testsuite>` per rule (the release-gate rules only with
//! `--release`); a rule without findings is one passing
//! test case, each finding is a test case named after the file: a `<failure>` when its severity is
//! at or above `--fail-on`, otherwise a passing case with the message in `<system-out>`. With
//! `--fix`, a `fix` suite lists each sidecar write (an `<error>` when it failed).

use crate::audit::report::ChangeStatus;
use crate::audit::rules::{ALL, RELEASE};
use crate::audit::{Finding, Report};

pub fn render(r: &Report) -> String {
    let mut suites = String::new();
    let mut total_tests = 0;
    let mut total_failures = 0;
    let mut total_errors = 0;
    // The release-gate rules are test suites only when they ran.
    for rule in ALL.iter().filter(|rule| r.release || !RELEASE.contains(&rule.id)) {
        let findings: Vec<&Finding> = r.findings.iter().filter(|f| f.rule == rule.id).collect();
        let classname = format!("comfyvn-obs.audit.{}", rule.id);
        let mut cases = String::new();
        let mut failures = 0;
        if findings.is_empty() {
            cases.push_str(&format!("    <testcase name=\"no findings\" classname=\"{}\"/>\n", esc(&classname)));
        }
        for f in &findings {
            let shown = r.display_path(&f.path);
            cases.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\">\n",
                esc(&shown),
                esc(&classname),
                esc(&shown)
            ));
            let body = format!("{shown}: {}[{}]: {}\nfix: {}", f.severity.as_str(), f.rule, f.message, rule.fix);
            if r.fail_on.fails(f.severity) {
                failures += 1;
                cases.push_str(&format!(
                    "      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                    esc(&f.message),
                    f.severity.as_str(),
                    esc(&body)
                ));
            } else {
                cases.push_str(&format!("      <system-out>{}</system-out>\n", esc(&body)));
            }
            cases.push_str("    </testcase>\n");
        }
        let tests = findings.len().max(1);
        total_tests += tests;
        total_failures += failures;
        suites.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n{cases}  </testsuite>\n",
            esc(rule.id)
        ));
    }
    if !r.changes.is_empty() {
        let mut cases = String::new();
        let mut errors = 0;
        for c in &r.changes {
            let shown = r.display_path(&c.path);
            cases.push_str(&format!("    <testcase name=\"{}\" classname=\"comfyvn-obs.audit.fix\">", esc(&shown)));
            if c.status == ChangeStatus::Failed {
                errors += 1;
                let e = c.error.clone().unwrap_or_default();
                cases.push_str(&format!("\n      <error message=\"{}\">{}</error>\n    ", esc(&e), esc(&e)));
            } else {
                cases.push_str(&format!("<system-out>{}</system-out>", esc(&c.detail)));
            }
            cases.push_str("</testcase>\n");
        }
        total_tests += r.changes.len();
        total_errors += errors;
        suites.push_str(&format!(
            "  <testsuite name=\"fix\" tests=\"{}\" failures=\"0\" errors=\"{errors}\" skipped=\"0\">\n{cases}  </testsuite>\n",
            r.changes.len()
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"comfyvn-obs audit\" tests=\"{total_tests}\" failures=\"{total_failures}\" errors=\"{total_errors}\">\n{suites}</testsuites>\n"
    )
}

/// XML text/attribute escaping; characters XML 1.0 cannot carry are dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
