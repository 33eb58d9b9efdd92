//! The check-in loop's decision-maker, as a trait: the two questions the loop asks before and
//! after every attempt.
//!
//! * [`Strategy::admit`]: an attempt is due now; may it go out (and probe `/health` first)?
//! * [`Strategy::complete`]: the attempt ended like this; when is the next one due?
//!
//! Production has exactly one implementation, the [`Policy`] (backoff, breaker, bursts and
//! Retry-After combined). The trait exists so the simulation can run the *same* loop, transport
//! and trace under other retry strategies (RedFlag 0.1.18's fixed interval, the seed
//! document's snippets, AWS's retry quota, gRPC's connection backoff) as baselines that show why
//! the production defaults are what they are. Those baselines are models of other systems and
//! live in the simulation crate, not here.
//!
//! Besides the two questions, a strategy may bring what its system has and the loop must honour
//! (the *system hooks* below: a request timeout, a wait before the first check-in, whether the
//! check-in answer's `rapid_polling` window counts, a periodic `POST /system-info`). Each has a
//! default that keeps the production agent's behaviour, so [`Policy`] overrides none of them
//! unless its own policy says so.
//!
//! Like the rest of `resilience/`, an implementation is pure: time and randomness are arguments.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::breaker::{BreakerState, Transition};
use super::policy::{Decision, Gate, Policy, Report};

/// The loop's decision-maker. Object safe, so a harness may pick one at run time.
pub trait Strategy {
    /// An attempt is due at `now`. May it go? A transition is returned when the answer changed
    /// the strategy's breaker state (an open breaker letting a probe through).
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>);

    /// The attempt admitted earlier ended at `now` as `report` says: when is the next one due?
    /// Must always schedule one (no verdict ends the loop) and never further away than the
    /// strategy's own bound.
    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision;

    /// The breaker state, for the status file (`closed` for a strategy without a breaker).
    fn breaker_state(&self) -> BreakerState;

    /// Failed attempts since the last success, for the status file.
    fn consecutive_failures(&self) -> u32;

    // ---- system hooks: what the strategy's system brings to the loop ---------------------------

    /// The timeout every request of this system runs under (connect, headers and body), when it
    /// is not the agent's configured `request_timeout_seconds`. RedFlag 0.1.18's Go client times
    /// out after 30 s. The loop uses it instead of its configured timeout for every request
    /// (health probe, check-in, renewal, result, system information). Default: `None`.
    fn request_timeout(&self) -> Option<Duration> {
        None
    }

    /// How long the loop waits after it starts (at process start, after a crash, after a
    /// config reload) before its first attempt. RedFlag 0.1.18 sleeps a uniform 0-29 s before
    /// every round, the first included. Called once per start, with the loop's own seeded RNG.
    /// Default: zero (the first check-in goes out at once).
    fn first_attempt_delay(&self, rng: &mut dyn RngCore) -> Duration {
        let _ = rng;
        Duration::ZERO
    }

    /// Whether a `rapid_polling` window in a check-in answer shortens the interval. RedFlag
    /// 0.1.18's agent ignores it: only its own `enable_heartbeat` command switches rapid polling
    /// on. When `false` the loop must not start (or extend) rapid polling from an answer's
    /// `rapid_polling`, and must still start it from an `enable_heartbeat` command's window.
    /// Default: `true`.
    fn follows_answer_rapid_polling(&self) -> bool {
        true
    }

    /// How often this system posts `POST /api/v1/agents/{id}/system-info`, if it does: at
    /// start and then once per period, retried every round until one succeeds. Stated, not
    /// read: the loop posts on its own schedule (`checkin::system_info`), when its host
    /// describes the machine. Default: `None`.
    fn system_info_every(&self) -> Option<Duration> {
        None
    }
}

impl Strategy for Policy {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        Policy::admit(self, now)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        Policy::complete(self, now, report, rng)
    }

    fn breaker_state(&self) -> BreakerState {
        Policy::breaker_state(self)
    }

    fn consecutive_failures(&self) -> u32 {
        Policy::consecutive_failures(self)
    }
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn admit(&mut self, now: Instant) -> (Gate, Option<Transition>) {
        (**self).admit(now)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        (**self).complete(now, report, rng)
    }

    fn breaker_state(&self) -> BreakerState {
        (**self).breaker_state()
    }

    fn consecutive_failures(&self) -> u32 {
        (**self).consecutive_failures()
    }

    fn request_timeout(&self) -> Option<Duration> {
        (**self).request_timeout()
    }

    fn first_attempt_delay(&self, rng: &mut dyn RngCore) -> Duration {
        (**self).first_attempt_delay(rng)
    }

    fn follows_answer_rapid_polling(&self) -> bool {
        (**self).follows_answer_rapid_polling()
    }

    fn system_info_every(&self) -> Option<Duration> {
        (**self).system_info_every()
    }
}
