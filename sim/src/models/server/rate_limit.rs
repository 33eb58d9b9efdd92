//! The per-agent rate limiter on the check-in route. It is process memory: it lives inside
//! `run_server`, so a crash forgets it, as a restarted server forgets its in-memory windows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::{RATE_LIMIT_CHECKINS_MAX, RATE_LIMIT_TRACKED_AGENTS_MAX, RATE_LIMIT_WINDOW};

/// Per-agent sliding-window limiter. Lives inside [`run_server`], so a crash forgets it.
#[derive(Default)]
pub(crate) struct RateLimiter {
    /// Admission times of each agent's recent check-ins, at most [`RATE_LIMIT_CHECKINS_MAX`].
    recent: BTreeMap<String, VecDeque<Instant>>,
    /// Each tracked agent's latest admission, oldest first: a full table forgets the agents
    /// whose latest check-in left the window by popping from the front, not by scanning the
    /// whole table for every new agent (which made a million-agent herd crawl).
    by_last: BTreeSet<(Instant, String)>,
}

impl RateLimiter {
    /// `Ok` admits the check-in (and counts it); `Err(wait)` says when the next one may come.
    pub(crate) fn admit(&mut self, agent_id: &str, now: Instant) -> Result<(), Duration> {
        if !self.recent.contains_key(agent_id) && self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
            self.forget_idle(now);
            if self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
                return Ok(());
            }
        }
        let times = self.recent.entry(agent_id.to_string()).or_default();
        let last = times.back().copied();
        while times.front().is_some_and(|t| now.duration_since(*t) >= RATE_LIMIT_WINDOW) {
            times.pop_front();
        }
        if times.len() >= RATE_LIMIT_CHECKINS_MAX {
            let oldest = *times.front().expect("a full window has a first entry");
            return Err(RATE_LIMIT_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        debug_assert!(times.len() <= RATE_LIMIT_CHECKINS_MAX);
        if let Some(last) = last {
            self.by_last.remove(&(last, agent_id.to_string()));
        }
        self.by_last.insert((now, agent_id.to_string()));
        Ok(())
    }

    /// Forgets every agent whose latest check-in is a whole window old.
    fn forget_idle(&mut self, now: Instant) {
        while let Some((last, _)) = self.by_last.first() {
            if now.duration_since(*last) < RATE_LIMIT_WINDOW {
                break;
            }
            if let Some((_, agent)) = self.by_last.pop_first() {
                self.recent.remove(&agent);
            }
        }
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

    /// The scan the limiter used to do for every new agent of a full table: the reference.
    fn forget_by_scan(recent: &mut BTreeMap<String, VecDeque<Instant>>, now: Instant) {
        recent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < RATE_LIMIT_WINDOW));
    }

    #[test]
    fn forgetting_idle_agents_from_the_front_is_the_scan() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..20_000 {
            now += Duration::from_millis(rng.random_range(0..40));
            let agent = format!("a{}", rng.random_range(0..500));
            let _ = rl.admit(&agent, now);
            if rng.random_range(0..50) == 0 {
                let mut reference = rl.recent.clone();
                forget_by_scan(&mut reference, now);
                rl.forget_idle(now);
                assert_eq!(rl.recent, reference);
                assert_eq!(rl.by_last.len(), rl.recent.len());
            }
        }
    }
}
