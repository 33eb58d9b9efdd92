//! Rapid polling ("heartbeat" in RedFlag's dashboard), as one concept: the window in force
//! ([`RapidPolling`], a value the loop asks with `now`), the interval it sets, and what the
//! agent tells the server about it in every check-in ([`metadata`]).
//!
//! A window is asked for in two ways: the answer's `rapid_polling` (RedFlag adds a 10-minute one
//! to every answer that carries commands) and the `enable_heartbeat` command (its own length);
//! `disable_heartbeat` ends it. A window only ever extends the one in force, so the shorter
//! request never cuts the longer one short. After an answer carrying `enable_heartbeat` the next
//! check-in goes out at once (never twice in a row), so the server sees the new state now.
//!
//! RedFlag 0.1.18's server learns an agent's heartbeat state only from the check-in body: while
//! the Go agent polls rapidly it adds `metadata.rapid_polling_enabled`, `rapid_polling_until`
//! (RFC 3339) and `rapid_polling_duration_minutes` (whole minutes left). The server stores them
//! for its heartbeat status page, and when they are missing while it believes a heartbeat is
//! active, it logs "stale heartbeat", clears the state and records a `disable_heartbeat`.
//! The server type-asserts these values (`.(bool)`, `.(string)`): a wrong JSON type is a panic
//! on its side, so the types here are fixed. When the agent is not polling rapidly it sends
//! none of the keys, as the Go agent does. Pure: the caller passes both wall-clock times.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::log::events::{Event, ms};

/// The interval while rapid polling is on.
pub const RAPID_POLLING_INTERVAL: Duration = Duration::from_secs(5);
/// The longest rapid-polling window honoured, whoever asks for it.
pub const RAPID_POLLING_MAX: Duration = Duration::from_secs(3600);

pub const ENABLED_KEY: &str = "rapid_polling_enabled";
pub const UNTIL_KEY: &str = "rapid_polling_until";
pub const DURATION_MINUTES_KEY: &str = "rapid_polling_duration_minutes";

/// The rapid-polling window in force, and whether the last check-in was the immediate one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RapidPolling {
    /// Until when rapid polling is on.
    until: Option<Instant>,
    /// The last attempt was the immediate check-in after an `enable_heartbeat`; the next one
    /// may not be immediate again (so no answer can make the agent spin).
    checked_in_at_once: bool,
}

impl RapidPolling {
    /// Rapid polling for `window` (clamped to [`RAPID_POLLING_MAX`]) from `now`, unless the
    /// window in force already lasts longer; the event to report it, if it changed anything.
    pub fn extend(&mut self, now: Instant, window: Duration) -> Option<Event> {
        let window = window.min(RAPID_POLLING_MAX);
        let until = now + window;
        if window.is_zero() || self.until.is_some_and(|current| current >= until) {
            return None;
        }
        self.until = Some(until);
        Some(Event::RapidPolling { for_ms: ms(window) })
    }

    /// `disable_heartbeat`: back to the regular interval.
    pub fn stop(&mut self) {
        self.until = None;
    }

    /// The interval the window sets at `now` ([`RAPID_POLLING_INTERVAL`]), or `None`. A window
    /// that has ended is forgotten here.
    pub fn interval(&mut self, now: Instant) -> Option<Duration> {
        match self.until {
            Some(until) if now < until => Some(RAPID_POLLING_INTERVAL),
            Some(_) => {
                self.until = None;
                None
            }
            None => None,
        }
    }

    /// What is left of the window at `now`, if any.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.until.and_then(|until| until.checked_duration_since(now))
    }

    /// Whether the next check-in goes out at once, given whether the answer just taken in
    /// carried an `enable_heartbeat`. Never twice in a row: this records the choice.
    pub fn choose_at_once(&mut self, heartbeat_in_answer: bool) -> bool {
        let at_once = heartbeat_in_answer && !self.checked_in_at_once;
        self.checked_in_at_once = at_once;
        at_once
    }
}

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
    fn a_window_only_extends_the_one_in_force() {
        let t0 = Instant::now();
        let mut rp = RapidPolling::default();
        assert_eq!(rp.extend(t0, Duration::from_secs(600)), Some(Event::RapidPolling { for_ms: 600_000 }));
        assert_eq!(rp.extend(t0, Duration::from_secs(60)), None, "a shorter window does not cut the longer one");
        assert_eq!(rp.extend(t0, Duration::ZERO), None);
        assert_eq!(rp.extend(t0, Duration::from_secs(86_400)), Some(Event::RapidPolling { for_ms: 3_600_000 }), "clamped");
        assert_eq!(rp.interval(t0 + Duration::from_secs(10)), Some(RAPID_POLLING_INTERVAL));
        assert_eq!(rp.left(t0 + Duration::from_secs(600)), Some(Duration::from_secs(3000)));
        assert_eq!(rp.interval(t0 + Duration::from_secs(3600)), None);
        assert_eq!(rp.left(t0), None, "an ended window is forgotten");
        rp.extend(t0, Duration::from_secs(60));
        rp.stop();
        assert_eq!(rp.interval(t0), None);
    }

    #[test]
    fn at_once_never_twice_in_a_row() {
        let mut rp = RapidPolling::default();
        assert!(rp.choose_at_once(true));
        assert!(!rp.choose_at_once(true));
        assert!(rp.choose_at_once(true));
        assert!(!rp.choose_at_once(false));
        assert!(rp.choose_at_once(true));
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
