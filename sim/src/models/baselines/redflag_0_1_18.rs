//! `redflag-0.1.18`: the RedFlag agent operators run today.
//!
//! Sources: `Fimeg/RedFlag` at tag `v0.1.18-alpha`, `aggregator-agent/`, as vendored in
//! `/work/shared/redflag-agent-go/src` (`AgentVersion = "0.1.18"`): `cmd/agent/main.go`
//! (`runAgent`, `getCurrentPollingInterval`, `renewTokenIfNeeded`, `reportSystemInfo`,
//! `handleEnableHeartbeat`, `handleDisableHeartbeat`) and `internal/client/client.go`
//! (`NewClient`). Calibrated against that agent built and run here (README, "Calibration").
//!
//! What the sources settle:
//!
//! * every round sleeps `rand.Intn(30)` whole seconds (0-29 s, "jitter to prevent thundering
//!   herd"), the first round included, then (see below) posts system information, then checks
//!   in, then sleeps `getCurrentPollingInterval`: the configured interval, or 5 s while its own
//!   heartbeat is on. A failed round, whatever the error, waits the same: no backoff, no
//!   breaker, no health probe, no Retry-After;
//! * its HTTP client (`http.Client{Timeout: 30 * time.Second}`) times out after 30 s, for the
//!   whole exchange: [`Strategy::request_timeout`];
//! * a 401 renews the token once and checks in again (the shared loop does that part);
//! * it ignores the `rapid_polling` window of check-in answers
//!   ([`Strategy::follows_answer_rapid_polling`] is `false`); only its own `enable_heartbeat`
//!   command turns its 5 s polling on, and `enable_heartbeat` and `disable_heartbeat` each check
//!   in at once from inside the command handler (no jitter before that one);
//! * `POST /api/v1/agents/{id}/system-info` at start and hourly: the round posts it before the
//!   check-in when the last success is an hour old (never, at start), so a failed post is
//!   retried every round until one succeeds; its failure does not stop the check-in
//!   ([`Strategy::system_info_every`]).
//!
//! Modelling choices the sources do not settle:
//!
//! * The round's jitter is drawn after the previous round, not before the next one: the same
//!   wait, drawn from the agent's seeded RNG. Go seeds `math/rand` from the clock at start (Go
//!   1.20+), so agents are independent; so are ours.
//! * No system information is sent in the simulation, for any strategy: the shared loop posts
//!   `/system-info` on its own schedule (after a successful check-in, at start and hourly), but
//!   only when its host describes the machine, and the simulated hosts describe nothing, so
//!   [`Strategy::system_info_every`] is stated and not wired. What that leaves out: one request
//!   of 1 work unit per agent at start and per hour, and, when the hour falls inside an outage,
//!   one more failed request per round until the server is back.
//! * Go's client keeps connections alive between rounds; the model opens one per request (the
//!   server counts requests, not handshakes).
//! * Time spent in the request counts in the round (Go sleeps after the check-in returns): a
//!   refused connection returns at once, a hung one after 30 s.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use redflag_agent::resilience::{BreakerState, Decision, Gate, Report, Strategy, Transition, Verdict, WaitReason};

use super::{Outage, Promises, RegularSpread, decision};

/// The sleep before every round: `rand.Intn(30)` seconds, at most this many.
pub const JITTER_SECONDS_MAX: u64 = 29;
/// `client.go`'s `http.Client` timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `systemInfoUpdateInterval`.
pub const SYSTEM_INFO_EVERY: Duration = Duration::from_secs(60 * 60);

pub(super) fn jitter_sleep(rng: &mut (impl Rng + ?Sized)) -> Duration {
    Duration::from_secs(rng.random_range(0..=JITTER_SECONDS_MAX))
}

/// Every wait is one interval (or the 5 s heartbeat one) plus up to 29 s, whatever happened.
pub(super) fn promises(interval: Duration) -> Promises {
    let jitter = Duration::from_secs(JITTER_SECONDS_MAX);
    Promises {
        request_timeout: REQUEST_TIMEOUT,
        interval,
        regular: RegularSpread::PlusUpTo(jitter),
        after_failure_max: interval + jitter,
        retry_after_max: None,
    }
}

#[derive(Debug, Clone)]
pub struct Redflag0118 {
    interval: Duration,
    outage: Outage,
}

impl Redflag0118 {
    pub fn new(interval: Duration) -> Self {
        Redflag0118 { interval, outage: Outage::default() }
    }
}

impl Strategy for Redflag0118 {
    fn admit(&mut self, _now: Instant) -> (Gate, Option<Transition>) {
        (Gate::Go { probe_health: false }, None)
    }

    fn complete(&mut self, now: Instant, report: Report, rng: &mut dyn RngCore) -> Decision {
        let (recovered, attempt) = match report.verdict {
            Verdict::Success => (self.outage.succeeded(now), 0),
            v => {
                self.outage.failed(now, v == Verdict::Retry);
                (None, 1)
            }
        };
        let delay = match report.interval {
            // `enable_heartbeat` / `disable_heartbeat`: the handler checks in at once.
            Some(Duration::ZERO) => Duration::ZERO,
            // Its own heartbeat (5 s) replaces the interval, as in `getCurrentPollingInterval`.
            asked => asked.map_or(self.interval, |fast| fast.min(self.interval)) + jitter_sleep(rng),
        };
        decision(now, report.verdict, delay, WaitReason::Regular, attempt, 1, &self.outage, None, recovered)
    }

    fn breaker_state(&self) -> BreakerState {
        BreakerState::Closed
    }

    fn consecutive_failures(&self) -> u32 {
        self.outage.consecutive_failures()
    }

    fn request_timeout(&self) -> Option<Duration> {
        Some(REQUEST_TIMEOUT)
    }

    fn first_attempt_delay(&self, rng: &mut dyn RngCore) -> Duration {
        jitter_sleep(rng)
    }

    fn follows_answer_rapid_polling(&self) -> bool {
        false
    }

    fn system_info_every(&self) -> Option<Duration> {
        Some(SYSTEM_INFO_EVERY)
    }
}
