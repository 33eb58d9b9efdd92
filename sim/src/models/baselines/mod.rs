//! Baselines: other systems' retry behaviour, modelled as [`Strategy`] implementations, so the
//! harness can run the *same* fleet, loop, transport and trace under each and show why the
//! production defaults are what they are (`redflag-sim compare`). They are models of other
//! systems, not options of the production agent, which is why they live here and not in
//! `agent/`. One file per baseline; each opens with its sources (URL or repository path and
//! version) and every modelling choice its sources do not settle:
//!
//! * `redflag_0_1_18.rs`: the RedFlag 0.1.18 Go agent (a 0-29 s sleep, then one interval, no
//!   backoff, a 30 s HTTP client timeout);
//! * `seed_p4_001.rs`: the seed document's Go snippets, in the `main.go` loop they plug into;
//! * `no_jitter.rs`: the production policy with every random spread removed;
//! * `aws_standard.rs`: the AWS SDKs' standard retry mode (retry quota), as before and as
//!   updated in 2026;
//! * `grpc.rs`: a gRPC channel (connection backoff), with and without gRFC A6's retry policy.
//!
//! A baseline brings what its system has through the [`Strategy`] hooks (its request timeout,
//! its first-check-in delay, ...), and is judged by its own promises ([`Promises`]), not by the
//! production agent's intervals and gaps.
//!
//! `default` is the production [`Policy`] itself, the very type the agent binary runs.

mod aws_standard;
mod grpc;
mod no_jitter;
mod redflag_0_1_18;
mod seed_p4_001;

use std::time::{Duration, Instant};

use rand::Rng;
use redflag_agent::config::Config;
use redflag_agent::resilience::policy::REGULAR_JITTER_FRACTION;
use redflag_agent::resilience::{Decision, Policy, PolicyConfig, Recovery, Strategy, Transition, Verdict, WaitReason};

use crate::scenario::StrategyName;

pub use aws_standard::{AwsStandard, Generation as AwsGeneration};
pub use grpc::Grpc;
pub use no_jitter::NoJitter;
pub use redflag_0_1_18::Redflag0118;
pub use seed_p4_001::SeedP4001;

/// The decision-maker for `name`, configured from the scenario's agent policy (its check-in
/// interval; for `default` and `no-jitter` everything else too).
pub fn build(name: StrategyName, config: &PolicyConfig) -> Box<dyn Strategy> {
    let interval = config.check_in_interval;
    match name {
        StrategyName::Default => Box::new(Policy::new(*config)),
        StrategyName::NoJitter => Box::new(NoJitter::new(config)),
        StrategyName::Redflag0118 => Box::new(Redflag0118::new(interval)),
        StrategyName::SeedP4001 => Box::new(SeedP4001::new(interval)),
        StrategyName::AwsStandard => Box::new(AwsStandard::new(interval, AwsGeneration::Standard)),
        StrategyName::AwsStandard2026 => Box::new(AwsStandard::new(interval, AwsGeneration::Standard2026)),
        StrategyName::Grpc => Box::new(Grpc::new(interval, false)),
        StrategyName::GrpcRetry => Box::new(Grpc::new(interval, true)),
    }
}

/// How far a regular wait (after a check-in) may exceed its base interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegularSpread {
    /// ±this share of the interval (the production agent's 10%).
    Fraction(f64),
    /// The interval plus up to this much (RedFlag 0.1.18's 0-29 s sleep).
    PlusUpTo(Duration),
}

/// What a strategy's own rules promise about its waits: the bounds the judge holds its runs to
/// (`never_gives_up` without a `max_gap`, `bounded_waits`, the implicit "alive between
/// faults"), and the request timeout the loop runs it with. Each system is judged by its own
/// promises, not by the production agent's: RedFlag 0.1.18 sleeps up to 29 s on top of its
/// interval by design, and is not failed for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Promises {
    /// The timeout every request runs under.
    pub request_timeout: Duration,
    /// The regular check-in interval (before its spread).
    pub interval: Duration,
    pub regular: RegularSpread,
    /// The longest wait from the end of a retryable failure to the next request (an open
    /// breaker's lock-out included), a Retry-After aside.
    pub after_failure_max: Duration,
    /// The longest Retry-After it honours (`None`: it does not read Retry-After).
    pub retry_after_max: Option<Duration>,
}

impl Promises {
    /// The longest regular wait for a base interval (the configured one, or rapid polling's).
    pub fn regular_max(&self, base: Duration) -> Duration {
        match self.regular {
            RegularSpread::Fraction(f) => base.mul_f64(1.0 + f),
            RegularSpread::PlusUpTo(d) => base + d,
        }
    }

    /// The longest wait between two attempts its rules allow, whatever happened.
    pub fn max_wait(&self) -> Duration {
        self.regular_max(self.interval).max(self.after_failure_max).max(self.retry_after_max.unwrap_or_default())
    }

    /// How long after a fault ends every agent must have checked in again: the attempt in
    /// flight, the longest wait, a health probe and the check-in.
    pub fn recovery_max(&self) -> Duration {
        self.max_wait() + self.request_timeout * 3
    }

    /// "a check-in every 30s + 10%", "a check-in every 30s + up to 29s".
    pub fn describe_regular(&self) -> String {
        let every = crate::scenario::fmt_duration(self.interval);
        match self.regular {
            RegularSpread::Fraction(f) => format!("a check-in every {every} + {:.0}%", f * 100.0),
            RegularSpread::PlusUpTo(d) => format!("a check-in every {every} + up to {}", crate::scenario::fmt_duration(d)),
        }
    }
}

/// The promises of `name` with the scenario's agent config.
pub fn promises(name: StrategyName, config: &Config) -> Promises {
    let policy = config.policy();
    let agent_timeout = config.resilience.request_timeout;
    let interval = policy.check_in_interval;
    let ten_percent = RegularSpread::Fraction(REGULAR_JITTER_FRACTION);
    let regular_max = interval.mul_f64(1.0 + REGULAR_JITTER_FRACTION);
    match name {
        StrategyName::Default | StrategyName::NoJitter => Promises {
            request_timeout: agent_timeout,
            interval,
            regular: ten_percent,
            after_failure_max: policy.backoff.max_delay.max(policy.breaker.open_timeout),
            retry_after_max: Some(policy.retry_after_max),
        },
        StrategyName::Redflag0118 => redflag_0_1_18::promises(interval),
        StrategyName::SeedP4001 => seed_p4_001::promises(interval),
        StrategyName::AwsStandard | StrategyName::AwsStandard2026 => Promises {
            request_timeout: agent_timeout,
            interval,
            regular: ten_percent,
            after_failure_max: aws_standard::after_failure_max(name == StrategyName::AwsStandard2026).max(regular_max),
            retry_after_max: None,
        },
        StrategyName::Grpc | StrategyName::GrpcRetry => Promises {
            request_timeout: agent_timeout,
            interval,
            regular: ten_percent,
            after_failure_max: grpc::after_failure_max().max(regular_max),
            retry_after_max: None,
        },
    }
}

/// The regular check-in delay most baselines share with the production agent: the interval (or
/// a shorter rapid-polling one the server asked for), spread by ±10%.
pub(crate) fn regular_delay(interval: Duration, asked: Option<Duration>, rng: &mut dyn rand::RngCore) -> Duration {
    let base = asked.map_or(interval, |fast| fast.min(interval));
    let spread = REGULAR_JITTER_FRACTION;
    base.mul_f64(1.0 - spread + 2.0 * spread * rng.random::<f64>())
}

/// Bookkeeping every baseline shares: failures since the last success, and when the outage
/// began, so the loop can report a recovery the way it does for the production policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outage {
    consecutive_failures: u32,
    started: Option<Instant>,
}

impl Outage {
    pub(crate) fn failed(&mut self, now: Instant, retryable: bool) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if retryable {
            self.started.get_or_insert(now);
        }
    }

    /// A success: the recovery it ends, if it ends one.
    pub(crate) fn succeeded(&mut self, now: Instant) -> Option<Recovery> {
        let failed_attempts = std::mem::take(&mut self.consecutive_failures);
        self.started.take().map(|s| Recovery { outage: now.saturating_duration_since(s), failed_attempts })
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// A [`Decision`] from its parts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decision(
    now: Instant,
    verdict: Verdict,
    delay: Duration,
    reason: WaitReason,
    attempt: u32,
    max_attempts: u32,
    outage: &Outage,
    transition: Option<Transition>,
    recovered: Option<Recovery>,
) -> Decision {
    Decision {
        verdict,
        delay,
        next_attempt_at: now + delay,
        reason,
        attempt,
        max_attempts,
        consecutive_failures: outage.consecutive_failures(),
        transition,
        recovered,
    }
}

#[cfg(test)]
mod tests;
