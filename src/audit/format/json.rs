//! `--format json`: the report document itself (schema 1), pretty-printed.

use crate::audit::Report;

pub fn render(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("the report always serialises");
    s.push('\n');
    s
}
