//! The expectations a scenario states, judged from a run's trace alone.
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
//! * implicit in every run: each fault was *observed*: some agent request failed between the
//!   fault's start and the first success after it ended. A fault nobody noticed was probably
//!   never wired in, and must not let a scenario pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redflag_agent::events::{Event, RequestKind};
use serde::Serialize;

use crate::scenario::{Action, Check, Fleet, RateAt, Scenario, Target, fmt_duration};
use crate::trace::{Record, SimEvent};

/// How many individual violations a failed check lists.
const DETAILS_MAX: usize = 5;

/// One verdict: an `[[expect]]` entry, or an implicit "fault observed" check.
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
}

/// A fault window as it happened (from the trace), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: u64,
    /// `None`: lasted to the end of the run.
    pub end_ms: Option<u64>,
}

/// The recovery after one merged fault window: the first check-in of each agent after it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recovery {
    /// Fault indexes in this window.
    pub faults: Vec<usize>,
    pub ended_ms: u64,
    /// The first agent to check in after the window, and when.
    pub first: Option<(String, u64)>,
    /// The last agent to check in after the window (the slowest recovery), and when.
    pub slowest: Option<(String, u64)>,
    /// Agents that had not checked in by the end of the run or the next fault.
    pub missing: usize,
}

/// Everything the trace says about one agent, in time order.
#[derive(Default, Debug)]
struct AgentView {
    host: Option<Arc<str>>,
    starts: Vec<u64>,
    requests: Vec<u64>,
    failed_requests: Vec<u64>,
    successes: Vec<u64>,
    /// For each success, when its check-in request was sent.
    success_sent: Vec<u64>,
    /// When the latest check-in request was sent (to pair it with its outcome).
    checkin_sent: u64,
    breaker_opened: Vec<u64>,
    ended: Vec<(u64, String)>,
}

impl AgentView {
    /// The first check-in completed at or after `t`.
    fn first_success_after(&self, t: u64) -> Option<u64> {
        let i = self.successes.partition_point(|&s| s < t);
        self.successes.get(i).copied()
    }

    /// The first check-in whose request was sent at or after `t` (a request already in flight
    /// when a fault struck says nothing about the fault).
    fn first_success_sent_after(&self, t: u64) -> Option<u64> {
        self.success_sent.iter().zip(&self.successes).find(|(sent, _)| **sent >= t).map(|(_, done)| *done)
    }
}

/// The trace, indexed for the checks.
pub struct TraceIndex {
    agents: BTreeMap<Arc<str>, AgentView>,
    /// Per fault index: (applied, ended).
    faults: BTreeMap<usize, (u64, Option<u64>)>,
    /// Per host: the intervals its software was down.
    host_down: BTreeMap<Arc<str>, Vec<(u64, Option<u64>)>>,
    server_requests: Vec<u64>,
    proxy_requests: Vec<u64>,
    run_end_ms: u64,
}

impl TraceIndex {
    pub fn new(records: &[Record], fleet: &Fleet) -> Self {
        let mut agents: BTreeMap<Arc<str>, AgentView> = BTreeMap::new();
        for i in 0..fleet.agents {
            agents.insert(Arc::from(Fleet::agent_name(i)), AgentView::default());
        }
        let mut idx = TraceIndex {
            agents,
            faults: BTreeMap::new(),
            host_down: BTreeMap::new(),
            server_requests: Vec::new(),
            proxy_requests: Vec::new(),
            run_end_ms: 0,
        };
        for r in records {
            idx.run_end_ms = idx.run_end_ms.max(r.t_ms);
            if let Some(e) = r.sim_event() {
                match e {
                    SimEvent::FaultApplied { fault, .. } => {
                        idx.faults.entry(*fault).or_insert((r.t_ms, None));
                    }
                    SimEvent::FaultEnded { fault, .. } => {
                        if let Some(f) = idx.faults.get_mut(fault) {
                            f.1.get_or_insert(r.t_ms);
                        }
                    }
                    SimEvent::HostCrashed => idx.host_down.entry(r.host.clone()).or_default().push((r.t_ms, None)),
                    SimEvent::HostRestarted => {
                        if let Some(last) = idx.host_down.get_mut(&r.host).and_then(|v| v.last_mut()) {
                            last.1.get_or_insert(r.t_ms);
                        }
                    }
                    SimEvent::ServerRequest { .. } => idx.server_requests.push(r.t_ms),
                    SimEvent::ProxyRequest { .. } => idx.proxy_requests.push(r.t_ms),
                    SimEvent::LoopEnded { reason } => {
                        if let Some(a) = r.agent.as_ref() {
                            idx.agents.entry(a.clone()).or_default().ended.push((r.t_ms, reason.clone()));
                        }
                    }
                    SimEvent::RunStarted { .. } | SimEvent::RunEnded => {}
                }
                continue;
            }
            let (Some(agent), Some(e)) = (r.agent.as_ref(), r.agent_event()) else { continue };
            let view = idx.agents.entry(agent.clone()).or_default();
            view.host.get_or_insert_with(|| r.host.clone());
            match e {
                Event::AgentStarted { .. } => view.starts.push(r.t_ms),
                Event::RequestStarted { kind } => {
                    view.requests.push(r.t_ms);
                    if *kind == RequestKind::Checkin {
                        view.checkin_sent = r.t_ms;
                    }
                }
                Event::RequestFinished { ok: false, .. } => view.failed_requests.push(r.t_ms),
                Event::CheckinOk { .. } => {
                    view.successes.push(r.t_ms);
                    view.success_sent.push(view.checkin_sent.min(r.t_ms));
                }
                Event::Breaker { to, .. } if to == "open" => view.breaker_opened.push(r.t_ms),
                _ => {}
            }
        }
        idx
    }

    /// Fault windows as they happened, merged where they overlap (or touch), in time order.
    pub fn merged_windows(&self) -> Vec<(Vec<usize>, Window)> {
        let mut windows: Vec<(Vec<usize>, Window)> = self
            .faults
            .iter()
            .map(|(i, (s, e))| (vec![*i], Window { start_ms: *s, end_ms: *e }))
            .collect();
        windows.sort_by_key(|(_, w)| w.start_ms);
        let mut merged: Vec<(Vec<usize>, Window)> = Vec::new();
        for (ids, w) in windows {
            if let Some((last_ids, last)) = merged.last_mut() {
                let overlaps = match last.end_ms {
                    None => true,
                    Some(end) => w.start_ms <= end,
                };
                if overlaps {
                    last_ids.extend(ids);
                    last.end_ms = match (last.end_ms, w.end_ms) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    continue;
                }
            }
            merged.push((ids, w));
        }
        merged
    }

    /// Recoveries after each merged window that ended.
    pub fn recoveries(&self) -> Vec<Recovery> {
        let windows = self.merged_windows();
        let mut out = Vec::new();
        for (n, (ids, w)) in windows.iter().enumerate() {
            let Some(end) = w.end_ms else { continue };
            let next_start = windows.get(n + 1).map_or(u64::MAX, |(_, nw)| nw.start_ms);
            let mut first: Option<(String, u64)> = None;
            let mut slowest: Option<(String, u64)> = None;
            let mut missing = 0;
            for (name, view) in &self.agents {
                match view.first_success_after(end).filter(|&t| t < next_start) {
                    Some(t) => {
                        if first.as_ref().is_none_or(|(_, f)| t < *f) {
                            first = Some((name.to_string(), t));
                        }
                        if slowest.as_ref().is_none_or(|(_, s)| t > *s) {
                            slowest = Some((name.to_string(), t));
                        }
                    }
                    None => missing += 1,
                }
            }
            out.push(Recovery { faults: ids.clone(), ended_ms: end, first, slowest, missing });
        }
        out
    }

    fn host_down_during(&self, host: &str, from: u64, to: u64) -> bool {
        self.host_down.get(host).is_some_and(|spans| {
            spans.iter().any(|(s, e)| *s <= to && e.is_none_or(|e| e >= from))
        })
    }
}

fn secs(ms: u64) -> String {
    fmt_duration(Duration::from_millis(ms))
}

fn at(ms: u64) -> String {
    format!("t={}", secs(ms))
}

/// Judges every expectation of `scenario`, plus the implicit "every fault observed".
/// `tolerance` absorbs clock granularity: the simulation tick, or scheduling jitter live.
pub fn evaluate(scenario: &Scenario, records: &[Record], tolerance: Duration) -> Vec<Verdict> {
    let idx = TraceIndex::new(records, &scenario.fleet);
    let tol = tolerance.as_millis() as u64;
    let mut out: Vec<Verdict> = scenario
        .expect
        .iter()
        .map(|e| {
            let (subject, result) = match &e.check {
                Check::RecoversWithin { within } => (
                    format!("recovers_within {}", fmt_duration(*within)),
                    recovers_within(&idx, *within, scenario.agent_config.resilience.request_timeout, tol),
                ),
                Check::NeverGivesUp { max_gap } => {
                    let default_gap = scenario.agent_config.policy().max_wait() + scenario.agent_config.resilience.request_timeout;
                    let gap = max_gap.unwrap_or(default_gap);
                    let label = match max_gap {
                        Some(g) => format!("never_gives_up max_gap {}", fmt_duration(*g)),
                        None => format!("never_gives_up (max_gap {} from the agent config)", fmt_duration(gap)),
                    };
                    (label, never_gives_up(&idx, gap, tol))
                }
                Check::MaxRequestRate { at, limit_per_second } => {
                    let (times, name) = match at {
                        RateAt::Server => (&idx.server_requests, "server"),
                        RateAt::Proxy => (&idx.proxy_requests, "proxy"),
                    };
                    (format!("max_request_rate at {name} <= {limit_per_second}/s"), max_request_rate(times, *limit_per_second))
                }
                Check::BreakerOpens => ("breaker_opens".to_string(), breaker_opens(&idx)),
            };
            Verdict { check: e.check.name().to_string(), subject, line: e.line, passed: result.is_ok(), reason: result.unwrap_or_else(|e| e) }
        })
        .collect();
    out.extend(faults_observed(&idx, scenario, tol));
    out
}

/// Whether the faults in `[start, end]` reached this agent: one of its requests failed in the
/// window (or up to one request timeout after it, for requests sent inside it), or its own host
/// or loop went down and came back. An agent that slept through a fault at its regular
/// interval had nothing to recover from; `never_gives_up` and the implicit "observed" check
/// cover agents that should have noticed.
fn disturbed(idx: &TraceIndex, view: &AgentView, start: u64, end: u64, request_timeout_ms: u64) -> bool {
    let until = end + request_timeout_ms;
    let failed = view.failed_requests.iter().any(|&t| t >= start && t <= until);
    let restarted = view.starts.iter().skip(1).any(|&t| t >= start && t <= until);
    let host_down = view.host.as_deref().is_some_and(|h| idx.host_down_during(h, start, end));
    failed || restarted || host_down
}

fn recovers_within(idx: &TraceIndex, within: Duration, request_timeout: Duration, tol: u64) -> Result<String, String> {
    let within_ms = within.as_millis() as u64;
    let timeout_ms = request_timeout.as_millis() as u64 + tol;
    let windows = idx.merged_windows();
    let mut failures = Vec::new();
    let mut judged = 0;
    let mut undisturbed = 0usize;
    let mut slowest: Option<(u64, String, u64)> = None;
    for (n, (_, w)) in windows.iter().enumerate() {
        let Some(end) = w.end_ms else { continue };
        let next_start = windows.get(n + 1).map_or(u64::MAX, |(_, nw)| nw.start_ms);
        let deadline = end + within_ms + tol;
        judged += 1;
        for (name, view) in &idx.agents {
            if !disturbed(idx, view, w.start_ms, end, timeout_ms) {
                undisturbed += 1;
                continue;
            }
            match view.first_success_after(end) {
                Some(t) if t <= deadline => {
                    let took = t - end;
                    if slowest.as_ref().is_none_or(|(s, _, _)| took > *s) {
                        slowest = Some((took, name.to_string(), end));
                    }
                }
                // Another fault began before the deadline, and before this agent recovered.
                first if next_start <= deadline && first.is_none_or(|t| t >= next_start) => {}
                Some(t) => failures.push(format!(
                    "{name} first checked in {} after the faults ended at {} ({} late)",
                    secs(t - end),
                    at(end),
                    secs(t - end - within_ms)
                )),
                None if deadline > idx.run_end_ms => failures.push(format!(
                    "{name} had not checked in when the run ended, {} after the faults ended at {} (the run must last at least `within` past the last fault)",
                    secs(idx.run_end_ms.saturating_sub(end)),
                    at(end)
                )),
                None => failures.push(format!("{name} never checked in again after the faults ended at {}", at(end))),
            }
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    if judged == 0 {
        return Ok("no fault window ended during the run; nothing to recover from".into());
    }
    let Some((took, who, end)) = slowest else {
        return Err(format!("no agent was disturbed by any of the {judged} fault window(s), so none could recover"));
    };
    let mut reason = format!(
        "every disturbed agent checked in within {} after each of {judged} fault window(s); slowest {who}, {} after {}",
        fmt_duration(within),
        secs(took),
        at(end)
    );
    if undisturbed > 0 {
        reason.push_str(&format!(" ({undisturbed} agent-window(s) undisturbed: no failed request, nothing to recover from)"));
    }
    Ok(reason)
}

fn never_gives_up(idx: &TraceIndex, max_gap: Duration, tol: u64) -> Result<String, String> {
    let gap_ms = max_gap.as_millis() as u64 + tol;
    let mut failures = Vec::new();
    for (name, view) in &idx.agents {
        for (t, reason) in &view.ended {
            failures.push(format!("{name}'s check-in loop ended at {}: {reason}", at(*t)));
        }
    }
    let mut worst: Option<(u64, String)> = None;
    for (_, w) in idx.merged_windows() {
        let end = w.end_ms.unwrap_or(idx.run_end_ms).min(idx.run_end_ms);
        for (name, view) in &idx.agents {
            let host = view.host.as_deref().unwrap_or("");
            // An agent whose own host was down cannot attempt anything; that is not giving up.
            if idx.host_down_during(host, w.start_ms, end) {
                continue;
            }
            let Some(&started) = view.starts.first() else { continue };
            let before = view.requests.partition_point(|&t| t <= w.start_ms);
            let mut prev = if before > 0 { view.requests[before - 1] } else { started };
            let mut gaps: Vec<(u64, u64)> = Vec::new();
            for &t in view.requests[before..].iter().take_while(|&&t| t <= end) {
                gaps.push((prev, t));
                prev = t;
            }
            gaps.push((prev, end));
            for (a, b) in gaps {
                let g = b.saturating_sub(a);
                if worst.as_ref().is_none_or(|(wg, _)| g > *wg) {
                    worst = Some((g, name.to_string()));
                }
                if g > gap_ms {
                    failures.push(format!("{name} sent no request for {} (from {} to {}) during a fault", secs(g), at(a), at(b)));
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    match worst {
        Some((g, who)) => Ok(format!("every agent kept trying during every fault; longest gap {} ({who})", secs(g))),
        None => Ok("no fault windows; no agent loop ended".into()),
    }
}

fn max_request_rate(times: &[u64], limit: f64) -> Result<String, String> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let (mut best, mut best_start) = (0usize, 0u64);
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] >= sorted[lo] + 1000 {
            lo += 1;
        }
        if hi + 1 - lo > best {
            best = hi + 1 - lo;
            best_start = sorted[lo];
        }
    }
    if best as f64 > limit {
        Err(format!("{best} requests in the second starting at {} (limit {limit})", at(best_start)))
    } else {
        Ok(format!("busiest second: {best} requests at {} (limit {limit}); {} requests in all", at(best_start), sorted.len()))
    }
}

fn breaker_opens(idx: &TraceIndex) -> Result<String, String> {
    let never: Vec<String> = idx.agents.iter().filter(|(_, v)| v.breaker_opened.is_empty()).map(|(n, _)| n.to_string()).collect();
    if never.is_empty() {
        let first = idx.agents.values().filter_map(|v| v.breaker_opened.first()).min().copied().unwrap_or(0);
        Ok(format!("every agent's breaker opened at least once (first at {})", at(first)))
    } else {
        Err(summarize(never.into_iter().map(|n| format!("{n}'s breaker never opened")).collect()))
    }
}

/// The implicit check: every fault was noticed by some agent.
fn faults_observed(idx: &TraceIndex, scenario: &Scenario, tol: u64) -> Vec<Verdict> {
    let mut out = Vec::new();
    for f in &scenario.faults {
        let subject = format!("fault #{} observed ({})", f.index, f.describe());
        let Some(&(start, end)) = idx.faults.get(&f.index) else {
            out.push(Verdict {
                check: "fault_observed".into(),
                subject,
                line: f.line,
                passed: false,
                reason: "the fault was never applied (the run ended first?)".into(),
            });
            continue;
        };
        let end = end.unwrap_or(idx.run_end_ms);
        // Until the first success by any agent sent after the fault ended (or the end of the
        // run). A check-in already in flight when an instant fault struck does not count.
        let until =
            idx.agents.values().filter_map(|v| v.first_success_sent_after(end)).min().unwrap_or(idx.run_end_ms);
        let agent_side = matches!(f.target, Target::Agents | Target::AgentHost(_)) && matches!(f.action, Action::Crash | Action::Restart);
        let result = if agent_side {
            // The agents on the crashed hosts were really stopped: their loops started again
            // after the crash, or (a crash to the end of the run) they fell silent.
            let hosts: Vec<u32> = (0..scenario.fleet.hosts).filter(|h| f.target.covers_agent_host(*h)).collect();
            let covered = idx.agents.iter().filter(|(name, _)| {
                name.strip_prefix("agent-").and_then(|n| n.parse::<u32>().ok()).is_some_and(|i| hosts.contains(&scenario.fleet.host_of(i)))
            });
            let mut restarted = 0;
            let mut silent = 0;
            let mut total = 0;
            for (_, v) in covered {
                total += 1;
                if v.starts.iter().any(|&t| t >= start) {
                    restarted += 1;
                } else if !v.requests.iter().any(|&t| t > start + tol) {
                    silent += 1;
                }
            }
            if total > 0 && restarted + silent == total {
                Ok(format!("{restarted} agent loop(s) restarted, {silent} stayed down"))
            } else {
                Err(format!("{} of {total} agents on the crashed hosts kept running as if nothing happened", total - restarted - silent))
            }
        } else {
            let failed: usize = idx
                .agents
                .values()
                .map(|v| {
                    let lo = v.failed_requests.partition_point(|&t| t < start);
                    let hi = v.failed_requests.partition_point(|&t| t <= until);
                    hi - lo
                })
                .sum();
            if failed > 0 {
                Ok(format!("{failed} failed request(s) between {} and the first check-in after it ended ({})", at(start), at(until)))
            } else {
                Err(format!(
                    "no agent request failed between {} and the first check-in after the fault ended ({}): a fault nobody noticed is not wired in, or too weak to matter",
                    at(start),
                    at(until)
                ))
            }
        };
        out.push(Verdict { check: "fault_observed".into(), subject, line: f.line, passed: result.is_ok(), reason: result.unwrap_or_else(|e| e) });
    }
    out
}

fn summarize(mut failures: Vec<String>) -> String {
    let n = failures.len();
    failures.truncate(DETAILS_MAX);
    let mut s = failures.join("; ");
    if n > DETAILS_MAX {
        s.push_str(&format!("; and {} more", n - DETAILS_MAX));
    }
    s
}
