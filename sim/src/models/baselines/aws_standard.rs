//! `aws-standard` and `aws-standard-2026`: the AWS SDKs' "standard" retry mode around the
//! check-in, as it was until November 2026 and as updated then.
//!
//! Sources: AWS SDKs and Tools Reference Guide, "Retry behavior"
//! (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>); `aws-sdk-go-v2`
//! `aws/retry` (`standard.go`, `retry_token_bucket`/`ratelimit`, `jitter_backoff.go`: legacy
//! `b × 2^attempt` and `backoffDelay2026`), `botocore/retries/standard.py` (`ExponentialBackoff`,
//! `RetryQuotaChecker`); for 2026, the AWS Developer Tools Blog "Announcing updated retry
//! behavior for AWS SDKs and Tools" and aws-sdk-go-v2 PR #3400 (`AWS_NEW_RETRIES_2026`).
//!
//! What the sources settle:
//!
//! * at most 3 attempts per operation (`max_attempts`); a full-jitter delay before each retry;
//!   the delay is capped at 20 s (`MAX_BACKOFF`);
//! * a retry quota per client: a token bucket of 500. Before November 2026 a retry costs 5
//!   tokens, 10 after a timeout; a success refunds what its retry cost, or 1 for a first
//!   attempt (`NO_RETRY_INCREMENT`), never above 500. With too few tokens the error is returned
//!   without a retry;
//! * from November 2026 (`aws-standard-2026`): the delay base is 50 ms for transient errors and
//!   1 s for throttling ones, capped *before* jitter (`t = rand × min(x × 2^i, 20 s)`); a retry
//!   costs 14 tokens, 5 after a throttling error, and timeouts are no longer special; the
//!   `x-amz-retry-after` header (milliseconds) is honoured, clamped between the computed delay
//!   and 5 s above it;
//! * retried: transient errors (5xx 500/502/503/504, connection errors, timeouts) and
//!   throttling (429 and throttling error codes); not retried: other 4xx.
//!
//! Modelling choices the sources do not settle:
//!
//! * **The exponent of the first retry.** botocore waits `rand × 2^0` s before the first retry
//!   (up to 1 s); the Go v2 SDK `rand × 2^1` s (up to 2 s), because it passes the 1-based attempt
//!   number. RedFlag is a Go program: the model follows the Go v2 SDK (first retry up to 2 s,
//!   then 4, 8, 16, 20 s), and the same exponent in 2026 mode (first retry up to 100 ms).
//! * **One client per agent**, so one quota per agent: an agent process builds one SDK client.
//! * **What happens after an operation fails for good is the harness's choice**, not the SDK's:
//!   the agent waits for its next regular check-in (the interval ±10%, as the production agent
//!   does), as a polling application around the SDK would.
//! * **Timeouts.** The Go SDK's default HTTP client has no overall timeout; the application's
//!   call deadline is the production agent's 10 s request timeout.
//! * **Retry-After.** Before 2026 the standard mode reads no header. The 2026 mode reads
//!   `x-amz-retry-after`; this server (like RedFlag) sends HTTP `Retry-After` in seconds, which
//!   the model hands to the 2026 mode as if it were that header. 429 is the one throttling error
//!   (RedFlag has no error codes); 503 is transient.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Outcome, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision, regular_delay};

pub const MAX_ATTEMPTS: u32 = 3;
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
pub const QUOTA_MAX: u32 = 500;
/// What a success refunds when it was a first attempt (`NO_RETRY_INCREMENT`).
pub const NO_RETRY_INCREMENT: u32 = 1;

/// Before November 2026.
pub mod standard {
    pub const RETRY_COST: u32 = 5;
    pub const TIMEOUT_RETRY_COST: u32 = 10;
}

/// From November 2026 (`AWS_NEW_RETRIES_2026`).
pub mod standard_2026 {
    use std::time::Duration;

    pub const RETRY_COST: u32 = 14;
    pub const THROTTLING_RETRY_COST: u32 = 5;
    pub const BASE_DELAY: Duration = Duration::from_millis(50);
    pub const THROTTLING_BASE_DELAY: Duration = Duration::from_secs(1);
    /// The most `x-amz-retry-after` may add to the computed delay.
    pub const RETRY_AFTER_ABOVE_MAX: Duration = Duration::from_secs(5);
}

/// Which standard mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    Standard,
    Standard2026,
}

/// The longest wait after a retried failure (before the operation gives up).
pub(super) fn after_failure_max(v2026: bool) -> Duration {
    if v2026 { BACKOFF_MAX + standard_2026::RETRY_AFTER_ABOVE_MAX } else { BACKOFF_MAX }
}

#[derive(Debug, Clone)]
pub struct AwsStandard {
    interval: Duration,
    generation: Generation,
    quota: u32,
    /// Failed attempts in the current operation.
    failed: u32,
    /// What the attempt in flight cost the quota, when it is a retry.
    retry_cost: Option<u32>,
    outage: Outage,
}

impl AwsStandard {
    pub fn new(interval: Duration, generation: Generation) -> Self {
        AwsStandard { interval, generation, quota: QUOTA_MAX, failed: 0, retry_cost: None, outage: Outage::default() }
    }

    /// The operation is over (done or given up): the next one is the regular check-in.
    fn end_operation(&mut self) {
        self.failed = 0;
        self.retry_cost = None;
    }

    /// What retrying this failure costs the quota.
    fn cost(&self, report: &Report) -> u32 {
        let throttled = report.outcome == Some(Outcome::Status(429));
        match self.generation {
            Generation::Standard if report.outcome == Some(Outcome::Timeout) => standard::TIMEOUT_RETRY_COST,
            Generation::Standard => standard::RETRY_COST,
            Generation::Standard2026 if throttled => standard_2026::THROTTLING_RETRY_COST,
            Generation::Standard2026 => standard_2026::RETRY_COST,
        }
    }

    /// The delay before retry `attempt` (1-based: the first retry follows attempt 1).
    fn delay(&self, attempt: u32, report: &Report, rng: &mut dyn RngCore) -> Duration {
        let exponent = 2f64.powi(attempt.min(30) as i32);
        match self.generation {
            // `b × 2^attempt` seconds, the cap after jitter.
            Generation::Standard => Duration::from_secs_f64(rng.random::<f64>() * exponent).min(BACKOFF_MAX),
            Generation::Standard2026 => {
                let base = if report.outcome == Some(Outcome::Status(429)) {
                    standard_2026::THROTTLING_BASE_DELAY
                } else {
                    standard_2026::BASE_DELAY
                };
                let computed = base.mul_f64(exponent).min(BACKOFF_MAX).mul_f64(rng.random::<f64>());
                match report.retry_after {
                    Some(asked) => asked.clamp(computed, computed + standard_2026::RETRY_AFTER_ABOVE_MAX),
                    None => computed,
                }
            }
        }
    }
}

impl Strategy for AwsStandard {
    fn admit(&mut self, _now: Instant) -> (Gate, Option<Transition>) {
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        let regular = regular_delay(self.interval, report.interval, rng);
        match report.verdict {
            Verdict::Success => {
                let refund = self.retry_cost.unwrap_or(NO_RETRY_INCREMENT);
                self.quota = (self.quota + refund).min(QUOTA_MAX);
                self.end_operation();
                let recovered = self.outage.succeeded(now);
                decision(now, report.verdict, regular, WaitReason::Regular, 0, MAX_ATTEMPTS, &self.outage, None, recovered)
            }
            Verdict::FailFast | Verdict::Renew => {
                self.outage.failed(now, false);
                self.end_operation();
                decision(now, report.verdict, regular, WaitReason::Regular, 1, MAX_ATTEMPTS, &self.outage, None, None)
            }
            Verdict::Retry => {
                self.outage.failed(now, true);
                self.failed += 1;
                let attempt = self.failed;
                let cost = self.cost(&report);
                if attempt >= MAX_ATTEMPTS || self.quota < cost {
                    // Attempts used up, or no quota for a retry: the operation fails.
                    self.end_operation();
                    return decision(now, report.verdict, regular, WaitReason::BurstRest, attempt, MAX_ATTEMPTS, &self.outage, None, None);
                }
                self.quota -= cost;
                self.retry_cost = Some(cost);
                let delay = self.delay(attempt, &report, rng);
                let reason = if report.retry_after.is_some() && self.generation == Generation::Standard2026 {
                    WaitReason::RetryAfter
                } else {
                    WaitReason::Backoff
                };
                decision(now, report.verdict, delay, reason, attempt, MAX_ATTEMPTS, &self.outage, None, None)
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
