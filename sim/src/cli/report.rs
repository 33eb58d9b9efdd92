//! What `redflag-sim run` prints: a short timeline, a verdict for each expectation, and the
//! one-line repro command. Also the `--json` form of the same.
//!
//! Formatting only: the run itself is `runner.rs`, the verdicts come from `judge/`.

use std::fmt::Write;

use redflag_agent::log::events::Event;
use serde_json::json;

use crate::judge::FleetFigures;
use crate::runner::RunResult;
use crate::scenario::{Scenario, fmt_duration};
use crate::trace::{Record, SimEvent};

/// Breaker transitions listed individually in the timeline; the rest are counted.
const BREAKER_LINES_MAX: usize = 12;

/// `h:mm:ss.mmm` of simulated time.
pub fn clock_time(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{h}:{m:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

fn seconds(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

/// The timeline: faults, crashes and restarts, breaker transitions (the first few), loop
/// endings, and the first and slowest check-in after each fault window.
pub fn timeline(scenario: &Scenario, result: &RunResult) -> Vec<(u64, String)> {
    let mut t = Timeline::new(scenario);
    for r in &result.records {
        t.push(r);
    }
    t.finish(result)
}

/// The timeline gathered while a run goes (see `runner::RunOptions::observer`), so `run` need
/// not keep its trace to print it.
pub struct Timeline<'a> {
    scenario: &'a Scenario,
    lines: Vec<(u64, String)>,
    breaker_lines: usize,
    breaker_more: usize,
}

impl<'a> Timeline<'a> {
    pub fn new(scenario: &'a Scenario) -> Self {
        Timeline { scenario, lines: Vec::new(), breaker_lines: 0, breaker_more: 0 }
    }

    /// Takes the next line of the trace.
    pub fn push(&mut self, r: &Record) {
        if let Some(line) = timeline_line(self.scenario, r, &mut self.breaker_lines, &mut self.breaker_more) {
            self.lines.push((r.t_ms, line));
        }
    }

    /// The timeline, with the recoveries of `result` added.
    pub fn finish(self, result: &RunResult) -> Vec<(u64, String)> {
        let Timeline { scenario, mut lines, breaker_more, .. } = self;
        for rec in &result.recoveries {
            let faults = rec.faults.iter().map(|f| format!("#{f}")).collect::<Vec<_>>().join(", ");
            match (&rec.first, &rec.slowest) {
                (Some((who, t)), Some((slow, ts))) => {
                    let mut line = format!(
                        "first check-in after fault {faults}: {who}, recovered in {}",
                        seconds(t - rec.ended_ms)
                    );
                    if scenario.fleet.agents > 1 {
                        let _ = write!(line, "; slowest {slow} in {}", seconds(ts - rec.ended_ms));
                    }
                    if rec.missing > 0 {
                        let _ = write!(line, "; {} agent(s) did not check in before the next fault or the end", rec.missing);
                    }
                    lines.push((*t, line));
                }
                _ => lines.push((rec.ended_ms, format!("no agent checked in after fault {faults} ended"))),
            }
        }
        if breaker_more > 0 {
            lines.push((result.last_t_ms, format!("... and {breaker_more} more breaker transitions (see the trace)")));
        }
        lines.sort_by_key(|(t, _)| *t);
        lines
    }
}

fn timeline_line(scenario: &Scenario, r: &Record, breaker_lines: &mut usize, breaker_more: &mut usize) -> Option<String> {
    if let Some(e) = r.sim_event() {
        return match e {
            SimEvent::FaultApplied { fault, .. } => {
                let f = scenario.faults.get(*fault)?;
                Some(format!("fault #{fault} applied: {}", f.describe()))
            }
            SimEvent::FaultEnded { fault, action, target } => Some(format!("fault #{fault} ended: {action} {target}")),
            SimEvent::HostCrashed => Some(format!("{} crashed", r.host)),
            SimEvent::HostRestarted => Some(format!("{} restarted", r.host)),
            SimEvent::LoopEnded { reason } => Some(format!("{} LOOP ENDED: {reason}", r.agent.as_deref().unwrap_or("?"))),
            _ => None,
        };
    }
    match r.agent_event()? {
        Event::Breaker { from, to } => {
            if *breaker_lines < BREAKER_LINES_MAX {
                *breaker_lines += 1;
                Some(format!("{} breaker {from} -> {to}", r.agent.as_deref().unwrap_or("?")))
            } else {
                *breaker_more += 1;
                None
            }
        }
        Event::RenewalRejected { .. } => Some(format!("{} refresh token refused: must be re-registered", r.agent.as_deref().unwrap_or("?"))),
        _ => None,
    }
}

/// The human-readable report, its timeline read from `result.records`.
pub fn text(scenario: &Scenario, result: &RunResult) -> String {
    text_with_timeline(scenario, result, timeline(scenario, result))
}

/// The human-readable report, with a timeline gathered while the run went ([`Timeline`]).
pub fn text_with_timeline(scenario: &Scenario, result: &RunResult, timeline: Vec<(u64, String)>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} (seed {}): {}", scenario.name, result.seed, scenario.description);
    let sim_secs = scenario.duration.as_secs_f64();
    let wall_secs = result.wall.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "  {} simulated, {} agent(s) on {} host(s), tick {}; {} steps in {:.2}s of wall time ({:.0}x real time)",
        fmt_duration(scenario.duration),
        scenario.fleet.agents,
        scenario.fleet.hosts,
        fmt_duration(result.tick),
        result.steps,
        wall_secs,
        sim_secs / wall_secs
    );
    let _ = writeln!(out, "\ntimeline");
    for (t, line) in timeline {
        let _ = writeln!(out, "  {}  {line}", clock_time(t));
    }
    if let Some(line) = server_line(scenario, result) {
        let _ = writeln!(out, "\nserver\n  {line}");
    }
    let _ = writeln!(out, "\nexpectations");
    for v in &result.verdicts {
        let mark = if v.passed { "PASS" } else { "FAIL" };
        // Line 0: an implicit check that no line of the file asked for.
        let line = if v.line > 0 { format!(" (line {})", v.line) } else { String::new() };
        let _ = writeln!(out, "  {mark}  {}{line}: {}", v.subject, v.reason);
    }
    let passed = result.verdicts.iter().filter(|v| v.passed).count();
    let verdict = if result.passed() { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "\nresult: {verdict} ({passed}/{} checks)", result.verdicts.len());
    if result.expect_failure {
        let meaning = if result.as_expected() {
            "as expected: this scenario must fail (expect_failure = true), so this run counts as a pass"
        } else {
            "NOT as expected: this scenario must fail (expect_failure = true), so this run counts as a failure"
        };
        let _ = writeln!(out, "        {meaning}");
    }
    let _ = writeln!(out, "repro:  {}", scenario.repro(result.seed));
    out
}

/// The server's work figures, for a server with finite capacity.
pub fn server_figures(scenario: &Scenario, result: &RunResult) -> Option<FleetFigures> {
    scenario.server.capacity?;
    Some(FleetFigures::new(&result.index, scenario, (result.tick * 2).as_millis() as u64))
}

/// `capacity 100/s, queue 200: served N (goodput), shed N, wasted N (x% of the work); peak load`.
fn server_line(scenario: &Scenario, result: &RunResult) -> Option<String> {
    let cap = scenario.server.capacity?;
    let f = server_figures(scenario, result)?;
    let t = f.totals;
    let warmup = if cap.warmup.is_zero() { String::new() } else { format!(", warm-up {}", fmt_duration(cap.warmup)) };
    Some(format!(
        "capacity {}/s, queue {}{warmup}: served {} requests to waiting clients (goodput), shed {}, wasted {} ({:.1}% of the work); peak offered load {:.1}x capacity",
        cap.per_second,
        cap.queue_max,
        t.served,
        t.shed,
        t.wasted,
        t.wasted_share() * 100.0,
        f.peak_load_ratio().unwrap_or(0.0)
    ))
}

/// The `--json` report: the same facts, machine-readable; its timeline read from
/// `result.records`.
pub fn json(scenario: &Scenario, result: &RunResult, trace_path: Option<&str>) -> serde_json::Value {
    json_with_timeline(scenario, result, trace_path, timeline(scenario, result))
}

/// [`json`], with a timeline gathered while the run went ([`Timeline`]).
pub fn json_with_timeline(
    scenario: &Scenario,
    result: &RunResult,
    trace_path: Option<&str>,
    timeline: Vec<(u64, String)>,
) -> serde_json::Value {
    json!({
        "scenario": scenario.name,
        "file": scenario.path.display().to_string(),
        "seed": result.seed,
        "passed": result.passed(),
        "expect_failure": result.expect_failure,
        "as_expected": result.as_expected(),
        "simulated_ms": scenario.duration.as_millis() as u64,
        "steps": result.steps,
        "tick_ms": result.tick.as_millis() as u64,
        "wall_ms": result.wall.as_millis() as u64,
        "agents": scenario.fleet.agents,
        "hosts": scenario.fleet.hosts,
        "verdicts": result.verdicts,
        "recoveries": result.recoveries,
        "server": server_figures(scenario, result).map(|f| json!({
            "totals": f.totals,
            "wasted_share": f.totals.wasted_share(),
            "peak_load_ratio": f.peak_load_ratio(),
            "windows": f.windows,
        })),
        "timeline": timeline.into_iter().map(|(t, l)| json!({"t_ms": t, "what": l})).collect::<Vec<_>>(),
        "trace": trace_path,
        "repro": scenario.repro(result.seed),
    })
}
