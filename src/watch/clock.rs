//! The watcher's notion of time: a monotonic clock behind a trait, so the settle window, the removal
//! grace and the recently-removed memory can be tested from small data cases without sleeping.
//! Times are durations since the clock's own start; nothing here is wall-clock time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync {
    /// Time since this clock started.
    fn now(&self) -> Duration;

    /// The clock's time of an `Instant` taken by someone else (an event's timestamp); never later
    /// than [`Clock::now`]. Clocks that are not the real one say "now".
    fn at(&self, _t: Instant) -> Duration {
        self.now()
    }
}

/// The real monotonic clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock { start: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start).min(self.now())
    }
}

/// A clock that only moves when told to (tests). Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    ms: Arc<AtomicU64>,
}

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock::default()
    }

    pub fn advance(&self, d: Duration) {
        self.ms.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.ms.load(Ordering::SeqCst))
    }
}
