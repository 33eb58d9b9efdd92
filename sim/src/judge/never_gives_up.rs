//! `never_gives_up`: during every fault window each agent keeps sending requests (health probes
//! included) with no gap above `max_gap` (default: the longest wait its config allows plus one
//! request timeout), and no agent loop ever ends.

use std::time::Duration;

use super::index::TraceIndex;
use super::{at, secs, summarize};

pub(super) fn never_gives_up(idx: &TraceIndex, max_gap: Duration, tol: u64) -> Result<String, String> {
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
            // A host that came back up before the window started its loops afresh: the gap
            // counts from its restart, not from the last request before it went down.
            let restarted = idx.host_down.get(host).into_iter().flatten().filter_map(|&(_, e)| e).filter(|&e| e <= w.start_ms).max();
            prev = prev.max(restarted.unwrap_or(0));
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
