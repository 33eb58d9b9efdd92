//! `load_settles`: after each fault ends, the server's utilization (work completed in a second ÷
//! what it could do in that second) falls below `below` within `within`, and stays below until
//! the next fault begins (or the run ends). A server still saturated long after its trigger is
//! gone is in a *metastable* failure: the retries themselves keep it overloaded.
//!
//! Utilization is averaged over [`SMOOTHING_SECONDS`] (work completed in the last thirty
//! seconds ÷ what the server could do in them), so a fleet's ordinary bunching of check-ins (the
//! echo of a recovery: agents that came back within the same half minute check in together for
//! a few intervals) does not read as overload, while a saturated queue, which runs at 100%
//! second after second, does.

use std::time::Duration;

use super::fleet::{BUCKET_MS, FleetFigures, LoadSeries};

/// Utilization is a moving mean over this many seconds.
pub const SMOOTHING_SECONDS: usize = 30;

/// Utilization over the seconds `s - 29 ..= s`.
fn smoothed(load: &LoadSeries, s: usize) -> f64 {
    let from = s.saturating_sub(SMOOTHING_SECONDS - 1);
    let cap: f64 = load.capacity.as_ref().map_or(0.0, |c| c[from..=s].iter().sum());
    let done: f64 = load.completed[from..=s].iter().sum();
    if cap > 1e-9 { done / cap } else if done > 0.0 { f64::INFINITY } else { 0.0 }
}
use super::{at, secs, summarize};

pub(super) fn load_settles(figures: &FleetFigures, below: f64, within: Duration) -> Result<String, String> {
    let load = &figures.load;
    let within_ms = within.as_millis() as u64;
    let mut failures = Vec::new();
    let mut slowest: Option<(u64, u64)> = None;
    for w in &figures.windows {
        let first = (w.end_ms / BUCKET_MS) as usize;
        let last = (w.horizon_ms.div_ceil(BUCKET_MS) as usize).min(load.seconds());
        if first >= last {
            continue;
        }
        // The last second at or above `below`; the load settled right after it.
        let busy = (first..last).rev().find(|&s| smoothed(load, s) >= below);
        let settled_ms = busy.map_or(w.end_ms, |s| (s as u64 + 1) * BUCKET_MS);
        let took = settled_ms.saturating_sub(w.end_ms);
        if took > within_ms {
            let peak = (first..last).map(|s| smoothed(load, s)).fold(0.0, f64::max);
            let tail = busy.map_or(0.0, |s| smoothed(load, s));
            let still = if settled_ms >= w.horizon_ms.min((last as u64) * BUCKET_MS) {
                format!("still {:.0}% busy at {} (metastable: the load outlived its trigger)", tail * 100.0, at(w.horizon_ms))
            } else {
                format!("settled only at {}, {} after the faults ended", at(settled_ms), secs(took))
            };
            failures.push(format!(
                "after the faults ended at {}: utilization stayed at or above {:.0}% past {} (peak {:.0}%); {still}",
                at(w.end_ms),
                below * 100.0,
                secs(within_ms),
                peak * 100.0
            ));
        }
        if slowest.is_none_or(|(t, _)| took > t) {
            slowest = Some((took, w.end_ms));
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    match slowest {
        Some((took, end)) => Ok(format!("utilization below {:.0}% for good within {} of each fault's end (slowest after {})", below * 100.0, secs(took), at(end))),
        None => Ok("no fault window ended before the run did; nothing to settle".into()),
    }
}
