//! Baselines: other systems' retry behaviour, modelled as [`Strategy`] implementations, so the
//! harness can run the *same* fleet, loop, transport and trace under each and show why the
//! production defaults are what they are (`redflag-sim compare`). They are models of other
//! systems, not options of the production agent, which is why they live here and not in
//! `agent/`. One file per baseline, each citing what it models:
//!
//! * `redflag_0_1_18.rs`: the RedFlag agent today (fixed interval, a 0-29 s sleep, no backoff);
//! * `seed_p4_001.rs`: the seed document's Go snippets, as written;
//! * `no_jitter.rs`: the production policy with `jitter = "none"`;
//! * `aws_standard.rs`: the AWS SDKs' standard retry mode (retry quota);
//! * `grpc.rs`: gRPC's connection backoff.
//!
//! `default` is the production [`Policy`] itself; the world builds it directly (the very same
//! type the agent binary runs), so only the baselines come through [`build`].

mod aws_standard;
mod grpc;
mod no_jitter;
mod redflag_0_1_18;
mod seed_p4_001;

use std::time::{Duration, Instant};

use rand::Rng;
use redflag_agent::resilience::{Decision, Policy, PolicyConfig, Recovery, Strategy, Transition, Verdict, WaitReason};

use crate::scenario::StrategyName;

pub use aws_standard::AwsStandard;
pub use grpc::Grpc;
pub use redflag_0_1_18::Redflag0118;
pub use seed_p4_001::SeedP4001;

/// The decision-maker for `name`, configured from the scenario's agent policy (its check-in
/// interval, and for `no-jitter` everything else too).
pub fn build(name: StrategyName, config: &PolicyConfig) -> Box<dyn Strategy> {
    match name {
        StrategyName::Default => Box::new(Policy::new(*config)),
        StrategyName::NoJitter => Box::new(no_jitter::build(config)),
        StrategyName::Redflag0118 => Box::new(Redflag0118::new(config.check_in_interval)),
        StrategyName::SeedP4001 => Box::new(SeedP4001::new(config.check_in_interval)),
        StrategyName::AwsStandard => Box::new(AwsStandard::new(config.check_in_interval)),
        StrategyName::Grpc => Box::new(Grpc::new(config.check_in_interval)),
    }
}

/// How long an agent running `name` sleeps after it starts, before its first attempt (on top of
/// the world's start spread): RedFlag 0.1.18 sleeps 0-29 s before every check-in, the first
/// included. The others start at once.
pub fn startup_sleep(name: StrategyName, rng: &mut impl Rng) -> Duration {
    match name {
        StrategyName::Redflag0118 => redflag_0_1_18::jitter_sleep(rng),
        _ => Duration::ZERO,
    }
}

/// The regular check-in delay most baselines share with the production agent: the interval (or
/// a shorter rapid-polling one the server asked for), spread by ±10%.
pub(crate) fn regular_delay(interval: Duration, asked: Option<Duration>, rng: &mut dyn rand::RngCore) -> Duration {
    let base = asked.map_or(interval, |fast| fast.min(interval));
    let spread = redflag_agent::resilience::policy::REGULAR_JITTER_FRACTION;
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
