//! `no_lost_commands`: every command the harness queued (`command_queued`) has exactly one
//! result recorded at the server (`command_result` without `duplicate`) by the end of the run.
//! Commands queued within `grace` of the end are exempt: they may still be on their way.
//! Judged from the trace alone; a failure names the lost commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{at, secs};
use crate::trace::{Record, SimEvent};

/// Lost commands named in a failure, at most.
const NAMED_MAX: usize = 20;

struct Queued {
    agent: Option<Arc<str>>,
    t_ms: u64,
    deliveries: u32,
    results: u32,
}

pub(super) fn no_lost_commands(records: &[Record], end_ms: u64, grace: Duration) -> Result<String, String> {
    let mut queued: BTreeMap<&str, Queued> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut duplicates = 0u64;
    for r in records {
        match r.sim_event() {
            Some(SimEvent::CommandQueued { id, .. }) => {
                if !queued.contains_key(id.as_str()) {
                    order.push(id);
                }
                queued.entry(id).or_insert(Queued { agent: r.agent.clone(), t_ms: r.t_ms, deliveries: 0, results: 0 });
            }
            Some(SimEvent::CommandDelivered { id, delivery }) => {
                if let Some(q) = queued.get_mut(id.as_str()) {
                    q.deliveries = q.deliveries.max(*delivery);
                }
            }
            Some(SimEvent::CommandResult { id, duplicate, .. }) => {
                if *duplicate {
                    duplicates += 1;
                } else if let Some(q) = queued.get_mut(id.as_str()) {
                    q.results += 1;
                }
            }
            _ => {}
        }
    }
    let cutoff = end_ms.saturating_sub(grace.as_millis() as u64);
    let judged: Vec<&str> = order.iter().copied().filter(|id| queued[id].t_ms <= cutoff).collect();
    let exempt = order.len() - judged.len();
    let lost: Vec<&str> = judged.iter().copied().filter(|id| queued[id].results == 0).collect();
    let doubled: Vec<&str> = judged.iter().copied().filter(|id| queued[id].results > 1).collect();
    let redelivered = judged.iter().filter(|id| queued[*id].deliveries > 1).count();
    let describe = |id: &str| {
        let q = &queued[id];
        format!("{id} ({}, queued at {}, delivered {} time(s))", q.agent.as_deref().unwrap_or("?"), at(q.t_ms), q.deliveries)
    };
    if !lost.is_empty() || !doubled.is_empty() {
        let mut parts = Vec::new();
        if !lost.is_empty() {
            let share = 100.0 * lost.len() as f64 / judged.len().max(1) as f64;
            let mut named: Vec<String> = lost.iter().take(NAMED_MAX).map(|id| describe(id)).collect();
            if lost.len() > NAMED_MAX {
                named.push(format!("and {} more", lost.len() - NAMED_MAX));
            }
            parts.push(format!("{} of {} commands lost ({share:.1}%), no result at the server by the end: {}", lost.len(), judged.len(), named.join(", ")));
        }
        if !doubled.is_empty() {
            let named: Vec<String> = doubled.iter().take(NAMED_MAX).map(|id| describe(id)).collect();
            parts.push(format!("{} command(s) with more than one first result: {}", doubled.len(), named.join(", ")));
        }
        return Err(parts.join("; "));
    }
    if order.is_empty() {
        return Err("no command was queued; this check needs [[commands]] or a [workload]".into());
    }
    Ok(format!(
        "all {} commands queued before {} have exactly one result at the server ({redelivered} redelivered, {duplicates} duplicate result(s) answered 200); {exempt} queued within the last {} exempt",
        judged.len(),
        at(cutoff),
        secs(grace.as_millis() as u64)
    ))
}
