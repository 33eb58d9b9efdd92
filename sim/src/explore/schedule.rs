//! One fault schedule ([`Schedule`]): the fleet, the run's length and its faults, and how
//! `redflag-sim explore` draws one from a scenario's `[explore]` space with proptest strategies
//! and a runner seeded from the explore seed and the run's number, so the same seed always
//! explores the same schedules, whatever the number of threads.
//!
//! Parameter ranges (documented in `scenarios/README.md`): statuses 429/500/502/503/504 (429
//! and 503 with a Retry-After of 1–20 s half of the time), loss rates 0.05–1, latency and slow
//! delays 50 ms–30 s (log-uniform), partitions both ways or one way, a broken `/health` that
//! answers 503, 500 or 404 or hangs. A fault starts at a whole second inside the run, early
//! enough to end `settle` before the run does.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use crate::scenario::explore::ExploreSpace;
use crate::scenario::{Action, ApiRoute, Direction, Fault, Scenario, Target, fmt_duration};
use crate::seed::mix_seed;

/// Statuses an explored `http_status` fault answers.
pub const HTTP_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];
/// How a drawn `broken_route` (or `broken_health`) answers: hangs, or one of these statuses.
pub const BROKEN_STATUSES: [Option<u16>; 4] = [None, Some(503), Some(500), Some(404)];
/// The longest Retry-After an explored 429 or 503 carries, in seconds.
pub const RETRY_AFTER_SECONDS_MAX: u64 = 20;
/// Latency and slow delays are drawn between these, log-uniform.
pub const DELAY_MIN: Duration = Duration::from_millis(50);
pub const DELAY_MAX: Duration = Duration::from_secs(30);
/// Loss rates are drawn between this and 1.
pub const LOSS_RATE_MIN: f64 = 0.05;

/// One fault of a schedule (a `[[faults]]` entry without its file position).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub duration: Option<Duration>,
    pub target: Target,
    pub action: Action,
}

impl Planned {
    pub fn from_fault(f: &Fault) -> Self {
        Planned { at: f.at, duration: f.duration, target: f.target, action: f.action.clone() }
    }

    /// `crash server at 3m for 40s`.
    pub fn describe(&self) -> String {
        let f = Fault { index: 0, line: 0, at: self.at, duration: self.duration, target: self.target, action: self.action.clone() };
        format!("{} at {}", f.describe(), fmt_duration(self.at))
    }

    pub fn end(&self) -> Duration {
        self.at + self.duration.unwrap_or_default()
    }
}

/// A whole schedule: what a standalone scenario file needs besides the scenario's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub agents: u32,
    pub hosts: u32,
    /// The run's length.
    pub run: Duration,
    pub faults: Vec<Planned>,
}

impl Schedule {
    /// The scenario's own fixed faults and fleet, before anything is drawn.
    pub fn of_scenario(s: &Scenario) -> Self {
        Schedule {
            agents: s.fleet.agents,
            hosts: s.fleet.hosts,
            run: s.duration,
            faults: s.faults.iter().map(Planned::from_fault).collect(),
        }
    }
}

/// The raw draws of one fault, turned into a [`Planned`] by [`plan`].
#[derive(Debug, Clone)]
struct Draw {
    action: usize,
    target: u32,
    duration_ms: u64,
    at_ppm: u32,
    a: u32,
    b: u32,
    c: u32,
}

fn draw_strategy(space: &ExploreSpace) -> impl Strategy<Value = Vec<Draw>> + use<> {
    let lo = space.duration_min.as_millis() as u64;
    let hi = space.duration_max.as_millis() as u64;
    let one = (0..space.actions.len(), any::<u32>(), lo..=hi, 0u32..1_000_000, any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(action, target, duration_ms, at_ppm, a, b, c)| Draw { action, target, duration_ms, at_ppm, a, b, c });
    let (fmin, fmax) = (*space.faults.start() as usize, *space.faults.end() as usize);
    prop::collection::vec(one, fmin..=fmax)
}

/// A fraction in [0, 1] from a `u32` draw.
fn unit(x: u32) -> f64 {
    f64::from(x) / f64::from(u32::MAX)
}

fn log_uniform(x: u32, lo: Duration, hi: Duration) -> Duration {
    let (l, h) = (lo.as_secs_f64().ln(), hi.as_secs_f64().ln());
    let ms = (l + (h - l) * unit(x)).exp() * 1000.0;
    Duration::from_millis(ms.round() as u64).clamp(lo, hi)
}

/// Rounds to whole seconds when `granular` (a duration range measured in seconds), else to
/// 10 ms.
fn round(d: Duration, seconds: bool) -> Duration {
    if seconds { Duration::from_secs(d.as_secs()) } else { Duration::from_millis(d.as_millis() as u64 / 10 * 10) }
}

fn plan(d: &Draw, space: &ExploreSpace, run: Duration) -> Planned {
    let a = &space.actions[d.action];
    let target = a.targets[d.target as usize % a.targets.len()];
    let seconds = space.duration_min >= Duration::from_secs(1);
    let instant = matches!(a.name, "restart" | "expire_tokens");
    // Leave `settle` after the fault (and a second of slack) before the run ends.
    let room = run.saturating_sub(space.settle + Duration::from_secs(1));
    let duration = if instant {
        None
    } else {
        let wanted = round(Duration::from_millis(d.duration_ms), seconds).max(Duration::from_millis(10));
        Some(wanted.min(room.max(space.duration_min)))
    };
    let latest = room.saturating_sub(duration.unwrap_or_default());
    let at = Duration::from_secs((latest.as_secs_f64() * f64::from(d.at_ppm) / 1e6).floor() as u64);
    let peer = if target == Target::Proxy { [Target::Server, Target::Agents][d.b as usize % 2] } else { Target::Proxy };
    let action = match a.name {
        "crash" => Action::Crash,
        "restart" => Action::Restart,
        "partition" => Action::Partition { peer, direction: [Direction::Both, Direction::To, Direction::From][d.a as usize % 3] },
        "latency" => Action::Latency { peer, delay: log_uniform(d.a, DELAY_MIN, DELAY_MAX) },
        "loss" => Action::Loss { peer, rate: ((LOSS_RATE_MIN + (1.0 - LOSS_RATE_MIN) * unit(d.a)) * 100.0).round() / 100.0 },
        "http_status" => {
            let status = HTTP_STATUSES[d.a as usize % HTTP_STATUSES.len()];
            let retry_after_seconds =
                (matches!(status, 429 | 503) && d.b % 2 == 0).then(|| 1 + u64::from(d.c) % RETRY_AFTER_SECONDS_MAX);
            Action::HttpStatus { status, retry_after_seconds }
        }
        "slow" => Action::Slow { delay: log_uniform(d.a, DELAY_MIN, DELAY_MAX) },
        "setup_mode" => Action::SetupMode,
        "expire_tokens" => Action::ExpireTokens,
        "revoke_refresh" => Action::RevokeRefresh,
        "broken_health" => Action::BrokenRoute { route: ApiRoute::Health, status: BROKEN_STATUSES[d.a as usize % 4], delay: None },
        // Four in five break the route (a status, or a hang); one in five makes it slow.
        "broken_route" => Action::BrokenRoute {
            route: ApiRoute::ALL[d.b as usize % ApiRoute::ALL.len()],
            status: BROKEN_STATUSES.get(d.a as usize % 5).copied().flatten(),
            delay: (d.a % 5 == 4).then(|| log_uniform(d.c, DELAY_MIN, DELAY_MAX)),
        },
        other => unreachable!("[explore] validated its actions, got {other:?}"),
    };
    Planned { at, duration, target, action }
}

/// The seed of explored run number `index` of an explore with `seed` (also the simulation's
/// seed for that run, written into its scenario file). Kept below 2^48 so it reads well.
pub fn run_seed(seed: u64, index: u64) -> u64 {
    mix_seed(seed, index, 0x6578_706c_6f72_65) >> 16
}

/// Schedule number `index` of an explore with `seed`: the scenario's fixed faults, then faults
/// drawn from its `[explore]` space by a proptest runner seeded with `(seed, index)`.
pub fn draw(scenario: &Scenario, space: &ExploreSpace, seed: u64, index: u64) -> Schedule {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix_seed(seed, index, 0x7072_6f70 + i as u64).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let draws = match draw_strategy(space).new_tree(&mut runner) {
        Ok(tree) => tree.current(),
        // A vec of plain ranges never rejects a value.
        Err(e) => unreachable!("the schedule strategy rejected a draw: {e}"),
    };
    let mut schedule = Schedule::of_scenario(scenario);
    schedule.faults.extend(draws.iter().map(|d| plan(d, space, scenario.duration)));
    schedule
}
