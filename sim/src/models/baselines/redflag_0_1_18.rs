//! `redflag-0.1.18`: the RedFlag agent as released (`aggregator-agent/cmd/agent/main.go`,
//! `runAgent`): every round of its loop sleeps a uniform whole number of seconds in 0..=29
//! ("jitter to prevent thundering herd"), checks in, and then sleeps one `check_in_interval`,
//! whatever happened. An error waits one interval like a success: no backoff, no breaker, no
//! health probe. A 401 renews the token once and retries (the shared loop does that part).

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision};

/// The sleep before every check-in: `rand.Intn(30)` seconds.
pub(super) const JITTER_SECONDS_MAX: u64 = 29;

pub(super) fn jitter_sleep(rng: &mut (impl Rng + ?Sized)) -> Duration {
    Duration::from_secs(rng.random_range(0..=JITTER_SECONDS_MAX))
}

#[derive(Debug, Clone)]
pub struct Redflag0118 {
    interval: Duration,
    outage: Outage,
}

impl Redflag0118 {
    pub fn new(interval: Duration) -> Self {
        Redflag0118 { interval, outage: Outage::default() }
    }
}

impl Strategy for Redflag0118 {
    fn admit(&mut self, _now: Instant) -> (Gate, Option<Transition>) {
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        // Rapid polling (a 5 s interval the server asked for) replaces the interval, as in
        // `getCurrentPollingInterval`.
        let interval = report.interval.map_or(self.interval, |fast| fast.min(self.interval));
        let delay = interval + jitter_sleep(rng);
        let (recovered, attempt) = match report.verdict {
            Verdict::Success => (self.outage.succeeded(now), 0),
            v => {
                self.outage.failed(now, v == Verdict::Retry);
                (None, 1)
            }
        };
        decision(now, report.verdict, delay, WaitReason::Regular, attempt, 1, &self.outage, None, recovered)
    }

    fn breaker_state(&self) -> BreakerState {
        BreakerState::Closed
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }
}
