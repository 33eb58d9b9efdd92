//! `max_amplification`: for each fault window, the work the server did (served and wasted
//! requests at their cost: 1 unit a check-in, 0.1 a probe; shed requests at `[server]
//! shed_cost` of theirs, since refusing is work too) on requests arriving from the window's end
//! to the fleet's recovery, ÷ the disturbed agents that recovered, is at most `limit`. One probe and one check-in per agent is 1.1; a fleet whose
//! retries time out in the queue, or that probes again and again, is far above.

use super::fleet::FleetFigures;
use super::{at, summarize};

pub(super) fn max_amplification(figures: &FleetFigures, limit: f64) -> Result<String, String> {
    let mut failures = Vec::new();
    let mut worst: Option<(f64, u64, usize)> = None;
    for w in &figures.windows {
        let Some(a) = w.amplification else { continue };
        if a > limit {
            failures.push(format!(
                "after the faults ended at {}: {a:.2} work units per recovered agent ({} agents; limit {limit})",
                at(w.end_ms),
                w.recovery_ms.len()
            ));
        }
        if worst.is_none_or(|(x, _, _)| a > x) {
            worst = Some((a, w.end_ms, w.recovery_ms.len()));
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    match worst {
        Some((a, end, n)) => Ok(format!("at most {a:.2} work units per recovered agent (after {}, {n} agents; limit {limit})", at(end))),
        None => Err("no agent recovered from any fault window, so there is nothing to divide by".into()),
    }
}
