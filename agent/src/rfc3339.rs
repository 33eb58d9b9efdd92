//! RFC 3339 timestamps with any UTC offset, as RedFlag's Go server writes them.
//!
//! The server formats `rapid_polling.until` with Go's `time.Now().Format(time.RFC3339)`, which
//! uses the server's *local* zone: `2026-11-28T17:40:23-05:00` on a server with `TZ` set,
//! `...Z` only where the zone is UTC. `humantime` (used everywhere else) reads only `Z`, so
//! this file splits off the offset, lets humantime read the rest as UTC, and applies the offset.
//! Formatting stays with humantime (the agent always writes UTC, `Z`). Pure, no clock.

use std::time::{Duration, SystemTime};

/// Longest timestamp worth reading (`2026-11-28T17:40:23.123456789+05:30` is 35 characters).
const TIMESTAMP_MAX_LEN: usize = 64;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]` followed by `Z` or `±HH:MM`. `None` for anything
/// else, including offsets beyond ±23:59 and times before 1970.
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.len() > TIMESTAMP_MAX_LEN || !text.is_ascii() {
        return None;
    }
    let (local, east_of_utc_seconds) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0i64),
        None => {
            let split = text.len().checked_sub(6)?;
            let (local, offset) = text.split_at(split);
            (local, parse_offset(offset)?)
        }
    };
    // The wall-clock reading in that zone, as if it were UTC...
    let as_if_utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    // ...is `offset` ahead of the instant it names.
    let shift = Duration::from_secs(east_of_utc_seconds.unsigned_abs());
    if east_of_utc_seconds >= 0 { as_if_utc.checked_sub(shift) } else { as_if_utc.checked_add(shift) }
}

/// `+HH:MM` or `-HH:MM` as seconds east of UTC.
fn parse_offset(offset: &str) -> Option<i64> {
    let b = offset.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |i: usize| -> Option<i64> {
        let (h, l) = (b[i], b[i + 1]);
        (h.is_ascii_digit() && l.is_ascii_digit()).then(|| i64::from(h - b'0') * 10 + i64::from(l - b'0'))
    };
    let (hours, minutes) = (two(1)?, two(4)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Option<SystemTime> {
        humantime::parse_rfc3339(s).ok()
    }

    #[test]
    fn every_offset_names_the_same_instant() {
        let want = utc("2026-11-28T22:40:23Z");
        for s in [
            "2026-11-28T22:40:23Z",
            "2026-11-28T22:40:23z",
            "2026-11-28T22:40:23+00:00",
            "2026-11-28T22:40:23-00:00",
            "2026-11-28T17:40:23-05:00",
            "2026-11-29T04:10:23+05:30",
            "2026-11-28T18:40:23-04:00",
            " 2026-11-28T17:40:23-05:00 ",
        ] {
            assert_eq!(parse(s), want, "{s}");
        }
        assert_eq!(parse("2026-11-28T17:40:23.250-05:00"), utc("2026-11-28T22:40:23.250Z"));
        // Across a day and a year boundary.
        assert_eq!(parse("2026-12-31T23:30:00-02:00"), utc("2027-01-01T01:30:00Z"));
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for s in [
            "",
            "soon",
            "2026-11-28T17:40:23",
            "2026-11-28T17:40:23+0500",
            "2026-11-28T17:40:23+24:00",
            "2026-11-28T17:40:23+05:60",
            "2026-11-28T17:40:23*05:00",
            "2026-11-28 17:40:23+05:00x",
            "2026-13-28T17:40:23Z",
            "1969-12-31T23:59:59Z",
            "2026-11-28T17:40:23+ä5:00",
            &"9".repeat(100),
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }
}
