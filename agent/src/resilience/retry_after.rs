//! Parsing the `Retry-After` header (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
//!
//! Pure: the "now" an HTTP-date is measured from is an argument. The check-in loop passes the
//! response's own `Date` header when there is one, so a skewed local clock does not stretch or
//! shrink the wait; otherwise it passes its wall clock. Clamping to `retry_after_max_seconds`
//! happens in `policy.rs`, not here: this file only reads what the server asked for.

use std::time::{Duration, SystemTime};

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
    fn garbage_is_none() {
        for v in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994", &"9".repeat(65)] {
            assert_eq!(parse_retry_after(v, at(0)), None, "{v:?}");
        }
    }
}
