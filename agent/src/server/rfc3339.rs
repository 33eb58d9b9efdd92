//! RFC 3339 timestamps with any UTC offset, as servers write them.
//!
//! RedFlag's Go server writes `rapid_polling.until` in its local time, e.g.
//! `2026-11-28T16:21:55.123456789-04:00`; `humantime` only reads the `Z` form. [`parse`] reads
//! both: the date and time part goes through `humantime` as UTC, then the offset is taken off.
//! Anything else (no offset at all, an offset of 24 h or more, trailing text) is `None`.

use std::time::{Duration, SystemTime};

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `t`, `z` and a space for the `T`
/// are accepted too (RFC 3339 §5.6 allows them).
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.len() < 20 || !text.is_ascii() {
        return None;
    }
    let (local, offset_seconds) = match text.as_bytes()[text.len() - 1] {
        b'Z' | b'z' => (&text[..text.len() - 1], 0i64),
        _ => {
            let (local, offset) = text.split_at(text.len() - 6);
            let b = offset.as_bytes();
            let sign = match b[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if b[3] != b':' || !b[1..3].iter().chain(&b[4..6]).all(u8::is_ascii_digit) {
                return None;
            }
            let hours: i64 = offset[1..3].parse().ok()?;
            let minutes: i64 = offset[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            (local, sign * (hours * 3600 + minutes * 60))
        }
    };
    let mut utc = local.replacen(['t', ' '], "T", 1);
    utc.push('Z');
    let as_if_utc = humantime::parse_rfc3339(&utc).ok()?;
    // Local time = UTC + offset, so UTC = local - offset.
    let shift = Duration::from_secs(offset_seconds.unsigned_abs());
    if offset_seconds >= 0 { as_if_utc.checked_sub(shift) } else { as_if_utc.checked_add(shift) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn any_offset_is_the_same_instant() {
        assert_eq!(parse("2026-11-28T16:21:55-04:00"), Some(utc("2026-11-28T20:21:55Z")));
        assert_eq!(parse("2026-11-28T16:21:55.123456789-04:00"), Some(utc("2026-11-28T20:21:55.123456789Z")));
        assert_eq!(parse("2026-11-29T01:51:55+05:30"), Some(utc("2026-11-28T20:21:55Z")));
        assert_eq!(parse("2026-11-28T20:21:55Z"), Some(utc("2026-11-28T20:21:55Z")));
        assert_eq!(parse("2026-11-28t20:21:55z"), Some(utc("2026-11-28T20:21:55Z")));
        assert_eq!(parse("2026-11-28 20:21:55+00:00"), Some(utc("2026-11-28T20:21:55Z")));
    }

    #[test]
    fn garbage_is_none() {
        for bad in ["", "2026-11-28T20:21:55", "2026-11-28T20:21:55+4:00", "2026-11-28T20:21:55+24:00", "2026-11-28T20:21:55 UTC", "soon", "2026-11-28T20:21:55+04:00x", "2026-11-28T20:21:55−04:00"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
