//! `bounded_waits`: between any two consecutive attempts of an agent, the wait never exceeds
//! the longest its config allows. The trace-level twin of the resilience core's proptest
//! ("every delay is within the policy's bound"), judged on what the agent *did*, not on the
//! delays it reported.
//!
//! The wait is measured from the end of an attempt (`attempt_failed` or `checkin_ok`) to the
//! next request the loop sends (a health probe or a check-in). Its bound depends on how the
//! attempt ended:
//!
//! * a retryable failure: `max(max_delay, circuit_breaker_timeout, min(Retry-After given in
//!   that attempt, retry_after_max))`: backoff (capped after jitter), a burst's rest, the open
//!   breaker, or the server's clamped Retry-After;
//! * a success, a fast failure or a refused renewal: the regular interval plus 10% jitter
//!   (rapid polling only shortens it).
//!
//! A loop that restarted (its host crashed) starts afresh; a wait still running when the run
//! ends fails if it is already past its bound (unless the agent's host was down).

use std::time::Duration;

use crate::models::baselines::Promises;

use super::index::{Mark, TraceIndex};
use super::{at, secs, summarize};

/// The bounds, from the strategy's promises (for the production policy: its config).
pub(super) struct Bounds {
    /// After a retryable failure, before any Retry-After.
    pub(super) retry_ms: u64,
    pub(super) retry_after_max_ms: u64,
    /// After a success (or fast failure).
    pub(super) regular_ms: u64,
}

impl Bounds {
    pub(super) fn of(promises: &Promises) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        Bounds {
            retry_ms: ms(promises.after_failure_max),
            retry_after_max_ms: ms(promises.retry_after_max.unwrap_or_default()),
            regular_ms: ms(promises.regular_max(promises.interval)),
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "at most {} after a failure ({} with a Retry-After), {} after a check-in",
            secs(self.retry_ms),
            secs(self.retry_ms.max(self.retry_after_max_ms)),
            secs(self.regular_ms)
        )
    }
}

pub(super) fn bounded_waits(idx: &TraceIndex, bounds: &Bounds, tol: u64) -> Result<String, String> {
    let mut failures = Vec::new();
    let mut judged = 0usize;
    let mut worst: Option<(u64, u64, String)> = None;
    for (name, view) in &idx.agents {
        // (attempt end, bound) of the wait in progress, and the Retry-After of this attempt.
        let mut pending: Option<(u64, u64)> = None;
        let mut retry_after: Option<u64> = None;
        for &(t, mark) in &view.marks {
            match mark {
                Mark::Started => {
                    pending = None;
                    retry_after = None;
                }
                Mark::RequestFinished { retry_after_ms, .. } => {
                    if retry_after_ms.is_some() {
                        retry_after = retry_after_ms;
                    }
                }
                Mark::AttemptEnded { retry, .. } => {
                    let bound = if retry {
                        bounds.retry_ms.max(retry_after.map_or(0, |ra| ra.min(bounds.retry_after_max_ms)))
                    } else {
                        bounds.regular_ms
                    };
                    pending = Some((t, bound));
                    retry_after = None;
                }
                Mark::RequestStarted(_) => {
                    if let Some((ended, bound)) = pending.take() {
                        judged += 1;
                        let wait = t - ended;
                        if worst.as_ref().is_none_or(|(w, _, _)| wait > *w) {
                            worst = Some((wait, bound, name.to_string()));
                        }
                        if wait > bound + tol {
                            failures.push(format!(
                                "{name} waited {} between attempts (from {} to {}); its config allows at most {}",
                                secs(wait),
                                at(ended),
                                at(t),
                                secs(bound)
                            ));
                        }
                    }
                }
                Mark::RapidPolling { .. } => {}
            }
        }
        if let Some((ended, bound)) = pending {
            let host = view.host.as_deref().unwrap_or("");
            let waited = idx.run_end_ms.saturating_sub(ended);
            if waited > bound + tol && !idx.host_down_during(host, ended, idx.run_end_ms) {
                failures.push(format!(
                    "{name} had waited {} since its attempt ended at {} when the run ended, with no further attempt; its config allows at most {}",
                    secs(waited),
                    at(ended),
                    secs(bound)
                ));
            }
        }
    }
    if !failures.is_empty() {
        return Err(summarize(failures));
    }
    match worst {
        Some((w, b, who)) => Ok(format!("{judged} waits, each within its bound; longest {} ({who}, bound {})", secs(w), secs(b))),
        None => Ok("no agent made two attempts".into()),
    }
}
