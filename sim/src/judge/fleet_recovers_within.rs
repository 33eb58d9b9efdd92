//! `fleet_recovers_within`: after each fault window, every disturbed agent has checked in within
//! `within`, or within `limit_factor` × the window's physical limit (the disturbed agents' work ÷
//! capacity, warm-up included; see `fleet.rs`). Windows cut short by the next fault judge only
//! the agents that recovered before it, as `recovers_within` does.

use super::fleet::FleetFigures;
use super::{at, secs, summarize};
use crate::scenario::FleetBound;

pub(super) fn fleet_recovers_within(figures: &FleetFigures, bound: FleetBound, tol: u64) -> Result<String, String> {
    let mut failures = Vec::new();
    let mut judged = 0;
    let mut worst: Option<(f64, String)> = None;
    for w in &figures.windows {
        if w.disturbed == 0 {
            continue;
        }
        judged += 1;
        let (allowed_ms, what) = match bound {
            FleetBound::Within(d) => (d.as_millis() as u64, secs(d.as_millis() as u64)),
            FleetBound::LimitFactor(f) => {
                let Some(limit) = w.physical_limit_ms else {
                    return Err("limit_factor needs a server with finite capacity".into());
                };
                let allowed = (limit as f64 * f).ceil() as u64;
                (allowed, format!("{f} x the physical limit {} = {}", secs(limit), secs(allowed)))
            }
        };
        let cut_short = w.horizon_ms < w.end_ms + allowed_ms + tol;
        if let Some((who, took)) = &w.slowest {
            if *took > allowed_ms + tol {
                failures.push(format!(
                    "after the faults ended at {}: {who} took {} (allowed {what}); {} of {} disturbed agents recovered",
                    at(w.end_ms),
                    secs(*took),
                    w.recovery_ms.len(),
                    w.disturbed
                ));
            }
            let ratio = *took as f64 / allowed_ms.max(1) as f64;
            if worst.as_ref().is_none_or(|(r, _)| ratio > *r) {
                worst = Some((ratio, format!("fleet recovered {} after {} (allowed {what})", secs(*took), at(w.end_ms))));
            }
        }
        if !w.unrecovered.is_empty() && !cut_short {
            failures.push(format!(
                "after the faults ended at {}: {} of {} disturbed agents never checked in (first: {})",
                at(w.end_ms),
                w.unrecovered.len(),
                w.disturbed,
                w.unrecovered[0]
            ));
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    match (judged, worst) {
        (0, _) => Err("no agent was disturbed by any fault window, so no fleet could recover".into()),
        (_, Some((_, text))) => Ok(format!("{judged} fault window(s); slowest: {text}")),
        (_, None) => Ok(format!("{judged} fault window(s), each cut short by the next fault")),
    }
}
