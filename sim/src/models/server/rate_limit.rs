//! The per-agent rate limiter on the check-in route. It is process memory: it lives inside
//! `run_server`, so a crash forgets it, as a restarted server forgets its in-memory windows.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::{RATE_LIMIT_CHECKINS_MAX, RATE_LIMIT_TRACKED_AGENTS_MAX, RATE_LIMIT_WINDOW};

/// Per-agent sliding-window limiter. Lives inside [`run_server`], so a crash forgets it.
#[derive(Default)]
pub(crate) struct RateLimiter {
    /// Admission times of each agent's recent check-ins, at most [`RATE_LIMIT_CHECKINS_MAX`].
    recent: BTreeMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// `Ok` admits the check-in (and counts it); `Err(wait)` says when the next one may come.
    pub(crate) fn admit(&mut self, agent_id: &str, now: Instant) -> Result<(), Duration> {
        if !self.recent.contains_key(agent_id) && self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
            self.recent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < RATE_LIMIT_WINDOW));
            if self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
                return Ok(());
            }
        }
        let times = self.recent.entry(agent_id.to_string()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= RATE_LIMIT_WINDOW) {
            times.pop_front();
        }
        if times.len() >= RATE_LIMIT_CHECKINS_MAX {
            let oldest = *times.front().expect("a full window has a first entry");
            return Err(RATE_LIMIT_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        debug_assert!(times.len() <= RATE_LIMIT_CHECKINS_MAX);
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_window() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT_CHECKINS_MAX {
            assert!(rl.admit("a", t0 + Duration::from_millis(i as u64)).is_ok());
        }
        let wait = rl.admit("a", t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, RATE_LIMIT_WINDOW - Duration::from_secs(1));
        assert!(rl.admit("b", t0 + Duration::from_secs(1)).is_ok(), "limits are per agent");
        assert!(rl.admit("a", t0 + RATE_LIMIT_WINDOW).is_ok(), "the oldest entry left the window");
    }
}
