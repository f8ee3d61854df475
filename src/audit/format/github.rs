//! `--format github`: GitHub Actions workflow commands, one annotation per finding
//! (`::error file=assets/x.png,line=1,title=missing-sidecar::no sidecar x.png.asset.json`), then
//! a `::notice` per baseline entry that is resolved, then the verdict as a plain log line.

use crate::audit::Report;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        out.push_str(&format!(
            "::{} file={},line=1,title={}::{}\n",
            f.severity.as_str(),
            property(&r.display_path(&f.path)),
            property(f.rule),
            data(&f.message)
        ));
    }
    if let Some(b) = &r.baseline {
        for e in &b.resolved {
            out.push_str(&format!(
                "::notice file={},line=1,title=resolved {}::fixed; can be removed from the baseline\n",
                property(&r.display_path(&e.path)),
                property(&e.rule)
            ));
        }
    }
    out.push_str(&super::summary_line(r));
    out.push('\n');
    out
}

/// Escaping for the message part of a workflow command.
fn data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escaping for a `key=value` property of a workflow command.
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(data("50%\nnext"), "50%25%0Anext");
        assert_eq!(property("a,b:c.png"), "a%2Cb%3Ac.png");
    }
}
