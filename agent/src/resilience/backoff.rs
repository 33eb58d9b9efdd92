//! Exponential backoff with jitter: how long to wait before the next retry.
//!
//! This file holds only the arithmetic. It never sleeps and never reads a clock; the randomness
//! it needs arrives as an argument, so the simulation can seed it and proptest can drive it.
//! The breaker, the burst accounting and Retry-After handling live next door (`breaker.rs`,
//! `policy.rs`, `retry_after.rs`).
//!
//! The four jitter kinds follow Marc Brooker's "Exponential Backoff And Jitter" (AWS
//! Architecture Blog, 2015). Whatever the kind, the configured cap holds *after* jitter: no delay
//! this module returns is ever above `max_delay`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

/// How the exponential delay is spread out, so that a fleet of agents that failed together does
/// not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// `min(cap, initial * factor^n)`: predictable, but agents that failed at the same moment
    /// retry at the same moment.
    None,
    /// Uniform in `[0, min(cap, initial * factor^n)]`: the best spread, the default.
    #[default]
    Full,
    /// Half fixed, half random: uniform in `[d/2, d]` with `d = min(cap, initial * factor^n)`.
    Equal,
    /// Uniform in `[initial, previous * 3]`, then capped: grows from the previous delay rather
    /// than from the attempt number.
    Decorrelated,
}

impl Jitter {
    /// The spelling used in config files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
        }
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Jitter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Jitter::None),
            "full" => Ok(Jitter::Full),
            "equal" => Ok(Jitter::Equal),
            "decorrelated" => Ok(Jitter::Decorrelated),
            other => Err(format!(
                "unknown jitter kind {other:?}; expected one of \"none\", \"full\", \"equal\", \"decorrelated\""
            )),
        }
    }
}

/// Growth factor of decorrelated jitter, as in Brooker's article.
const DECORRELATED_GROWTH: f64 = 3.0;

/// The shape of the backoff curve. Validated by the config layer; [`Backoff::new`] re-asserts
/// the invariants it relies on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub initial_delay: Duration,
    /// The cap: no delay is ever longer, jitter included.
    pub max_delay: Duration,
    /// Each retry multiplies the un-jittered delay by this (>= 1).
    pub factor: f64,
    pub jitter: Jitter,
}

/// Backoff state for one agent. Only decorrelated jitter needs memory (the previous delay);
/// the other kinds depend on the retry index alone.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    previous: Duration,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        assert!(config.factor.is_finite() && config.factor >= 1.0, "backoff factor must be >= 1");
        assert!(config.initial_delay <= config.max_delay, "initial delay must not exceed the cap");
        Backoff { config, previous: config.initial_delay }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Forget the history (after a success, or at the start of a new burst).
    pub fn reset(&mut self) {
        self.previous = self.config.initial_delay;
    }

    /// The un-jittered delay before retry number `retry_index` (0 = the first retry):
    /// `min(cap, initial * factor^retry_index)`. Never decreases as the index grows.
    pub fn base_delay(&self, retry_index: u32) -> Duration {
        let c = &self.config;
        let cap = c.max_delay.as_secs_f64();
        // powi saturates to +inf for huge exponents; min() then picks the cap.
        let exponent = i32::try_from(retry_index).unwrap_or(i32::MAX);
        let raw = c.initial_delay.as_secs_f64() * c.factor.powi(exponent);
        if raw.is_nan() || raw >= cap {
            c.max_delay
        } else {
            Duration::from_secs_f64(raw).min(c.max_delay)
        }
    }

    /// The jittered delay before retry number `retry_index`. Always within `[0, max_delay]`.
    pub fn delay<R: Rng + ?Sized>(&mut self, retry_index: u32, rng: &mut R) -> Duration {
        let cap = self.config.max_delay;
        let delay = match self.config.jitter {
            Jitter::None => self.base_delay(retry_index),
            Jitter::Full => uniform(rng, Duration::ZERO, self.base_delay(retry_index)),
            Jitter::Equal => {
                let d = self.base_delay(retry_index);
                uniform(rng, d / 2, d)
            }
            Jitter::Decorrelated => {
                let low = self.config.initial_delay;
                let high = self.previous.mul_f64(DECORRELATED_GROWTH).min(cap).max(low);
                uniform(rng, low, high)
            }
        };
        let delay = delay.min(cap);
        self.previous = delay.max(self.config.initial_delay);
        delay
    }
}

/// Uniform duration in `[low, high]`, at nanosecond resolution. `low > high` returns `high`.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, low: Duration, high: Duration) -> Duration {
    if low >= high {
        return high;
    }
    let lo = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
    let hi = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config(jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
            factor: 2.0,
            jitter,
        }
    }

    #[test]
    fn no_jitter_doubles_until_the_cap() {
        let mut b = Backoff::new(config(Jitter::None));
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<u128> = (0..6).map(|i| b.delay(i, &mut rng).as_millis()).collect();
        assert_eq!(got, vec![200, 400, 800, 1600, 3000, 3000]);
    }

    #[test]
    fn huge_retry_index_saturates_at_the_cap() {
        let b = Backoff::new(config(Jitter::None));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(3));
    }

    #[test]
    fn jitter_names_round_trip() {
        for j in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            assert_eq!(j.as_str().parse::<Jitter>().unwrap(), j);
        }
        let err = "fulll".parse::<Jitter>().unwrap_err();
        assert!(err.contains("fulll"), "{err}");
    }

    #[test]
    fn jitter_displays_as_its_config_name() {
        // The name in logs and `check-config` is the one the config takes.
        for j in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            assert_eq!(j.to_string().parse::<Jitter>().unwrap(), j);
        }
    }

    #[test]
    fn equal_jitter_really_spreads() {
        // At the cap (3 s), equal jitter draws from [1.5 s, 3 s]: not always the cap.
        let mut b = Backoff::new(config(Jitter::Equal));
        let mut rng = StdRng::seed_from_u64(11);
        let got: Vec<Duration> = (0..20).map(|_| b.delay(10, &mut rng)).collect();
        assert!(got.iter().any(|d| *d < Duration::from_millis(2900)), "{got:?}");
    }

    #[test]
    fn reset_starts_decorrelated_jitter_over() {
        // Grown to the cap, then reset: the next delay is drawn from [initial, 3 x initial].
        for seed in 0..20 {
            let mut b = Backoff::new(config(Jitter::Decorrelated));
            let mut rng = StdRng::seed_from_u64(seed);
            for i in 0..30 {
                b.delay(i, &mut rng);
            }
            b.reset();
            let d = b.delay(0, &mut rng);
            assert!(d <= Duration::from_millis(600), "seed {seed}: {d:?} after a reset");
        }
    }

    #[test]
    fn equal_jitter_keeps_at_least_half() {
        let mut b = Backoff::new(config(Jitter::Equal));
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..50 {
            let base = b.base_delay(i);
            let d = b.delay(i, &mut rng);
            assert!(d >= base / 2 && d <= base, "retry {i}: {d:?} vs base {base:?}");
        }
    }
}
