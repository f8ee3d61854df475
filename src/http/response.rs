//! What handlers return: a [`Reply`] (JSON, bytes, a file, or a hand-off of the connection for
//! streams) or an [`ApiError`], which always becomes the error envelope
//! `{"ok": false, "code", "message", "details"?, "request_id"}`.
//!
//! Turning these into tiny_http responses happens here and nowhere else; handlers never build headers
//! like `X-Request-ID` or `Content-Length` themselves.

use std::fs::File;
use std::io::{Cursor, Read};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::request::field_detail;
use super::{AppState, Shared};

/// A connection hand-off: the stream routes take the raw request and run on their own thread.
pub(crate) type Takeover = Box<dyn FnOnce(tiny_http::Request, Arc<Shared>, Arc<AppState>, String) + Send>;

pub(crate) enum Body {
    Bytes { data: Vec<u8>, content_type: String },
    File { file: File, len: u64, content_type: String },
    Empty,
    Takeover(Takeover),
}

/// A successful answer.
pub struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Body,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        Reply::json_status(200, value)
    }

    /// `status` with a JSON body.
    pub fn json_status<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(data) => Reply::bytes("application/json", data).with_status(status),
            // Only non-string map keys fail to serialize; say so instead of sending half a document.
            Err(e) => {
                Reply::bytes("application/json", envelope_bytes(500, "internal_error", &e.to_string())).with_status(500)
            }
        }
    }

    /// 200 with raw bytes.
    pub fn bytes(content_type: &str, data: Vec<u8>) -> Reply {
        Reply { status: 200, headers: Vec::new(), body: Body::Bytes { data, content_type: content_type.to_string() } }
    }

    /// 200 streaming `len` bytes of an open file (downloads).
    pub fn file(file: File, len: u64, content_type: &str) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: Body::File { file, len, content_type: content_type.to_string() },
        }
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Body::Empty }
    }

    /// Hand the connection to `f`, which answers with `status` itself (200 for SSE, 101 WebSocket).
    pub(crate) fn takeover(status: u16, f: Takeover) -> Reply {
        Reply { status, headers: Vec::new(), body: Body::Takeover(f) }
    }

    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Add a header (e.g. `Content-Disposition`).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub(crate) fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes { data, .. } => data.len() as u64,
            Body::File { len, .. } => *len,
            Body::Empty | Body::Takeover(_) => 0,
        }
    }

    /// The tiny_http response, with `X-Request-ID` and the content headers.
    pub(crate) fn into_response(self, request_id: &str) -> tiny_http::Response<Box<dyn Read + Send>> {
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        let (reader, len, ct): (Box<dyn Read + Send>, usize, Option<String>) = match self.body {
            Body::Bytes { data, content_type } => {
                let n = data.len();
                (Box::new(Cursor::new(data)), n, Some(content_type))
            }
            Body::File { file, len, content_type } => {
                (Box::new(file.take(len)), usize::try_from(len).unwrap_or(usize::MAX), Some(content_type))
            }
            Body::Empty | Body::Takeover(_) => (Box::new(std::io::empty()), 0, None),
        };
        if let Some(ct) = ct {
            push_header(&mut headers, "Content-Type", &ct);
        }
        push_header(&mut headers, "X-Request-ID", request_id);
        for (k, v) in &self.headers {
            push_header(&mut headers, k, v);
        }
        // The length is always known: send Content-Length rather than tiny_http's default of chunking
        // bodies over 32 KiB (downloads keep their size and clients their progress).
        tiny_http::Response::new(tiny_http::StatusCode(self.status), headers, reader, Some(len), None)
            .with_chunked_threshold(usize::MAX)
    }
}

/// An answer tiny_http gives on its own, before a request reaches the router (see
/// `tiny_http::AcceptHooks::refusal`), as the error envelope with its `X-Request-ID`.
pub(crate) fn refusal(status: u16, request_id: &str) -> tiny_http::Response<Cursor<Vec<u8>>> {
    let message = match status {
        400 => "the request line or a header cannot be read (they must be ASCII text)",
        408 => "no complete request within obs.server.io_timeout_ms",
        417 => "the Expect header is not supported",
        505 => "only HTTP/1.0 and HTTP/1.1 are supported",
        _ => "the request was refused",
    };
    let body = serde_json::to_vec(&ApiError::new(status, message).envelope(request_id)).unwrap_or_default();
    let mut headers = Vec::with_capacity(2);
    push_header(&mut headers, "Content-Type", "application/json");
    push_header(&mut headers, "X-Request-ID", request_id);
    let len = body.len();
    tiny_http::Response::new(tiny_http::StatusCode(status), headers, Cursor::new(body), Some(len), None)
}

/// Add a header, skipping values tiny_http cannot carry (non-ASCII); handlers build these from data.
pub(crate) fn push_header(headers: &mut Vec<tiny_http::Header>, name: &str, value: &str) {
    if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        headers.push(h);
    }
}

/// An error answer; becomes the error envelope.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    /// `http_<status>`, `validation_error` or `internal_error`.
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
    pub(crate) headers: Vec<(String, String)>,
    /// The underlying failure of a 500, logged with the error id (never sent to the client).
    pub(crate) source: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with status `status` and code `http_<status>`.
    pub fn new(status: u16, message: &str) -> ApiError {
        ApiError {
            status,
            code: format!("http_{status}"),
            message: message.to_string(),
            details: None,
            headers: Vec::new(),
            source: None,
        }
    }

    pub fn bad_request(message: &str) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn not_found(message: &str) -> ApiError {
        ApiError::new(404, message)
    }

    pub fn forbidden(message: &str) -> ApiError {
        ApiError::new(403, message)
    }

    /// 422 `validation_error` naming one field.
    pub fn validation(field: &str, message: &str) -> ApiError {
        ApiError::validation_many(&[(field, message)])
    }

    /// 422 `validation_error` naming several fields.
    pub fn validation_many(fields: &[(&str, &str)]) -> ApiError {
        let details: Vec<Value> = fields.iter().map(|(f, m)| field_detail(f, m)).collect();
        let message = match fields {
            [(f, m)] => format!("{f}: {m}"),
            _ => format!("{} fields are invalid", fields.len()),
        };
        ApiError {
            code: "validation_error".into(),
            details: Some(Value::Array(details)),
            ..ApiError::new(422, &message)
        }
    }

    /// 413 for a body over `limit` bytes.
    pub fn too_large(limit: u64) -> ApiError {
        ApiError::new(413, &format!("request body is larger than the limit of {limit} bytes"))
            .with_details(json!({"limit_bytes": limit}))
    }

    /// 500 `internal_error`; the cause is logged with the error id, not sent.
    /// A handler's failure. A full disk is 507 `insufficient_storage`, a read-only or refused folder
    /// 503 `storage_unavailable` (with `Retry-After`), both saying which file; anything else is an
    /// opaque 500 `internal_error` (the cause goes to the log).
    pub fn internal(err: anyhow::Error) -> ApiError {
        let os = err.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).and_then(std::io::Error::raw_os_error);
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        const EROFS: i32 = 30;
        const EACCES: i32 = 13;
        const EPERM: i32 = 1;
        let (status, code, what) = match os {
            Some(ENOSPC | EDQUOT) => (507, "insufficient_storage", "no space left on the server's disk"),
            Some(EROFS | EACCES | EPERM) => (503, "storage_unavailable", "the server cannot write its files"),
            _ => {
                return ApiError {
                    code: "internal_error".into(),
                    source: Some(err),
                    ..ApiError::new(500, "internal server error")
                }
            }
        };
        let message = format!("{what}: {err:#}");
        let mut e = ApiError { code: code.into(), source: Some(err), ..ApiError::new(status, &message) };
        if status == 503 {
            e = e.with_header("Retry-After", "30");
        }
        e
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_status(mut self, status: u16) -> ApiError {
        if self.code.starts_with("http_") {
            self.code = format!("http_{status}");
        }
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> ApiError {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The envelope, keys in the documented order.
    pub fn envelope(&self, request_id: &str) -> Value {
        let mut v = json!({"ok": false, "code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v["request_id"] = Value::String(request_id.to_string());
        v
    }

    pub(crate) fn into_reply(self, request_id: &str) -> Reply {
        let mut reply = Reply::json_status(self.status, &self.envelope(request_id));
        reply.headers = self.headers;
        reply
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> ApiError {
        ApiError::internal(err)
    }
}

fn envelope_bytes(status: u16, code: &str, message: &str) -> Vec<u8> {
    let _ = status;
    serde_json::to_vec(&json!({"ok": false, "code": code, "message": message})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keys_are_in_order() {
        let e = ApiError::validation("limit", "expected an integer");
        let v = e.envelope("rid");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["ok", "code", "message", "details", "request_id"]);
        assert_eq!(v["details"][0]["field"], "limit");
        let v = ApiError::not_found("x").envelope("r");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["ok", "code", "message", "request_id"]);
        assert_eq!(v["code"], "http_404");
        assert_eq!(ApiError::bad_request("x").with_status(409).code, "http_409");
    }
}
