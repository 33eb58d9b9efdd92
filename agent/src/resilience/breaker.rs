//! The circuit breaker: a pure state machine `Closed -> Open -> HalfOpen -> Closed | Open`.
//!
//! It is fed with `(now, result)` and answers whether a request may go out. It never reads a
//! clock: every method takes `now`. Every state change is returned as a [`Transition`] so the
//! check-in loop can log it and the simulation can trace it; nothing changes state silently.
//!
//! What counts as a failure is decided elsewhere (`classify.rs`, `policy.rs`): the breaker only
//! sees "the server was reachable" or "it was not".

use std::fmt;
use std::time::{Duration, Instant};

/// Breaker tuning. Validated by the config layer; [`Breaker::new`] re-asserts what it relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (>= 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before letting a probe through.
    pub open_timeout: Duration,
    /// How many requests half-open lets through at once (>= 1, default 1).
    pub half_open_max_probes: u32,
}

impl BreakerConfig {
    pub const DEFAULT_HALF_OPEN_MAX_PROBES: u32 = 1;
}

/// The breaker's state, as exposed to callers and persisted in the status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Parses the spelling of [`BreakerState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(BreakerState::Closed),
            "open" => Some(BreakerState::Open),
            "half_open" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }

    /// The four legal edges of the state machine. Anything else is a bug.
    pub fn is_legal_transition(from: BreakerState, to: BreakerState) -> bool {
        use BreakerState::*;
        matches!((from, to), (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open))
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, returned by every method that can cause one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub at: Instant,
}

/// The breaker's answer to "may a request go out now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Permit,
    /// Do not send; ask again at `until` (the end of the open period, or, while half-open
    /// probes are all in flight, one open period from now).
    Reject { until: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Inner,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        assert!(config.failure_threshold >= 1, "breaker threshold must be >= 1");
        assert!(config.half_open_max_probes >= 1, "half-open must admit at least one probe");
        Breaker { config, inner: Inner::Closed { failures: 0 } }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// While open, the instant at which the breaker will let a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Ends the current open period earlier, at `until` (never later than it was set to, so the
    /// configured timeout stays the longest). No effect unless the breaker is open.
    pub fn shorten_open(&mut self, until: Instant) {
        if let Inner::Open { until: current } = &mut self.inner {
            *current = (*current).min(until);
        }
    }

    /// Consecutive failures counted while closed.
    pub fn failures(&self) -> u32 {
        match self.inner {
            Inner::Closed { failures } => failures,
            _ => self.config.failure_threshold,
        }
    }

    /// May a request go out at `now`? An open breaker whose timeout has passed turns half-open
    /// here (and says so in the returned transition); half-open counts the probe it admits.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if let Inner::Open { until } = self.inner {
            if now < until {
                return (Admission::Reject { until }, None);
            }
            transition = self.go(now, Inner::HalfOpen { probes_in_flight: 0 });
        }
        match &mut self.inner {
            Inner::Closed { .. } => (Admission::Permit, transition),
            Inner::HalfOpen { probes_in_flight } => {
                if *probes_in_flight < self.config.half_open_max_probes {
                    *probes_in_flight += 1;
                    (Admission::Permit, transition)
                } else {
                    (Admission::Reject { until: now + self.config.open_timeout }, transition)
                }
            }
            Inner::Open { .. } => unreachable!("an expired open breaker was moved to half-open above"),
        }
    }

    /// The server answered. Closes a half-open breaker; resets the failure count when closed.
    /// A late answer to a request admitted before the breaker opened changes nothing.
    pub fn on_success(&mut self, now: Instant) -> Option<Transition> {
        match self.inner {
            Inner::Closed { .. } => {
                self.inner = Inner::Closed { failures: 0 };
                None
            }
            Inner::HalfOpen { .. } => self.go(now, Inner::Closed { failures: 0 }),
            Inner::Open { .. } => None,
        }
    }

    /// The server was unreachable or unavailable. Opens the breaker when the threshold is
    /// reached, and at once when a half-open probe fails.
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        let open = Inner::Open { until: now + self.config.open_timeout };
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.go(now, open)
                } else {
                    self.inner = Inner::Closed { failures };
                    None
                }
            }
            Inner::HalfOpen { .. } => self.go(now, open),
            // Already open: a straggler's failure does not extend the open period.
            Inner::Open { .. } => None,
        }
    }

    fn go(&mut self, now: Instant, next: Inner) -> Option<Transition> {
        let from = self.state();
        self.inner = next;
        let to = self.state();
        debug_assert!(BreakerState::is_legal_transition(from, to), "illegal breaker edge {from} -> {to}");
        Some(Transition { from, to, at: now })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, probes: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: threshold,
            open_timeout: Duration::from_secs(3),
            half_open_max_probes: probes,
        })
    }

    #[test]
    fn state_names_round_trip() {
        // The names in the `breaker` event and the trace, which the harness parses back.
        for (state, name) in [(BreakerState::Closed, "closed"), (BreakerState::Open, "open"), (BreakerState::HalfOpen, "half_open")] {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(BreakerState::parse(name), Some(state));
        }
    }

    #[test]
    fn a_half_open_breaker_with_its_probes_out_says_to_wait_a_whole_period() {
        let t0 = Instant::now();
        let mut b = breaker(1, 1);
        b.on_failure(t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(b.admit(later).0, Admission::Permit, "the half-open probe");
        let (second, _) = b.admit(later);
        assert_eq!(second, Admission::Reject { until: later + Duration::from_secs(3) }, "a second attempt while the probe is out");
    }

    #[test]
    fn failures_are_counted_while_closed() {
        let t0 = Instant::now();
        let mut b = breaker(3, 1);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.failures(), 2);
        b.on_failure(t0);
        assert_eq!(b.failures(), 3, "open: the threshold");
    }

    #[test]
    fn only_the_four_edges_are_legal() {
        use BreakerState::*;
        let all = [Closed, Open, HalfOpen];
        let legal: Vec<(BreakerState, BreakerState)> =
            all.iter().flat_map(|&a| all.iter().map(move |&b| (a, b))).filter(|&(a, b)| BreakerState::is_legal_transition(a, b)).collect();
        assert_eq!(legal, vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed), (HalfOpen, Open)]);
    }

    #[test]
    fn full_cycle() {
        let t0 = Instant::now();
        let mut b = breaker(2, 1);
        assert_eq!(b.on_failure(t0), None);
        let t = b.on_failure(t0).expect("opens at the threshold");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(b.admit(t0 + Duration::from_secs(1)).0, Admission::Reject { until: t0 + Duration::from_secs(3) });
        let (adm, t) = b.admit(t0 + Duration::from_secs(3));
        assert_eq!(adm, Admission::Permit);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
        // A second probe while the first is in flight is refused.
        assert!(matches!(b.admit(t0 + Duration::from_secs(3)).0, Admission::Reject { .. }));
        let t = b.on_success(t0 + Duration::from_secs(4)).expect("closes");
        assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Closed));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn failed_probe_reopens() {
        let t0 = Instant::now();
        let mut b = breaker(1, 1);
        b.on_failure(t0);
        b.admit(t0 + Duration::from_secs(3));
        let t = b.on_failure(t0 + Duration::from_secs(4)).unwrap();
        assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
        assert_eq!(b.open_until(), Some(t0 + Duration::from_secs(7)));
    }
}
