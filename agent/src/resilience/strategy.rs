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
//! Like the rest of `resilience/`, an implementation is pure: time and randomness are arguments.

use std::time::Instant;

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
}
