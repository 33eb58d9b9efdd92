//! The sans-IO resilience core: everything that decides *when* and *whether* to call the server.
//!
//! Nothing in this module performs I/O, reads a clock or touches a global RNG: time arrives as an
//! `Instant` argument and randomness as a `&mut impl Rng`. That is what lets the same code run in
//! production (driven by `checkin.rs` with tokio time), inside turmoil simulations, in criterion
//! benches and under proptest. The model is quinn-proto, the sans-IO half of quinn.
//!
//! * `backoff.rs`: exponential delays with none/full/equal/decorrelated jitter, capped after jitter.
//! * `breaker.rs`: the circuit breaker state machine, returning every transition as a value.
//! * `classify.rs`: request outcome -> verdict (retry, renew, fail fast, success).
//! * `retry_after.rs`: the Retry-After header, delta-seconds or HTTP-date, and the margin that
//!   makes the wait never early (rounded up to the next whole second, plus jitter).
//! * `policy.rs`: the above combined into the loop's two questions: may I go, and when next?
//! * `strategy.rs`: those two questions as a trait, so a harness can run the same loop under
//!   other retry strategies; [`Policy`] is the only production implementation.

pub mod backoff;
pub mod breaker;
pub mod classify;
pub mod policy;
pub mod retry_after;
pub mod strategy;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use breaker::{Admission, Breaker, BreakerConfig, BreakerState, Transition};
pub use classify::{ErrorClass, Outcome, Verdict, classify, classify_status, honours_retry_after};
pub use policy::{Decision, Gate, Policy, PolicyConfig, Recovery, Report, WaitReason};
pub use retry_after::{parse_http_date, parse_retry_after};
pub use strategy::Strategy;
