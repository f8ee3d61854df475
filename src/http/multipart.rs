//! A streaming `multipart/form-data` reader (RFC 7578) for uploads: parts are read one at a time and
//! their bodies copied to any `Write` as they arrive, so a 256 MiB upload never sits in memory.
//!
//! Hand-written rather than a crate: the maintained parsers (`multer`) are async and tied to a runtime,
//! the synchronous `multipart` crate is unmaintained; what an upload needs is small (boundary search,
//! part headers, `Content-Disposition` parameters) and its failure modes (truncated bodies, oversized
//! headers) are easiest to pin down here. This module only parses: it opens no files and knows nothing
//! of assets or limits other than the ones passed in.

use std::io::{self, Read, Write};

/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Read size.
const CHUNK: usize = 64 * 1024;

/// Why a body could not be read as multipart.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// Not well-formed (missing boundary, bad part headers, body ended before the closing boundary).
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// A part was larger than the limit given for it.
    #[error("multipart part {name:?} is larger than {limit} bytes")]
    PartTooLarge { name: String, limit: u64 },
    /// Reading the body or writing a part failed (a client that went away, a full disk).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The headers of one part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// `Content-Disposition: form-data; name="…"`.
    pub name: String,
    /// The `filename` (or `filename*`) parameter, as sent.
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

/// The `boundary` parameter of a `multipart/form-data` content type; `None` when the type is another
/// one or the boundary is missing or invalid (RFC 2046: 1–70 characters).
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    for p in params {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
            return (!v.is_empty() && v.len() <= 70 && v.is_ascii()).then(|| v.to_string());
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Headers read; the body of the current part is next.
    InBody,
    /// The current part's body was consumed up to its delimiter; headers of the next part follow.
    AfterDelimiter,
    /// The closing delimiter was seen.
    Done,
}

/// A multipart body being read.
pub struct Multipart<R> {
    reader: R,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    /// What one read fills before it is appended to `buf`.
    scratch: Vec<u8>,
    start: usize,
    eof: bool,
    state: State,
    current: String,
}

impl<R: Read> Multipart<R> {
    pub fn new(reader: R, boundary: &str) -> Multipart<R> {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The first delimiter has no CRLF before it; a virtual one makes every delimiter look alike.
        Multipart {
            reader,
            delimiter,
            buf: b"\r\n".to_vec(),
            scratch: vec![0; CHUNK],
            start: 0,
            eof: false,
            state: State::Preamble,
            current: String::new(),
        }
    }

    /// Read more input into the buffer; false at the end of the body.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let n = loop {
            match self.reader.read(&mut self.scratch) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.buf.extend_from_slice(&self.scratch[..n]);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next part's headers, skipping whatever is left of the current part; `None` after the
    /// closing delimiter.
    pub fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        match self.state {
            State::Done => return Ok(None),
            State::Preamble | State::InBody => {
                self.copy_body(&mut io::sink(), u64::MAX)?;
                if self.state == State::Done {
                    return Ok(None);
                }
            }
            State::AfterDelimiter => {}
        }
        let part = self.read_headers()?;
        self.current = part.name.clone();
        self.state = State::InBody;
        Ok(Some(part))
    }

    /// Copy the current part's body into `out`, at most `limit` bytes; returns the byte count.
    pub fn read_body(&mut self, out: &mut dyn Write, limit: u64) -> Result<u64, MultipartError> {
        if self.state != State::InBody {
            return Ok(0);
        }
        self.copy_body(out, limit)
    }

    /// The current part's body as text (at most `limit` bytes); not UTF-8 is malformed.
    pub fn read_text(&mut self, limit: u64) -> Result<String, MultipartError> {
        let mut bytes = Vec::new();
        self.read_body(&mut bytes, limit)?;
        String::from_utf8(bytes)
            .map_err(|_| MultipartError::Malformed(format!("field {:?} is not UTF-8 text", self.current)))
    }

    /// Copy up to the next delimiter, then consume the delimiter and what follows it on its line.
    fn copy_body(&mut self, out: &mut dyn Write, limit: u64) -> Result<u64, MultipartError> {
        let mut written = 0u64;
        let dlen = self.delimiter.len();
        loop {
            let window = &self.buf[self.start..];
            if let Some(i) = find(window, &self.delimiter) {
                self.emit(out, i, &mut written, limit)?;
                self.start += dlen;
                self.after_delimiter()?;
                return Ok(written);
            }
            // Everything but a possible partial delimiter at the end is body.
            let safe = window.len().saturating_sub(dlen - 1);
            self.emit(out, safe, &mut written, limit)?;
            if !self.fill()? {
                return Err(MultipartError::Malformed("the body ended before the closing boundary".into()));
            }
        }
    }

    fn emit(&mut self, out: &mut dyn Write, n: usize, written: &mut u64, limit: u64) -> Result<(), MultipartError> {
        if n == 0 {
            return Ok(());
        }
        if self.state == State::InBody {
            if *written + n as u64 > limit {
                return Err(MultipartError::PartTooLarge { name: self.current.clone(), limit });
            }
            out.write_all(&self.buf[self.start..self.start + n])?;
            *written += n as u64;
        }
        self.start += n;
        Ok(())
    }

    /// After `\r\n--boundary`: `--` closes the body; otherwise optional whitespace and CRLF start the
    /// next part.
    fn after_delimiter(&mut self) -> Result<(), MultipartError> {
        loop {
            let rest = &self.buf[self.start..];
            if rest.starts_with(b"--") {
                self.state = State::Done;
                return Ok(());
            }
            let ws = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
            if rest.len() >= ws + 2 {
                if &rest[ws..ws + 2] == b"\r\n" {
                    self.start += ws + 2;
                    self.state = State::AfterDelimiter;
                    return Ok(());
                }
                return Err(MultipartError::Malformed("unexpected bytes after a boundary".into()));
            }
            if rest.len() > 256 {
                return Err(MultipartError::Malformed("unexpected bytes after a boundary".into()));
            }
            if !self.fill()? {
                return Err(MultipartError::Malformed("the body ended after a boundary".into()));
            }
        }
    }

    fn read_headers(&mut self) -> Result<Part, MultipartError> {
        let end = loop {
            let window = &self.buf[self.start..];
            // A part without headers starts with the blank line at once.
            if window.starts_with(b"\r\n") {
                break 0;
            }
            if let Some(i) = find(window, b"\r\n\r\n") {
                break i + 2;
            }
            if window.len() > MAX_PART_HEADERS {
                return Err(MultipartError::Malformed(format!("part headers longer than {MAX_PART_HEADERS} bytes")));
            }
            if !self.fill()? {
                return Err(MultipartError::Malformed("the body ended inside part headers".into()));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[self.start..self.start + end]).into_owned();
        self.start += end + 2;
        let mut part = Part::default();
        let mut disposition = false;
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(MultipartError::Malformed(format!("bad part header line {line:?}")));
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                disposition = true;
                parse_disposition(value, &mut part)?;
            } else if name.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_string());
            }
        }
        if !disposition || part.name.is_empty() {
            return Err(MultipartError::Malformed("a part has no Content-Disposition name".into()));
        }
        Ok(part)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|b| *b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// `form-data; name="file"; filename="hero.png"` (quoted strings with `\` escapes; `filename*` in
/// RFC 5987 form wins over `filename`).
fn parse_disposition(value: &str, part: &mut Part) -> Result<(), MultipartError> {
    let bad = || MultipartError::Malformed(format!("bad Content-Disposition {:?}", value.trim()));
    let mut chars = value.trim().chars().peekable();
    let kind: String = chars.by_ref().take_while(|c| *c != ';').collect();
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(bad());
    }
    let mut extended = None;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(bad());
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ';' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        match key.as_str() {
            "name" => part.name = val,
            "filename" => part.filename = Some(val),
            "filename*" => extended = decode_ext_value(&val),
            _ => {}
        }
    }
    if extended.is_some() {
        part.filename = extended;
    }
    Ok(())
}

/// `UTF-8''%E6%A1%9C.png` → `桜.png`; `None` for another charset or bad escapes.
fn decode_ext_value(v: &str) -> Option<String> {
    let mut it = v.splitn(3, '\'');
    let charset = it.next()?;
    let _lang = it.next()?;
    let encoded = it.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `n` bytes per read, to cross every buffer edge.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = b"preamble to ignore\r\n".to_vec();
        for (name, filename, data) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            match filename {
                Some(f) => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => b.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\nepilogue");
        b
    }

    fn all_parts(bytes: &[u8], step: usize) -> Result<Vec<(Part, Vec<u8>)>, MultipartError> {
        let mut m = Multipart::new(Trickle(bytes, step), "XyZ");
        let mut out = Vec::new();
        while let Some(p) = m.next_part()? {
            let mut data = Vec::new();
            m.read_body(&mut data, u64::MAX)?;
            out.push((p, data));
        }
        Ok(out)
    }

    #[test]
    fn boundary_from_the_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("application/json; boundary=abc"), None);
        assert_eq!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))), None);
    }

    #[test]
    fn parts_and_bodies_survive_any_read_size() {
        // Binary data that contains CRLFs and near-boundaries.
        let file: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).chain(*b"\r\n--XyW\r\n--Xy").collect();
        let bytes = body(&[("asset_type", None, b"image"), ("file", Some("hero.png"), &file), ("empty", None, b"")]);
        for step in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            let parts = all_parts(&bytes, step).unwrap();
            assert_eq!(parts.len(), 3, "step {step}");
            assert_eq!((parts[0].0.name.as_str(), parts[0].1.as_slice()), ("asset_type", &b"image"[..]));
            assert_eq!(parts[1].0.filename.as_deref(), Some("hero.png"));
            assert_eq!(parts[1].0.content_type.as_deref(), Some("application/octet-stream"));
            assert_eq!(parts[1].1, file, "step {step}");
            assert_eq!(parts[2].1, b"");
        }
    }

    #[test]
    fn unread_parts_are_skipped() {
        let bytes = body(&[("a", None, b"one"), ("b", None, b"two")]);
        let mut m = Multipart::new(&bytes[..], "XyZ");
        assert_eq!(m.next_part().unwrap().unwrap().name, "a");
        let b = m.next_part().unwrap().unwrap();
        assert_eq!(b.name, "b");
        assert_eq!(m.read_text(10).unwrap(), "two");
        assert!(m.next_part().unwrap().is_none());
        assert!(m.next_part().unwrap().is_none());
    }

    #[test]
    fn truncated_and_malformed_bodies_are_errors() {
        let bytes = body(&[("file", Some("a.bin"), &[1u8; 300])]);
        for cut in [0, 10, 30, 60, 120, 200, bytes.len() - 12] {
            let r = all_parts(&bytes[..cut], 5);
            assert!(matches!(r, Err(MultipartError::Malformed(_))), "cut at {cut}: {r:?}");
        }
        let no_name = b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--".to_vec();
        assert!(matches!(all_parts(&no_name, 100), Err(MultipartError::Malformed(_))));
        let no_disposition = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--".to_vec();
        assert!(matches!(all_parts(&no_disposition, 100), Err(MultipartError::Malformed(_))));
        let junk_after = b"--XyZjunk\r\n".to_vec();
        assert!(matches!(all_parts(&junk_after, 100), Err(MultipartError::Malformed(_))));
        let huge_headers = [b"--XyZ\r\nX: ".to_vec(), vec![b'a'; MAX_PART_HEADERS + 10]].concat();
        assert!(matches!(all_parts(&huge_headers, 4096), Err(MultipartError::Malformed(_))));
    }

    #[test]
    fn part_limits() {
        let bytes = body(&[("file", Some("a.bin"), &[9u8; 1000])]);
        let mut m = Multipart::new(&bytes[..], "XyZ");
        m.next_part().unwrap();
        let mut sink = Vec::new();
        let e = m.read_body(&mut sink, 999).unwrap_err();
        assert!(matches!(e, MultipartError::PartTooLarge { limit: 999, .. }), "{e:?}");
        let mut m = Multipart::new(&bytes[..], "XyZ");
        m.next_part().unwrap();
        assert_eq!(m.read_body(&mut io::sink(), 1000).unwrap(), 1000);
    }

    #[test]
    fn disposition_parameters() {
        let mut p = Part::default();
        parse_disposition(r#" form-data; name="file"; filename="a \"q\" b.png""#, &mut p).unwrap();
        assert_eq!((p.name.as_str(), p.filename.as_deref()), ("file", Some(r#"a "q" b.png"#)));
        let mut p = Part::default();
        parse_disposition("form-data; name=file; filename=\"x.png\"; filename*=UTF-8''%E6%A1%9C.png", &mut p).unwrap();
        assert_eq!(p.filename.as_deref(), Some("桜.png"));
        assert!(parse_disposition("attachment; name=\"x\"", &mut Part::default()).is_err());
        assert!(parse_disposition("form-data; name=\"unclosed", &mut Part::default()).is_err());
    }
}
