//! One run, end to end: simulate a scenario with a seed, then judge it.
//!
//! The command line, the sweep, the tests and the benches all go through [`run_with`] (or
//! [`run_one`], which keeps the trace in memory), so "what a run is" is defined once.
//!
//! The trace is judged, written to its file and shown to an observer line by line while the
//! run goes (`world::run` hands it out in order after every step), so nothing holds the whole
//! trace unless asked to ([`RunOptions::keep_records`]): a million-agent run keeps its memory
//! for the agents, not for the lines they wrote.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::judge::{self, Recovery, TraceIndex, TraceJudge, Verdict};
use crate::scenario::Scenario;
use crate::trace::{Record, TraceWriter};
use crate::world;

/// Everything one run produced.
pub struct RunResult {
    pub seed: u64,
    /// The whole trace, when [`RunOptions::keep_records`] asked for it; empty otherwise.
    pub records: Vec<Record>,
    /// Lines in the trace (kept or not).
    pub lines: u64,
    /// The time of the trace's last line (ms).
    pub last_t_ms: u64,
    pub verdicts: Vec<Verdict>,
    pub recoveries: Vec<Recovery>,
    /// The trace, indexed for the checks (the report's server figures read it too).
    pub index: TraceIndex,
    pub steps: u64,
    pub tick: Duration,
    /// Wall-clock time the simulation took (for the report only; never part of the trace).
    pub wall: Duration,
    /// The scenario says `expect_failure = true`: it shows a failure on purpose.
    pub expect_failure: bool,
    /// What became of [`RunOptions::trace_file`]: the lines written, or why it was not.
    pub trace_written: Option<Result<u64, String>>,
}

impl RunResult {
    /// A run whose trace was gathered elsewhere (the live mode), judged in full. `tolerance`
    /// is the clock granularity every bound absorbs; it is reported as the run's tick.
    pub fn judged(scenario: &Scenario, seed: u64, records: Vec<Record>, tolerance: Duration, wall: Duration) -> RunResult {
        let verdicts = judge::evaluate(scenario, &records, tolerance);
        let index = TraceIndex::new(&records, &scenario.fleet);
        RunResult {
            seed,
            lines: records.len() as u64,
            last_t_ms: records.last().map_or(0, |r| r.t_ms),
            records,
            verdicts,
            recoveries: index.recoveries(),
            index,
            steps: 0,
            tick: tolerance,
            wall,
            expect_failure: scenario.expect_failure,
            trace_written: None,
        }
    }

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

/// What a run does with its trace besides judging it.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Write the trace to this file (JSON Lines) as the run goes.
    pub trace_file: Option<&'a Path>,
    /// Keep every line in [`RunResult::records`] (tests, `compare`, pictures, a sweep's
    /// `--traces`). Without it the run holds no line longer than one simulation step.
    pub keep_records: bool,
    /// Also show every line, in trace order, to this (the report's timeline).
    pub observer: Option<&'a mut dyn FnMut(&Record)>,
}

/// Simulates `scenario` with `seed` and judges its expectations, keeping the trace in
/// [`RunResult::records`]. `Err` is a harness failure (the simulation itself broke), not a
/// failed expectation.
pub fn run_one(scenario: &Scenario, seed: u64) -> Result<RunResult, String> {
    run_with(scenario, seed, RunOptions { keep_records: true, ..RunOptions::default() })
}

/// Simulates `scenario` with `seed`, judging, writing and observing its trace as it goes.
pub fn run_with(scenario: &Scenario, seed: u64, options: RunOptions<'_>) -> Result<RunResult, String> {
    let RunOptions { trace_file, keep_records, mut observer } = options;
    let mut judge = TraceJudge::new(scenario);
    let mut writer = trace_file.map(TraceWriter::create);
    let mut records = Vec::new();
    let mut lines = 0u64;
    let mut last_t_ms = 0u64;
    let started = Instant::now();
    let steps = world::run(scenario, seed, &mut |r: Record| {
        judge.push(&r);
        if let Some(w) = &mut writer {
            w.write(&r);
        }
        if let Some(observe) = &mut observer {
            observe(&r);
        }
        lines += 1;
        last_t_ms = r.t_ms;
        if keep_records {
            records.push(r);
        }
    })?;
    let wall = started.elapsed();
    let tick = world::tick_for(scenario);
    // Two ticks absorb the simulation's time granularity in every bound.
    let (verdicts, index) = judge.finish(scenario, tick * 2);
    let recoveries = index.recoveries();
    Ok(RunResult {
        seed,
        records,
        lines,
        last_t_ms,
        verdicts,
        recoveries,
        index,
        steps,
        tick,
        wall,
        expect_failure: scenario.expect_failure,
        trace_written: writer.map(TraceWriter::finish),
    })
}
