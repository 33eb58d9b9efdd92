//! `grpc` and `grpc-retry`: an agent that checks in over a gRPC channel, every interval.
//!
//! Sources: `grpc/grpc` `doc/connection-backoff.md` (INITIAL_BACKOFF 1 s, MULTIPLIER 1.6,
//! MAX_BACKOFF 120 s, JITTER 0.2, MIN_CONNECT_TIMEOUT 20 s; the backoff deadline is set when a
//! connection attempt starts), `doc/http-grpc-status-mapping.md` (HTTP 429, 502, 503 and 504
//! become UNAVAILABLE; 401 UNAUTHENTICATED; other codes UNKNOWN or INTERNAL) and gRFC A6
//! "gRPC Retry Design" (`grpc/proposal` `A6-client-retries.md`, 2017-09-13): `retryPolicy`
//! (`maxAttempts`, at most 5 by default; retry `n` at `random(0, min(initialBackoff ×
//! backoffMultiplier^(n-1), maxBackoff))`; `retryableStatusCodes`; the call's deadline covers
//! every attempt) and `retryThrottling` (`token_count` starts at `maxTokens`; every failed
//! attempt with a retryable status takes 1, every success adds `tokenRatio`; no retries while
//! `token_count <= maxTokens / 2`); server pushback only through `grpc-retry-pushback-ms`.
//!
//! What the sources settle:
//!
//! * connection backoff applies to *connection* failures only: a refused connection, a reset
//!   one, a connect that fails otherwise (DNS, TLS) or outlasts MIN_CONNECT_TIMEOUT. Each wait
//!   is measured from the start of the attempt that failed: 1 s after the first, then ×1.6 up
//!   to 120 s, spread by ±20%; a success resets it;
//! * an RPC that fails on a live connection (an HTTP status from a proxy in front, a deadline)
//!   is not a connection failure: without a retry policy (`grpc`) the failure goes back to the
//!   application; with one (`grpc-retry`) UNAVAILABLE is retried within the same call, under
//!   the call's deadline and the retry throttle.
//!
//! Modelling choices the sources do not settle:
//!
//! * **The application.** The agent calls the check-in RPC every interval (±10%, as the
//!   production agent does); a call that fails on a live connection waits for the next one.
//!   Each call has a 10 s deadline (the production agent's request timeout; gRPC has none by
//!   default, and a call without one on a dead connection waits until TCP gives up).
//! * **Wait for ready.** After a connection failure the next check-in goes out when the
//!   channel's next connection attempt is due (as a `waitForReady` call queued on the channel
//!   would): the most favourable reading for recovery. Without it the call fails at once while
//!   the channel backs off and the agent waits for its next interval.
//! * **What is a connection failure here.** The simulated transport opens one connection per
//!   request, so a partition shows as a request timeout. A gRPC channel holds one long-lived
//!   connection and, with keepalive off (its default), does not notice a partition: its calls
//!   hit their deadline on a connection it believes live. So a timeout counts as a deadline
//!   (no connection backoff), and `Refused`, `Reset` and other network errors count as
//!   connection failures. Behind the simulated proxy, a crashed server is a 502 on a live
//!   connection: UNAVAILABLE, not a connection failure.
//! * **`grpc-retry`'s policy** is gRFC A6's example: `maxAttempts` 4, `initialBackoff` 0.1 s,
//!   `maxBackoff` 1 s, `backoffMultiplier` 2, `retryableStatusCodes` [UNAVAILABLE]; and its
//!   throttling example: `maxTokens` 10, `tokenRatio` 0.1, for the one channel of the agent.
//!   The server's HTTP `Retry-After` is not gRPC pushback and is ignored.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Outcome, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision, regular_delay};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MULTIPLIER: f64 = 1.6;
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
pub const JITTER: f64 = 0.2;
/// The deadline the application gives every check-in call (see the modelling choices).
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// gRFC A6's example retry policy and throttling.
pub mod retry_policy {
    use std::time::Duration;

    pub const MAX_ATTEMPTS: u32 = 4;
    pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    pub const MAX_TOKENS: f64 = 10.0;
    pub const TOKEN_RATIO: f64 = 0.1;
}

/// The longest wait after a failure: a connection backoff at its cap, spread up.
pub(super) fn after_failure_max() -> Duration {
    MAX_BACKOFF.mul_f64(1.0 + JITTER)
}

/// HTTP statuses gRPC maps to UNAVAILABLE, the one retryable status of the policy.
fn unavailable(outcome: Option<Outcome>) -> bool {
    matches!(outcome, Some(Outcome::Status(429 | 502 | 503 | 504)))
}

fn connection_failure(outcome: Option<Outcome>) -> bool {
    matches!(outcome, Some(Outcome::Refused | Outcome::Reset | Outcome::Network))
}

/// The call in flight under a retry policy.
#[derive(Debug, Clone, Copy)]
struct Call {
    started: Instant,
    /// Attempts made so far, the original included.
    attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Grpc {
    interval: Duration,
    /// `grpc-retry`: gRFC A6's retry policy and throttling on.
    retry_policy: bool,
    /// The connection backoff before jitter; `None` until a connection failure.
    backoff: Option<Duration>,
    /// When the attempt in flight started (waits are measured from there).
    attempt_started: Option<Instant>,
    call: Option<Call>,
    tokens: f64,
    outage: Outage,
}

impl Grpc {
    pub fn new(interval: Duration, retry_policy: bool) -> Self {
        Grpc {
            interval,
            retry_policy,
            backoff: None,
            attempt_started: None,
            call: None,
            tokens: retry_policy::MAX_TOKENS,
            outage: Outage::default(),
        }
    }

    /// The call failed for the application: the next check-in is the regular one.
    fn call_failed(&mut self, now: Instant, report: Report, retryable: bool, rng: &mut dyn RngCore) -> Decision {
        self.call = None;
        self.outage.failed(now, retryable);
        let delay = regular_delay(self.interval, report.interval, rng);
        decision(now, report.verdict, delay, WaitReason::Regular, 1, 0, &self.outage, None, None)
    }
}

impl Strategy for Grpc {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        self.attempt_started = Some(now);
        if self.call.is_none() {
            self.call = Some(Call { started: now, attempts: 0 });
        }
        if let Some(call) = &mut self.call {
            call.attempts += 1;
        }
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        let started = self.attempt_started.take().unwrap_or(now);
        if report.verdict == Verdict::Success {
            self.backoff = None;
            self.call = None;
            self.tokens = (self.tokens + retry_policy::TOKEN_RATIO).min(retry_policy::MAX_TOKENS);
            let recovered = self.outage.succeeded(now);
            let delay = regular_delay(self.interval, report.interval, rng);
            return decision(now, report.verdict, delay, WaitReason::Regular, 0, 0, &self.outage, None, recovered);
        }
        if connection_failure(report.outcome) {
            // The channel reconnects with backoff; the waiting call goes out when it does.
            self.outage.failed(now, true);
            let backoff = match self.backoff {
                None => INITIAL_BACKOFF,
                Some(last) => last.mul_f64(MULTIPLIER).min(MAX_BACKOFF).mul_f64(1.0 - JITTER + 2.0 * JITTER * rng.random::<f64>()),
            };
            self.backoff = Some(match self.backoff {
                None => INITIAL_BACKOFF,
                Some(last) => last.mul_f64(MULTIPLIER).min(MAX_BACKOFF),
            });
            let delay = (started + backoff).saturating_duration_since(now);
            let attempt = self.call.map_or(1, |c| c.attempts);
            return decision(now, report.verdict, delay, WaitReason::Backoff, attempt, 0, &self.outage, None, None);
        }
        let retryable = report.verdict == Verdict::Retry;
        if !(self.retry_policy && unavailable(report.outcome)) {
            return self.call_failed(now, report, retryable, rng);
        }
        // UNAVAILABLE under gRFC A6: the throttle first, then the policy and the deadline.
        self.tokens = (self.tokens - 1.0).max(0.0);
        let call = self.call.unwrap_or(Call { started, attempts: 1 });
        let throttled = self.tokens <= retry_policy::MAX_TOKENS / 2.0;
        if throttled || call.attempts >= retry_policy::MAX_ATTEMPTS {
            return self.call_failed(now, report, retryable, rng);
        }
        let ceiling = retry_policy::INITIAL_BACKOFF
            .mul_f64(retry_policy::BACKOFF_MULTIPLIER.powi(call.attempts as i32 - 1))
            .min(retry_policy::MAX_BACKOFF);
        let delay = ceiling.mul_f64(rng.random::<f64>());
        if now + delay >= call.started + CALL_DEADLINE {
            return self.call_failed(now, report, retryable, rng);
        }
        self.outage.failed(now, true);
        decision(now, report.verdict, delay, WaitReason::Backoff, call.attempts, retry_policy::MAX_ATTEMPTS, &self.outage, None, None)
    }

    fn breaker_state(&self) -> BreakerState {
        BreakerState::Closed
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }
}
