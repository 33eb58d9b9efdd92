//! `no-jitter`: the production policy with every random spread it adds removed. It isolates
//! what randomness buys a fleet: the same backoff, breaker, bursts and Retry-After, the same
//! mean waits, but agents that failed together retry together.
//!
//! Source: this repository's `agent/src/resilience/` (`policy.rs`, `backoff.rs`,
//! `retry_after.rs`), the policy the agent binary runs.
//!
//! What is removed: every draw the policy makes from its RNG, which are exactly
//!
//! * the backoff jitter (`jitter = "full"` by default: uniform in `[0, d]`),
//! * the shed spread (a shed answer that opens the breaker waits a uniform part of the first,
//!   or later the second, half of the open period),
//! * the Retry-After margin's jitter (up to 0.5 s on top of the next whole second),
//! * the ±10% spread of the regular interval.
//!
//! Modelling choice: each draw takes the middle of its range instead of a random point in it,
//! so every wait keeps its mean (full jitter waits `d/2`, the interval is exactly the
//! interval, a shed agent waits a quarter of the open period, then three quarters). Only the
//! spread goes, not the load. (`jitter = "none"` in the config is a different policy: it waits
//! the whole `d`, twice the mean, and keeps the other three spreads.)

use std::time::{Duration, Instant};

use rand::RngCore;
use redflag_agent::resilience::{BreakerState, Decision, Gate, Policy, PolicyConfig, Report, Strategy, Transition};

/// An RNG whose every draw is the middle of the range asked for: `next_u64` is `2^63`, so
/// `random::<f64>()` is 0.5 and `random_range(a..=b)` is `a + (b - a) / 2` (rand 0.9's
/// widening-multiply sampling, which never rejects twice).
#[derive(Debug, Clone, Copy, Default)]
pub struct Midpoint;

impl RngCore for Midpoint {
    fn next_u32(&mut self) -> u32 {
        1 << 31
    }
    fn next_u64(&mut self) -> u64 {
        1 << 63
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0x80);
    }
}

/// The production [`Policy`], deciding with [`Midpoint`] instead of the agent's RNG.
#[derive(Debug, Clone)]
pub struct NoJitter(Policy);

impl NoJitter {
    pub fn new(config: &PolicyConfig) -> Self {
        NoJitter(Policy::new(*config))
    }
}

impl Strategy for NoJitter {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        self.0.admit(now)
    }

    fn complete(&mut self, now: Instant, report: Report, _rng: &mut dyn RngCore) -> Decision {
        self.0.complete(now, report, &mut Midpoint)
    }

    fn breaker_state(&self) -> BreakerState {
        self.0.breaker_state()
    }

    fn consecutive_failures(&self) -> u32 {
        self.0.consecutive_failures()
    }

    fn first_attempt_delay(&self, _rng: &mut dyn RngCore) -> Duration {
        Strategy::first_attempt_delay(&self.0, &mut Midpoint)
    }
}
