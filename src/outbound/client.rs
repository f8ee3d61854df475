//! Outbound HTTP requests (webhook deliveries, crash uploads, OTLP export, provider probes): the only
//! module that imports `ureq`.
//!
//! It turns every answer, including "no answer", into a plain [`Reply`] value: non-2xx statuses are
//! answers, not errors, and transport failures carry a short human error string. It never retries and
//! never logs; callers decide what a reply means ([`super::Verdict`]). It must not know about hooks or providers.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// What came back from one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// Transport error (connection refused, timeout, bad URL …) when there was no answer.
    pub error: Option<String>,
    /// The raw `Retry-After` header value, when present.
    pub retry_after: Option<String>,
    /// The raw `X-Sentry-Rate-Limits` header value, when present (Sentry-compatible servers).
    pub rate_limits: Option<String>,
    /// The response body, up to the caller's limit (empty when not asked for).
    pub body: Vec<u8>,
    /// Wall time from sending to the end of the answer (or the failure).
    pub latency: Duration,
}

impl Reply {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// One line for logs and listings: `http 503` or the transport error.
    pub fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("http {s}"),
            (None, None) => "no answer".into(),
        }
    }
}

/// A connection-pooling client with one overall timeout per request. Cheap to clone and share
/// between threads.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl Client {
    /// `idle_per_host` connections are kept alive per host so parallel requests reuse them.
    pub fn new(timeout: Duration, idle_per_host: usize) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(idle_per_host.max(1) * 16)
            .max_idle_connections_per_host(idle_per_host.max(1))
            .user_agent(concat!("comfyvn-obs/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            LiteralFirst::default(),
        );
        Client { agent }
    }

    /// POST `body` with `headers`; the answer's body is read (up to 64 KiB) and dropped so the
    /// connection can be reused.
    pub fn post(&self, url: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
        let started = Instant::now();
        let mut req = self.agent.post(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        finish(started, req.send(body), 64 * 1024, false)
    }

    /// POST `body` with `headers`, keeping up to `body_limit` bytes of the answer (for APIs that
    /// answer with an id).
    pub fn post_keep_body(&self, url: &str, headers: &[(&str, String)], body: &[u8], body_limit: u64) -> Reply {
        let started = Instant::now();
        let mut req = self.agent.post(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        finish(started, req.send(body), body_limit, true)
    }

    /// GET `url`, keeping up to `body_limit` bytes of the answer.
    pub fn get(&self, url: &str, body_limit: u64) -> Reply {
        let started = Instant::now();
        finish(started, self.agent.get(url).header("Accept", "application/json").call(), body_limit, true)
    }
}

/// ureq resolves the host on every request, on a fresh thread whenever a timeout is set, even for
/// an IP literal: at thousands of deliveries a second that thread is most of the cost. IP literals
/// and `localhost` are resolved here without a thread; other names go to ureq's resolver.
#[derive(Debug, Default)]
struct LiteralFirst {
    fallback: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            let addrs: Vec<std::net::SocketAddr> = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                vec![std::net::SocketAddr::new(ip, port)]
            } else if host.eq_ignore_ascii_case("localhost") {
                std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map(Iterator::collect).unwrap_or_default()
            } else {
                Vec::new()
            };
            if !addrs.is_empty() {
                // 16 is the capacity of ureq's ResolvedSocketAddrs.
                let mut out = self.empty();
                for a in addrs.into_iter().take(16) {
                    out.push(a);
                }
                return Ok(out);
            }
        }
        self.fallback.resolve(uri, config, timeout)
    }
}

fn finish(
    started: Instant,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    limit: u64,
    keep_body: bool,
) -> Reply {
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let header =
                |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
            let retry_after = header("retry-after");
            let rate_limits = header("x-sentry-rate-limits");
            // Reading the body to its end returns the connection to the pool; a body over the limit
            // is cut (the status already says what we need).
            let body = resp.body_mut().with_config().limit(limit).read_to_vec().unwrap_or_default();
            Reply {
                status: Some(status),
                error: None,
                retry_after,
                rate_limits,
                body: if keep_body { body } else { Vec::new() },
                latency: started.elapsed(),
            }
        }
        Err(e) => Reply { error: Some(describe_error(&e)), latency: started.elapsed(), ..Reply::default() },
    }
}

fn describe_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timeout".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// Accept only absolute `http://` and `https://` URLs with a host.
pub fn check_url(url: &str) -> Result<()> {
    let uri: ureq::http::Uri = match url.trim().parse() {
        Ok(u) if url.trim() == url => u,
        _ => bail!("{url:?} is not a valid URL"),
    };
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") | Some("https") => {}
        Some(other) => bail!("{url:?}: only http and https URLs are supported, not {other}"),
        None => bail!("{url:?}: expected an absolute http:// or https:// URL"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("{url:?}: the URL has no host");
    }
    // `Uri` takes any text after the host's last `:` as the port and only fails to read it later.
    let host_port = uri.authority().map(|a| a.as_str().rsplit('@').next().unwrap_or_default()).unwrap_or_default();
    if host_port.rsplit(']').next().unwrap_or_default().contains(':') && uri.port_u16().is_none() {
        bail!("{url:?}: the port is not a number from 0 to 65535");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("HTTPS://example.com").is_ok());
        assert!(check_url("http://[::1]:8080/h").is_ok() && check_url("http://u:p@h/").is_ok());
        for bad in [
            "ftp://x/y",
            "file:///etc/passwd",
            "example.com/hook",
            "",
            "http://",
            " http://x",
            "javascript:1",
            "http://h:3*",
        ] {
            assert!(check_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_closed_port_is_an_error_reply_not_a_panic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = Client::new(Duration::from_millis(500), 1).get(&format!("http://127.0.0.1:{port}/"), 1024);
        assert!(r.status.is_none() && !r.is_success());
        assert!(r.error.is_some(), "{r:?}");
    }
}
