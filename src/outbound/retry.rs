//! The retry policy every sink shares: what an answer means ([`Verdict`]), the backoff schedule
//! with jitter ([`next_delay`]), and `Retry-After` ([`parse_retry_after`]).

use std::time::Duration;

use super::client::Reply;

/// What one answer means for the message (or batch) that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the destination has it.
    Accepted,
    /// No answer, or an answer saying the destination is down or overloaded (a 5xx, 408, 429):
    /// not this message's fault. Hold everything bound there back and probe on the schedule;
    /// `retry_after` is the server's lower bound.
    Unavailable { retry_after: Option<Duration> },
    /// The server asked for a pause of exactly this long (a rate limit). Not the message's fault,
    /// so its attempt count stays.
    Paused(Duration),
    /// The destination answered and refused this message: retried alone on the schedule where the
    /// protocol allows, then given up.
    Refused { retry_after: Option<Duration> },
}

impl Verdict {
    /// The common reading of an answer: 2xx accepted; no answer, 5xx, 408 and 429 unavailable; any
    /// other status refused. Sinks narrow or widen it ([`super::Sink::judge`]).
    pub fn of(reply: &Reply) -> Verdict {
        if reply.is_success() {
            return Verdict::Accepted;
        }
        let retry_after = retry_after_of(reply);
        if receiver_unavailable(reply) {
            Verdict::Unavailable { retry_after }
        } else {
            Verdict::Refused { retry_after }
        }
    }
}

/// The answer's `Retry-After`, read now.
pub fn retry_after_of(reply: &Reply) -> Option<Duration> {
    reply.retry_after.as_deref().and_then(|v| parse_retry_after(v, chrono::Utc::now()))
}

/// Delay before the next attempt after `attempts` failures, `None` when the schedule is exhausted.
/// The schedule's entry gets ±20 % jitter; a `Retry-After` answer is a lower bound.
/// `repeat_last`: past the schedule, wait its last interval again instead of giving up.
pub fn next_delay(
    schedule: &[u64],
    attempts: u32,
    retry_after: Option<Duration>,
    repeat_last: bool,
) -> Option<Duration> {
    let i = (attempts as usize).checked_sub(1)?;
    let base = match schedule.get(i) {
        Some(&b) => b,
        None if repeat_last => *schedule.last()?,
        None => return None,
    };
    let r = u16::from_le_bytes(crate::digest::random_bytes::<2>());
    let factor = 0.8 + 0.4 * f64::from(r) / f64::from(u16::MAX);
    let delay = Duration::from_millis((base as f64 * factor) as u64);
    Some(retry_after.map_or(delay, |ra| ra.max(delay)))
}

/// Whether a failed attempt says the receiver is down or overloaded rather than refusing the message:
/// no answer at all (refused, reset, timeout), a 5xx, 408 or 429.
pub fn receiver_unavailable(reply: &Reply) -> bool {
    match reply.status {
        None => true,
        Some(s) => s >= 500 || s == 408 || s == 429,
    }
}

/// `Retry-After`: delay seconds or an HTTP date (capped at one day).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(86_400);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (at.with_timezone(&chrono::Utc) - now).num_milliseconds().max(0);
    Some(Duration::from_millis(ms as u64).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: Option<u16>, retry_after: Option<&str>) -> Reply {
        Reply { status, retry_after: retry_after.map(str::to_string), ..Reply::default() }
    }

    #[test]
    fn the_common_verdict_tells_down_from_refused() {
        assert_eq!(Verdict::of(&reply(Some(204), None)), Verdict::Accepted);
        for down in [None, Some(500), Some(503), Some(408), Some(429)] {
            assert!(matches!(Verdict::of(&reply(down, None)), Verdict::Unavailable { .. }), "{down:?}");
        }
        for refused in [Some(400), Some(401), Some(404), Some(413)] {
            assert!(matches!(Verdict::of(&reply(refused, None)), Verdict::Refused { .. }), "{refused:?}");
        }
        assert_eq!(
            Verdict::of(&reply(Some(429), Some("7"))),
            Verdict::Unavailable { retry_after: Some(Duration::from_secs(7)) }
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:03 GMT", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999999", now), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn backoff_follows_the_schedule_with_jitter_and_retry_after_is_a_floor() {
        let schedule = [100, 1000];
        for _ in 0..50 {
            let d = next_delay(&schedule, 1, None, false).unwrap().as_millis();
            assert!((80..=120).contains(&d), "{d}");
            let d = next_delay(&schedule, 2, None, false).unwrap().as_millis();
            assert!((800..=1200).contains(&d), "{d}");
        }
        assert_eq!(next_delay(&schedule, 3, None, false), None, "schedule exhausted");
        assert_eq!(next_delay(&schedule, 1, Some(Duration::from_secs(5)), false), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&[], 1, None, false), None);
    }
}
