//! What the agent tells the server about its rapid polling ("heartbeat"), in every check-in.
//!
//! RedFlag 0.1.18's server learns an agent's heartbeat state only from the check-in body: while
//! the Go agent polls rapidly it adds `metadata.rapid_polling_enabled`, `rapid_polling_until`
//! (RFC 3339) and `rapid_polling_duration_minutes` (whole minutes left). The server stores them
//! for its heartbeat status page, and when they are missing while it believes a heartbeat is
//! active, it logs "stale heartbeat", clears the state and records a `disable_heartbeat`.
//! The server type-asserts these values (`.(bool)`, `.(string)`): a wrong JSON type is a panic
//! on its side, so the types here are fixed. When the agent is not polling rapidly it sends
//! none of the keys, as the Go agent does. Pure: the caller passes both wall-clock times.

use std::time::{Duration, SystemTime};

use serde_json::Value;

pub const ENABLED_KEY: &str = "rapid_polling_enabled";
pub const UNTIL_KEY: &str = "rapid_polling_until";
pub const DURATION_MINUTES_KEY: &str = "rapid_polling_duration_minutes";

/// The metadata entries for a rapid-polling window ending at `until` (wall clock), seen at
/// `now`. Empty when the window is over.
pub fn metadata(until: SystemTime, now: SystemTime) -> Vec<(&'static str, Value)> {
    let Ok(left) = until.duration_since(now) else { return Vec::new() };
    if left.is_zero() {
        return Vec::new();
    }
    // Whole seconds: Go's RFC3339 layout has none, and the server compares with its clock.
    let until_text = humantime::format_rfc3339_seconds(until).to_string();
    // Go: int(time.Until(until).Minutes()), truncated.
    let minutes_left = left.as_secs() / 60;
    vec![(ENABLED_KEY, Value::Bool(true)), (UNTIL_KEY, Value::String(until_text)), (DURATION_MINUTES_KEY, Value::from(minutes_left))]
}

/// `until` as a wall-clock time, from the monotonic time left in the window.
pub fn wall_until(now_wall: SystemTime, left: Duration) -> SystemTime {
    now_wall.checked_add(left).unwrap_or(now_wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn while_polling_rapidly() {
        let m = metadata(at("2026-11-28T22:40:23.900Z"), at("2026-11-28T22:30:00Z"));
        assert_eq!(
            m,
            vec![
                (ENABLED_KEY, Value::Bool(true)),
                (UNTIL_KEY, Value::String("2026-11-28T22:40:23Z".into())),
                (DURATION_MINUTES_KEY, Value::from(10u64)),
            ]
        );
    }

    #[test]
    fn nothing_once_the_window_is_over() {
        assert!(metadata(at("2026-11-28T22:30:00Z"), at("2026-11-28T22:30:00Z")).is_empty());
        assert!(metadata(at("2026-11-28T22:29:00Z"), at("2026-11-28T22:30:00Z")).is_empty());
    }
}
