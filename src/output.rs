//! stdout is for data: command output goes through here, and a closed pipe (`| head`) ends the
//! command quietly instead of panicking.

use std::io::{self, Write};

use serde::Serialize;

/// The error a write to a closed stdout produces; `main` treats it as success.
#[derive(Debug)]
pub struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken pipe")
    }
}
impl std::error::Error for BrokenPipe {}

fn map(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(BrokenPipe)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Write text to stdout as is.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(map)
}

/// Stream to stdout through a buffer: for output too large to build as one string first (an audit
/// report of 300,000 findings is tens of MB).
pub fn print_with(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    write(&mut out).and_then(|_| out.flush()).map_err(map)
}

/// Write one line to stdout.
pub fn println(line: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).map_err(map)
}

/// Pretty JSON to stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println(&text)
}

/// One compact JSON line to stdout.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    println(&text)
}
