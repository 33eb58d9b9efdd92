//! `redflag-sim explore`: random fault schedules drawn from a scenario's `[explore]` space, run
//! in parallel, and the first failure shrunk to a minimal standalone scenario file.
//!
//! * `schedule.rs`: a schedule, and how one is drawn (proptest strategies, a seeded runner per
//!   run: the same seed explores the same schedules).
//! * `shrink.rs`: greedy shrinking while the same check still fails.
//! * `write.rs`: a schedule as a scenario file (`[[faults]]`, no `[explore]`).
//!
//! What is judged: the file's `[[expect]]` and the implicit "agents alive between faults". The
//! implicit "fault observed" is not: it guards hand-written stories against faults that were
//! never wired in, while a drawn 50 ms latency is meant to be harmless.

pub mod schedule;
pub mod shrink;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use toml_edit::DocumentMut;

use crate::judge::Verdict;
use crate::runner::{RunOptions, RunResult, run_with};
use crate::scenario::Scenario;
use crate::scenario::explore::ExploreSpace;
use schedule::Schedule;

/// Most schedules one `explore` runs.
pub const RUNS_MAX: u64 = 10_000_000;
/// Simulations shrinking may run, by default.
pub const SHRINK_RUNS_DEFAULT: u32 = 400;
/// The verdict explore does not judge (see the module comment).
const NOT_JUDGED: &str = "fault_observed";

/// Which check failed: its name and what it asked, in words (`recovers_within 30s`). Not its
/// line: a written file has other lines than the text that was explored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckId {
    pub check: String,
    pub subject: String,
}

impl CheckId {
    pub fn of(v: &Verdict) -> Self {
        CheckId { check: v.check.clone(), subject: v.subject.clone() }
    }

    /// Whether this check failed among `verdicts`.
    pub fn failed_in(&self, verdicts: &[Verdict]) -> bool {
        verdicts.iter().any(|v| !v.passed && CheckId::of(v) == *self)
    }
}

/// The verdicts explore judges that failed.
pub fn judged_failures(verdicts: &[Verdict]) -> Vec<Verdict> {
    verdicts.iter().filter(|v| !v.passed && v.check != NOT_JUDGED).cloned().collect()
}

/// The scenario being explored, and how to turn a schedule into a run of it.
pub struct Base {
    pub scenario: Scenario,
    pub space: ExploreSpace,
    doc: DocumentMut,
    /// The file shrunk schedules are written to; also the path every explored run's scenario
    /// carries, so its repro lines name it.
    pub out: PathBuf,
}

impl Base {
    /// `text` is the scenario file's text, `scenario` what it parsed to.
    pub fn new(scenario: Scenario, text: &str, out: PathBuf) -> Result<Base, String> {
        let Some(space) = scenario.explore.clone() else {
            return Err(format!(
                "{}: has no [explore] table; add one (see scenarios/README.md, \"[explore]\") to say which fault schedules to draw",
                scenario.path.display()
            ));
        };
        let doc = text.parse::<DocumentMut>().map_err(|e| format!("{}: {e}", scenario.path.display()))?;
        Ok(Base { scenario, space, doc, out })
    }

    /// The default output file: named after the scenario and the seed, in the current folder.
    pub fn default_out(scenario: &Scenario, seed: u64) -> PathBuf {
        PathBuf::from(format!("{}-explore-seed-{seed}.toml", scenario.name))
    }

    /// The standalone scenario text of `schedule`, run with `run_seed`.
    pub fn text(&self, schedule: &Schedule, run_seed: u64, header: &str) -> String {
        let name = format!("{}-shrunk", self.scenario.name);
        let description = format!("a schedule drawn by redflag-sim explore from {}", self.scenario.path.display());
        write::scenario_text(&self.doc, schedule, run_seed, &name, &description, header)
    }

    /// Simulates `schedule` with `run_seed` and judges it, through its scenario text (so a
    /// written file is exactly what ran). `Err`: the harness failed, or the text did not parse.
    pub fn run(&self, schedule: &Schedule, run_seed: u64) -> Result<RunResult, String> {
        let text = self.text(schedule, run_seed, "");
        let scenario = Scenario::parse(&text, &self.out).map_err(|e| format!("explore wrote an invalid scenario (a bug): {e}\n{text}"))?;
        // Explore and shrink read the verdicts only: the trace is judged and dropped as it goes.
        run_with(&scenario, run_seed, RunOptions::default())
    }
}

/// One explored run that failed.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its number, from 0.
    pub index: u64,
    pub run_seed: u64,
    pub schedule: Schedule,
    /// The judged checks that failed, in report order.
    pub failed: Vec<Verdict>,
}

/// What exploring found.
#[derive(Debug, Default)]
pub struct Explored {
    /// Runs completed.
    pub runs: u64,
    /// Failures, by run number; without `keep_going`, only the first.
    pub failures: Vec<Found>,
}

/// Runs schedules `first..first + runs` of `seed` on `jobs` threads. Without `keep_going`, stops at the
/// first failure: the failing run with the lowest number, whatever the threads' timing (runs
/// below it are finished, none above it is started after it is known). `progress(done,
/// failed)` after each run. `Err`: a harness failure, with the run that caused it.
pub fn explore(
    base: &Base,
    seed: u64,
    first: u64,
    runs: u64,
    jobs: usize,
    keep_going: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Explored, String> {
    let next = AtomicU64::new(first);
    let end = first.saturating_add(runs);
    let first_failed = AtomicU64::new(u64::MAX);
    let done = AtomicU64::new(0);
    let found: Mutex<BTreeMap<u64, Found>> = Mutex::new(BTreeMap::new());
    let broken: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end || (!keep_going && i > first_failed.load(Ordering::SeqCst)) {
                        break;
                    }
                    if broken.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        break;
                    }
                    let schedule = schedule::draw(&base.scenario, &base.space, seed, i);
                    let run_seed = schedule::run_seed(seed, i);
                    match base.run(&schedule, run_seed) {
                        Ok(r) => {
                            let failed = judged_failures(&r.verdicts);
                            if !failed.is_empty() {
                                first_failed.fetch_min(i, Ordering::SeqCst);
                                found.lock().unwrap_or_else(|p| p.into_inner()).insert(i, Found { index: i, run_seed, schedule, failed });
                            }
                        }
                        Err(e) => {
                            let mut b = broken.lock().unwrap_or_else(|p| p.into_inner());
                            b.get_or_insert(format!("run {i} (seed {run_seed}): {e}"));
                        }
                    }
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let f = found.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
                    progress(d, f);
                }
            });
        }
    });
    if let Some(e) = broken.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut failures: Vec<Found> = found.into_inner().unwrap_or_else(|p| p.into_inner()).into_values().collect();
    if !keep_going {
        failures.truncate(1);
    }
    Ok(Explored { runs: done.into_inner(), failures })
}

/// Writes `text` to `path`, creating its folder.
pub fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
