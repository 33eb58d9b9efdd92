//! `redflag-sim compare FILE --strategies a,b|all --seeds A..B [--json] [--svg DIR]`: the same
//! scenario under several retry strategies (`default`, the production policy, beside the
//! baselines of `models/baselines/`), every strategy × seed on every core, summarised as one row
//! per strategy. Figures are read from each run's trace by `judge/fleet.rs`, the same place the
//! fleet checks read them, so the table and the verdicts cannot disagree.
//!
//! What makes the table fair (issue 14):
//!
//! * **Every figure per seed**, and the row shows its median over seeds with the spread
//!   (min-max); `--json` rows carry `by_seed`, one object per seed.
//! * **No agent is dropped.** An agent that never recovered counts as recovering at +∞: a
//!   percentile that falls on one is *censored*, printed `> end` and flagged in JSON
//!   (`recovery_p99_censored`). And no strategy is cut short: the run is extended, for every
//!   strategy alike, until the longest cycle of any strategy fits after the last fault
//!   ([`run_length`]), so an agent that would come back does.
//! * **Shedding costs work** (`[server] shed_cost`), in amplification and load.
//! * **Both sides of the trade**: outage traffic and steady traffic per agent-minute beside
//!   recovery; peak load at start apart from peak load during recovery.
//! * **Each system by its own promises**: checks whose bound is the strategy's own (its
//!   waits, its interval spread, its timeout) are reported apart from the scenario's targets.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::svg::{ParetoPoint, Picture};
use crate::judge::fleet::SHED_LATE_AFTER_MS;
use crate::judge::{FleetFigures, TraceIndex};
use crate::models::baselines;
use crate::runner::run_one;
use crate::scenario::{Scenario, StrategyName, fmt_duration};

/// Most runs one `compare` makes (strategies × seeds).
pub const RUNS_MAX: usize = 100_000;
/// Seeds per strategy when `--seeds` is not given.
pub const SEEDS_DEFAULT: u64 = 10;
/// Time left after the longest cycle of any strategy, when `compare` extends a run.
pub const RUN_MARGIN: Duration = Duration::from_secs(60);

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

/// Why a run is longer than its file says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Extension {
    pub from_ms: u64,
    pub to_ms: u64,
    /// The strategy whose longest cycle set the length.
    pub strategy: StrategyName,
    /// Its longest wait after a fault plus the requests around it.
    pub cycle_ms: u64,
}

/// The run length every strategy of a comparison gets: the file's, or longer, so that after the
/// last fault ends every strategy's longest cycle (its longest wait, the attempt in flight, a
/// probe and the check-in) fits, plus [`RUN_MARGIN`]. Worked out over *every* strategy, not only
/// the ones compared, so a row's figures do not depend on its neighbours.
pub fn run_length(scenario: &Scenario) -> (Duration, Option<Extension>) {
    let Some(last_end) = scenario.faults.iter().filter_map(|f| f.end()).max() else {
        return (scenario.duration, None);
    };
    let (strategy, cycle) = StrategyName::ALL
        .iter()
        .map(|&n| (n, baselines::promises(n, &scenario.agent_config).recovery_max()))
        .max_by_key(|(_, c)| *c)
        .expect("at least one strategy");
    let needed = last_end + cycle + RUN_MARGIN;
    if needed <= scenario.duration {
        return (scenario.duration, None);
    }
    // Whole seconds, so the printed length is the one simulated.
    let to = Duration::from_secs(needed.as_secs() + u64::from(needed.subsec_nanos() > 0));
    let ms = |d: Duration| d.as_millis() as u64;
    (to, Some(Extension { from_ms: ms(scenario.duration), to_ms: ms(to), strategy, cycle_ms: ms(cycle) }))
}

/// One seed's figures for one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct SeedFigures {
    pub seed: u64,
    /// Disturbed agents' recovery times over every window (ms); an agent that never recovered
    /// is +∞, and a percentile on one is censored (its value then is how long the run could
    /// see: the window's end to the next window or the end).
    pub recovery_p50_ms: Option<u64>,
    pub recovery_p50_censored: bool,
    pub recovery_p90_ms: Option<u64>,
    pub recovery_p90_censored: bool,
    pub recovery_p99_ms: Option<u64>,
    pub recovery_p99_censored: bool,
    pub recovery_max_ms: Option<u64>,
    pub recovery_max_censored: bool,
    /// Disturbed agents that never recovered, over every window.
    pub unrecovered: usize,
    /// The worst window's slowest recovery ÷ its physical limit (`None` when censored or
    /// unlimited).
    pub limit_ratio_max: Option<f64>,
    pub peak_start_ratio: Option<f64>,
    pub peak_recovery_ratio: Option<f64>,
    /// The worst window's server work (shed cost included) per recovered agent.
    pub amplification_max: Option<f64>,
    pub outage_requests_per_agent_minute: Option<f64>,
    pub steady_requests_per_agent_minute: Option<f64>,
    pub shed: u64,
    /// Shed requests more than 10 s after a window ended, and all shed requests after windows.
    pub shed_late: u64,
    pub shed_after_windows: u64,
    pub wasted: u64,
    pub wasted_share: f64,
    /// Checks failed against the strategy's own promises, and against the scenario's targets.
    pub own_promises_broken: Vec<String>,
    pub targets_missed: Vec<String>,
}

/// A figure over seeds: its median, lowest and highest. `censored`: some seed's value is only
/// a lower bound (an agent that never recovered); infinite values sort last.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The median is censored (more than half the seeds' values are).
    pub median_censored: bool,
    /// The highest is censored.
    pub max_censored: bool,
}

impl Spread {
    /// Over `(value, censored)` per seed; `None` values are left out.
    fn of(values: impl Iterator<Item = (Option<f64>, bool)>) -> Spread {
        let mut v: Vec<(f64, bool)> =
            values.filter_map(|(x, c)| x.map(|x| (if c { f64::INFINITY } else { x }, c))).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |i: usize| (!v[i].1).then_some(v[i].0);
        let mid = (v.len() - 1) / 2;
        Spread {
            median: at(mid),
            min: at(0),
            max: at(v.len() - 1),
            median_censored: v[mid].1,
            max_censored: v[v.len() - 1].1,
        }
    }

    fn plain(values: impl Iterator<Item = Option<f64>>) -> Spread {
        Spread::of(values.map(|v| (v, false)))
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub strategy: String,
    pub runs: usize,
    /// The simulated length of every run (longer than the file's when `compare` extended it).
    pub duration_ms: u64,
    /// Medians over seeds of each seed's recovery percentiles, with their spread (ms).
    pub recovery_p50_ms: Spread,
    pub recovery_p90_ms: Spread,
    pub recovery_p99_ms: Spread,
    pub recovery_max_ms: Spread,
    /// Some seed's p99 fell on an agent that never recovered.
    pub recovery_p99_censored: bool,
    pub recovery_max_censored: bool,
    /// Disturbed agents that never recovered, over all runs.
    pub unrecovered: usize,
    pub limit_ratio_max: Spread,
    pub peak_start_ratio: Spread,
    pub peak_recovery_ratio: Spread,
    pub amplification_max: Spread,
    pub outage_requests_per_agent_minute: Spread,
    pub steady_requests_per_agent_minute: Spread,
    pub shed_per_run: Spread,
    /// Of all shed requests after fault windows, over all runs, the share more than 10 s late.
    pub shed_late_share: Option<f64>,
    pub wasted_per_run: Spread,
    /// The mean over seeds of each run's wasted share of the server's work.
    pub wasted_share: f64,
    /// Each failed check's subject, and in how many runs it failed: against the strategy's own
    /// promises, and against the scenario's targets.
    pub own_promises_broken: BTreeMap<String, usize>,
    pub targets_missed: BTreeMap<String, usize>,
    pub by_seed: Vec<SeedFigures>,
}

/// Every row, in the order the strategies were given, and the first seed's picture of each.
pub struct Comparison {
    pub rows: Vec<Row>,
    pub pictures: Vec<(StrategyName, Picture)>,
    /// Set when the runs are longer than the file says.
    pub extension: Option<Extension>,
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
    let (duration, extension) = run_length(scenario);
    let mut base = scenario.clone();
    base.duration = duration;
    let results: Mutex<Vec<Option<Result<(SeedFigures, Option<Picture>), String>>>> = Mutex::new((0..work.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, seed)) = work.get(i) else { break };
                    let mut sc = base.clone();
                    sc.strategy = strategies[s];
                    let out = one_run(&sc, seed, pictures && seed == seeds.start);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                    progress(done.fetch_add(1, Ordering::Relaxed) as u64 + 1);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut per_strategy: Vec<Vec<SeedFigures>> = strategies.iter().map(|_| Vec::new()).collect();
    let mut pics = Vec::new();
    for ((s, seed), r) in work.iter().zip(results) {
        let r = r.ok_or_else(|| format!("{} seed {seed}: the run never finished", strategies[*s]))?;
        let (figures, picture) = r.map_err(|e| format!("{} seed {seed}: harness error: {e}", strategies[*s]))?;
        per_strategy[*s].push(figures);
        if let Some(p) = picture {
            pics.push((strategies[*s], p));
        }
    }
    let rows = strategies.iter().zip(per_strategy).map(|(name, seeds)| row(*name, duration, seeds)).collect();
    Ok(Comparison { rows, pictures: pics, extension })
}

fn one_run(scenario: &Scenario, seed: u64, picture: bool) -> Result<(SeedFigures, Option<Picture>), String> {
    let result = run_one(scenario, seed)?;
    let idx = TraceIndex::new(&result.records, &scenario.fleet);
    let figures = FleetFigures::new(&idx, scenario, (result.tick * 2).as_millis() as u64);
    let failed = |own: bool| result.verdicts.iter().filter(|v| !v.passed && v.own_promise == own).map(|v| v.check.clone()).collect();
    let seed_figures = seed_figures(seed, &figures, failed(true), failed(false));
    let picture = picture.then(|| Picture::of_run(scenario, seed, &result.records, &figures));
    Ok((seed_figures, picture))
}

/// Nearest-rank percentile over values where `None` is +∞: the value and whether it is
/// censored (then the value is `censored_at`, the most the run could see).
fn percentile(sorted: &[Option<u64>], p: f64, censored_at: u64) -> (Option<u64>, bool) {
    if sorted.is_empty() {
        return (None, false);
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    match sorted[rank - 1] {
        Some(v) => (Some(v), false),
        None => (Some(censored_at), true),
    }
}

fn max_f(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

fn seed_figures(seed: u64, f: &FleetFigures, own_promises_broken: Vec<String>, targets_missed: Vec<String>) -> SeedFigures {
    let mut times: Vec<Option<u64>> = f.windows.iter().flat_map(|w| w.recovery_with_censored()).collect();
    // Finite times first, ascending; +∞ last.
    times.sort_by_key(|t| (t.is_none(), *t));
    let censored_at = f.windows.iter().filter(|w| !w.unrecovered.is_empty()).map(|w| w.horizon_ms - w.end_ms).min().unwrap_or(0);
    let (p50, p50c) = percentile(&times, 0.50, censored_at);
    let (p90, p90c) = percentile(&times, 0.90, censored_at);
    let (p99, p99c) = percentile(&times, 0.99, censored_at);
    let (max, maxc) = percentile(&times, 1.0, censored_at);
    let unrecovered: usize = f.windows.iter().map(|w| w.unrecovered.len()).sum();
    let limit_ratio_max = max_f(f.windows.iter().filter(|w| w.unrecovered.is_empty()).filter_map(|w| {
        let limit = w.physical_limit_ms?;
        let (_, slowest) = w.slowest.as_ref()?;
        Some(*slowest as f64 / limit.max(1) as f64)
    }));
    let any_censored_window = f.windows.iter().any(|w| !w.unrecovered.is_empty() && w.physical_limit_ms.is_some());
    let (shed_after_windows, shed_late) = f.sheds_after_windows();
    SeedFigures {
        seed,
        recovery_p50_ms: p50,
        recovery_p50_censored: p50c,
        recovery_p90_ms: p90,
        recovery_p90_censored: p90c,
        recovery_p99_ms: p99,
        recovery_p99_censored: p99c,
        recovery_max_ms: max,
        recovery_max_censored: maxc,
        unrecovered,
        limit_ratio_max: if any_censored_window { None } else { limit_ratio_max },
        peak_start_ratio: f.peak_start_ratio(),
        peak_recovery_ratio: f.peak_recovery_ratio(),
        amplification_max: max_f(f.windows.iter().filter_map(|w| w.amplification)),
        outage_requests_per_agent_minute: f.outage_requests_per_agent_minute,
        steady_requests_per_agent_minute: f.steady_requests_per_agent_minute,
        shed: f.totals.shed,
        shed_late,
        shed_after_windows,
        wasted: f.totals.wasted,
        wasted_share: f.totals.wasted_share(),
        own_promises_broken,
        targets_missed,
    }
}

fn row(name: StrategyName, duration: Duration, seeds: Vec<SeedFigures>) -> Row {
    let count = |pick: fn(&SeedFigures) -> &Vec<String>| {
        let mut m = BTreeMap::new();
        for s in &seeds {
            for c in pick(s) {
                *m.entry(c.clone()).or_insert(0) += 1;
            }
        }
        m
    };
    let ms = |v: Option<u64>| v.map(|v| v as f64);
    let (late, after) = seeds.iter().fold((0, 0), |(l, a), s| (l + s.shed_late, a + s.shed_after_windows));
    Row {
        strategy: name.to_string(),
        runs: seeds.len(),
        duration_ms: duration.as_millis() as u64,
        recovery_p50_ms: Spread::of(seeds.iter().map(|s| (ms(s.recovery_p50_ms), s.recovery_p50_censored))),
        recovery_p90_ms: Spread::of(seeds.iter().map(|s| (ms(s.recovery_p90_ms), s.recovery_p90_censored))),
        recovery_p99_ms: Spread::of(seeds.iter().map(|s| (ms(s.recovery_p99_ms), s.recovery_p99_censored))),
        recovery_max_ms: Spread::of(seeds.iter().map(|s| (ms(s.recovery_max_ms), s.recovery_max_censored))),
        recovery_p99_censored: seeds.iter().any(|s| s.recovery_p99_censored),
        recovery_max_censored: seeds.iter().any(|s| s.recovery_max_censored),
        unrecovered: seeds.iter().map(|s| s.unrecovered).sum(),
        limit_ratio_max: Spread::of(seeds.iter().map(|s| (s.limit_ratio_max.or((s.unrecovered > 0).then_some(0.0)), s.unrecovered > 0))),
        peak_start_ratio: Spread::plain(seeds.iter().map(|s| s.peak_start_ratio)),
        peak_recovery_ratio: Spread::plain(seeds.iter().map(|s| s.peak_recovery_ratio)),
        amplification_max: Spread::plain(seeds.iter().map(|s| s.amplification_max)),
        outage_requests_per_agent_minute: Spread::plain(seeds.iter().map(|s| s.outage_requests_per_agent_minute)),
        steady_requests_per_agent_minute: Spread::plain(seeds.iter().map(|s| s.steady_requests_per_agent_minute)),
        shed_per_run: Spread::plain(seeds.iter().map(|s| Some(s.shed as f64))),
        shed_late_share: (after > 0).then(|| late as f64 / after as f64),
        wasted_per_run: Spread::plain(seeds.iter().map(|s| Some(s.wasted as f64))),
        wasted_share: seeds.iter().map(|s| s.wasted_share).sum::<f64>() / seeds.len().max(1) as f64,
        own_promises_broken: count(|s| &s.own_promises_broken),
        targets_missed: count(|s| &s.targets_missed),
        by_seed: seeds,
    }
}

impl Row {
    /// This row's point in the Pareto picture (seconds and counts, as drawn).
    pub fn pareto_point(&self) -> ParetoPoint {
        let s = |x: &Spread, k: f64| (x.median.map(|v| v / k), x.min.map(|v| v / k), x.max.map(|v| v / k));
        ParetoPoint {
            strategy: self.strategy.clone(),
            recovery_p99_s: s(&self.recovery_p99_ms, 1000.0),
            outage_per_agent_minute: s(&self.outage_requests_per_agent_minute, 1.0),
            amplification: s(&self.amplification_max, 1.0),
        }
    }
}

/// `12.3s`, `> end` for a censored value, `-` for none.
fn secs(v: Option<f64>, censored: bool) -> String {
    match (v, censored) {
        (_, true) => "> end".into(),
        (Some(ms), false) => format!("{:.1}s", ms / 1000.0),
        (None, false) => "-".into(),
    }
}

/// `12.3s [10.1-14.0]`: the median and the spread over seeds.
fn secs_spread(s: &Spread) -> String {
    let one = |v: Option<f64>, c: bool| match (v, c) {
        (_, true) => ">end".to_string(),
        (Some(ms), false) => format!("{:.1}", ms / 1000.0),
        (None, false) => "-".to_string(),
    };
    if s.median.is_none() && !s.median_censored && s.min.is_none() && !s.max_censored {
        return "-".into();
    }
    let lo_censored = s.min.is_none() && s.max_censored;
    format!("{} [{}-{}]", secs(s.median, s.median_censored), one(s.min, lo_censored), one(s.max, s.max_censored))
}

fn num_spread(s: &Spread, unit: &str, digits: usize) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    match s.median {
        None if s.median_censored => "> end".into(),
        None => "-".into(),
        Some(_) => format!("{}{unit} [{}-{}]", f(s.median), f(s.min), f(s.max)),
    }
}

fn num(s: &Spread, unit: &str, digits: usize) -> String {
    s.median.map_or("-".to_string(), |v| format!("{v:.digits$}{unit}"))
}

/// The table, as printed (and pasted into the README).
pub fn table(scenario: &Scenario, seeds: &Range<u64>, comparison: &Comparison) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let capacity = scenario.server.capacity.map_or("unlimited".to_string(), |c| format!("{}/s, shed cost {}", c.per_second, c.shed_cost));
    let _ = writeln!(
        out,
        "compare {}: {} agents, server capacity {capacity}, seeds {}..{} ({} run(s) per strategy)",
        scenario.name,
        scenario.fleet.agents,
        seeds.start,
        seeds.end,
        seeds.end - seeds.start
    );
    if let Some(x) = comparison.extension {
        let _ = writeln!(
            out,
            "runs extended from {} to {}: {}'s longest cycle after a fault ({}) and a {} margin must fit after the last fault",
            fmt_duration(Duration::from_millis(x.from_ms)),
            fmt_duration(Duration::from_millis(x.to_ms)),
            x.strategy,
            fmt_duration(Duration::from_millis(x.cycle_ms)),
            fmt_duration(RUN_MARGIN)
        );
    }
    let _ = writeln!(
        out,
        "figures: median over seeds [min-max]; recovery of agents that never came back is +inf (\"> end\"); requests per agent-minute"
    );
    let _ = writeln!(
        out,
        "{:<17} {:>7} {:>21} {:>8} {:>20} {:>8} {:>20} {:>20} {:>20} {:>7} {:>7} {:>6} {:>6}",
        "strategy",
        "rec p50",
        "rec p99",
        "rec max",
        "max/limit",
        "pk start",
        "pk recovery",
        "amplification",
        "outage req/ag-min",
        "steady",
        "shed",
        "late",
        "wasted"
    );
    for r in &comparison.rows {
        let worst = match r.recovery_max_ms.max {
            _ if r.recovery_max_censored => "> end".to_string(),
            v => secs(v, false),
        };
        let late = r.shed_late_share.map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
        let _ = writeln!(
            out,
            "{:<17} {:>7} {:>21} {:>8} {:>20} {:>8} {:>20} {:>20} {:>20} {:>7} {:>7} {:>6} {:>6}",
            r.strategy,
            secs(r.recovery_p50_ms.median, r.recovery_p50_ms.median_censored),
            secs_spread(&r.recovery_p99_ms),
            worst,
            num_spread(&r.limit_ratio_max, "x", 2),
            num(&r.peak_start_ratio, "x", 2),
            num_spread(&r.peak_recovery_ratio, "x", 2),
            num_spread(&r.amplification_max, "", 2),
            num_spread(&r.outage_requests_per_agent_minute, "", 2),
            num(&r.steady_requests_per_agent_minute, "", 3),
            num(&r.shed_per_run, "", 0),
            late,
            num(&r.wasted_per_run, "", 0),
        );
    }
    let _ = writeln!(out, "checks failed (runs): against the strategy's own promises | against the scenario's targets");
    for r in &comparison.rows {
        let list = |m: &BTreeMap<String, usize>| {
            if m.is_empty() { "-".to_string() } else { m.iter().map(|(c, n)| format!("{c} ({n}/{})", r.runs)).collect::<Vec<_>>().join(", ") }
        };
        let _ = writeln!(out, "  {:<17} {} | {}", r.strategy, list(&r.own_promises_broken), list(&r.targets_missed));
    }
    let _ = writeln!(out, "(late: shed requests more than {} s after a fault ended, of all shed after faults)", SHED_LATE_AFTER_MS / 1000);
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
    fn percentiles_are_nearest_rank_and_never_drop_an_agent() {
        let v: Vec<Option<u64>> = (1..=100).map(Some).collect();
        assert_eq!(percentile(&v, 0.5, 0), (Some(50), false));
        assert_eq!(percentile(&v, 0.99, 0), (Some(99), false));
        assert_eq!(percentile(&[], 0.5, 0), (None, false));
        // 98 recovered, 2 never: p99 falls on one that never did.
        let mut v: Vec<Option<u64>> = (1..=98).map(Some).collect();
        v.extend([None, None]);
        assert_eq!(percentile(&v, 0.99, 420_000), (Some(420_000), true));
        assert_eq!(percentile(&v, 0.98, 420_000), (Some(98), false));
        assert_eq!(percentile(&v, 1.0, 420_000), (Some(420_000), true));
    }

    #[test]
    fn a_spread_sorts_censored_values_last() {
        let s = Spread::of([(Some(3.0), false), (Some(9.0), true), (Some(1.0), false)].into_iter());
        assert_eq!((s.median, s.min, s.max, s.max_censored, s.median_censored), (Some(3.0), Some(1.0), None, true, false));
        let s = Spread::of([(Some(9.0), true), (Some(9.0), true), (Some(1.0), false)].into_iter());
        assert!(s.median_censored && s.median.is_none());
    }
}
