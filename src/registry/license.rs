//! License policy: SPDX license expressions (`MIT`, `MIT OR Apache-2.0`, `GPL-2.0+ WITH
//! Classpath-exception-2.0`) checked against `obs.audit.licenses` (`allow`, `deny`, `require`).
//!
//! Used by the audit rules and by the HTTP download guard, so both refuse the same licenses. Pure:
//! no files, no config loading.

use crate::config::LicensePolicy;

/// A parsed SPDX license expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A license id (`MIT`, `LicenseRef-studio`); `or_later` for a trailing `+`.
    Id {
        id: String,
        or_later: bool,
    },
    With(Box<Expr>, String),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// What the policy says about one license value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Why, naming the ids and the config key.
    Denied(String),
    /// Not an SPDX expression; the message says where it broke.
    Invalid(String),
}

/// `obs.audit.licenses`, with ids compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
    /// A missing license is an error rather than a warning.
    pub require: bool,
}

impl Policy {
    pub fn new(settings: &LicensePolicy) -> Policy {
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
        Policy { allow: lower(&settings.allow), deny: lower(&settings.deny), require: settings.require }
    }

    /// True when an allow or deny list is configured.
    pub fn is_active(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Judge a license expression. Without allow/deny lists every value is allowed (even a malformed
    /// one: syntax is only enforced where a policy needs to read the expression).
    pub fn check(&self, license: &str) -> Verdict {
        if !self.is_active() {
            return Verdict::Allowed;
        }
        let expr = match parse(license) {
            Ok(e) => e,
            Err(e) => return Verdict::Invalid(e),
        };
        match self.eval(&expr) {
            Ok(()) => Verdict::Allowed,
            Err(why) => Verdict::Denied(why),
        }
    }

    fn eval(&self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Id { id, .. } => {
                let key = id.to_ascii_lowercase();
                if self.deny.contains(&key) {
                    Err(format!("{id} is denied by obs.audit.licenses.deny"))
                } else if !self.allow.is_empty() && !self.allow.contains(&key) {
                    Err(format!("{id} is not in obs.audit.licenses.allow"))
                } else {
                    Ok(())
                }
            }
            Expr::With(inner, _) => self.eval(inner),
            Expr::And(a, b) => self.eval(a).and_then(|_| self.eval(b)),
            // The licensee may pick either side: allowed when one side is.
            Expr::Or(a, b) => match (self.eval(a), self.eval(b)) {
                (Ok(()), _) | (_, Ok(())) => Ok(()),
                (Err(x), Err(y)) => Err(format!("{x}, and {y}")),
            },
        }
    }
}

/// What the credits and the release gate know about a license id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub id: &'static str,
    /// The SPDX full name.
    pub name: &'static str,
    /// The terms require crediting the author (or keeping their notice) in what ships.
    pub attribution: bool,
}

/// The licenses game assets commonly carry. Ids missing here are shown by id only and are not
/// taken to require attribution.
pub const KNOWN: &[Known] = &[
    Known { id: "0BSD", name: "BSD Zero Clause License", attribution: false },
    Known { id: "AGPL-3.0-only", name: "GNU Affero General Public License v3.0 only", attribution: true },
    Known { id: "AGPL-3.0-or-later", name: "GNU Affero General Public License v3.0 or later", attribution: true },
    Known { id: "Apache-2.0", name: "Apache License 2.0", attribution: true },
    Known { id: "Artistic-2.0", name: "Artistic License 2.0", attribution: true },
    Known { id: "BSD-2-Clause", name: "BSD 2-Clause \"Simplified\" License", attribution: true },
    Known { id: "BSD-3-Clause", name: "BSD 3-Clause \"New\" or \"Revised\" License", attribution: true },
    Known { id: "BSL-1.0", name: "Boost Software License 1.0", attribution: false },
    Known { id: "CC-BY-3.0", name: "Creative Commons Attribution 3.0 Unported", attribution: true },
    Known { id: "CC-BY-4.0", name: "Creative Commons Attribution 4.0 International", attribution: true },
    Known { id: "CC-BY-NC-3.0", name: "Creative Commons Attribution Non Commercial 3.0 Unported", attribution: true },
    Known {
        id: "CC-BY-NC-4.0",
        name: "Creative Commons Attribution Non Commercial 4.0 International",
        attribution: true,
    },
    Known {
        id: "CC-BY-NC-ND-4.0",
        name: "Creative Commons Attribution Non Commercial No Derivatives 4.0 International",
        attribution: true,
    },
    Known {
        id: "CC-BY-NC-SA-4.0",
        name: "Creative Commons Attribution Non Commercial Share Alike 4.0 International",
        attribution: true,
    },
    Known {
        id: "CC-BY-ND-4.0",
        name: "Creative Commons Attribution No Derivatives 4.0 International",
        attribution: true,
    },
    Known { id: "CC-BY-SA-3.0", name: "Creative Commons Attribution Share Alike 3.0 Unported", attribution: true },
    Known { id: "CC-BY-SA-4.0", name: "Creative Commons Attribution Share Alike 4.0 International", attribution: true },
    Known { id: "CC0-1.0", name: "Creative Commons Zero v1.0 Universal", attribution: false },
    Known { id: "GPL-2.0-only", name: "GNU General Public License v2.0 only", attribution: true },
    Known { id: "GPL-2.0-or-later", name: "GNU General Public License v2.0 or later", attribution: true },
    Known { id: "GPL-3.0-only", name: "GNU General Public License v3.0 only", attribution: true },
    Known { id: "GPL-3.0-or-later", name: "GNU General Public License v3.0 or later", attribution: true },
    Known { id: "ISC", name: "ISC License", attribution: true },
    Known { id: "LGPL-2.1-only", name: "GNU Lesser General Public License v2.1 only", attribution: true },
    Known { id: "LGPL-3.0-only", name: "GNU Lesser General Public License v3.0 only", attribution: true },
    Known { id: "MIT", name: "MIT License", attribution: true },
    Known { id: "MPL-2.0", name: "Mozilla Public License 2.0", attribution: true },
    Known { id: "OFL-1.1", name: "SIL Open Font License 1.1", attribution: true },
    Known { id: "Unlicense", name: "The Unlicense", attribution: false },
    Known { id: "WTFPL", name: "Do What The F*ck You Want To Public License", attribution: false },
    Known { id: "Zlib", name: "zlib License", attribution: false },
];

/// The table entry of a license id (case-insensitive).
pub fn known(id: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.id.eq_ignore_ascii_case(id))
}

/// The full name of a license value for people: the SPDX name of a single known id, else the
/// value as written.
pub fn display_name(license: &str) -> String {
    match parse(license) {
        Ok(Expr::Id { id, or_later }) => match known(&id) {
            Some(k) if or_later => format!("{} or later", k.name),
            Some(k) => k.name.to_string(),
            None => license.trim().to_string(),
        },
        _ => license.trim().to_string(),
    }
}

/// True when shipping under `license` requires an attribution: some license of an `AND` does, or
/// every choice of an `OR` does. `None` for a value that is not an SPDX expression.
pub fn requires_attribution(license: &str) -> Option<bool> {
    fn eval(e: &Expr) -> bool {
        match e {
            Expr::Id { id, .. } => known(id).is_some_and(|k| k.attribution),
            Expr::With(inner, _) => eval(inner),
            Expr::And(a, b) => eval(a) || eval(b),
            Expr::Or(a, b) => eval(a) && eval(b),
        }
    }
    parse(license).ok().map(|e| eval(&e))
}

/// Parse an SPDX license expression (operators accepted in any case).
pub fn parse(s: &str) -> Result<Expr, String> {
    let tokens = tokenize(s)?;
    if tokens.is_empty() {
        return Err("empty license expression".into());
    }
    let mut p = Parser { tokens, pos: 0 };
    let e = p.or()?;
    if p.pos < p.tokens.len() {
        return Err(format!("unexpected {:?} in license expression {s:?}", p.tokens[p.pos]));
    }
    Ok(e)
}

fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':') => cur.push(c),
            other => return Err(format!("character {other:?} is not allowed in license expression {s:?}")),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        self.tokens.get(self.pos).is_some_and(|t| t.eq_ignore_ascii_case(op))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_op("OR") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.with()?;
        while self.peek_op("AND") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.with()?));
        }
        Ok(left)
    }

    fn with(&mut self) -> Result<Expr, String> {
        let inner = self.atom()?;
        if self.peek_op("WITH") {
            self.pos += 1;
            let exception = self.id()?;
            return Ok(Expr::With(Box::new(inner), exception));
        }
        Ok(inner)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.tokens.get(self.pos).map(String::as_str) {
            Some("(") => {
                self.pos += 1;
                let e = self.or()?;
                if self.tokens.get(self.pos).map(String::as_str) != Some(")") {
                    return Err("missing ')' in license expression".into());
                }
                self.pos += 1;
                Ok(e)
            }
            _ => {
                let id = self.id()?;
                match id.strip_suffix('+') {
                    Some(base) if !base.is_empty() => Ok(Expr::Id { id: base.to_string(), or_later: true }),
                    _ => Ok(Expr::Id { id, or_later: false }),
                }
            }
        }
    }

    fn id(&mut self) -> Result<String, String> {
        match self.tokens.get(self.pos) {
            Some(t)
                if !["(", ")"].contains(&t.as_str())
                    && !["AND", "OR", "WITH"].iter().any(|op| t.eq_ignore_ascii_case(op)) =>
            {
                self.pos += 1;
                Ok(t.clone())
            }
            Some(t) => Err(format!("expected a license id, found {t:?}")),
            None => Err("license expression ends where a license id was expected".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_follows_the_expression() {
        assert_eq!(requires_attribution("CC-BY-4.0"), Some(true));
        assert_eq!(requires_attribution("cc0-1.0"), Some(false));
        assert_eq!(requires_attribution("CC0-1.0 OR CC-BY-4.0"), Some(false), "the licensee may pick CC0");
        assert_eq!(requires_attribution("CC0-1.0 AND MIT"), Some(true));
        assert_eq!(requires_attribution("LicenseRef-studio"), Some(false));
        assert_eq!(requires_attribution("not (valid"), None);
        assert_eq!(display_name("CC-BY-4.0"), "Creative Commons Attribution 4.0 International");
        assert_eq!(display_name("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
        let mut ids: Vec<_> = KNOWN.iter().map(|k| k.id).collect();
        let sorted = {
            let mut v = ids.clone();
            v.sort_by_key(|i| i.to_ascii_lowercase());
            v
        };
        assert_eq!(ids, sorted, "kept in id order");
        ids.dedup();
        assert_eq!(ids.len(), KNOWN.len());
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::new(&LicensePolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            require: false,
        })
    }

    #[test]
    fn parses_spdx_expressions() {
        assert_eq!(parse("MIT").unwrap(), Expr::Id { id: "MIT".into(), or_later: false });
        assert!(matches!(parse("MIT OR (Apache-2.0 AND CC0-1.0)").unwrap(), Expr::Or(..)));
        assert!(matches!(parse("GPL-2.0+ WITH Classpath-exception-2.0").unwrap(), Expr::With(..)));
        assert!(parse("MIT OR").is_err());
        assert!(parse("(MIT").is_err());
        assert!(parse("MIT/Apache").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn allow_and_deny() {
        let p = policy(&["MIT", "cc-by-4.0"], &["GPL-3.0-only"]);
        assert_eq!(p.check("mit"), Verdict::Allowed);
        assert_eq!(p.check("CC-BY-4.0 AND MIT"), Verdict::Allowed);
        assert_eq!(p.check("GPL-3.0-only OR MIT"), Verdict::Allowed);
        assert_eq!(p.check("Proprietary"), Verdict::Denied("Proprietary is not in obs.audit.licenses.allow".into()));
        assert_eq!(
            p.check("GPL-3.0-only"),
            Verdict::Denied("GPL-3.0-only is denied by obs.audit.licenses.deny".into())
        );
        assert!(matches!(p.check("MIT OR"), Verdict::Invalid(_)));
        let deny_only = policy(&[], &["CC-BY-NC-4.0"]);
        assert_eq!(deny_only.check("anything-else"), Verdict::Allowed);
        assert!(matches!(deny_only.check("MIT AND CC-BY-NC-4.0"), Verdict::Denied(_)));
        assert_eq!(policy(&[], &[]).check("not spdx at all!"), Verdict::Allowed);
    }
}
