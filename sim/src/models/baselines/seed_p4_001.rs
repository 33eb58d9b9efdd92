//! `seed-p4-001`: the seed document's Go snippets, as written, in the loop they name.
//!
//! Sources: `reference/P4-001-agent-retry-logic.md` (2025-11-12), sections "Connection Retry
//! Logic" (`RetryConfig`, `checkInWithRetry`), "Circuit Breaker Pattern" (`CircuitBreaker.Call`),
//! "Connection Health Check", "Error Classification" (`isClientError`) and "Configuration
//! Options"; and the loop it names as its primary file, RedFlag 0.1.18's
//! `aggregator-agent/cmd/agent/main.go` (`runAgent`; `/work/shared/redflag-agent-go/src`),
//! whose HTTP client (`internal/client/client.go`) times out after 30 s.
//!
//! What the sources settle:
//!
//! * `checkInWithRetry` makes at most 5 attempts (`MaxRetries`), sleeping 5 s after the first
//!   failure and doubling (`BackoffFactor` 2) up to 5 minutes (`MaxDelay`), with no jitter; it
//!   sleeps after the fifth failure too, then returns the error;
//! * a client error (`isClientError`: any 4xx, 408 and 429 included) returns at once;
//! * `CircuitBreaker.Call`: 3 consecutive failures (`Threshold`) open it; while open (until
//!   more than 5 minutes, `Timeout`, since the last failure) a call fails at once with "circuit
//!   breaker is open" and sends nothing; then it is half-open with no limit on calls: a success
//!   closes it, a failure opens it again. Every error counts, client errors included;
//! * `healthCheck` exists but nothing calls it: no health probe;
//! * `main.go`'s loop around the check-in: every round sleeps `rand.Intn(30)` seconds (0-29 s)
//!   first, and after the check-in (succeeded or not) sleeps one `check_in_interval`.
//!
//! Modelling choices the sources do not settle:
//!
//! * **How the breaker and the attempts combine.** P4-001 shows both but not their wiring. Here
//!   each *attempt* of `checkInWithRetry` is one `cb.Call(performCheckIn)`: an open breaker's
//!   "circuit breaker is open" is not an `HTTPError`, so it is not a client error and uses up an
//!   attempt and its sleep like any failure. (Wrapping the whole `checkInWithRetry` in one
//!   `Call` instead would count a burst as one failure and open the breaker only after three
//!   failed bursts, about 15 minutes at a 300 s interval.)
//! * **The loop.** `checkInWithRetry` replaces `GetCommands` in `runAgent`: its error is a
//!   failed round (one interval), as RedFlag 0.1.18 handles any check-in error. So after a
//!   failed burst the agent waits the fifth sleep, one interval and the next round's 0-29 s:
//!   with the defaults 80 s + 300 s + up to 29 s.
//! * **Timeouts.** The 30 s of RedFlag's `http.Client`, which `main.go` uses; the health
//!   check's own 5 s never applies (it is never called).
//! * A 401 renews the token once (RedFlag's `renewTokenIfNeeded`, the shared loop) before the
//!   attempt counts.

use std::time::{Duration, Instant};

use rand::RngCore;
use redflag_agent::resilience::{BreakerState, Decision, Gate, Outcome, Report, Strategy, Transition, Verdict, WaitReason};

use super::redflag_0_1_18::{JITTER_SECONDS_MAX, REQUEST_TIMEOUT, jitter_sleep};
use super::{Outage, Promises, RegularSpread, decision};

pub const MAX_RETRIES: u32 = 5;
pub const INITIAL_DELAY: Duration = Duration::from_secs(5);
pub const MAX_DELAY: Duration = Duration::from_secs(5 * 60);
pub const BACKOFF_FACTOR: u32 = 2;
pub const BREAKER_THRESHOLD: u32 = 3;
pub const BREAKER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The sleep after failed attempt `k` of a burst (1-based).
fn sleep_after(k: u32) -> Duration {
    (INITIAL_DELAY * BACKOFF_FACTOR.pow(k.saturating_sub(1).min(16))).min(MAX_DELAY)
}

/// The longest wait from a failed request to the next request: the burst's steps, and while the
/// breaker is open every attempt fails at once and takes its step too, until more than
/// [`BREAKER_TIMEOUT`] has passed since the failure. Worked out over every burst position the
/// failure can have and every jitter the (at most two) burst ends inside the lock-out can draw.
pub(super) fn after_failure_max(interval: Duration) -> Duration {
    let step = |k: u32, jitter: u64| {
        let s = sleep_after(k);
        if k == MAX_RETRIES { s + interval + Duration::from_secs(jitter) } else { s }
    };
    let mut worst = Duration::ZERO;
    for first in 1..=MAX_RETRIES {
        for j1 in 0..=JITTER_SECONDS_MAX {
            for j2 in 0..=JITTER_SECONDS_MAX {
                let (mut k, mut waited, mut ends) = (first, Duration::ZERO, 0);
                loop {
                    let jitter = if k == MAX_RETRIES { ends += 1; if ends == 1 { j1 } else { j2 } } else { 0 };
                    waited += step(k, jitter);
                    if waited > BREAKER_TIMEOUT {
                        break;
                    }
                    k = if k == MAX_RETRIES { 1 } else { k + 1 };
                }
                worst = worst.max(waited);
            }
        }
    }
    worst
}

pub(super) fn promises(interval: Duration) -> Promises {
    Promises {
        request_timeout: REQUEST_TIMEOUT,
        interval,
        regular: RegularSpread::PlusUpTo(Duration::from_secs(JITTER_SECONDS_MAX)),
        after_failure_max: after_failure_max(interval),
        retry_after_max: None,
    }
}

#[derive(Debug, Clone)]
pub struct SeedP4001 {
    interval: Duration,
    /// Attempts made in the current burst.
    attempts: u32,
    state: BreakerState,
    breaker_failures: u32,
    last_failure: Option<Instant>,
    outage: Outage,
    /// Draws the jitter of a burst that ends with breaker rejections (no request, so the loop
    /// hands no RNG to `admit`); reseeded from the loop's RNG at every completed attempt.
    rejections: RejectionRng,
}

impl SeedP4001 {
    pub fn new(interval: Duration) -> Self {
        SeedP4001 {
            interval,
            attempts: 0,
            state: BreakerState::Closed,
            breaker_failures: 0,
            last_failure: None,
            outage: Outage::default(),
            rejections: RejectionRng(0),
        }
    }

    fn go(&mut self, now: Instant, to: BreakerState) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to, at: now })
    }

    /// One interval and the next round's 0-29 s: the wait after a round ends.
    fn next_round(&self, asked: Option<Duration>, rng: &mut dyn RngCore) -> Duration {
        asked.map_or(self.interval, |fast| fast.min(self.interval)) + jitter_sleep(rng)
    }

    /// A failed attempt of the burst: the wait before the next one (its sleep, plus the next
    /// round when it was the burst's last), and its number.
    fn after_failed_attempt(&mut self, rng: &mut dyn RngCore) -> (Duration, u32, WaitReason) {
        self.attempts += 1;
        let attempt = self.attempts;
        let sleep = sleep_after(attempt);
        if attempt >= MAX_RETRIES {
            self.attempts = 0;
            (sleep + self.next_round(None, rng), attempt, WaitReason::BurstRest)
        } else {
            (sleep, attempt, WaitReason::Backoff)
        }
    }
}

/// `isClientError`: a 4xx answer.
fn client_error(report: &Report) -> bool {
    matches!(report.verdict, Verdict::FailFast | Verdict::Renew)
        || matches!(report.outcome, Some(Outcome::Status(s)) if (400..500).contains(&s))
}

/// SplitMix64 over a seed from the agent's own RNG: the jitter of rejected attempts.
#[derive(Debug, Clone)]
struct RejectionRng(u64);

impl RngCore for RejectionRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl Strategy for SeedP4001 {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        if self.state == BreakerState::Open {
            let since = self.last_failure.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if since <= BREAKER_TIMEOUT {
                // "circuit breaker is open": this attempt fails without a request.
                let mut rng = self.rejections.clone();
                let (wait, _, _) = self.after_failed_attempt(&mut rng);
                self.rejections = rng;
                return (Gate::Wait { until: now + wait }, None);
            }
            let t = self.go(now, BreakerState::HalfOpen);
            return (Gate::Go { probe_health: false }, t);
        }
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        self.rejections = RejectionRng(rng.next_u64());
        if report.verdict == Verdict::Success {
            self.breaker_failures = 0;
            let t = self.go(now, BreakerState::Closed);
            self.attempts = 0;
            let recovered = self.outage.succeeded(now);
            let wait = match report.interval {
                Some(Duration::ZERO) => Duration::ZERO,
                asked => self.next_round(asked, rng),
            };
            return decision(now, report.verdict, wait, WaitReason::Regular, 0, MAX_RETRIES, &self.outage, t, recovered);
        }
        // Every error counts against the breaker, client errors included (`cb.Call`).
        self.breaker_failures += 1;
        self.last_failure = Some(now);
        let t = if self.breaker_failures >= BREAKER_THRESHOLD { self.go(now, BreakerState::Open) } else { None };
        if client_error(&report) {
            self.outage.failed(now, false);
            self.attempts = 0;
            let wait = self.next_round(report.interval, rng);
            return decision(now, report.verdict, wait, WaitReason::Regular, 1, MAX_RETRIES, &self.outage, t, None);
        }
        self.outage.failed(now, true);
        let (wait, attempt, reason) = self.after_failed_attempt(rng);
        decision(now, report.verdict, wait, reason, attempt, MAX_RETRIES, &self.outage, t, None)
    }

    fn breaker_state(&self) -> BreakerState {
        self.state
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }

    fn request_timeout(&self) -> Option<Duration> {
        Some(REQUEST_TIMEOUT)
    }

    fn first_attempt_delay(&self, rng: &mut dyn RngCore) -> Duration {
        jitter_sleep(rng)
    }
}
