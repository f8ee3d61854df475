//! The [`Sink`] trait: how one protocol sends a message or batch (URL, headers, body encoding) and
//! reads the answer; [`send`] runs one attempt through the shared [`Client`]. The only home of
//! `flate2` (request-body compression).
//!
//! Sinks: `hooks::webhook::WebhookSink` (Standard Webhooks signatures), `crash_upload::SentrySink`
//! (envelopes with `X-Sentry-Auth`, `X-Sentry-Rate-Limits` honoured) and `otlp::OtlpSink`
//! (protobuf, optional gzip, the OTLP retry rules).

use std::borrow::Cow;
use std::io::Write;

use anyhow::{bail, Result};

use super::client::{Client, Reply};
use super::retry::Verdict;

/// Request-body compression a sink may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    /// `gzip` or `none` (an empty value is `none`), as `OTEL_EXPORTER_OTLP_COMPRESSION` spells them.
    pub fn parse(value: &str) -> Result<Compression> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => bail!("{other:?} is not a supported compression (expected gzip or none)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }

    /// The body as sent, and the `Content-Encoding` header it needs.
    pub fn apply(self, body: &[u8]) -> (Cow<'_, [u8]>, Option<(&'static str, String)>) {
        match self {
            Compression::None => (Cow::Borrowed(body), None),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
                // Writing to a Vec cannot fail.
                let bytes = enc.write_all(body).and_then(|()| enc.finish()).unwrap_or_default();
                (Cow::Owned(bytes), Some(("Content-Encoding", "gzip".to_string())))
            }
        }
    }
}

/// One request, ready for the client.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Cow<'a, [u8]>,
}

/// One destination protocol.
pub trait Sink {
    /// The request carrying `body`; `message_id` is the id every attempt of this message shares
    /// (receivers de-duplicate on it).
    fn request<'a>(&'a self, message_id: &str, body: &'a [u8]) -> Request<'a>;

    /// What an answer means for this protocol (the common reading unless the protocol says otherwise).
    fn judge(&self, reply: &Reply) -> Verdict {
        Verdict::of(reply)
    }

    /// How many bytes of the answer to keep, for protocols whose answer carries an id (0: none).
    fn answer_limit(&self) -> u64 {
        0
    }
}

/// One attempt's answer and what it means.
#[derive(Debug)]
pub struct Attempt {
    pub reply: Reply,
    pub verdict: Verdict,
}

/// Send `body` once through `sink`.
pub fn send(client: &Client, sink: &dyn Sink, message_id: &str, body: &[u8]) -> Attempt {
    let req = sink.request(message_id, body);
    let reply = match sink.answer_limit() {
        0 => client.post(req.url, &req.headers, &req.body),
        limit => client.post_keep_body(req.url, &req.headers, &req.body, limit),
    };
    let verdict = sink.judge(&reply);
    Attempt { reply, verdict }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzip_round_trips_and_names_its_encoding() {
        let body = b"comfyvn ".repeat(1000);
        let (sent, header) = Compression::Gzip.apply(&body);
        assert_eq!(header, Some(("Content-Encoding", "gzip".to_string())));
        assert!(sent.len() < body.len() / 10, "{} bytes", sent.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, body);
        let (plain, none) = Compression::None.apply(&body);
        assert!(none.is_none() && plain[..] == body[..]);
    }

    #[test]
    fn compression_names_follow_the_otel_spelling() {
        assert_eq!(Compression::parse("GZIP").unwrap(), Compression::Gzip);
        assert_eq!(Compression::parse("").unwrap(), Compression::None);
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        let err = Compression::parse("zstd").unwrap_err().to_string();
        assert!(err.contains("zstd") && err.contains("gzip"), "{err}");
    }
}
