//! Time formats used on disk and on the wire, and a clock that tests can set.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the epoch that replace the real clock while non-zero (tests only).
static FIXED_MS: AtomicI64 = AtomicI64::new(0);

/// The current UTC time (or the fixed test time).
pub fn now() -> DateTime<Utc> {
    let fixed = FIXED_MS.load(Ordering::Relaxed);
    if fixed != 0 {
        return DateTime::from_timestamp_millis(fixed).unwrap_or_else(Utc::now);
    }
    Utc::now()
}

/// Pin the clock to `t` (`None` restores the real clock). Process-wide: for tests.
pub fn set_fixed(t: Option<DateTime<Utc>>) {
    FIXED_MS.store(t.map(|t| t.timestamp_millis()).unwrap_or(0), Ordering::Relaxed);
}

/// `2026-11-28T03:33:07.123456Z`: UTC ISO-8601 with `Z`, as stored in every JSON document.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`iso`] of [`now`].
pub fn iso_now() -> String {
    iso(now())
}

/// `20261128_033307`: the stamp in file and folder names.
pub fn file_stamp() -> String {
    now().format("%Y%m%d_%H%M%S").to_string()
}

/// Seconds since the epoch as a float (the hook envelope's `ts`).
pub fn epoch_secs() -> f64 {
    let t = now();
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T03:33:07.5Z").unwrap().with_timezone(&Utc);
        assert_eq!(iso(t), "2026-11-28T03:33:07.500000Z");
        assert_eq!(t.format("%Y%m%d_%H%M%S").to_string(), "20261128_033307");
    }
}
