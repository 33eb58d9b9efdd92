//! The fleet's figures, read from one run's trace: the server's load second by second (offered,
//! completed, served, shed and wasted work, against the capacity curve with its warm-ups), and
//! for each fault window the disturbed agents' recovery times, the physical limit on them, and
//! the work the server saw per recovered agent.
//!
//! The fleet checks (`fleet_recovers_within.rs`, `max_amplification.rs`, `load_settles.rs`,
//! `max_wasted_share.rs`), `redflag-sim compare` and the SVG picture all read these, so a number
//! means the same thing wherever it is printed. Definitions:
//!
//! * *offered* work: every request that reached the server process, at its cost (a check-in or
//!   renewal 1 unit, a `/health` probe 0.1), at its arrival, whether it was then served, shed or
//!   wasted. A server that is down (crashed) sees nothing.
//! * *done* work: served and wasted work at their cost, and shed requests at `[server]
//!   shed_cost` of theirs (refusing is not free); *completed* work is done work at the time it
//!   finished (a shed at its refusal). Utilization is completed work in a second ÷ the
//!   capacity in that second (warm-up included; 0 while down).
//! * the *physical limit* of a window: how long a server coming out of that window needs to do
//!   one unit of work per disturbed agent at full use, warm-up included.
//! * *amplification*: the work the server did (served, wasted and shed at its cost) to bring
//!   the disturbed agents back, ÷ those that recovered: each disturbed agent's requests from
//!   the window's end to its own first check-in, and the requests no agent is named on (health
//!   probes) from the window's end to the fleet's recovery (the slowest one's first check-in).
//!   An agent's regular check-ins after it recovered are steady load, not amplification: a
//!   slow fleet would otherwise be charged for its own next interval.
//! * *recovery*: each disturbed agent's first check-in after the window; an agent with none
//!   before the next window (or the end) recovered at +∞: it is never dropped, and a percentile
//!   that falls on it is *censored* (known only to be beyond what the run could see).
//! * *peak load at start* and *during recovery*: the busiest second of offered work ÷ full
//!   capacity, before the first fault window, and from the first window's start to the end.
//! * *outage traffic*: requests the agents sent during fault windows (probes included), per
//!   agent and minute of window; for a crashed server, exactly what reached the proxy. *Steady
//!   traffic*: requests per agent-minute over the agents' clean cycles (from one check-in to
//!   the next with no failed request between, outside fault windows).
//! * *late sheds*: shed requests that arrived more than [`SHED_LATE_AFTER_MS`] after a window
//!   ended (and before the next began).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::index::TraceIndex;
use super::recovers_within::disturbed;
use crate::scenario::{Capacity, Scenario};
use crate::trace::WorkOutcome;

/// Bucket width of the per-second series.
pub const BUCKET_MS: u64 = 1000;
/// A shed later than this after a window's end counts as late: by then the first wave has been
/// answered, and a fleet that is still being shed is coming back in waves.
pub const SHED_LATE_AFTER_MS: u64 = 10_000;

/// The server's load, second by second from the run's start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSeries {
    /// Work units that arrived in each second.
    pub offered: Vec<f64>,
    /// Work units finished (served + wasted) in each second.
    pub completed: Vec<f64>,
    /// Requests answered to a waiting client in each second (every answer, when unlimited).
    pub served: Vec<u32>,
    pub shed: Vec<u32>,
    pub wasted: Vec<u32>,
    /// Work units the server could complete in each second (`None`: unlimited).
    pub capacity: Option<Vec<f64>>,
    /// Full-strength capacity, units per second.
    pub capacity_full: Option<f64>,
}

impl LoadSeries {
    pub fn seconds(&self) -> usize {
        self.offered.len()
    }

    /// Utilization of second `s` (completed ÷ capacity; 0 when nothing could be done).
    pub fn utilization(&self, s: usize) -> Option<f64> {
        let cap = self.capacity.as_ref()?.get(s).copied()?;
        let done = self.completed.get(s).copied().unwrap_or(0.0);
        Some(if cap > 1e-9 { done / cap } else if done > 0.0 { f64::INFINITY } else { 0.0 })
    }
}

/// Totals of the server's work over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WorkTotals {
    pub served: u64,
    pub shed: u64,
    pub wasted: u64,
    pub served_units: f64,
    pub wasted_units: f64,
    /// Shed requests' units (work offered and refused).
    pub shed_units: f64,
    /// The work refusing them took (`shed_units × shed_cost`).
    pub shed_work_units: f64,
}

impl WorkTotals {
    /// Wasted share of the work the server did, shedding included (0 when it did none).
    pub fn wasted_share(&self) -> f64 {
        let done = self.served_units + self.wasted_units + self.shed_work_units;
        if done > 0.0 { self.wasted_units / done } else { 0.0 }
    }
}

/// One fault window's recovery, as the fleet lived it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowFigures {
    pub faults: Vec<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The next window's start (or the run's end): the window's recovery must happen before.
    pub horizon_ms: u64,
    pub disturbed: usize,
    /// Each recovered disturbed agent's first check-in after `end_ms`, as a delay from it.
    pub recovery_ms: Vec<u64>,
    /// Disturbed agents with no check-in before the horizon.
    pub unrecovered: Vec<String>,
    /// The slowest recovered agent and its delay.
    pub slowest: Option<(String, u64)>,
    /// The physical limit (`None` when the server is unlimited).
    pub physical_limit_ms: Option<u64>,
    /// Work done (served + wasted + shed at its cost) per recovered agent, on requests that
    /// arrived from `end_ms` to the fleet's recovery.
    pub amplification: Option<f64>,
    /// Shed requests that arrived from `end_ms` to the horizon, and how many of them came more
    /// than [`SHED_LATE_AFTER_MS`] after `end_ms`.
    pub shed: u64,
    pub shed_late: u64,
}

impl WindowFigures {
    /// Every disturbed agent's recovery, the ones that never recovered at +∞ (`None`), in order.
    pub fn recovery_with_censored(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.recovery_ms.iter().map(|&r| Some(r)).chain(self.unrecovered.iter().map(|_| None))
    }
}

/// Everything the fleet checks and `compare` read from one run.
#[derive(Debug, Clone, Serialize)]
pub struct FleetFigures {
    pub load: LoadSeries,
    pub totals: WorkTotals,
    pub windows: Vec<WindowFigures>,
    /// Seconds after which the server (re)started, from the trace (0 first).
    pub server_starts_ms: Vec<u64>,
    /// When the first fault window started (the end of the run without one).
    pub first_window_ms: u64,
    /// Requests the agents sent during fault windows, per agent-minute of window (`None`: no
    /// window).
    pub outage_requests_per_agent_minute: Option<f64>,
    /// Requests per agent-minute over clean cycles (`None`: no clean cycle).
    pub steady_requests_per_agent_minute: Option<f64>,
}

impl FleetFigures {
    pub fn new(idx: &TraceIndex, scenario: &Scenario, tol_ms: u64) -> Self {
        let capacity = scenario.server.capacity;
        let shed_cost = capacity.map_or(0.0, |c| c.shed_cost);
        let server_starts_ms = server_starts(idx);
        let load = load_series(idx, capacity.as_ref(), &server_starts_ms);
        let totals = totals(idx, shed_cost);
        let timeout_ms = crate::judge::promises_of(scenario).request_timeout.as_millis() as u64 + tol_ms;
        let worked = worked(idx, capacity.as_ref());
        let merged = idx.merged_windows();
        let mut windows = Vec::new();
        for (n, (faults, w)) in merged.iter().enumerate() {
            let Some(end) = w.end_ms else { continue };
            let horizon = merged.get(n + 1).map_or(idx.run_end_ms, |(_, nw)| nw.start_ms).min(idx.run_end_ms);
            let mut recovery_ms = Vec::new();
            let mut recovered_at: BTreeMap<&str, u64> = BTreeMap::new();
            let mut unrecovered = Vec::new();
            let mut slowest: Option<(String, u64)> = None;
            let mut disturbed_n = 0;
            for (name, view) in &idx.agents {
                if !disturbed(idx, view, w.start_ms, end, timeout_ms) {
                    continue;
                }
                disturbed_n += 1;
                match view.first_success_after(end).filter(|&t| t < horizon.max(end + 1)) {
                    Some(t) => {
                        let took = t - end;
                        recovery_ms.push(took);
                        recovered_at.insert(name, t);
                        if slowest.as_ref().is_none_or(|(_, s)| took > *s) {
                            slowest = Some((name.to_string(), took));
                        }
                    }
                    None => unrecovered.push(name.to_string()),
                }
            }
            recovery_ms.sort_unstable();
            let physical_limit_ms = capacity.map(|c| physical_limit_ms(&c, &server_starts_ms, idx, end, disturbed_n as f64));
            let amplification = match &slowest {
                Some((_, took)) if !recovery_ms.is_empty() => {
                    let until = end + took;
                    let work: f64 = worked
                        .iter()
                        .filter(|w| w.arrived_ms >= end && w.arrived_ms <= until)
                        .filter(|w| match &w.agent {
                            // Until that agent's own recovery; agents that were not disturbed
                            // had nothing to recover from.
                            Some(a) => recovered_at.get(a.as_ref()).is_some_and(|&t| w.arrived_ms <= t),
                            None => true,
                        })
                        .map(|w| w.work)
                        .sum();
                    Some(work / recovery_ms.len() as f64)
                }
                _ => None,
            };
            let sheds = || idx.server_work.iter().filter(|w| w.outcome == WorkOutcome::Shed && w.t_ms >= end && w.t_ms < horizon);
            let shed = sheds().count() as u64;
            let shed_late = sheds().filter(|w| w.t_ms > end + SHED_LATE_AFTER_MS).count() as u64;
            windows.push(WindowFigures {
                faults: faults.clone(),
                start_ms: w.start_ms,
                end_ms: end,
                horizon_ms: horizon,
                disturbed: disturbed_n,
                recovery_ms,
                unrecovered,
                slowest,
                physical_limit_ms,
                amplification,
                shed,
                shed_late,
            });
        }
        let first_window_ms = merged.first().map_or(idx.run_end_ms, |(_, w)| w.start_ms);
        let outage_requests_per_agent_minute = outage_rate(idx, &merged);
        let steady_requests_per_agent_minute = steady_rate(idx, &merged);
        FleetFigures {
            load,
            totals,
            windows,
            server_starts_ms,
            first_window_ms,
            outage_requests_per_agent_minute,
            steady_requests_per_agent_minute,
        }
    }

    /// The highest offered load of any second ÷ full-strength capacity (`None`: unlimited).
    pub fn peak_load_ratio(&self) -> Option<f64> {
        self.peak_between(0, usize::MAX)
    }

    /// The busiest second before the first fault window ÷ full capacity: a fleet starting.
    pub fn peak_start_ratio(&self) -> Option<f64> {
        self.peak_between(0, (self.first_window_ms / BUCKET_MS) as usize)
    }

    /// The busiest second from the first fault window's start to the end ÷ full capacity: a
    /// fleet riding out faults and coming back (`None` without a window).
    pub fn peak_recovery_ratio(&self) -> Option<f64> {
        let from = (self.first_window_ms / BUCKET_MS) as usize;
        if from >= self.load.seconds() {
            return None;
        }
        self.peak_between(from, usize::MAX)
    }

    fn peak_between(&self, from_s: usize, to_s: usize) -> Option<f64> {
        let full = self.load.capacity_full?;
        let to = to_s.min(self.load.offered.len());
        Some(self.load.offered.get(from_s.min(to)..to).unwrap_or_default().iter().copied().fold(0.0, f64::max) / full)
    }

    /// Shed requests after windows ended, and those more than [`SHED_LATE_AFTER_MS`] after.
    pub fn sheds_after_windows(&self) -> (u64, u64) {
        self.windows.iter().fold((0, 0), |(a, l), w| (a + w.shed, l + w.shed_late))
    }

    /// Shed requests after `after_ms` (the first seconds of a recovery excluded, say).
    pub fn shed_after(&self, idx: &TraceIndex, from_ms: u64, to_ms: u64) -> u64 {
        idx.server_work.iter().filter(|w| w.outcome == WorkOutcome::Shed && w.t_ms >= from_ms && w.t_ms < to_ms).count() as u64
    }
}

/// When the server process (re)started: 0, and every restart in the trace.
fn server_starts(idx: &TraceIndex) -> Vec<u64> {
    let mut starts = vec![0];
    if let Some(spans) = idx.host_down.get("server") {
        starts.extend(spans.iter().filter_map(|(_, up)| *up));
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// Whether the server was down at `t` (crashed and not yet restarted).
fn server_down_at(idx: &TraceIndex, t: u64) -> bool {
    idx.host_down.get("server").is_some_and(|spans| spans.iter().any(|(s, e)| *s <= t && e.is_none_or(|e| t < e)))
}

/// The work the server did on one request, at the request's arrival.
struct Worked<'a> {
    arrived_ms: u64,
    work: f64,
    agent: Option<&'a Arc<str>>,
}

/// The work the server did on each request (served or wasted at its cost, shed at `shed_cost`
/// of it). An unlimited server keeps no queue lines, so its answers name no agent.
fn worked<'a>(idx: &'a TraceIndex, capacity: Option<&Capacity>) -> Vec<Worked<'a>> {
    match capacity {
        Some(c) => idx
            .server_work
            .iter()
            .map(|w| Worked {
                arrived_ms: w.arrived_ms(),
                work: if w.outcome == WorkOutcome::Shed { w.cost * c.shed_cost } else { w.cost },
                agent: w.agent.as_ref(),
            })
            .filter(|w| w.work > 0.0)
            .collect(),
        None => idx.server_answered.iter().map(|&(t, c)| Worked { arrived_ms: t, work: c, agent: None }).collect(),
    }
}

/// Requests the agents sent inside fault windows, per agent-minute of window.
fn outage_rate(idx: &TraceIndex, windows: &[(Vec<usize>, super::index::Window)]) -> Option<f64> {
    let spans: Vec<(u64, u64)> = windows.iter().map(|(_, w)| (w.start_ms, w.end_ms.unwrap_or(idx.run_end_ms))).filter(|(a, b)| b > a).collect();
    let minutes: f64 = spans.iter().map(|(a, b)| (b - a) as f64 / 60_000.0).sum();
    if minutes <= 0.0 || idx.agents.is_empty() {
        return None;
    }
    let sent: usize = idx
        .agents
        .values()
        .map(|v| v.requests.iter().filter(|&&t| spans.iter().any(|&(a, b)| t >= a && t < b)).count())
        .sum();
    Some(sent as f64 / (minutes * idx.agents.len() as f64))
}

/// Requests per agent-minute over clean cycles: from one check-in to the next of the same
/// agent, with no failed request between and no fault window touching them.
fn steady_rate(idx: &TraceIndex, windows: &[(Vec<usize>, super::index::Window)]) -> Option<f64> {
    let touches = |a: u64, b: u64| windows.iter().any(|(_, w)| w.start_ms <= b && w.end_ms.is_none_or(|e| e >= a));
    let (mut requests, mut ms) = (0usize, 0u64);
    for view in idx.agents.values() {
        for pair in view.successes.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let failed = view.failed_requests.iter().any(|&t| t > a && t <= b);
            if failed || touches(a, b) || view.starts.iter().any(|&s| s > a && s <= b) {
                continue;
            }
            requests += view.requests.iter().filter(|&&t| t > a && t <= b).count();
            ms += b - a;
        }
    }
    (ms > 0).then(|| requests as f64 / (ms as f64 / 60_000.0))
}

fn totals(idx: &TraceIndex, shed_cost: f64) -> WorkTotals {
    let mut t = WorkTotals::default();
    for w in &idx.server_work {
        match w.outcome {
            WorkOutcome::Served => {
                t.served += 1;
                t.served_units += w.cost;
            }
            WorkOutcome::Shed => {
                t.shed += 1;
                t.shed_units += w.cost;
                t.shed_work_units += w.cost * shed_cost;
            }
            WorkOutcome::Wasted => {
                t.wasted += 1;
                t.wasted_units += w.cost;
            }
        }
    }
    if idx.server_work.is_empty() {
        // Unlimited: every answer went to a waiting client, as far as the server can tell.
        t.served = idx.server_answered.len() as u64;
        t.served_units = idx.server_answered.iter().map(|(_, c)| c).sum();
    }
    t
}

fn load_series(idx: &TraceIndex, capacity: Option<&Capacity>, starts: &[u64]) -> LoadSeries {
    let n = (idx.run_end_ms.div_ceil(BUCKET_MS)).max(1) as usize;
    let bucket = |t: u64| ((t / BUCKET_MS) as usize).min(n - 1);
    let mut s = LoadSeries {
        offered: vec![0.0; n],
        completed: vec![0.0; n],
        served: vec![0; n],
        shed: vec![0; n],
        wasted: vec![0; n],
        capacity: None,
        capacity_full: capacity.map(|c| c.per_second),
    };
    if idx.server_work.is_empty() {
        for &(t, c) in &idx.server_answered {
            let b = bucket(t);
            s.offered[b] += c;
            s.completed[b] += c;
            s.served[b] += 1;
        }
    }
    for w in &idx.server_work {
        if w.t_ms > idx.run_end_ms {
            continue;
        }
        s.offered[bucket(w.arrived_ms())] += w.cost;
        let b = bucket(w.t_ms);
        match w.outcome {
            WorkOutcome::Served => {
                s.served[b] += 1;
                s.completed[b] += w.cost;
            }
            WorkOutcome::Wasted => {
                s.wasted[b] += 1;
                s.completed[b] += w.cost;
            }
            WorkOutcome::Shed => {
                s.shed[b] += 1;
                s.completed[b] += w.cost * capacity.map_or(0.0, |c| c.shed_cost);
            }
        }
    }
    if let Some(c) = capacity {
        let per_second = (0..n)
            .map(|b| {
                let (a, z) = (b as u64 * BUCKET_MS, (b as u64 + 1) * BUCKET_MS);
                capacity_between(c, starts, idx, a, z)
            })
            .collect();
        s.capacity = Some(per_second);
    }
    s
}

/// Work the server could do between two run times, following its starts, warm-ups and crashes
/// (sampled at 100 ms, enough for a curve that changes over seconds).
fn capacity_between(c: &Capacity, starts: &[u64], idx: &TraceIndex, from: u64, to: u64) -> f64 {
    const STEP_MS: u64 = 100;
    let mut work = 0.0;
    let mut t = from;
    while t < to {
        let next = (t + STEP_MS).min(to);
        if !server_down_at(idx, t) {
            let start = starts.iter().rev().find(|&&s| s <= t).copied().unwrap_or(0);
            work += c.work_between(Duration::from_millis(t - start), Duration::from_millis(next - start));
        }
        t = next;
    }
    work
}

/// How long a server at the window's end needs to do `units` of work at full use.
fn physical_limit_ms(c: &Capacity, starts: &[u64], idx: &TraceIndex, end: u64, units: f64) -> u64 {
    let start = starts.iter().rev().find(|&&s| s <= end).copied().unwrap_or(0);
    let _ = idx;
    let from = Duration::from_millis(end - start);
    let done = c.finish_after(from, units);
    (done - from).as_millis() as u64
}
