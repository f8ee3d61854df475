//! What a handler sees of a request: method, path, decoded path and query parameters, headers, and the
//! body through size- and content-type-checked readers (`json`, `json_opt`, `body_bytes`).
//!
//! Every failure here is already the right error envelope: 413 over the limit, 415 not JSON, 400
//! malformed JSON or query, 422 a well-formed body or parameter of the wrong shape (naming the field).
//! This module does not route and does not write responses.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::response::ApiError;
use super::router::Method;
use super::Shared;

/// The configured body limits (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub json: u64,
    pub upload: u64,
}

/// A request as handlers see it.
pub struct Req<'a> {
    pub method: Method,
    /// The path without query string, as sent (percent-encoded).
    pub path: String,
    pub request_id: String,
    pub remote: Option<SocketAddr>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// The underlying request; its body is read lazily so `Expect: 100-continue` is only answered
    /// when a handler wants the body.
    pub(crate) raw: &'a mut tiny_http::Request,
    pub(crate) declared_len: Option<u64>,
    pub(crate) limits: Limits,
    /// Bytes of the body read so far, and whether it was read to its end.
    pub(crate) consumed: u64,
    pub(crate) body_done: bool,
    pub(crate) shared: &'a Shared,
}

impl<'a> Req<'a> {
    /// A path parameter from the route template (decoded). Empty for a name not in the template.
    pub fn param(&self, name: &str) -> &str {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a query parameter, repeated (`?tag=a&tag=b`) or comma-separated (`?tag=a,b`),
    /// trimmed, empty items dropped.
    pub fn query_list(&self, name: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// An integer query parameter with a floor and a ceiling: `default` when absent or empty, raised
    /// to `floor` when below it (the original's history `limit`: below 1 means 1), and a 422 naming the
    /// parameter above `max` or when it is not an integer.
    pub fn query_int_floored(&self, name: &str, default: i64, floor: i64, max: i64) -> Result<i64, ApiError> {
        match self.query(name).map(str::trim) {
            None | Some("") => Ok(default.clamp(floor, max)),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n <= max => Ok(n.max(floor)),
                Ok(_) => Err(ApiError::validation(name, &format!("expected an integer up to {max}, found {raw:?}"))),
                // Below what an i64 holds is still below the floor.
                Err(e) if *e.kind() == std::num::IntErrorKind::NegOverflow => Ok(floor),
                Err(_) => Err(ApiError::validation(name, &format!("expected an integer, found {raw:?}"))),
            },
        }
    }

    /// An integer query parameter that must lie in `min..=max`: `default` when absent or empty; out of
    /// range or not an integer is a 422 naming the parameter (the original's `Query(ge=, le=)`).
    pub fn query_int_in(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.query(name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => {
                    Err(ApiError::validation(name, &format!("expected an integer from {min} to {max}, found {raw:?}")))
                }
            },
        }
    }

    /// A boolean query parameter: absent or empty is false; `1/true/yes/on` and `0/false/no/off`
    /// (any case); anything else is a 422 naming the parameter.
    pub fn query_bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.query(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(raw) => Err(ApiError::validation(name, &format!("expected true or false, found {raw:?}"))),
        }
    }

    /// An unsigned integer query parameter without clamping; absent → `None`.
    pub fn query_u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.query(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(raw) => raw
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::validation(name, &format!("expected a non-negative integer, found {raw:?}"))),
        }
    }

    /// A request header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lower-cased, without parameters (`application/json`).
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type").map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    }

    /// The body length the client declared (`Content-Length`), if any.
    pub fn declared_length(&self) -> Option<u64> {
        self.declared_len
    }

    /// The configured body limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The raw body stream, for handlers that stream (uploads). The caller enforces
    /// [`Limits::upload`]; whatever is left unread is discarded after the response.
    pub fn body_reader(&mut self) -> BodyReader<'_, 'a> {
        BodyReader { req: self }
    }

    /// The whole body, at most `limit` bytes (413 beyond).
    pub fn body_bytes(&mut self, limit: u64) -> Result<Vec<u8>, ApiError> {
        if self.declared_len.is_some_and(|n| n > limit) {
            return Err(ApiError::too_large(limit));
        }
        let mut buf = Vec::with_capacity(self.declared_len.unwrap_or(0).min(limit) as usize);
        let mut reader = self.body_reader().take(limit + 1);
        reader
            .read_to_end(&mut buf)
            .map_err(|e| ApiError::bad_request(&format!("cannot read the request body: {e}")).with_status(400))?;
        if buf.len() as u64 > limit {
            return Err(ApiError::too_large(limit));
        }
        Ok(buf)
    }

    /// The body parsed as JSON into `T`; an empty body is a 422 (`body` required).
    pub fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        match self.json_opt()? {
            Some(v) => Ok(v),
            None => Err(ApiError::validation("body", "a JSON body is required")),
        }
    }

    /// The body parsed as JSON into `T`, or `None` when there is no body at all.
    pub fn json_opt<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ApiError> {
        let ct = self.content_type();
        let bytes = self.body_bytes(self.limits.json)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match ct.as_deref() {
            Some(t) if is_json_media_type(t) => {}
            other => {
                return Err(ApiError::new(
                    415,
                    &format!("expected Content-Type: application/json, found {}", other.unwrap_or("none")),
                ))
            }
        }
        parse_json(&bytes).map(Some)
    }
}

/// Reads the body while counting, so the server knows what is left to discard.
pub struct BodyReader<'r, 'a> {
    req: &'r mut Req<'a>,
}

impl Read for BodyReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.req.body_done {
            return Ok(0);
        }
        let n = self.req.raw.as_reader().read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.req.body_done = true;
        }
        self.req.consumed += n as u64;
        Ok(n)
    }
}

fn is_json_media_type(t: &str) -> bool {
    t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
}

/// Parse a JSON object body into `T`: syntax errors are 400; a top level that is not an object, and
/// fields of the wrong shape, are 422 naming the field path (`body` for the top level).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(&format!("malformed JSON body at line {}, column {}: {e}", e.line(), e.column()))
    })?;
    if !value.is_object() {
        let kind = crate::config::kind(&value);
        return Err(ApiError::validation("body", &format!("expected a JSON object, found {kind}")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::validation(&field, &e.inner().to_string())
    })
}

/// Split and percent-decode a query string. `+` is a space. A value that is not UTF-8 after decoding
/// is a 400.
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k, true).ok_or_else(|| ApiError::bad_request("query string is not valid UTF-8"))?;
        let val = decode(v, true)
            .ok_or_else(|| ApiError::bad_request(&format!("query parameter {key:?} is not valid UTF-8")))?;
        out.push((key, val));
    }
    Ok(out)
}

/// Percent-decode; `plus_is_space` for query strings. Invalid escapes are kept as written; `None` when
/// the result is not UTF-8.
pub fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Request ids: the client's `X-Request-ID` when it is sane (1–128 of `A-Za-z0-9._:-`), else a fresh
/// one (a per-process random prefix plus a counter: unique, cheap, not secret).
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds { prefix: crate::digest::random_hex8(), counter: AtomicU64::new(0) }
    }
}

impl RequestIds {
    pub fn pick(&self, from_client: Option<&str>) -> String {
        match from_client.map(str::trim) {
            Some(id) if is_sane_id(id) => id.to_string(),
            _ => format!("{}{:08x}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed) + 1),
        }
    }
}

fn is_sane_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
}

/// The 422 `details` item for one field.
pub fn field_detail(field: &str, message: &str) -> Value {
    json!({"field": field, "message": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("limit=10&tag=a%20b&tag=c+d&flag&x=%zz&e=").unwrap();
        assert_eq!(
            q,
            [("limit", "10"), ("tag", "a b"), ("tag", "c d"), ("flag", ""), ("x", "%zz"), ("e", "")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(parse_query("a=%ff%fe").is_err());
        assert_eq!(decode("%41%4", false).unwrap(), "A%4");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("%E6%A1%9C", false).unwrap(), "桜");
    }

    #[test]
    fn request_ids_echo_sane_values_only() {
        let ids = RequestIds::default();
        assert_eq!(ids.pick(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        let fresh = ids.pick(Some("has space"));
        assert_eq!(fresh.len(), 16);
        assert_ne!(ids.pick(None), fresh);
        assert_ne!(ids.pick(Some(&"x".repeat(129))), "x".repeat(129));
        assert_ne!(ids.pick(Some("")), "");
    }

    #[test]
    fn json_errors_are_400_for_syntax_and_422_naming_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            event: Option<String>,
            payload: Option<serde_json::Map<String, Value>>,
        }
        let e = parse_json::<B>(b"{bad").unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_json::<B>(br#"{"payload": [1]}"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.code, "validation_error");
        assert_eq!(e.details.unwrap()[0]["field"], "payload");
        let e = parse_json::<B>(b"[1]").unwrap_err();
        assert_eq!(e.details.unwrap()[0]["field"], "body");
    }
}
