//! `redflag-sim compare FILE --strategies a,b|all --seeds A..B [--json] [--svg DIR]`: the same
//! scenario under several retry strategies (`default`, the production policy, beside the
//! baselines of `models/baselines/`), every strategy × seed on every core, summarised as one row
//! per strategy: fleet recovery time p50 / p99 / max and the slowest ÷ the physical limit, peak
//! offered load ÷ capacity, server work per recovered agent (amplification), shed and wasted
//! requests, and the checks that failed. Figures are read from each run's trace by
//! `judge/fleet.rs`, the same place the fleet checks read them, so the table and the verdicts
//! cannot disagree.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::judge::{FleetFigures, TraceIndex};
use crate::runner::run_one;
use crate::scenario::{Scenario, StrategyName};
use super::svg::Picture;

/// Most runs one `compare` makes (strategies × seeds).
pub const RUNS_MAX: usize = 100_000;

/// `all`, or names separated by commas.
pub fn parse_strategies(s: &str) -> Result<Vec<StrategyName>, String> {
    if s.trim() == "all" {
        return Ok(StrategyName::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = StrategyName::parse(part)
            .ok_or_else(|| format!("--strategies: unknown strategy {part:?}; expected \"all\" or some of: {}", StrategyName::list()))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err(format!("--strategies is empty; give \"all\" or some of: {}", StrategyName::list()));
    }
    Ok(out)
}

/// What one run contributes to its strategy's row.
struct RunFigures {
    figures: FleetFigures,
    failed: Vec<String>,
    /// The picture of the run, for the first seed only.
    picture: Option<Picture>,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub strategy: String,
    pub runs: usize,
    /// Disturbed agents' recovery times over every window and seed (ms).
    pub recovery_p50_ms: Option<u64>,
    pub recovery_p99_ms: Option<u64>,
    pub recovery_max_ms: Option<u64>,
    /// Disturbed agents that never recovered before the next fault or the end, over all runs.
    pub unrecovered: usize,
    /// The worst window's fleet recovery ÷ its physical limit.
    pub limit_ratio_max: Option<f64>,
    /// The highest second of offered work ÷ full capacity, over all runs.
    pub peak_load_ratio: Option<f64>,
    /// The worst window's offered work per recovered agent.
    pub amplification_max: Option<f64>,
    /// Per run, on average.
    pub shed_per_run: f64,
    pub wasted_per_run: f64,
    pub wasted_share: f64,
    /// Each failed check's subject, and in how many runs it failed.
    pub failed_checks: BTreeMap<String, usize>,
}

/// Every row, in the order the strategies were given, and the first seed's picture of each.
pub struct Comparison {
    pub rows: Vec<Row>,
    pub pictures: Vec<(StrategyName, Picture)>,
}

/// Runs every strategy × seed on `jobs` threads. `progress(done)` is called after each run.
pub fn compare(
    scenario: &Scenario,
    strategies: &[StrategyName],
    seeds: Range<u64>,
    jobs: usize,
    pictures: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Comparison, String> {
    let work: Vec<(usize, u64)> = (0..strategies.len()).flat_map(|s| seeds.clone().map(move |seed| (s, seed))).collect();
    if work.len() > RUNS_MAX {
        return Err(format!("{} runs is more than the {RUNS_MAX} one compare makes; use fewer seeds", work.len()));
    }
    let results: Mutex<Vec<Option<Result<RunFigures, String>>>> = Mutex::new((0..work.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, seed)) = work.get(i) else { break };
                    let mut sc = scenario.clone();
                    sc.strategy = strategies[s];
                    let out = one_run(&sc, seed, pictures && seed == seeds.start);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                    progress(done.fetch_add(1, Ordering::Relaxed) as u64 + 1);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut per_strategy: Vec<Vec<RunFigures>> = strategies.iter().map(|_| Vec::new()).collect();
    for ((s, seed), r) in work.iter().zip(results) {
        let r = r.ok_or_else(|| format!("{} seed {seed}: the run never finished", strategies[*s]))?;
        per_strategy[*s].push(r.map_err(|e| format!("{} seed {seed}: harness error: {e}", strategies[*s]))?);
    }
    let mut rows = Vec::new();
    let mut pics = Vec::new();
    for (name, runs) in strategies.iter().zip(per_strategy) {
        rows.push(row(*name, &runs));
        if let Some(p) = runs.into_iter().find_map(|r| r.picture) {
            pics.push((*name, p));
        }
    }
    Ok(Comparison { rows, pictures: pics })
}

fn one_run(scenario: &Scenario, seed: u64, picture: bool) -> Result<RunFigures, String> {
    let result = run_one(scenario, seed)?;
    let idx = TraceIndex::new(&result.records, &scenario.fleet);
    let figures = FleetFigures::new(&idx, scenario, (result.tick * 2).as_millis() as u64);
    let failed = result.verdicts.iter().filter(|v| !v.passed).map(|v| v.check.clone()).collect();
    let picture = picture.then(|| Picture::of_run(scenario, seed, &result.records, &figures));
    Ok(RunFigures { figures, failed, picture })
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn max_f(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

fn row(name: StrategyName, runs: &[RunFigures]) -> Row {
    let mut times: Vec<u64> = runs.iter().flat_map(|r| r.figures.windows.iter().flat_map(|w| w.recovery_ms.iter().copied())).collect();
    times.sort_unstable();
    let windows = || runs.iter().flat_map(|r| r.figures.windows.iter());
    let limit_ratio_max = max_f(windows().filter_map(|w| {
        let limit = w.physical_limit_ms?;
        let (_, slowest) = w.slowest.as_ref()?;
        Some(*slowest as f64 / limit.max(1) as f64)
    }));
    let mut failed_checks = BTreeMap::new();
    for r in runs {
        for f in &r.failed {
            *failed_checks.entry(f.clone()).or_insert(0) += 1;
        }
    }
    let n = runs.len().max(1) as f64;
    let (wasted_units, done_units) = runs.iter().fold((0.0, 0.0), |(w, d), r| {
        (w + r.figures.totals.wasted_units, d + r.figures.totals.wasted_units + r.figures.totals.served_units)
    });
    Row {
        strategy: name.to_string(),
        runs: runs.len(),
        recovery_p50_ms: percentile(&times, 0.50),
        recovery_p99_ms: percentile(&times, 0.99),
        recovery_max_ms: times.last().copied(),
        unrecovered: windows().map(|w| w.unrecovered.len()).sum(),
        limit_ratio_max,
        peak_load_ratio: max_f(runs.iter().filter_map(|r| r.figures.peak_load_ratio())),
        amplification_max: max_f(windows().filter_map(|w| w.amplification)),
        shed_per_run: runs.iter().map(|r| r.figures.totals.shed as f64).sum::<f64>() / n,
        wasted_per_run: runs.iter().map(|r| r.figures.totals.wasted as f64).sum::<f64>() / n,
        wasted_share: if done_units > 0.0 { wasted_units / done_units } else { 0.0 },
        failed_checks,
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
}

fn times(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}x"))
}

/// The table, as printed (and pasted into the README).
pub fn table(scenario: &Scenario, seeds: &Range<u64>, rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let capacity = scenario.server.capacity.map_or("unlimited".to_string(), |c| format!("{}/s", c.per_second));
    let _ = writeln!(
        out,
        "compare {}: {} agents, server capacity {capacity}, seeds {}..{} ({} run(s) per strategy)",
        scenario.name,
        scenario.fleet.agents,
        seeds.start,
        seeds.end,
        seeds.end - seeds.start
    );
    let _ = writeln!(
        out,
        "{:<15} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>9} {:>10}  failed checks (runs)",
        "strategy", "rec p50", "rec p99", "rec max", "max/limit", "peak load", "amplif.", "shed/run", "wasted/run"
    );
    for r in rows {
        let failed = if r.failed_checks.is_empty() {
            "-".to_string()
        } else {
            r.failed_checks.iter().map(|(c, n)| format!("{c} ({n}/{})", r.runs)).collect::<Vec<_>>().join(", ")
        };
        let max = match (r.recovery_max_ms, r.unrecovered) {
            (_, 0) => secs(r.recovery_max_ms),
            (_, n) => format!("{n} never"),
        };
        let _ = writeln!(
            out,
            "{:<15} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>9.0} {:>10.0}  {failed}",
            r.strategy,
            secs(r.recovery_p50_ms),
            secs(r.recovery_p99_ms),
            max,
            times(r.limit_ratio_max),
            times(r.peak_load_ratio),
            r.amplification_max.map_or("-".into(), |a| format!("{a:.2}")),
            r.shed_per_run,
            r.wasted_per_run,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_refuse_unknown_names() {
        assert_eq!(parse_strategies("all").unwrap().len(), StrategyName::ALL.len());
        assert_eq!(parse_strategies("default, grpc,default").unwrap(), vec![StrategyName::Default, StrategyName::Grpc]);
        let e = parse_strategies("default,exponential").unwrap_err();
        assert!(e.contains("\"exponential\"") && e.contains("redflag-0.1.18"), "{e}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
