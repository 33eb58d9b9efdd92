//! `redflag-sim sweep`: every scenario under every seed of a range, on every core.
//!
//! The work list is (scenario, seed) pairs in a fixed order: scenarios sorted by path, seeds
//! ascending. `--shard K/N` keeps every N-th pair starting at the K-th, so N machines (a CI
//! matrix, nextest partitions, ...) split a million seeds with no coordination and no overlap.
//! Each run is independent and deterministic, so a failure found here replays exactly with the
//! printed `redflag-sim run FILE --seed N`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::judge::Verdict;
use crate::runner::{RunOptions, run_with};
use crate::scenario::{Scenario, ScenarioError};
use crate::trace::write_jsonl_file;

/// Largest number of runs one sweep accepts (per shard).
pub const RUNS_MAX: u64 = 100_000_000;
/// Why a scenario with `expect_failure = true` failed: it did not.
const EXPECTED_FAILURE_MISSING: &str = "expect_failure = true, but every expectation held: this scenario must show a failure";

/// `A..B` (B excluded) or `A..=B`.
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let bad = || format!("--seeds {s:?}: expected a range like 1..17 (17 excluded) or 1..=16");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b.checked_add(1).ok_or_else(bad)? } else { b };
    if end <= a {
        return Err(format!("--seeds {s:?} is empty"));
    }
    Ok(a..end)
}

/// `K/N` with 1 <= K <= N.
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--shard {s:?}: expected K/N with 1 <= K <= N, like 2/8");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: u64 = k.trim().parse().map_err(|_| bad())?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The `.toml` files named, or found (not recursively) in the folders named, sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| format!("cannot read folder {}: {e}", p.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err("no scenario files (*.toml) found".into());
    }
    Ok(files)
}

/// Reads every scenario, failing on the first invalid one.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<Scenario>, ScenarioError> {
    files.iter().map(|f| Scenario::load(f)).collect()
}

/// One failed (scenario, seed).
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: PathBuf,
    pub seed: u64,
    /// The failed checks, or the harness error.
    pub reasons: Vec<String>,
    pub repro: String,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub runs: u64,
    pub failures: Vec<Failure>,
}

/// The (scenario index, seed) pairs of shard `k` of `n`.
pub fn work_list(scenarios: usize, seeds: Range<u64>, shard: (u64, u64)) -> Vec<(usize, u64)> {
    let (k, n) = shard;
    let mut out = Vec::new();
    let mut i = 0u64;
    for s in 0..scenarios {
        for seed in seeds.clone() {
            if i % n == k - 1 {
                out.push((s, seed));
            }
            i += 1;
        }
    }
    out
}

/// One run of a sweep, as `--json` prints it (one object per line) and `--junit` records it.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub file: String,
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    /// Wall-clock time of the run (never part of a trace).
    pub wall_ms: u64,
    /// The checks that failed.
    pub failed: Vec<Verdict>,
    /// Set when the harness itself broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness_error: Option<String>,
    /// The failing run's trace, when the sweep was asked to keep them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub repro: String,
}

/// Runs the work list on `jobs` threads. `progress(done, failed)` is called after each run.
pub fn sweep(
    scenarios: &[Scenario],
    seeds: Range<u64>,
    shard: (u64, u64),
    jobs: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, String> {
    sweep_with(scenarios, seeds, shard, jobs, None, progress, &|_| {})
}

/// [`sweep`], also writing each failing run's trace into `traces` (as
/// `NAME-seed-N.jsonl`) and calling `on_run` with every run's outcome as it completes.
pub fn sweep_with(
    scenarios: &[Scenario],
    seeds: Range<u64>,
    shard: (u64, u64),
    jobs: usize,
    traces: Option<&Path>,
    progress: &(dyn Fn(u64, u64) + Sync),
    on_run: &(dyn Fn(&RunOutcome) + Sync),
) -> Result<Summary, String> {
    let total = (scenarios.len() as u64).saturating_mul(seeds.end - seeds.start) / shard.1;
    if total > RUNS_MAX {
        return Err(format!("{total} runs in one sweep is more than the limit of {RUNS_MAX}; split it with --shard"));
    }
    let work = work_list(scenarios.len(), seeds, shard);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, seed)) = work.get(i) else { break };
                    let scenario = &scenarios[s];
                    let started = std::time::Instant::now();
                    // The trace is kept only when a failing run's must be written.
                    let options = RunOptions { keep_records: traces.is_some(), ..RunOptions::default() };
                    let result = run_with(scenario, seed, options);
                    let wall = started.elapsed();
                    let outcome = outcome(scenario, seed, &result, wall, traces);
                    on_run(&outcome);
                    let failure = match &result {
                        Ok(r) if r.as_expected() => None,
                        Ok(r) if r.expect_failure => Some(vec![EXPECTED_FAILURE_MISSING.to_string()]),
                        Ok(r) => Some(r.verdicts.iter().filter(|v| !v.passed).map(|v| format!("{}: {}", v.subject, v.reason)).collect()),
                        Err(e) => Some(vec![format!("harness error: {e}")]),
                    };
                    let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(reasons) = failure {
                        f.push(Failure { file: scenario.path.clone(), seed, reasons, repro: scenario.repro(seed) });
                    }
                    let failed = f.len() as u64;
                    drop(f);
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(d as u64, failed);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by(|a, b| (&a.file, a.seed).cmp(&(&b.file, b.seed)));
    Ok(Summary { runs: work.len() as u64, failures })
}

fn outcome(
    scenario: &Scenario,
    seed: u64,
    result: &Result<crate::runner::RunResult, String>,
    wall: Duration,
    traces: Option<&Path>,
) -> RunOutcome {
    let (passed, failed, harness_error) = match result {
        // A scenario that must fail passes when it does; its failed checks are what it shows.
        Ok(r) if r.as_expected() => (true, Vec::new(), None),
        Ok(r) if r.expect_failure => (
            false,
            vec![Verdict {
                check: "expect_failure".into(),
                subject: "expect_failure = true".into(),
                line: 0,
                passed: false,
                reason: EXPECTED_FAILURE_MISSING.into(),
                own_promise: false,
            }],
            None,
        ),
        Ok(r) => (false, r.verdicts.iter().filter(|v| !v.passed).cloned().collect(), None),
        Err(e) => (false, Vec::new(), Some(e.clone())),
    };
    let trace = match (traces, result) {
        (Some(dir), Ok(r)) if !passed => {
            let path = dir.join(format!("{}-seed-{seed}.jsonl", scenario.name));
            match write_jsonl_file(&path, &r.records) {
                Ok(()) => Some(path.display().to_string()),
                Err(e) => Some(format!("not written: {e}")),
            }
        }
        _ => None,
    };
    RunOutcome {
        file: display_path(&scenario.path),
        scenario: scenario.name.clone(),
        seed,
        passed,
        wall_ms: wall.as_millis() as u64,
        failed,
        harness_error,
        trace,
        repro: scenario.repro(seed),
    }
}

/// Default worker count: every core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A path relative to the current directory when possible, for shorter repro lines.
pub fn display_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_shards() {
        assert_eq!(parse_seeds("1..17").unwrap(), 1..17);
        assert_eq!(parse_seeds("1..=16").unwrap(), 1..17);
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("a..b").is_err());
        assert_eq!(parse_shard("2/8").unwrap(), (2, 8));
        assert!(parse_shard("0/8").is_err());
        assert!(parse_shard("9/8").is_err());
    }

    #[test]
    fn shards_partition_the_work() {
        let all = work_list(3, 0..10, (1, 1));
        let mut joined: Vec<(usize, u64)> = (1..=4).flat_map(|k| work_list(3, 0..10, (k, 4))).collect();
        joined.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(joined, sorted);
        assert_eq!(all.len(), 30);
    }
}
