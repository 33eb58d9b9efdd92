//! `honours_retry_after`: no agent sends a request to a route before a `Retry-After` it was
//! given on that route has elapsed, clamped to the agent's `retry_after_max_seconds`.
//!
//! Read from the trace alone: the agent's `request_finished` events carry the `Retry-After`
//! each answer held (`retry_after_ms`, as the server sent it), and the next `request_started`
//! of the same kind (check-in, health, renew) must come at least `min(retry_after, clamp)`
//! later. A loop that restarted (its host crashed) forgets what it was told, as the real agent
//! does. Waiting *longer* than the clamp is not judged here: that is `bounded_waits`.

use std::collections::BTreeMap;
use std::time::Duration;

use redflag_agent::log::events::RequestKind;

use super::index::{Mark, TraceIndex};
use super::{at, secs, summarize};

pub(super) fn honours_retry_after(idx: &TraceIndex, clamp: Duration, tol: u64) -> Result<String, String> {
    let clamp_ms = clamp.as_millis() as u64;
    let mut failures = Vec::new();
    let mut given = 0usize;
    let mut shortest_margin: Option<(u64, String)> = None;
    for (name, view) in &idx.agents {
        // Per route: until when the agent was asked to stay away, and since when.
        let mut asked: BTreeMap<RequestKind, (u64, u64)> = BTreeMap::new();
        for &(t, mark) in &view.marks {
            match mark {
                Mark::Started => asked.clear(),
                Mark::RequestFinished { kind, retry_after_ms: Some(ra) } => {
                    given += 1;
                    asked.insert(kind, (t, t.saturating_add(ra.min(clamp_ms))));
                }
                Mark::RequestStarted(kind) => {
                    if let Some((since, until)) = asked.remove(&kind) {
                        if t + tol < until {
                            failures.push(format!(
                                "{name} sent a {kind} request at {}, {} after a Retry-After asking for {} (clamped) at {}",
                                at(t),
                                secs(t - since),
                                secs(until - since),
                                at(since)
                            ));
                        } else if shortest_margin.as_ref().is_none_or(|(m, _)| t - until < *m) {
                            shortest_margin = Some((t.saturating_sub(until), name.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    if given == 0 {
        return Ok("no answer in the run carried a Retry-After; nothing to honour".into());
    }
    let margin = shortest_margin.map_or(String::new(), |(m, who)| format!("; closest {who}, {} after the wait ended", secs(m)));
    Ok(format!("{given} Retry-After answer(s), each honoured (clamped to {}){margin}", secs(clamp_ms)))
}
