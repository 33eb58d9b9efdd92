//! `aws-standard`: the AWS SDKs' "standard" retry mode (AWS SDKs and Tools Reference Guide,
//! "Retry behavior"): at most 3 attempts per operation; before retry `i` (1-based) a full-jitter
//! delay of `rand × min(20 s, 2^i s)`; and a client-wide retry quota, a token bucket of 500
//! that a retry costs 5 tokens (10 after a timeout) and a success refunds (the retry's cost, or
//! 1 for a first attempt), never above 500. With the bucket too low, a failure is not retried.
//! No breaker, no health probe. An operation that fails for good waits for the agent's next
//! regular check-in (±10%, as the production agent does).

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Outcome, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, decision, regular_delay};

pub const MAX_ATTEMPTS: u32 = 3;
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
pub const QUOTA_MAX: u32 = 500;
pub const RETRY_COST: u32 = 5;
pub const TIMEOUT_RETRY_COST: u32 = 10;
/// What a success refunds when it was a first attempt (`NO_RETRY_INCREMENT`).
pub const NO_RETRY_INCREMENT: u32 = 1;

#[derive(Debug, Clone)]
pub struct AwsStandard {
    interval: Duration,
    quota: u32,
    /// Failed attempts in the current operation.
    failed: u32,
    /// What the attempt in flight cost the quota, when it is a retry.
    retry_cost: Option<u32>,
    outage: Outage,
}

impl AwsStandard {
    pub fn new(interval: Duration) -> Self {
        AwsStandard { interval, quota: QUOTA_MAX, failed: 0, retry_cost: None, outage: Outage::default() }
    }

    /// The operation is over (done or given up): the next one is the regular check-in.
    fn end_operation(&mut self) {
        self.failed = 0;
        self.retry_cost = None;
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
                let cost = if report.outcome == Some(Outcome::Timeout) { TIMEOUT_RETRY_COST } else { RETRY_COST };
                if attempt >= MAX_ATTEMPTS || self.quota < cost {
                    // Attempts used up, or no quota for a retry: the operation fails.
                    self.end_operation();
                    return decision(now, report.verdict, regular, WaitReason::BurstRest, attempt, MAX_ATTEMPTS, &self.outage, None, None);
                }
                self.quota -= cost;
                self.retry_cost = Some(cost);
                let ceiling = Duration::from_secs(1u64 << attempt.min(5)).min(BACKOFF_MAX);
                let delay = ceiling.mul_f64(rng.random::<f64>());
                decision(now, report.verdict, delay, WaitReason::Backoff, attempt, MAX_ATTEMPTS, &self.outage, None, None)
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
