//! The trace, indexed for the checks: per agent, its starts, requests, failures, successes and
//! breaker openings in time order; per fault, when it was applied and ended; per host, when its
//! software was down; and the requests the server and the proxy answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use redflag_agent::log::events::{Event, RequestKind};
use serde::Serialize;

use crate::scenario::{Fleet, cost_of};
use crate::trace::{Record, SimEvent, WorkOutcome};

/// The actions of faults that leave the agent API working: one side route is broken
/// (`broken_health` in traces written before `broken_route` generalised it).
const API_UP_ACTIONS: [&str; 2] = ["broken_route", "broken_health"];

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
pub(crate) struct AgentView {
    pub(crate) host: Option<Arc<str>>,
    pub(crate) starts: Vec<u64>,
    pub(crate) requests: Vec<u64>,
    pub(crate) failed_requests: Vec<u64>,
    /// Requests other than check-ins that got an answer, slow or not: (when, kind, how long).
    pub(crate) side_requests: Vec<(u64, RequestKind, u64)>,
    pub(crate) successes: Vec<u64>,
    /// For each success, when its check-in request was sent.
    pub(crate) success_sent: Vec<u64>,
    /// When the latest check-in request was sent (to pair it with its outcome).
    pub(crate) checkin_sent: u64,
    pub(crate) breaker_opened: Vec<u64>,
    pub(crate) ended: Vec<(u64, String)>,
    /// The loop's own story in time order (starts, requests, attempt ends, rapid polling), for
    /// the checks that judge waits: `alive`, `bounded_waits`, `honours_retry_after`.
    pub(crate) marks: Vec<(u64, Mark)>,
    /// Command runs (start, end): the loop runs a check-in's commands before its next wait,
    /// so the gap between two check-ins grows by their execution time.
    pub(crate) command_runs: Vec<(u64, u64)>,
    /// When the command running now started.
    command_started: Option<u64>,
}

/// One step of an agent loop's story, as the wait checks need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mark {
    /// The loop (re)started: waits decided by an earlier process are forgotten.
    Started,
    RequestStarted(RequestKind),
    /// A request ended; `retry_after_ms` is the Retry-After its answer carried.
    RequestFinished { kind: RequestKind, retry_after_ms: Option<u64> },
    /// An attempt ended and the loop decided its wait: `retry` after a retryable failure,
    /// otherwise (success, fail fast, renew) the regular interval.
    AttemptEnded { retry: bool, delay_ms: u64 },
    /// Rapid polling switched on for this long.
    RapidPolling { for_ms: u64 },
}

impl AgentView {
    /// How long commands ran between `a` and `b` (ms): time the loop spent executing, not
    /// waiting.
    pub(crate) fn command_time_between(&self, a: u64, b: u64) -> u64 {
        self.command_runs.iter().map(|&(s, e)| e.min(b).saturating_sub(s.max(a))).sum()
    }

    /// The first check-in completed at or after `t`.
    pub(crate) fn first_success_after(&self, t: u64) -> Option<u64> {
        let i = self.successes.partition_point(|&s| s < t);
        self.successes.get(i).copied()
    }

    /// The first check-in whose request was sent at or after `t` (a request already in flight
    /// when a fault struck says nothing about the fault).
    pub(crate) fn first_success_sent_after(&self, t: u64) -> Option<u64> {
        self.success_sent.iter().zip(&self.successes).find(|(sent, _)| **sent >= t).map(|(_, done)| *done)
    }
}

impl Mark {
    fn of(e: &Event) -> Option<Mark> {
        Some(match e {
            Event::AgentStarted { .. } => Mark::Started,
            Event::RequestStarted { kind } => Mark::RequestStarted(*kind),
            Event::RequestFinished { kind, retry_after_ms, .. } => Mark::RequestFinished { kind: *kind, retry_after_ms: *retry_after_ms },
            Event::AttemptFailed { verdict, delay_ms, .. } => Mark::AttemptEnded { retry: verdict == "retry", delay_ms: *delay_ms },
            Event::CheckinOk { delay_ms, .. } => Mark::AttemptEnded { retry: false, delay_ms: *delay_ms },
            Event::RapidPolling { for_ms } => Mark::RapidPolling { for_ms: *for_ms },
            _ => return None,
        })
    }
}

/// The trace, indexed for the checks.
pub struct TraceIndex {
    pub(crate) agents: BTreeMap<Arc<str>, AgentView>,
    /// Per fault index: (applied, ended).
    pub(crate) faults: BTreeMap<usize, (u64, Option<u64>)>,
    /// Faults that leave the agent API working (a broken `/health`): they open no fault window,
    /// so agents must keep checking in through them as if nothing were wrong.
    pub(crate) api_up: BTreeSet<usize>,
    /// Per host: the intervals its software was down.
    pub(crate) host_down: BTreeMap<Arc<str>, Vec<(u64, Option<u64>)>>,
    pub(crate) server_requests: Vec<u64>,
    /// Every request the server answered: when, and its work units (by path).
    pub(crate) server_answered: Vec<(u64, f64)>,
    /// Under a finite capacity, every request's fate (`server_work` lines).
    pub(crate) server_work: Vec<WorkItem>,
    pub(crate) proxy_requests: Vec<u64>,
    pub(crate) run_end_ms: u64,
    /// The latest `t_ms` of any line, `server_work` included.
    pub(crate) trace_end_ms: u64,
}

/// One `server_work` line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkItem {
    /// When the work ended (or the request was shed).
    pub(crate) t_ms: u64,
    pub(crate) outcome: WorkOutcome,
    pub(crate) cost: f64,
    pub(crate) queued_ms: u64,
    /// The agent the request came from, when its path names one (`/health` does not).
    pub(crate) agent: Option<Arc<str>>,
}

impl WorkItem {
    /// When the request reached the server.
    pub(crate) fn arrived_ms(&self) -> u64 {
        self.t_ms.saturating_sub(self.queued_ms)
    }
}

impl TraceIndex {
    /// Indexes a whole trace (see [`TraceIndexBuilder`] to index one as it is written).
    pub fn new(records: &[Record], fleet: &Fleet) -> Self {
        let mut builder = TraceIndexBuilder::new(fleet);
        for r in records {
            builder.push(r);
        }
        builder.finish()
    }

    /// Fault windows as they happened, merged where they overlap (or touch), in time order.
    /// Faults that leave the API working open no window.
    pub fn merged_windows(&self) -> Vec<(Vec<usize>, Window)> {
        let mut windows: Vec<(Vec<usize>, Window)> = self
            .faults
            .iter()
            .filter(|(i, _)| !self.api_up.contains(*i))
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

    pub(crate) fn host_down_during(&self, host: &str, from: u64, to: u64) -> bool {
        self.host_down.get(host).is_some_and(|spans| {
            spans.iter().any(|(s, e)| *s <= to && e.is_none_or(|e| e >= from))
        })
    }
}

/// Builds a [`TraceIndex`] one record at a time, in trace order, so a run can be judged while
/// its trace is written and no one needs to hold the whole trace.
///
/// The fleet's agents (`agent-0` .. `agent-{n-1}`) are found by their number, not by a map
/// lookup on their name: at a million agents that lookup was most of the index's cost. Any
/// other agent name (a live trace may hold one) goes to a map. [`finish`](Self::finish) puts
/// them all in the name-ordered map the checks iterate.
pub struct TraceIndexBuilder {
    idx: TraceIndex,
    /// `fleet[i]` is `agent-i`'s view.
    fleet: Vec<AgentView>,
    /// Agents outside `agent-0` .. `agent-{n-1}`.
    others: BTreeMap<Arc<str>, AgentView>,
}

impl TraceIndexBuilder {
    pub fn new(fleet: &Fleet) -> Self {
        TraceIndexBuilder {
            idx: TraceIndex {
                agents: BTreeMap::new(),
                faults: BTreeMap::new(),
                api_up: BTreeSet::new(),
                host_down: BTreeMap::new(),
                server_requests: Vec::new(),
                server_answered: Vec::new(),
                server_work: Vec::new(),
                proxy_requests: Vec::new(),
                run_end_ms: 0,
                trace_end_ms: 0,
            },
            fleet: (0..fleet.agents).map(|_| AgentView::default()).collect(),
            others: BTreeMap::new(),
        }
    }

    /// The view of the agent named `name`.
    fn view(&mut self, name: &Arc<str>) -> &mut AgentView {
        match fleet_slot(name, self.fleet.len()) {
            Some(i) => &mut self.fleet[i],
            None => self.others.entry(name.clone()).or_default(),
        }
    }

    /// Adds the next record of the trace.
    pub fn push(&mut self, r: &Record) {
        let idx = &mut self.idx;
        idx.trace_end_ms = idx.trace_end_ms.max(r.t_ms);
        // Wasted work is recorded at its finish time, which may lie past the run's end.
        if !matches!(r.sim_event(), Some(SimEvent::ServerWork { .. })) {
            idx.run_end_ms = idx.run_end_ms.max(r.t_ms);
        }
        if let Some(e) = r.sim_event() {
            match e {
                SimEvent::FaultApplied { fault, action, .. } => {
                    idx.faults.entry(*fault).or_insert((r.t_ms, None));
                    if API_UP_ACTIONS.contains(&action.as_str()) {
                        idx.api_up.insert(*fault);
                    }
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
                SimEvent::ServerRequest { path, .. } => {
                    idx.server_requests.push(r.t_ms);
                    idx.server_answered.push((r.t_ms, cost_of(path)));
                }
                SimEvent::ServerWork { outcome, cost, queued_ms } => {
                    idx.server_work.push(WorkItem {
                        t_ms: r.t_ms,
                        outcome: *outcome,
                        cost: *cost,
                        queued_ms: *queued_ms,
                        agent: r.agent.clone(),
                    })
                }
                SimEvent::ProxyRequest { .. } => idx.proxy_requests.push(r.t_ms),
                SimEvent::LoopEnded { reason } => {
                    if let Some(a) = r.agent.as_ref() {
                        self.view(a).ended.push((r.t_ms, reason.clone()));
                    }
                }
                SimEvent::RunStarted { .. } | SimEvent::RunEnded => {}
                // Commands are judged by their own checks, from the records.
                SimEvent::CommandQueued { .. }
                | SimEvent::CommandDelivered { .. }
                | SimEvent::CommandAcknowledged { .. }
                | SimEvent::CommandResult { .. } => {}
            }
            return;
        }
        let (Some(agent), Some(e)) = (r.agent.as_ref(), r.agent_event()) else { return };
        let view = self.view(agent);
        view.host.get_or_insert_with(|| r.host.clone());
        if let Some(mark) = Mark::of(e) {
            view.marks.push((r.t_ms, mark));
        }
        match e {
            Event::AgentStarted { .. } => view.starts.push(r.t_ms),
            Event::RequestStarted { kind } => {
                view.requests.push(r.t_ms);
                if *kind == RequestKind::Checkin {
                    view.checkin_sent = r.t_ms;
                }
            }
            Event::RequestFinished { ok: false, .. } => view.failed_requests.push(r.t_ms),
            Event::RequestFinished { kind, elapsed_ms, .. } if *kind != RequestKind::Checkin => {
                view.side_requests.push((r.t_ms, *kind, *elapsed_ms));
            }
            Event::CheckinOk { .. } => {
                view.successes.push(r.t_ms);
                view.success_sent.push(view.checkin_sent.min(r.t_ms));
            }
            Event::Breaker { to, .. } if to == "open" => view.breaker_opened.push(r.t_ms),
            Event::CommandStarted { .. } => view.command_started = Some(r.t_ms),
            Event::CommandFinished { .. } => {
                if let Some(s) = view.command_started.take() {
                    view.command_runs.push((s, r.t_ms));
                }
            }
            _ => {}
        }
    }

    /// The index of everything pushed.
    pub fn finish(self) -> TraceIndex {
        let TraceIndexBuilder { mut idx, fleet, others } = self;
        idx.agents = fleet
            .into_iter()
            .enumerate()
            .map(|(i, view)| (Arc::from(Fleet::agent_name(i as u32)), view))
            .chain(others)
            .collect();
        idx
    }
}

/// `Some(i)` when `name` is exactly `agent-{i}` (as [`Fleet::agent_name`] writes it) with
/// `i < agents`.
fn fleet_slot(name: &str, agents: usize) -> Option<usize> {
    let digits = name.strip_prefix("agent-")?;
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    let i: usize = digits.parse().ok()?;
    (i < agents).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_slots_are_exactly_the_fleet_names() {
        assert_eq!(fleet_slot("agent-0", 3), Some(0));
        assert_eq!(fleet_slot("agent-2", 3), Some(2));
        assert_eq!(fleet_slot(&Fleet::agent_name(999_999), 1_000_000), Some(999_999));
        for other in ["agent-3", "agent-02", "agent-", "agent-+1", "agent-1x", "agents-1", "agent-99999999999", "server"] {
            assert_eq!(fleet_slot(other, 3), None, "{other}");
        }
    }

    #[test]
    fn agents_outside_the_fleet_are_indexed_too_in_name_order() {
        let fleet = Fleet { agents: 2, hosts: 1 };
        let line = |agent: &str, t_ms| Record {
            t_ms,
            host: "agents-0".into(),
            agent: Some(agent.into()),
            event: crate::trace::TraceEvent::Agent(Event::RequestStarted { kind: RequestKind::Checkin }),
        };
        let idx = TraceIndex::new(&[line("agent-1", 5), line("agent-07", 6), line("agent-1", 7), line("agent-2", 8)], &fleet);
        let names: Vec<&str> = idx.agents.keys().map(|k| &**k).collect();
        assert_eq!(names, ["agent-0", "agent-07", "agent-1", "agent-2"]);
        assert_eq!(idx.agents["agent-1"].requests, [5, 7]);
        assert_eq!(idx.agents["agent-07"].requests, [6]);
        assert!(idx.agents["agent-0"].requests.is_empty());
        assert_eq!(idx.trace_end_ms, 8);
    }
}
