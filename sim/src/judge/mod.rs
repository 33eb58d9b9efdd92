//! The expectations a scenario states, judged from a run's trace alone: [`evaluate`] here, the
//! trace index in `index.rs`, and one file per check.
//!
//! Because the judge reads only the trace (never the world), the simulation and the live mode
//! give the same verdicts for the same observations. Checks:
//!
//! * `recovers_within`: after each fault window ends (overlapping faults merged, ending when the
//!   last ends), every agent the faults disturbed completes a check-in within `within`, unless
//!   another fault begins first. (An agent that slept through a fault at its regular interval
//!   had nothing to recover from.)
//! * `never_gives_up`: during every fault window each agent keeps sending requests (health
//!   probes included) with no gap above `max_gap` (default: the longest wait its config allows
//!   plus one request timeout), and no agent loop ever ends.
//! * `max_request_rate`: no one-second window at the server (or proxy) holds more than `limit`
//!   requests.
//! * `breaker_opens`: every agent's breaker opened at least once.
//! * `no_lost_commands`: every command queued (outside the last `grace`) has exactly one
//!   result recorded at the server by the end.
//! * `no_duplicate_execution`: no agent started the same command id twice.
//! * `honours_retry_after`: no request to a route before a Retry-After given on it elapsed,
//!   clamped to the agent's `retry_after_max_seconds`.
//! * `bounded_waits`: no wait between two attempts longer than the agent's config allows.
//! * implicit in every run: agents stay *alive between faults* (`alive_between_faults.rs`).
//! * fleet checks, from the figures in `fleet.rs`: `fleet_recovers_within` (every disturbed
//!   agent within a time, or a factor of the physical limit), `max_amplification` (server work
//!   per recovered agent), `load_settles` (utilization falls and stays below a level after each
//!   fault: no metastable failure), `max_wasted_share` (work done for clients that had gone),
//!   `max_peak_load` (the busiest second ÷ capacity, at start or during recovery).
//! * implicit in every run: each fault was *observed*: some agent request failed between the
//!   fault's start and the first success after it ended. A fault nobody noticed was probably
//!   never wired in, and must not let a scenario pass.

mod alive_between_faults;
mod bounded_waits;
mod breaker_opens;
mod fault_observed;
mod fleet_recovers_within;
mod honours_retry_after;
pub mod fleet;
mod index;
mod load_settles;
mod max_amplification;
mod max_peak_load;
mod max_request_rate;
mod max_wasted_share;
mod never_gives_up;
mod no_duplicate_execution;
mod no_lost_commands;
mod recovers_within;
mod streaming;

use std::time::Duration;

use serde::Serialize;

use crate::scenario::{Check, FleetBound, RateAt, Scenario, fmt_duration};
use crate::trace::Record;

pub use fleet::FleetFigures;
pub use index::{Recovery, TraceIndex, TraceIndexBuilder, Window};
pub use streaming::TraceJudge;

/// How many individual violations a failed check lists.
const DETAILS_MAX: usize = 5;

/// One verdict: an `[[expect]]` entry, or an implicit "fault observed" check.
///
/// `own_promise` tells the two kinds of bound apart: a check whose bound comes from the
/// strategy's own rules (the implicit "alive between faults", `never_gives_up` without a
/// `max_gap`, `bounded_waits`: see `models/baselines` `Promises`) judges a system by its own
/// promises; every other check holds it to a target the scenario states. `compare` reports the
/// two apart, so a baseline is never failed for not being the production agent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// `recovers_within`, `never_gives_up`, ..., or `fault_observed`.
    pub check: String,
    /// What was asked, in words (`recovers_within 30s`).
    pub subject: String,
    /// The scenario line it came from.
    pub line: usize,
    pub passed: bool,
    /// Why it passed or failed, with simulated times.
    pub reason: String,
    /// The bound came from the strategy's own promises, not from a target the scenario states.
    #[serde(default)]
    pub own_promise: bool,
}

/// What the scenario's strategy promises about its own waits and timeouts: the bounds its
/// checks use (see [`Verdict::own_promise`]).
pub fn promises_of(scenario: &Scenario) -> crate::models::baselines::Promises {
    crate::models::baselines::promises(scenario.strategy, &scenario.agent_config)
}

pub(crate) fn secs(ms: u64) -> String {
    fmt_duration(Duration::from_millis(ms))
}

pub(crate) fn at(ms: u64) -> String {
    format!("t={}", secs(ms))
}

/// Judges every expectation of `scenario`, plus the implicit "every fault observed".
/// `tolerance` absorbs clock granularity: the simulation tick, or scheduling jitter live.
pub fn evaluate(scenario: &Scenario, records: &[Record], tolerance: Duration) -> Vec<Verdict> {
    let idx = TraceIndex::new(records, &scenario.fleet);
    let tol = tolerance.as_millis() as u64;
    evaluate_indexed(scenario, records, &idx, tol)
}

/// [`evaluate`] on a trace already indexed (`compare` reuses the index for its figures).
pub fn evaluate_indexed(scenario: &Scenario, records: &[Record], idx: &TraceIndex, tol: u64) -> Vec<Verdict> {
    // The fleet figures are computed once, and only when a fleet check asks for them.
    let figures = std::cell::OnceCell::new();
    let fleet = || figures.get_or_init(|| FleetFigures::new(idx, scenario, tol));
    let promises = crate::judge::promises_of(scenario);
    let mut out: Vec<Verdict> = scenario
        .expect
        .iter()
        .map(|e| {
            let (subject, result) = match &e.check {
                Check::RecoversWithin { within } => (
                    format!("recovers_within {}", fmt_duration(*within)),
                    recovers_within::recovers_within(idx, *within, promises.request_timeout, tol),
                ),
                Check::NeverGivesUp { max_gap } => {
                    let default_gap = promises.max_wait() + promises.request_timeout;
                    let gap = max_gap.unwrap_or(default_gap);
                    let label = match max_gap {
                        Some(g) => format!("never_gives_up max_gap {}", fmt_duration(*g)),
                        None => format!("never_gives_up (max_gap {} from the {} strategy's own waits)", fmt_duration(gap), scenario.strategy),
                    };
                    (label, never_gives_up::never_gives_up(idx, gap, tol))
                }
                Check::MaxRequestRate { at, limit_per_second } => {
                    let (times, name) = match at {
                        RateAt::Server => (&idx.server_requests, "server"),
                        RateAt::Proxy => (&idx.proxy_requests, "proxy"),
                    };
                    (format!("max_request_rate at {name} <= {limit_per_second}/s"), max_request_rate::max_request_rate(times, *limit_per_second))
                }
                Check::BreakerOpens => ("breaker_opens".to_string(), breaker_opens::breaker_opens(idx)),
                Check::NoLostCommands { grace } => (
                    format!("no_lost_commands (grace {})", fmt_duration(*grace)),
                    no_lost_commands::no_lost_commands(records, idx.trace_end_ms, *grace),
                ),
                Check::NoDuplicateExecution => {
                    ("no_duplicate_execution".to_string(), no_duplicate_execution::no_duplicate_execution(records))
                }
                Check::HonoursRetryAfter => {
                    let clamp = scenario.agent_config.resilience.retry_after_max;
                    (
                        format!("honours_retry_after (clamped to {})", fmt_duration(clamp)),
                        honours_retry_after::honours_retry_after(idx, clamp, tol),
                    )
                }
                Check::BoundedWaits => {
                    let bounds = bounded_waits::Bounds::of(&promises);
                    (format!("bounded_waits ({})", bounds.describe()), bounded_waits::bounded_waits(idx, &bounds, tol))
                }
                Check::FleetRecoversWithin { within } => {
                    let label = match within {
                        FleetBound::Within(d) => format!("fleet_recovers_within {}", fmt_duration(*d)),
                        FleetBound::LimitFactor(f) => format!("fleet_recovers_within {f} x the physical limit"),
                    };
                    (label, fleet_recovers_within::fleet_recovers_within(fleet(), *within, tol))
                }
                Check::MaxAmplification { limit } => {
                    (format!("max_amplification <= {limit}"), max_amplification::max_amplification(fleet(), *limit))
                }
                Check::LoadSettles { below, within } => (
                    format!("load_settles below {:.0}% within {}", below * 100.0, fmt_duration(*within)),
                    load_settles::load_settles(fleet(), *below, *within),
                ),
                Check::MaxPeakLoad { limit, during } => (
                    format!("max_peak_load during {} <= {limit}x capacity", during.as_str()),
                    max_peak_load::max_peak_load(fleet(), *limit, *during),
                ),
                Check::MaxWastedShare { limit } => {
                    (format!("max_wasted_share <= {:.0}%", limit * 100.0), max_wasted_share::max_wasted_share(fleet(), *limit))
                }
            };
            let own_promise = matches!(e.check, Check::NeverGivesUp { max_gap: None } | Check::BoundedWaits);
            Verdict {
                check: e.check.name().to_string(),
                subject,
                line: e.line,
                passed: result.is_ok(),
                reason: result.unwrap_or_else(|e| e),
                own_promise,
            }
        })
        .collect();
    out.extend(fault_observed::faults_observed(idx, scenario, tol));
    out.push(alive_between_faults::alive_between_faults(idx, scenario, tol));
    out
}


pub(crate) fn summarize(mut failures: Vec<String>) -> String {
    let n = failures.len();
    failures.truncate(DETAILS_MAX);
    let mut s = failures.join("; ");
    if n > DETAILS_MAX {
        s.push_str(&format!("; and {} more", n - DETAILS_MAX));
    }
    s
}
