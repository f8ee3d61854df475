//! The progress line of long audits: on stderr, only when stderr is a terminal and not in CI (the
//! `CI` environment variable), and only once the work has taken about a second. Never on stdout,
//! never on a pipe. Redrawn in place (`\r`) and erased when the work ends.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audit::walk::Progress;

/// Silence before the first draw: short audits print nothing.
const DELAY: Duration = Duration::from_millis(1000);
const EVERY: Duration = Duration::from_millis(250);

/// A running progress line; dropping it stops and erases it.
pub struct Line {
    counters: Arc<Progress>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Line {
    /// A progress line when stderr is a terminal and `CI` is not set; `None` otherwise.
    pub fn start_if_terminal(label: &'static str) -> Option<Line> {
        if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
            return None;
        }
        let counters = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw_until_stopped(label, &c, &s))
            .ok()?;
        Some(Line { counters, stop, thread: Some(thread) })
    }

    pub fn counters(&self) -> Arc<Progress> {
        self.counters.clone()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn draw_until_stopped(label: &str, c: &Progress, stop: &AtomicBool) {
    let started = Instant::now();
    std::thread::park_timeout(DELAY);
    let mut drawn = false;
    while !stop.load(Ordering::Relaxed) {
        let text = render(
            label,
            c.checked.load(Ordering::Relaxed),
            c.listed.load(Ordering::Relaxed),
            c.walked.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
            started.elapsed(),
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{text}\x1b[K");
        let _ = err.flush();
        drawn = true;
        drop(err);
        std::thread::park_timeout(EVERY);
    }
    if drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

/// `audit: 41,200 of 100,000 files, 312.4 MB/s` (`of 38,000+` while the walk is still listing).
pub fn render(label: &str, checked: u64, listed: u64, walked: bool, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let more = if walked { "" } else { "+" };
    format!(
        "{label}: {} of {}{more} files, {:.1} MB/s",
        thousands(checked),
        thousands(listed),
        bytes as f64 / 1e6 / secs
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_files_out_of_total_and_speed() {
        let d = Duration::from_secs(2);
        assert_eq!(
            render("audit", 41_200, 100_000, true, 600_000_000, d),
            "audit: 41,200 of 100,000 files, 300.0 MB/s"
        );
        assert_eq!(render("audit", 5, 999, false, 0, d), "audit: 5 of 999+ files, 0.0 MB/s");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
