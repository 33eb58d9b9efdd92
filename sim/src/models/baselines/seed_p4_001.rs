//! `seed-p4-001`: the seed document's Go snippets (`reference/P4-001-agent-retry-logic.md`), as
//! written. `checkInWithRetry` makes at most 5 attempts, sleeping 5 s after the first failure
//! and doubling up to 5 minutes, with no jitter, and sleeps after the fifth failure too; a
//! client error (`isClientError`: any 4xx, 429 and 408 included) returns at once. Each attempt
//! goes through the `CircuitBreaker`: 3 consecutive failures open it; while open (5 minutes
//! since the last failure) a call fails at once without a request, and still uses up an attempt
//! and its sleep; after that it is half-open with no limit on calls: a success closes it, a
//! failure opens it again. When a burst ends the main loop waits one `check_in_interval` (no
//! jitter) and starts another. No health probe: the snippet's `healthCheck` is never called.

use std::time::{Duration, Instant};

use rand::RngCore;
use redflag_agent::resilience::{BreakerState, Decision, Gate, Outcome, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision};

pub const MAX_RETRIES: u32 = 5;
pub const INITIAL_DELAY: Duration = Duration::from_secs(5);
pub const MAX_DELAY: Duration = Duration::from_secs(5 * 60);
pub const BACKOFF_FACTOR: u32 = 2;
pub const BREAKER_THRESHOLD: u32 = 3;
pub const BREAKER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct SeedP4001 {
    interval: Duration,
    /// Attempts made in the current burst.
    attempts: u32,
    /// The sleep after the next failed attempt.
    delay: Duration,
    state: BreakerState,
    breaker_failures: u32,
    last_failure: Option<Instant>,
    outage: Outage,
}

impl SeedP4001 {
    pub fn new(interval: Duration) -> Self {
        SeedP4001 {
            interval,
            attempts: 0,
            delay: INITIAL_DELAY,
            state: BreakerState::Closed,
            breaker_failures: 0,
            last_failure: None,
            outage: Outage::default(),
        }
    }

    fn go(&mut self, now: Instant, to: BreakerState) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to, at: now })
    }

    /// A failed attempt of the burst: the wait before the next one (the sleep, plus one interval
    /// when it was the burst's last), and its number.
    fn after_failed_attempt(&mut self) -> (Duration, u32, WaitReason) {
        self.attempts += 1;
        let attempt = self.attempts;
        let sleep = self.delay;
        self.delay = (self.delay * BACKOFF_FACTOR).min(MAX_DELAY);
        if attempt >= MAX_RETRIES {
            self.end_burst();
            (sleep + self.interval, attempt, WaitReason::BurstRest)
        } else {
            (sleep, attempt, WaitReason::Backoff)
        }
    }

    fn end_burst(&mut self) {
        self.attempts = 0;
        self.delay = INITIAL_DELAY;
    }
}

/// `isClientError`: a 4xx answer.
fn client_error(report: &Report) -> bool {
    matches!(report.verdict, Verdict::FailFast | Verdict::Renew)
        || matches!(report.outcome, Some(Outcome::Status(s)) if (400..500).contains(&s))
}

impl Strategy for SeedP4001 {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        if self.state == BreakerState::Open {
            let since = self.last_failure.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if since <= BREAKER_TIMEOUT {
                // "circuit breaker is open": this attempt fails without a request.
                let (wait, _, _) = self.after_failed_attempt();
                return (Gate::Wait { until: now + wait }, None);
            }
            let t = self.go(now, BreakerState::HalfOpen);
            return (Gate::Go { probe_health: false }, t);
        }
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, _rng: &mut dyn RngCore) -> Decision {
        if report.verdict == Verdict::Success {
            self.breaker_failures = 0;
            let t = self.go(now, BreakerState::Closed);
            self.end_burst();
            let recovered = self.outage.succeeded(now);
            let interval = report.interval.map_or(self.interval, |fast| fast.min(self.interval));
            return decision(now, report.verdict, interval, WaitReason::Regular, 0, MAX_RETRIES, &self.outage, t, recovered);
        }
        // Every error counts against the breaker, client errors included (`cb.Call`).
        self.breaker_failures += 1;
        self.last_failure = Some(now);
        let t = if self.breaker_failures >= BREAKER_THRESHOLD { self.go(now, BreakerState::Open) } else { None };
        if client_error(&report) {
            self.outage.failed(now, false);
            self.end_burst();
            return decision(now, report.verdict, self.interval, WaitReason::Regular, 1, MAX_RETRIES, &self.outage, t, None);
        }
        self.outage.failed(now, true);
        let (wait, attempt, reason) = self.after_failed_attempt();
        decision(now, report.verdict, wait, reason, attempt, MAX_RETRIES, &self.outage, t, None)
    }

    fn breaker_state(&self) -> BreakerState {
        self.state
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }
}
