//! One run, end to end: simulate a scenario with a seed, then judge it.
//!
//! The command line, the sweep, the tests and the benches all go through [`run_one`], so
//! "what a run is" is defined once.

use std::time::{Duration, Instant};

use crate::judge::{self, Recovery, TraceIndex, Verdict};
use crate::scenario::Scenario;
use crate::trace::Record;
use crate::world;

/// Everything one run produced.
pub struct RunResult {
    pub seed: u64,
    pub records: Vec<Record>,
    pub verdicts: Vec<Verdict>,
    pub recoveries: Vec<Recovery>,
    pub steps: u64,
    pub tick: Duration,
    /// Wall-clock time the simulation took (for the report only; never part of the trace).
    pub wall: Duration,
    /// The scenario says `expect_failure = true`: it shows a failure on purpose.
    pub expect_failure: bool,
}

impl RunResult {
    /// Every expectation held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// The run went as its scenario says it must: every expectation held, or, for a scenario
    /// with `expect_failure = true`, some expectation failed. What `run` and `sweep` count.
    pub fn as_expected(&self) -> bool {
        self.passed() != self.expect_failure
    }
}

/// Simulates `scenario` with `seed` and judges its expectations. `Err` is a harness failure
/// (the simulation itself broke), not a failed expectation.
pub fn run_one(scenario: &Scenario, seed: u64) -> Result<RunResult, String> {
    let started = Instant::now();
    let out = world::run(scenario, seed)?;
    let wall = started.elapsed();
    let tick = world::tick_for(scenario);
    // Two ticks absorb the simulation's time granularity in every bound.
    let verdicts = judge::evaluate(scenario, &out.records, tick * 2);
    let recoveries = TraceIndex::new(&out.records, &scenario.fleet).recoveries();
    Ok(RunResult {
        seed,
        records: out.records,
        verdicts,
        recoveries,
        steps: out.steps,
        tick,
        wall,
        expect_failure: scenario.expect_failure,
    })
}
