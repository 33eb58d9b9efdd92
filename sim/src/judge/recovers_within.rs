//! `recovers_within`: after each fault window ends (overlapping faults merged, ending when the
//! last ends), every agent the faults disturbed completes a check-in within `within`, unless
//! another fault begins first. (An agent that slept through a fault at its regular interval
//! had nothing to recover from.)

use std::time::Duration;

use super::index::{AgentView, TraceIndex};
use super::{at, secs, summarize};
use crate::scenario::fmt_duration;

/// Whether the faults in `[start, end]` reached this agent: one of its requests failed in the
/// window (or up to one request timeout after it, for requests sent inside it), or its own host
/// or loop went down and came back. An agent that slept through a fault at its regular
/// interval had nothing to recover from; `never_gives_up` and the implicit "observed" check
/// cover agents that should have noticed.
pub(super) fn disturbed(idx: &TraceIndex, view: &AgentView, start: u64, end: u64, request_timeout_ms: u64) -> bool {
    let until = end + request_timeout_ms;
    let failed = view.failed_requests.iter().any(|&t| t >= start && t <= until);
    let restarted = view.starts.iter().skip(1).any(|&t| t >= start && t <= until);
    let host_down = view.host.as_deref().is_some_and(|h| idx.host_down_during(h, start, end));
    failed || restarted || host_down
}

pub(super) fn recovers_within(idx: &TraceIndex, within: Duration, request_timeout: Duration, tol: u64) -> Result<String, String> {
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
    // Whether a fault mattered at all is the implicit `fault_observed` check's question; a
    // harmless fault (as `explore` draws them) leaves nothing to recover from.
    let Some((took, who, end)) = slowest else {
        return Ok(format!("no agent was disturbed by any of the {judged} fault window(s); nothing to recover from"));
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
