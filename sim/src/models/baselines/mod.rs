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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use redflag_agent::resilience::{BreakerState, Gate, Outcome, Report};

    const INTERVAL: Duration = Duration::from_secs(300);

    fn fail(outcome: Outcome) -> Report {
        Report { outcome: Some(outcome), ..Report::of(Verdict::Retry) }
    }

    /// Drives a strategy through `n` failed attempts from `now`, returning each wait.
    fn waits(s: &mut dyn Strategy, now: &mut Instant, n: usize, report: Report) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        while out.len() < n {
            match s.admit(*now).0 {
                Gate::Go { .. } => {
                    let d = s.complete(*now, report, &mut rng);
                    out.push(d.delay);
                    *now = d.next_attempt_at;
                }
                Gate::Wait { until } => {
                    out.push(until - *now);
                    *now = until;
                }
            }
        }
        out
    }

    #[test]
    fn seed_p4_001_doubles_from_5s_opens_at_3_and_rests_an_interval() {
        let mut s = SeedP4001::new(INTERVAL);
        let mut now = Instant::now();
        let got = waits(&mut s, &mut now, 6, fail(Outcome::Status(502)));
        let secs: Vec<u64> = got.iter().map(|d| d.as_secs()).collect();
        // 5, 10, 20 (the third failure opens the breaker), then two attempts fail at once while
        // it is open (40 s, then 80 s + one interval: the burst is over), then a new burst.
        assert_eq!(secs, [5, 10, 20, 40, 380, 5]);
        assert_eq!(s.breaker_state(), BreakerState::Open);
        // A 429 is a client error: no retry, one interval.
        let mut s = SeedP4001::new(INTERVAL);
        let d = s.complete(Instant::now(), fail(Outcome::Status(429)), &mut StdRng::seed_from_u64(1));
        assert_eq!(d.delay, INTERVAL);
    }

    #[test]
    fn redflag_waits_an_interval_plus_up_to_29s_whatever_happens() {
        let mut s = Redflag0118::new(INTERVAL);
        let mut now = Instant::now();
        for d in waits(&mut s, &mut now, 50, fail(Outcome::Refused)) {
            assert!(d >= INTERVAL && d <= INTERVAL + Duration::from_secs(29) && d.subsec_nanos() == 0, "{d:?}");
        }
    }

    #[test]
    fn grpc_grows_by_1_6_to_120s_with_20_percent_jitter() {
        let mut s = Grpc::new(INTERVAL);
        let mut now = Instant::now();
        let got = waits(&mut s, &mut now, 20, fail(Outcome::Refused));
        assert_eq!(got[0], Duration::from_secs(1));
        let second = got[1].as_secs_f64();
        assert!((1.6 * 0.8..=1.6 * 1.2).contains(&second), "{second}");
        assert!(got.iter().all(|d| d.as_secs_f64() <= 120.0 * 1.2));
        assert!(got[19].as_secs_f64() >= 120.0 * 0.8);
    }

    #[test]
    fn aws_standard_makes_3_attempts_and_spends_its_quota() {
        let mut s = AwsStandard::new(INTERVAL);
        let mut now = Instant::now();
        let got = waits(&mut s, &mut now, 3, fail(Outcome::Timeout));
        assert!(got[0] <= Duration::from_secs(2) && got[1] <= Duration::from_secs(4), "{got:?}");
        assert!(got[2] >= INTERVAL.mul_f64(0.9), "the third failure ends the operation: {got:?}");
        // 500 tokens at 10 a timed-out retry: 50 retries, then none until a success refunds.
        let mut s = AwsStandard::new(INTERVAL);
        let got = waits(&mut s, &mut now, 200, fail(Outcome::Timeout));
        let retries = got.iter().filter(|d| **d < INTERVAL.mul_f64(0.9)).count();
        assert_eq!(retries, 50);
    }

    #[test]
    fn no_jitter_is_the_production_policy_without_jitter() {
        let config = redflag_agent::config::Config::from_json_str(
            r#"{"server_url":"https://p","agent_id":"a","token":"t","refresh_token":"r"}"#,
            "test",
        )
        .unwrap()
        .policy();
        let mut a = build(StrategyName::NoJitter, &config);
        let mut b = build(StrategyName::NoJitter, &config);
        let (mut ta, mut tb) = (Instant::now(), Instant::now());
        let tb0 = tb;
        let ta0 = ta;
        let wa = waits(a.as_mut(), &mut ta, 8, fail(Outcome::Refused));
        let wb = waits(b.as_mut(), &mut tb, 8, fail(Outcome::Refused));
        assert_eq!(wa, wb, "two agents failing together retry together");
        assert_eq!(ta - ta0, tb - tb0);
        assert_eq!(wa[0], Duration::from_secs(1));
    }
}
