//! `grpc`: gRPC's connection backoff (grpc/grpc `doc/connection-backoff.md`): the first retry
//! after 1 s, then each delay 1.6 times the last, capped at 120 s, spread by ±20%; no breaker, no
//! retry limit. A success resets it, and the agent checks in at its regular interval (±10%, as
//! the production agent does); an answer that retrying will not fix (4xx) waits for that too.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision, regular_delay};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MULTIPLIER: f64 = 1.6;
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Grpc {
    interval: Duration,
    /// The backoff before jitter; `None` until the first failure.
    current: Option<Duration>,
    attempt: u32,
    outage: Outage,
}

impl Grpc {
    pub fn new(interval: Duration) -> Self {
        Grpc { interval, current: None, attempt: 0, outage: Outage::default() }
    }
}

impl Strategy for Grpc {
    fn admit(&mut self, _now: Instant) -> (Gate, Option<Transition>) {
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        match report.verdict {
            Verdict::Success => {
                self.current = None;
                self.attempt = 0;
                let recovered = self.outage.succeeded(now);
                let delay = regular_delay(self.interval, report.interval, rng);
                decision(now, report.verdict, delay, WaitReason::Regular, 0, 0, &self.outage, None, recovered)
            }
            Verdict::FailFast | Verdict::Renew => {
                self.outage.failed(now, false);
                let delay = regular_delay(self.interval, report.interval, rng);
                decision(now, report.verdict, delay, WaitReason::Regular, 1, 0, &self.outage, None, None)
            }
            Verdict::Retry => {
                self.outage.failed(now, true);
                self.attempt = self.attempt.saturating_add(1);
                let delay = match self.current {
                    // The first retry waits the initial backoff exactly.
                    None => {
                        self.current = Some(INITIAL_BACKOFF);
                        INITIAL_BACKOFF
                    }
                    Some(last) => {
                        let next = last.mul_f64(MULTIPLIER).min(MAX_BACKOFF);
                        self.current = Some(next);
                        next.mul_f64(1.0 - JITTER + 2.0 * JITTER * rng.random::<f64>())
                    }
                };
                decision(now, report.verdict, delay, WaitReason::Backoff, self.attempt, 0, &self.outage, None, None)
            }
        }
    }

    fn breaker_state(&self) -> BreakerState {
        BreakerState::Closed
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }
}
