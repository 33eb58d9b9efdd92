//! When results are posted: on their own schedule, never in the way of a check-in.
//!
//! The check-in's pace is what the server's offline detection sees, so results never hold it up
//! for long, and never stop it:
//!
//! * **After a successful check-in** (the server is reachable), and after the commands that
//!   check-in let run, results go out oldest first in the time left before the next check-in is
//!   due: each result request is given that time, but at least half a request timeout and at
//!   most a whole one ([`request_budget`]), and a new one starts only while the check-in is not
//!   yet due (the first of a round always may, [`may_post`]). So results make a check-in late
//!   by at most half a request timeout; a `/logs` that answers in 3 s at a 2 s interval gets one
//!   result per check-in and the check-ins go on every 3 s or so.
//! * **After a failed post** (a 5xx or timeout, a refused renewal, a "not now" answer), the lane
//!   waits its own backoff before posting again ([`ResultLane::failed`]): the config's backoff
//!   (`initial_delay_seconds` times `backoff_factor` per failure in a row, capped at
//!   `max_delay_minutes`), or the server's `Retry-After` (clamped to `retry_after_max_seconds`)
//!   when it is longer. The check-in strategy never hears of it: a broken `/logs` cannot open
//!   the check-in breaker. A 2xx ends the backoff.
//!
//! Nothing is lost meanwhile: results wait in the outbox (bounded, on disk), and commands stop
//! starting while it has no room for their results (`commands::desk`).
//!
//! Pure: time comes in as an argument (`now`); the driver awaits and emits.

use std::time::{Duration, Instant};

use crate::resilience::{Backoff, BackoffConfig};

/// The result lane's schedule: how many posts failed in a row, and when it may post again.
#[derive(Debug, Clone)]
pub struct ResultLane {
    backoff: Backoff,
    retry_after_max: Duration,
    failures: u32,
    retry_at: Option<Instant>,
}

impl ResultLane {
    pub fn new(backoff: BackoffConfig, retry_after_max: Duration) -> Self {
        ResultLane { backoff: Backoff::new(backoff), retry_after_max, failures: 0, retry_at: None }
    }

    /// Whether results may be posted at `now` (no backoff running).
    pub fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// A post failed at `now` (with the server's `Retry-After`, if any): the wait before the
    /// lane posts again, which is also recorded.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let backoff = self.backoff.base_delay(self.failures - 1);
        let wait = backoff.max(retry_after.unwrap_or_default().min(self.retry_after_max));
        self.retry_at = Some(now + wait);
        wait
    }

    /// A post got its 2xx: the backoff ends.
    pub fn delivered(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

/// How long one result request may take when it starts at `now` and the next check-in is due
/// at `due`: the time left, but at least half the request timeout and at most all of it.
pub fn request_budget(now: Instant, due: Instant, request_timeout: Duration) -> Duration {
    due.saturating_duration_since(now).clamp(request_timeout / 2, request_timeout)
}

/// Whether another result may be posted at `now`, `posted` having gone out in this round: the
/// first always, the next ones while the check-in is not yet due.
pub fn may_post(now: Instant, due: Instant, posted: usize) -> bool {
    posted == 0 || now < due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::Jitter;

    fn lane() -> ResultLane {
        let backoff =
            BackoffConfig { initial_delay: Duration::from_secs(1), max_delay: Duration::from_secs(15), factor: 2.0, jitter: Jitter::Full };
        ResultLane::new(backoff, Duration::from_secs(60))
    }

    #[test]
    fn failures_back_off_on_their_own_capped_and_a_delivery_ends_it() {
        let t0 = Instant::now();
        let mut l = lane();
        assert!(l.due(t0));
        let waits: Vec<u64> = (0..6).map(|_| l.failed(t0, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15]);
        assert!(!l.due(t0 + Duration::from_secs(14)) && l.due(t0 + Duration::from_secs(15)));
        // A longer Retry-After wins, clamped.
        assert_eq!(l.failed(t0, Some(Duration::from_secs(40))), Duration::from_secs(40));
        assert_eq!(l.failed(t0, Some(Duration::from_secs(3600))), Duration::from_secs(60));
        for _ in 0..1000 {
            l.failed(t0, None);
        }
        assert_eq!(l.failed(t0, None), Duration::from_secs(15), "no overflow after many failures");
        l.delivered();
        assert!(l.due(t0));
        assert_eq!(l.failed(t0, None), Duration::from_secs(1));
    }

    #[test]
    fn a_result_request_gets_the_time_left_within_half_and_all_of_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        assert_eq!(request_budget(t0, t0 + Duration::from_secs(300), timeout), timeout);
        assert_eq!(request_budget(t0, t0 + Duration::from_secs(7), timeout), Duration::from_secs(7));
        assert_eq!(request_budget(t0, t0 + Duration::from_secs(1), timeout), Duration::from_secs(5));
        assert_eq!(request_budget(t0 + Duration::from_secs(9), t0, timeout), Duration::from_secs(5), "already due");
        assert!(may_post(t0 + Duration::from_secs(9), t0, 0) && !may_post(t0 + Duration::from_secs(9), t0, 1));
        assert!(may_post(t0, t0 + Duration::from_secs(1), 3));
    }
}
