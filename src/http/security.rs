//! The server's guards: where it may bind, which `Host` headers it answers (DNS-rebinding defence), and
//! the bearer token on state-changing routes (`COMFYVN_API_TOKEN`, compared in constant time).
//!
//! Policy only: these functions look at addresses and header values and return a verdict; they do not
//! read the environment (the serve command passes the token in) and do not write responses.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;

use super::response::ApiError;
use crate::exit_code::hinted;

/// Refuse a non-loopback bind without a token: the API can emit hooks and (later) write assets.
pub fn check_bind(bind: &SocketAddr, token: Option<&str>) -> Result<()> {
    if bind.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(hinted(
        format!("refusing to listen on {bind}: it is not a loopback address and COMFYVN_API_TOKEN is not set"),
        "set COMFYVN_API_TOKEN to a long random value (clients send `Authorization: Bearer <token>`), \
         or bind to 127.0.0.1",
    ))
}

/// The verdicts for one server.
#[derive(Debug, Clone)]
pub struct Security {
    bind_ip: IpAddr,
    allowed_hosts: Vec<String>,
    /// SHA-256 of the token, so the comparison has a fixed length whatever the client sends.
    token_digest: Option<String>,
}

impl Security {
    pub fn new(bind: &SocketAddr, allowed_hosts: &[String], token: Option<&str>) -> Security {
        Security {
            bind_ip: bind.ip(),
            allowed_hosts: allowed_hosts.iter().map(|h| strip_port(h.trim()).to_ascii_lowercase()).collect(),
            token_digest: token.filter(|t| !t.is_empty()).map(|t| crate::digest::sha256_hex(t.as_bytes())),
        }
    }

    pub fn token_required(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Is a request with this `Host` header answered? A missing header (HTTP/1.0 tools) is allowed: a
    /// browser, the only client DNS rebinding can steer, always sends one.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), ApiError> {
        let Some(raw) = host else { return Ok(()) };
        let host = strip_port(raw.trim()).to_ascii_lowercase();
        if self.host_allowed(&host) {
            return Ok(());
        }
        Err(ApiError::forbidden(&format!("Host header {raw:?} is not allowed for this server"))
            .with_details(serde_json::json!({"host": raw, "hint": "add the name to obs.server.allowed_hosts"})))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let unspecified = self.bind_ip.is_unspecified();
        let bracketless = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bracketless.parse::<IpAddr>() {
            // An address literal cannot be a rebinding attack (the attacker's page would have to be
            // served from that very address); still, only answer addresses this server can be reached at.
            return unspecified || ip == self.bind_ip || (ip.is_loopback() && self.bind_ip.is_loopback());
        }
        if (host == "localhost" || host.ends_with(".localhost")) && (self.bind_ip.is_loopback() || unspecified) {
            return true;
        }
        self.allowed_hosts.iter().any(|allowed| {
            allowed == "*"
                || allowed == host
                || allowed.strip_prefix("*.").or_else(|| allowed.strip_prefix('.')).is_some_and(|suffix| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix)
                        && host[..host.len() - suffix.len()].ends_with('.')
                })
        })
    }

    /// Refuse a request a browser made on behalf of another site (cross-site request forgery, and
    /// cross-site WebSocket hijacking, which no CORS rule stops). Applied to state-changing routes and
    /// WebSocket upgrades; plain reads stay open (a link from elsewhere may open the dashboard, and
    /// another site's script cannot read an answer that carries no CORS header). Browsers mark such requests with an
    /// `Origin` that is not this server's, or `Sec-Fetch-Site: cross-site`/`same-site` (another port on
    /// the same host is another site's page too). Tools such as curl send neither and are answered.
    pub fn check_origin(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
        fetch_site: Option<&str>,
    ) -> Result<(), ApiError> {
        if let Some(site) = fetch_site.map(str::trim) {
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err(cross_origin(origin.unwrap_or(site)));
            }
        }
        let Some(origin) = origin.map(str::trim) else { return Ok(()) };
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        let same = match (authority, host) {
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h.trim()),
            // No Host to compare with (HTTP/1.0): the origin must at least be a name this server answers.
            (Some(a), None) => self.check_host(Some(a)).is_ok(),
            (None, _) => false, // "null" (sandboxed frames, file: pages) or another scheme
        };
        if same {
            Ok(())
        } else {
            Err(cross_origin(origin))
        }
    }

    /// The bearer-token check for state-changing routes: 401 without credentials, 403 with wrong ones.
    pub fn check_token(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.token_digest else { return Ok(()) };
        let presented = authorization.and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        let Some(presented) = presented else {
            return Err(ApiError::new(401, "this route needs `Authorization: Bearer <COMFYVN_API_TOKEN>`")
                .with_header("WWW-Authenticate", "Bearer realm=\"comfyvn-obs\""));
        };
        let got = crate::digest::sha256_hex(presented.as_bytes());
        if constant_time_eq(got.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::forbidden("the bearer token is not valid"))
        }
    }
}

fn cross_origin(origin: &str) -> ApiError {
    ApiError::forbidden("cross-origin request refused: the page that sent it is not served by this server")
        .with_details(
            serde_json::json!({"origin": origin, "hint": "call the API from its own dashboard, or without a browser"}),
        )
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`; a bare IPv6 address is kept whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map(|i| &host[..=i]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Compare without an early exit, so the time taken says nothing about where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(bind: &str, allowed: &[&str], token: Option<&str>) -> Security {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Security::new(&bind.parse().unwrap(), &allowed, token)
    }

    #[test]
    fn bind_policy() {
        assert!(check_bind(&"127.0.0.1:1".parse().unwrap(), None).is_ok());
        assert!(check_bind(&"[::1]:1".parse().unwrap(), None).is_ok());
        assert!(check_bind(&"0.0.0.0:1".parse().unwrap(), None).is_err());
        assert!(check_bind(&"0.0.0.0:1".parse().unwrap(), Some("")).is_err());
        assert!(check_bind(&"0.0.0.0:1".parse().unwrap(), Some("t")).is_ok());
    }

    #[test]
    fn host_header_rules() {
        let s = sec("127.0.0.1:8001", &["studio.example:9000", "*.lan"], None);
        for ok in [None, Some("127.0.0.1:8001"), Some("localhost:8001"), Some("LOCALHOST"), Some("[::1]:8001")] {
            assert!(s.check_host(ok).is_ok(), "{ok:?}");
        }
        for ok in [Some("studio.example"), Some("a.lan"), Some("x.y.lan:1")] {
            assert!(s.check_host(ok).is_ok(), "{ok:?}");
        }
        for bad in ["evil.example", "lan", "xlan", "10.0.0.5", "127.0.0.1.evil.example"] {
            let e = s.check_host(Some(bad)).unwrap_err();
            assert_eq!(e.status, 403, "{bad}");
        }
        let any = sec("0.0.0.0:8001", &[], Some("t"));
        assert!(any.check_host(Some("192.168.1.4:8001")).is_ok());
        assert!(any.check_host(Some("rebind.example")).is_err());
        assert!(sec("10.0.0.5:1", &[], Some("t")).check_host(Some("localhost")).is_err());
    }

    #[test]
    fn cross_origin_requests_are_refused() {
        let s = sec("127.0.0.1:8001", &[], None);
        let host = Some("127.0.0.1:8001");
        assert!(s.check_origin(None, host, None).is_ok(), "curl");
        assert!(s.check_origin(Some("http://127.0.0.1:8001"), host, Some("same-origin")).is_ok());
        assert!(s.check_origin(None, host, Some("none")).is_ok(), "typed into the address bar");
        for (origin, site) in [
            (Some("http://evil.example"), None),
            (Some("http://127.0.0.1:3000"), None),
            (Some("http://localhost:8001"), None),
            (Some("null"), None),
            (None, Some("cross-site")),
            (Some("http://127.0.0.1:8001"), Some("same-site")),
        ] {
            let e = s.check_origin(origin, host, site).unwrap_err();
            assert_eq!(e.status, 403, "{origin:?} {site:?}");
        }
        assert!(s.check_origin(Some("http://127.0.0.1:8001"), None, None).is_ok());
        assert!(s.check_origin(Some("http://evil.example"), None, None).is_err());
    }

    #[test]
    fn token_rules() {
        let open = sec("127.0.0.1:1", &[], None);
        assert!(open.check_token(None).is_ok());
        let s = sec("127.0.0.1:1", &[], Some("s3cret"));
        assert_eq!(s.check_token(None).unwrap_err().status, 401);
        assert_eq!(s.check_token(Some("Basic abc")).unwrap_err().status, 401);
        assert_eq!(s.check_token(Some("Bearer nope")).unwrap_err().status, 403);
        assert!(s.check_token(Some("Bearer s3cret")).is_ok());
        assert!(s.check_token(Some("bearer  s3cret ")).is_ok());
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"a", b"ab"));
    }
}
