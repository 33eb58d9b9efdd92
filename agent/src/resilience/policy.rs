//! The retry policy: one object that combines backoff, breaker, burst accounting and Retry-After
//! into the two decisions the check-in loop needs.
//!
//! * [`Policy::admit`]: an attempt is due; may it go out, and should it probe `/health` first?
//! * [`Policy::complete`]: the attempt ended with this verdict; when is the next one due?
//!
//! Pure, like the rest of `resilience/`: time and randomness are arguments. The loop in
//! `checkin.rs` is the only caller in production; the simulation drives the same loop, and the
//! benches and proptests drive this file directly.
//!
//! How a long outage plays out with the defaults (max_retries 5, threshold 5):
//! a *burst* of up to `max_retries` failed attempts, spaced by jittered exponential delays,
//! ends when the breaker opens (or, with a higher threshold, when the burst is used up and the
//! agent rests for one cap). While the breaker is open the agent waits for its timeout, then a
//! single half-open probe goes out, preceded by a `/health` check. The longest wait anywhere in
//! this cycle is bounded by [`PolicyConfig::max_wait`], which is what guarantees recovery
//! within seconds of the server's return, however long the outage lasted.

use std::time::{Duration, Instant};

use rand::Rng;

use super::backoff::{Backoff, BackoffConfig, uniform};
use super::breaker::{Admission, Breaker, BreakerConfig, BreakerState, Transition};
use super::classify::{Outcome, Verdict};
use super::retry_after::with_margin;

/// Regular check-ins are spread by at most this fraction of the interval, either way.
pub const REGULAR_JITTER_FRACTION: f64 = 0.1;
/// After a shed answer (503/429 without Retry-After) opens the breaker, the wait is drawn from
/// the first 1/this of the open period (for [`SHED_SPREAD_PERIODS`] open periods after the
/// first such opening in a row of shed answers), then from the rest of it.
pub const SHED_OPEN_DIVISOR: u32 = 2;
/// For how many open periods after the first shed answer shed answers may shorten the open
/// period. A recovering fleet meets shedding for seconds (the queue has room again soon); a
/// server that answers 503 for an hour, like a load balancer with no backend, is then probed
/// at most 1/(1 - 1/SHED_OPEN_DIVISOR) times as often as a down one, not SHED_OPEN_DIVISOR
/// times.
pub const SHED_SPREAD_PERIODS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    pub backoff: BackoffConfig,
    pub breaker: BreakerConfig,
    /// Failed attempts in one burst before the agent rests for one cap (>= 1). Bounds a burst,
    /// never the agent's life.
    pub max_retries: u32,
    /// The regular check-in interval, before its ±10% jitter.
    pub check_in_interval: Duration,
    /// The longest Retry-After the agent honours; longer requests are clamped to this.
    pub retry_after_max: Duration,
    /// Probe `GET /health` before a check-in while recovering.
    pub health_check: bool,
}

impl PolicyConfig {
    /// The longest the policy can ever ask the loop to wait between two attempts. Every delay
    /// [`Policy::complete`] returns is at most this. `rapid_polling` only shortens the interval.
    pub fn max_wait(&self) -> Duration {
        self.check_in_interval
            .mul_f64(1.0 + REGULAR_JITTER_FRACTION)
            .max(self.backoff.max_delay)
            .max(self.breaker.open_timeout)
            .max(self.retry_after_max)
    }
}

/// The answer to "an attempt is due".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send the attempt. `probe_health`: check `GET /health` first (we are recovering).
    Go { probe_health: bool },
    /// The breaker is open: ask again at `until`.
    Wait { until: Instant },
}

/// Why the next attempt waits as long as it does (for logs and traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// The regular, jittered check-in interval.
    Regular,
    /// Exponential backoff inside a burst.
    Backoff,
    /// The burst of `max_retries` is used up; rest for one cap before the next burst.
    BurstRest,
    /// The breaker is open until its timeout.
    BreakerOpen,
    /// The server's Retry-After (clamped) is longer than our own delay.
    RetryAfter,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Regular => "regular",
            WaitReason::Backoff => "backoff",
            WaitReason::BurstRest => "burst_rest",
            WaitReason::BreakerOpen => "breaker_open",
            WaitReason::RetryAfter => "retry_after",
        }
    }
}

/// What the loop reports when an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub verdict: Verdict,
    /// The server's Retry-After, already parsed; only honoured on retryable verdicts.
    pub retry_after: Option<Duration>,
    /// A shorter regular interval the server asked for (rapid polling), if any.
    pub interval: Option<Duration>,
    /// What the request that decided the attempt met (status, timeout, refusal...), when
    /// known. The production policy decides on the verdict alone; strategies modelled on other
    /// systems (which, say, fail fast on 429 or price a timeout higher) read this.
    pub outcome: Option<Outcome>,
}

impl Report {
    pub fn of(verdict: Verdict) -> Self {
        Report { verdict, retry_after: None, interval: None, outcome: None }
    }

    /// The server answered "busy" (503 or 429) without saying when to come back: it is up and
    /// shedding load, not down.
    pub fn overloaded(&self) -> bool {
        self.retry_after.is_none() && matches!(self.outcome, Some(Outcome::Status(503 | 429)))
    }
}

/// The end of an outage: the first success after one or more failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// From the first failed attempt to this success.
    pub outage: Duration,
    pub failed_attempts: u32,
}

/// What [`Policy::complete`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// From `now` to the next attempt.
    pub delay: Duration,
    pub next_attempt_at: Instant,
    pub reason: WaitReason,
    /// For a failed attempt, its number in the current burst (1-based); 0 after a success.
    pub attempt: u32,
    /// The burst size, `max_retries`.
    pub max_attempts: u32,
    /// All failed attempts since the last success.
    pub consecutive_failures: u32,
    pub transition: Option<Transition>,
    pub recovered: Option<Recovery>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    backoff: Backoff,
    breaker: Breaker,
    /// Failed attempts in the current burst.
    burst_failures: u32,
    /// Failed attempts of any kind since the last success.
    consecutive_failures: u32,
    /// When the first retryable failure since the last success happened.
    outage_started: Option<Instant>,
    /// When a shed answer first opened the breaker since the last success or the last failure
    /// that was not a shed answer.
    shedding_since: Option<Instant>,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        assert!(config.max_retries >= 1, "max_retries must be >= 1");
        Policy {
            config,
            backoff: Backoff::new(config.backoff),
            breaker: Breaker::new(config.breaker),
            burst_failures: 0,
            consecutive_failures: 0,
            outage_started: None,
            shedding_since: None,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether the agent is in an outage (a retryable failure since the last success).
    pub fn recovering(&self) -> bool {
        self.outage_started.is_some()
    }

    /// An attempt is due at `now`. May it go?
    pub fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        let (admission, transition) = self.breaker.admit(now);
        let gate = match admission {
            Admission::Permit => Gate::Go { probe_health: self.config.health_check && self.recovering() },
            Admission::Reject { until } => Gate::Wait { until },
        };
        (gate, transition)
    }

    /// The attempt admitted earlier ended at `now` as `report` says. Decide when the next one
    /// is due. Never refuses to schedule one: there is no verdict that stops the loop.
    pub fn complete<R: Rng + ?Sized>(&mut self, now: Instant, report: Report, rng: &mut R) -> Decision {
        match report.verdict {
            Verdict::Success => self.succeeded(now, report, rng),
            // The server answered, but not with what we wanted. It is reachable, so the breaker
            // counts it as a success; the agent tries again at the next regular check-in. (The
            // loop renews tokens itself; a Renew that reaches the policy means renewal did not
            // help, which is treated the same way.)
            Verdict::FailFast | Verdict::Renew => {
                let transition = self.breaker.on_success(now);
                self.reset_burst();
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let delay = self.regular_delay(report.interval, rng);
                self.decide(now, report.verdict, delay, WaitReason::Regular, 1, transition, None)
            }
            Verdict::Retry => self.failed(now, report, rng),
        }
    }

    /// A success: the breaker closes, an outage (if any) is over, the regular interval applies.
    fn succeeded<R: Rng + ?Sized>(&mut self, now: Instant, report: Report, rng: &mut R) -> Decision {
        let transition = self.breaker.on_success(now);
        self.shedding_since = None;
        let recovered = self
            .outage_started
            .take()
            .map(|started| Recovery { outage: now.saturating_duration_since(started), failed_attempts: self.consecutive_failures });
        self.reset_burst();
        self.consecutive_failures = 0;
        let delay = self.regular_delay(report.interval, rng);
        self.decide(now, report.verdict, delay, WaitReason::Regular, 0, transition, recovered)
    }

    /// A retryable failure: the next delay of the burst (or a rest after a full burst), the
    /// breaker's open period if this opened it or it is open, and the server's Retry-After,
    /// whichever is longest.
    fn failed<R: Rng + ?Sized>(&mut self, now: Instant, report: Report, rng: &mut R) -> Decision {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.outage_started.get_or_insert(now);
        self.burst_failures += 1;
        let attempt = self.burst_failures;
        let transition = self.breaker.on_failure(now);
        if !report.overloaded() {
            // Down, not shedding: the next shed answer starts a new spread (a server that sheds,
            // crashes and sheds again is a new recovery).
            self.shedding_since = None;
        }
        let (mut delay, mut reason) = if attempt >= self.config.max_retries {
            self.reset_burst();
            (self.config.backoff.max_delay, WaitReason::BurstRest)
        } else {
            (self.backoff.delay(attempt - 1, rng), WaitReason::Backoff)
        };
        if let Some(open_for) = self.open_wait(now, transition.is_some() && report.overloaded(), rng) {
            if open_for >= delay {
                delay = open_for;
                reason = WaitReason::BreakerOpen;
            }
        }
        if let Some(asked) = report.retry_after {
            // Rounded up and jittered (the server truncates), then clamped.
            let asked = with_margin(asked, rng).min(self.config.retry_after_max);
            if asked > delay {
                delay = asked;
                reason = WaitReason::RetryAfter;
            }
        }
        self.decide(now, report.verdict, delay, reason, attempt, transition, None)
    }

    /// How long the breaker keeps the agent waiting from `now`, if it is open (an open breaker
    /// ends the burst; the next one starts after the probe). `shed_opening`: a shed answer (503
    /// or 429 without Retry-After) just opened it.
    fn open_wait<R: Rng + ?Sized>(&mut self, now: Instant, shed_opening: bool, rng: &mut R) -> Option<Duration> {
        let until = self.breaker.open_until()?;
        self.reset_burst();
        let mut open_for = until.saturating_duration_since(now);
        if shed_opening {
            // The server is up and shedding load: its queue is full now, and has room again
            // within seconds. Were every shed agent to sit out the whole open period, a
            // recovering fleet would come back as one late wave; spread them over its first
            // half instead. A server that keeps shedding gets the rest of the period: still
            // spread, not shortened.
            let since = *self.shedding_since.get_or_insert(now);
            let early = now.saturating_duration_since(since) < self.config.breaker.open_timeout * SHED_SPREAD_PERIODS;
            let half = open_for / SHED_OPEN_DIVISOR;
            open_for = if early { uniform(rng, Duration::ZERO, half) } else { uniform(rng, half, open_for) };
            self.breaker.shorten_open(now + open_for);
        }
        Some(open_for)
    }

    fn reset_burst(&mut self) {
        self.burst_failures = 0;
        self.backoff.reset();
    }

    /// The regular interval (or the server's shorter rapid-polling one), spread by ±10%.
    fn regular_delay<R: Rng + ?Sized>(&self, interval: Option<Duration>, rng: &mut R) -> Duration {
        let base = match interval {
            Some(fast) => fast.min(self.config.check_in_interval),
            None => self.config.check_in_interval,
        };
        uniform(rng, base.mul_f64(1.0 - REGULAR_JITTER_FRACTION), base.mul_f64(1.0 + REGULAR_JITTER_FRACTION))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        now: Instant,
        verdict: Verdict,
        delay: Duration,
        reason: WaitReason,
        attempt: u32,
        transition: Option<Transition>,
        recovered: Option<Recovery>,
    ) -> Decision {
        debug_assert!(delay <= self.config.max_wait(), "delay {delay:?} beyond the policy's bound");
        Decision {
            verdict,
            delay,
            next_attempt_at: now + delay,
            reason,
            attempt,
            max_attempts: self.config.max_retries,
            consecutive_failures: self.consecutive_failures,
            transition,
            recovered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::backoff::Jitter;
    use crate::resilience::classify::Outcome;
    use crate::resilience::retry_after::RETRY_AFTER_JITTER_MAX;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config() -> PolicyConfig {
        PolicyConfig {
            backoff: BackoffConfig {
                initial_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(3),
                factor: 2.0,
                jitter: Jitter::None,
            },
            breaker: BreakerConfig {
                failure_threshold: 3,
                open_timeout: Duration::from_secs(3),
                half_open_max_probes: 1,
            },
            max_retries: 5,
            check_in_interval: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(10),
            health_check: true,
        }
    }

    #[test]
    fn outage_then_recovery() {
        let mut p = Policy::new(config());
        let mut rng = StdRng::seed_from_u64(3);
        let mut now = Instant::now();
        assert_eq!(p.admit(now).0, Gate::Go { probe_health: false });
        let mut delays = vec![];
        let mut transitions = vec![];
        for _ in 0..3 {
            let d = p.complete(now, Report::of(Verdict::Retry), &mut rng);
            delays.push((d.attempt, d.delay.as_millis(), d.reason));
            transitions.extend(d.transition.map(|t| t.to));
            now = d.next_attempt_at;
        }
        assert_eq!(
            delays,
            vec![(1, 200, WaitReason::Backoff), (2, 400, WaitReason::Backoff), (3, 3000, WaitReason::BreakerOpen)]
        );
        assert_eq!(transitions, vec![BreakerState::Open]);
        let (gate, t) = p.admit(now);
        assert_eq!(gate, Gate::Go { probe_health: true });
        assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
        now += Duration::from_millis(50);
        let d = p.complete(now, Report::of(Verdict::Success), &mut rng);
        assert_eq!(d.transition.map(|t| t.to), Some(BreakerState::Closed));
        let r = d.recovered.expect("recovery reported");
        assert_eq!(r.failed_attempts, 3);
        assert_eq!(r.outage, Duration::from_millis(3650));
        assert_eq!(d.reason, WaitReason::Regular);
        assert!(d.delay >= Duration::from_millis(900) && d.delay <= Duration::from_millis(1100));
    }

    #[test]
    fn retry_after_raises_and_is_clamped() {
        let mut p = Policy::new(config());
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let report = Report { retry_after: Some(Duration::from_secs(7)), ..Report::of(Verdict::Retry) };
        let d = p.complete(now, report, &mut rng);
        // 7 s asked: the next whole second (8 s) plus jitter, never 7 s.
        assert_eq!(d.reason, WaitReason::RetryAfter);
        assert!(d.delay >= Duration::from_secs(8) && d.delay <= Duration::from_secs(8) + RETRY_AFTER_JITTER_MAX, "{:?}", d.delay);
        let report = Report { retry_after: Some(Duration::from_secs(3600)), ..Report::of(Verdict::Retry) };
        let d = p.complete(now, report, &mut rng);
        assert_eq!(d.delay, Duration::from_secs(10));
    }

    #[test]
    fn burst_is_bounded_and_then_rests() {
        let mut c = config();
        c.breaker.failure_threshold = 100;
        c.max_retries = 3;
        let mut p = Policy::new(c);
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let got: Vec<(u32, WaitReason)> = (0..5)
            .map(|_| {
                let d = p.complete(now, Report::of(Verdict::Retry), &mut rng);
                (d.attempt, d.reason)
            })
            .collect();
        use WaitReason::*;
        assert_eq!(got, vec![(1, Backoff), (2, Backoff), (3, BurstRest), (1, Backoff), (2, Backoff)]);
    }

    /// The known mutation survivor: a policy that never resets its burst and failure counters
    /// after a success. The breaker's own reset hides most of it; the burst does not.
    #[test]
    fn a_success_resets_the_burst_and_the_failure_count() {
        let mut c = config();
        c.breaker.failure_threshold = 100;
        c.max_retries = 3;
        let mut p = Policy::new(c);
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        for _ in 0..2 {
            p.complete(now, Report::of(Verdict::Retry), &mut rng);
        }
        let d = p.complete(now, Report::of(Verdict::Success), &mut rng);
        assert_eq!((d.consecutive_failures, p.consecutive_failures()), (0, 0));
        assert!(!p.recovering());
        // A new outage starts a new burst at its first, shortest step (no jitter here).
        let d = p.complete(now, Report::of(Verdict::Retry), &mut rng);
        assert_eq!((d.attempt, d.reason, d.delay, d.consecutive_failures), (1, WaitReason::Backoff, Duration::from_millis(200), 1));
        // A fast failure also ends a burst: the server answered.
        p.complete(now, Report::of(Verdict::Retry), &mut rng);
        p.complete(now, Report::of(Verdict::FailFast), &mut rng);
        let d = p.complete(now, Report::of(Verdict::Retry), &mut rng);
        assert_eq!((d.attempt, d.delay), (1, Duration::from_millis(200)));
    }

    #[test]
    fn a_shed_answer_spreads_the_open_period() {
        // Three failures open the breaker; when the third is a 503 without Retry-After (the
        // server is up and shedding), the wait is drawn from the first half of the open period,
        // and the breaker lets the probe through when it ends. Shed again and again, the
        // second half.
        let shed = Report { outcome: Some(Outcome::Status(503)), ..Report::of(Verdict::Retry) };
        let mut waits = Vec::new();
        for seed in 0..20 {
            let mut p = Policy::new(config());
            let mut rng = StdRng::seed_from_u64(seed);
            let now = Instant::now();
            p.complete(now, Report::of(Verdict::Retry), &mut rng);
            p.complete(now, Report::of(Verdict::Retry), &mut rng);
            let d = p.complete(now, shed, &mut rng);
            // The burst's own backoff (800 ms here) still applies when it is the longer wait.
            assert!(matches!(d.reason, WaitReason::BreakerOpen | WaitReason::Backoff), "{:?}", d.reason);
            assert!(d.delay >= Duration::from_millis(800) && d.delay <= Duration::from_millis(1500), "{:?}", d.delay);
            assert_eq!(p.admit(d.next_attempt_at).0, Gate::Go { probe_health: true });
            waits.push(d.delay);
            // The probe is shed again, and again: for two open periods (6 s) after the first
            // shed answer, openings are spread over the first half of the 3 s period, later
            // ones over the second half.
            let (first_shed, mut at) = (now, d.next_attempt_at);
            for n in 2..20 {
                let again = p.complete(at, shed, &mut rng);
                let early = at.duration_since(first_shed) < Duration::from_secs(6);
                let (lo, hi) = if early { (0, 1500) } else { (1500, 3000) };
                let ms = again.next_attempt_at.duration_since(at).as_millis() as u64;
                assert!((lo..=hi).contains(&ms), "opening {n} at {:?}: {ms} ms", at.duration_since(first_shed));
                at = again.next_attempt_at;
                assert_eq!(p.admit(at).0, Gate::Go { probe_health: true });
            }
            // The server goes down (refused) and comes back shedding: a new recovery, spread
            // over the first half again.
            let refused = Report { outcome: Some(Outcome::Refused), ..Report::of(Verdict::Retry) };
            let down = p.complete(at, refused, &mut rng);
            assert_eq!(down.next_attempt_at.duration_since(at), Duration::from_secs(3));
            at = down.next_attempt_at;
            assert_eq!(p.admit(at).0, Gate::Go { probe_health: true });
            let back = p.complete(at, shed, &mut rng);
            assert!(back.next_attempt_at.duration_since(at) <= Duration::from_millis(1500), "{:?}", back.delay);
        }
        waits.sort();
        assert!(waits[0] < waits[19], "jittered: {waits:?}");
        // With Retry-After, the server said when: no spreading below it.
        let mut p = Policy::new(config());
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        for _ in 0..2 {
            p.complete(now, Report::of(Verdict::Retry), &mut rng);
        }
        let d = p.complete(now, Report { retry_after: Some(Duration::from_secs(2)), ..shed }, &mut rng);
        // 2 s asked: whole seconds + 1 s margin, plus the Retry-After jitter.
        assert!(d.delay >= Duration::from_secs(3) && d.delay <= Duration::from_secs(3) + RETRY_AFTER_JITTER_MAX, "{:?}", d.delay);
    }

    #[test]
    fn fail_fast_waits_for_the_regular_interval() {
        let mut p = Policy::new(config());
        let mut rng = StdRng::seed_from_u64(3);
        let d = p.complete(Instant::now(), Report::of(Verdict::FailFast), &mut rng);
        assert_eq!(d.reason, WaitReason::Regular);
        assert_eq!(d.consecutive_failures, 1);
        assert!(!p.recovering());
    }
}
