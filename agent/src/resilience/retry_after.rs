//! Parsing the `Retry-After` header (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
//!
//! Pure: the "now" an HTTP-date is measured from is an argument. The check-in loop passes the
//! response's own `Date` header when there is one, so a skewed local clock does not stretch or
//! shrink the wait; otherwise it passes its wall clock. Clamping to `retry_after_max_seconds`
//! happens in `policy.rs`, not here: this file reads what the server asked for, and
//! [`with_margin`] turns it into a wait that is never early.

use std::time::{Duration, SystemTime};

use rand::Rng;

use super::backoff::uniform;

/// The most random time added on top of a Retry-After, so that agents throttled in the same
/// second do not all come back in the same instant.
pub const RETRY_AFTER_JITTER_MAX: Duration = Duration::from_millis(500);

/// The wait for a Retry-After of `asked`: rounded up to the next whole second, plus up to
/// [`RETRY_AFTER_JITTER_MAX`] of jitter.
///
/// Why: servers truncate. RedFlag 0.1.18 sends `int(reset - now)` seconds, so "45" means a
/// reset somewhere in [45 s, 46 s); an HTTP-date is also whole seconds, measured against a
/// `Date` header truncated the same way. Waiting exactly the number comes back a fraction of a
/// second early and earns one more 429. `floor(asked) + 1 s` is never early for either form.
pub fn with_margin<R: Rng + ?Sized>(asked: Duration, rng: &mut R) -> Duration {
    let whole = Duration::from_secs(asked.as_secs()).saturating_add(Duration::from_secs(1));
    whole.saturating_add(uniform(rng, Duration::ZERO, RETRY_AFTER_JITTER_MAX))
}

/// Longest header value worth parsing; anything longer is not a valid Retry-After.
const MAX_HEADER_LEN: usize = 64;

/// How long the server asked us to wait, or `None` when the value is not a valid Retry-After.
/// A date in the past means "now" (zero). Absurdly large delta-seconds saturate rather than
/// fail: the caller clamps them.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_HEADER_LEN {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads an HTTP `Date` header, used as the reference "now" for HTTP-date Retry-After values.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    if value.len() > MAX_HEADER_LEN {
        return None;
    }
    httpdate::parse_http_date(value.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_retry_after("120", at(0)), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", at(0)), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", at(0)), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn http_date_is_measured_from_now() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        let v = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(v, at(784_111_777 - 30)), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(v, at(784_111_777 + 30)), Some(Duration::ZERO));
    }

    #[test]
    fn the_margin_rounds_up_past_the_truncated_second_and_jitters() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for (asked_ms, floor_s) in [(45_000, 46), (45_999, 46), (0, 1), (1_500, 2)] {
            for _ in 0..200 {
                let wait = with_margin(Duration::from_millis(asked_ms), &mut rng);
                let floor = Duration::from_secs(floor_s);
                assert!(wait >= floor && wait <= floor + RETRY_AFTER_JITTER_MAX, "{asked_ms} ms -> {wait:?}");
                // The true reset behind a truncated "45" is before 46 s: never early.
                assert!(wait > Duration::from_millis(asked_ms));
                seen.insert(wait.as_millis() % 1000);
            }
        }
        assert!(seen.len() > 50, "no jitter: {seen:?}");
        assert_eq!(with_margin(Duration::MAX, &mut rng), Duration::MAX);
    }

    #[test]
    fn garbage_is_none() {
        for v in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994", &"9".repeat(65)] {
            assert_eq!(parse_retry_after(v, at(0)), None, "{v:?}");
        }
    }
}
