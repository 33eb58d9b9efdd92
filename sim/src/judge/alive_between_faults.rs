//! Implicit in every run, like "fault observed": agents stay *alive between faults*.
//!
//! Outside fault windows, and once an agent has recovered from one, the gap between its
//! successful check-ins never exceeds its regular interval plus its spread (10% for the
//! production agent, up to 29 s for RedFlag 0.1.18) plus one request timeout (the rapid-polling
//! interval instead, while the server asked for rapid polling). After every fault window that
//! ends, every agent checks in again within the longest wait its strategy permits plus the
//! attempt in flight, the health probe and the check-in (unless the next fault begins first).
//! Every bound is the strategy's own (`models/baselines` `Promises`): a system is judged by
//! what it promises. A run that ends with an agent silent fails. Time spent running commands
//! (`command_started` to `command_finished`) is added to a gap's bound: the loop runs the
//! commands a check-in brought before it waits for the next one.
//!
//! Why: `recovers_within` needs only one check-in after a fault and `never_gives_up` looks only
//! inside faults, so an agent that goes quiet right after its first recovery (a breaker that
//! never closes again) passed them. Gaps that touch a fault window are judged by those checks,
//! not here.

use redflag_agent::commands::heartbeat::RAPID_POLLING_INTERVAL;

use super::index::{Mark, TraceIndex, Window};
use super::{Verdict, at, secs, summarize};
use crate::models::baselines::Promises;
use crate::scenario::{Scenario, fmt_duration};

/// The verdict's `check` name.
pub const CHECK: &str = "alive_between_faults";

/// The longest gap allowed between two check-ins that started at `a`, where rapid polling was
/// switched on over `rapid` (start, end) spans: one interval (and its spread) and one request
/// timeout.
fn bound_after(a: u64, rapid: &[(u64, u64)], promises: &Promises) -> u64 {
    // Rapid polling counts from the check-in after the one that switched it on: the interval
    // of a check-in is decided with what was known before its answer was read.
    let interval = promises.interval;
    let base = if rapid.iter().any(|&(s, e)| a > s && a < e) { RAPID_POLLING_INTERVAL.min(interval) } else { interval };
    (promises.regular_max(base) + promises.request_timeout).as_millis() as u64
}

fn touches(windows: &[Window], a: u64, b: u64) -> bool {
    windows.iter().any(|w| w.start_ms <= b && w.end_ms.is_none_or(|e| e >= a))
}

/// Judges every agent; one verdict for the run.
pub(super) fn alive_between_faults(idx: &TraceIndex, scenario: &Scenario, tol: u64) -> Verdict {
    let promises = crate::judge::promises_of(scenario);
    // After a fault: the attempt in flight, the longest wait, a health probe and the check-in.
    let allowance = promises.recovery_max().as_millis() as u64 + tol;
    let windows: Vec<Window> = idx.merged_windows().into_iter().map(|(_, w)| w).collect();
    let end = idx.run_end_ms;
    let mut failures = Vec::new();
    let mut worst: Option<(u64, String)> = None;
    for (name, view) in &idx.agents {
        let rapid: Vec<(u64, u64)> = view
            .marks
            .iter()
            .filter_map(|(t, m)| match m {
                Mark::RapidPolling { for_ms } => Some((*t, t.saturating_add(*for_ms))),
                _ => None,
            })
            .collect();
        // Check-ins, and the loop's first start (its first attempt goes out at once).
        let mut points: Vec<u64> = view.starts.first().copied().into_iter().chain(view.successes.iter().copied()).collect();
        points.sort_unstable();
        if points.is_empty() {
            continue;
        }
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            // Commands a check-in brought run before the loop's next wait.
            let bound = bound_after(a, &rapid, &promises) + view.command_time_between(a, b) + tol;
            if touches(&windows, a, b) {
                continue;
            }
            if worst.as_ref().is_none_or(|(g, _)| b - a > *g) {
                worst = Some((b - a, name.to_string()));
            }
            if b - a > bound {
                failures.push(format!(
                    "{name} went {} without a check-in between faults (from {} to {}; at most {})",
                    secs(b - a),
                    at(a),
                    at(b),
                    secs(bound)
                ));
            }
        }
        let last = *points.last().unwrap_or(&0);
        let bound = bound_after(last, &rapid, &promises) + tol;
        if !touches(&windows, last, end) && end - last > bound {
            failures.push(format!("{name} was silent from its last check-in at {} to the end of the run at {} (at most {} allowed)", at(last), at(end), secs(bound)));
        }
        // After each fault window that ended: a check-in before the next window or the end.
        for (n, w) in windows.iter().enumerate() {
            let Some(e) = w.end_ms else { continue };
            let next = windows.get(n + 1).map_or(end, |nw| nw.start_ms).min(end);
            if next.saturating_sub(e) <= allowance {
                continue;
            }
            let host = view.host.as_deref().unwrap_or("");
            if idx.host_down_during(host, e + 1, next) {
                continue;
            }
            match view.successes.iter().find(|&&s| s > e).copied() {
                Some(s) if s <= e + allowance + view.command_time_between(e, s) => {}
                Some(s) if s <= next => failures.push(format!(
                    "{name} first checked in {} after the faults ended at {} (its config allows {})",
                    secs(s - e),
                    at(e),
                    secs(allowance)
                )),
                _ => {
                    let until = if next == end { "the end of the run".to_string() } else { format!("the next fault at {}", at(next)) };
                    failures.push(format!("{name} never checked in after the faults ended at {} until {until} ({} later)", at(e), secs(next - e)));
                }
            }
        }
    }
    let subject = format!(
        "agents alive between faults ({} + one {} request timeout)",
        promises.describe_regular(),
        fmt_duration(promises.request_timeout)
    );
    let passed = failures.is_empty();
    let reason = if !passed {
        summarize(failures)
    } else {
        match worst {
            Some((g, who)) => format!("every agent kept checking in between faults; longest gap {} ({who})", secs(g)),
            None => "no gap between check-ins fell outside a fault window".into(),
        }
    };
    Verdict { check: CHECK.into(), subject, line: 0, passed, reason, own_promise: true }
}
