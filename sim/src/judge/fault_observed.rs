//! Implicit in every run: each fault was *observed*: some agent request failed between the
//! fault's start and the first success after it ended (for a route that was only made slow, a
//! `broken_route` with a `delay` and no status: some request to that route took at least the
//! delay). A fault nobody noticed was probably never wired in, and must not let a scenario pass.

use redflag_agent::log::events::RequestKind;

use super::index::TraceIndex;
use super::{Verdict, at, secs};
use crate::scenario::{Action, ApiRoute, Scenario, Target};

/// For a route made slow but working (no status), the agent's request kind on it and the delay.
fn slowed_route(action: &Action) -> Option<(RequestKind, u64)> {
    let Action::BrokenRoute { route, status: None, delay: Some(d) } = action else { return None };
    let kind = match route {
        ApiRoute::Health => RequestKind::Health,
        ApiRoute::Logs => RequestKind::Result,
        ApiRoute::Renew => RequestKind::Renew,
        // Only failures show a slow /system-info (its report's timing is not traced).
        ApiRoute::SystemInfo => return None,
    };
    Some((kind, d.as_millis() as u64))
}

/// Failed requests of every agent in `[start, until]`.
fn failed_between(idx: &TraceIndex, start: u64, until: u64) -> usize {
    idx.agents
        .values()
        .map(|v| v.failed_requests.partition_point(|&t| t <= until) - v.failed_requests.partition_point(|&t| t < start))
        .sum()
}

/// The implicit check: every fault was noticed by some agent.
pub(super) fn faults_observed(idx: &TraceIndex, scenario: &Scenario, tol: u64) -> Vec<Verdict> {
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
                own_promise: false,
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
        } else if let Some((kind, delay_ms)) = slowed_route(&f.action) {
            let slow = idx
                .agents
                .values()
                .flat_map(|v| v.side_requests.iter())
                .filter(|(t, k, elapsed)| *k == kind && *t >= start && *t <= until && *elapsed + tol >= delay_ms)
                .count();
            // A delay past the request timeout shows as failed (timed-out) requests instead.
            let timed_out = failed_between(idx, start, until);
            match (slow, timed_out) {
                (0, 0) => Err(format!("no {kind} request took the route's {} between {} and {}", secs(delay_ms), at(start), at(until))),
                (0, n) => Ok(format!("{n} failed request(s) between {} and {}: the route's {} outlasts the request timeout", at(start), at(until), secs(delay_ms))),
                (n, _) => Ok(format!("{n} {kind} request(s) took at least {} between {} and {}", secs(delay_ms), at(start), at(until))),
            }
        } else {
            let failed = failed_between(idx, start, until);
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
        out.push(Verdict { check: "fault_observed".into(), subject, line: f.line, passed: result.is_ok(), reason: result.unwrap_or_else(|e| e), own_promise: false });
    }
    out
}
