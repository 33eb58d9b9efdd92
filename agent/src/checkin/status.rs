//! What the end of an attempt is reported as, and the bookkeeping behind the status file
//! (`state_dir/status.json`, read by `redflag-agent status`). Pure: the wall-clock time and the
//! strategy's state come in as arguments; the driver emits the events and saves the status.

use crate::log::events::{Event, RequestKind, ms};
use crate::resilience::{BreakerState, Decision, Verdict};
use crate::server::answers::AttemptResult;
use crate::server::protocol::AGENT_VERSION;
use crate::store::Status;

/// What the status file says between attempts, and what was last logged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatusBook {
    last_success: Option<String>,
    last_error: Option<String>,
    /// The cause last logged with a failure, so an unchanged cause is not repeated each attempt.
    last_cause: Option<String>,
    /// The last store error reported, so a full disk is logged once, not every attempt.
    last_store_error: Option<String>,
}

impl StatusBook {
    /// An attempt ended at `wall` (RFC 3339) as `result` went and `decision` decided: the
    /// events that say so (`recovered` and `checkin_ok`, or `attempt_failed` with its cause on
    /// the first failure of an outage and whenever the cause changes).
    pub fn attempt_ended(&mut self, result: &AttemptResult, decision: &Decision, wall: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if decision.verdict == Verdict::Success {
            if let Some(r) = decision.recovered {
                events.push(Event::Recovered { outage_ms: ms(r.outage), failed_attempts: r.failed_attempts });
            }
            self.last_success = Some(wall.to_string());
            self.last_error = None;
            self.last_cause = None;
            let commands = result.answer.as_ref().map_or(0, |a| a.commands.len());
            events.push(Event::CheckinOk { commands: commands as u32, delay_ms: ms(decision.delay) });
            return events;
        }
        let class = result.outcome.class().to_string();
        self.last_error = Some(class.clone());
        let changed = result.cause != self.last_cause;
        self.last_cause = result.cause.clone();
        let cause = result.cause.clone().filter(|_| decision.consecutive_failures <= 1 || changed);
        events.push(Event::AttemptFailed {
            attempt: decision.attempt,
            max_attempts: decision.max_attempts,
            class,
            verdict: decision.verdict.to_string(),
            delay_ms: ms(decision.delay),
            reason: decision.reason.as_str().to_string(),
            consecutive_failures: decision.consecutive_failures,
            request: (result.request != RequestKind::Checkin).then_some(result.request),
            cause,
        });
        events
    }

    /// The status to save after the attempt that ended at `wall`.
    pub fn status(&self, agent_id: &str, wall: String, failures: u32, breaker: BreakerState, log_lines_dropped: u64) -> Status {
        Status {
            agent_id: agent_id.to_string(),
            last_success: self.last_success.clone(),
            last_attempt: Some(wall),
            consecutive_failures: failures,
            breaker: breaker.to_string(),
            last_error: self.last_error.clone(),
            agent_version: AGENT_VERSION.to_string(),
            log_lines_dropped,
        }
    }

    /// How saving the status went: a `store_failed` event the first time an error is seen (a
    /// full disk is logged once, not after every attempt), nothing otherwise.
    pub fn saved(&mut self, outcome: Result<(), String>) -> Option<Event> {
        match outcome {
            Ok(()) => {
                self.last_store_error = None;
                None
            }
            Err(error) if self.last_store_error.as_ref() == Some(&error) => None,
            Err(error) => {
                self.last_store_error = Some(error.clone());
                Some(Event::StoreFailed { what: "status".into(), error })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::{Outcome, WaitReason};
    use std::time::{Duration, Instant};

    fn decision(verdict: Verdict, consecutive_failures: u32) -> Decision {
        Decision {
            verdict,
            delay: Duration::from_secs(2),
            next_attempt_at: Instant::now(),
            reason: WaitReason::Backoff,
            attempt: consecutive_failures,
            max_attempts: 5,
            consecutive_failures,
            transition: None,
            recovered: None,
        }
    }

    fn failed(cause: &str) -> AttemptResult {
        AttemptResult::failed(RequestKind::Checkin, Outcome::Refused, Verdict::Retry, None).caused_by(Some(cause.into()))
    }

    fn cause_of(events: &[Event]) -> Option<String> {
        match &events[0] {
            Event::AttemptFailed { cause, .. } => cause.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cause_is_given_first_and_when_it_changes() {
        let mut book = StatusBook::default();
        assert_eq!(cause_of(&book.attempt_ended(&failed("a"), &decision(Verdict::Retry, 1), "t")), Some("a".into()));
        assert_eq!(cause_of(&book.attempt_ended(&failed("a"), &decision(Verdict::Retry, 2), "t")), None);
        assert_eq!(cause_of(&book.attempt_ended(&failed("b"), &decision(Verdict::Retry, 3), "t")), Some("b".into()));
        let status = book.status("a1", "t2".into(), 3, BreakerState::Open, 0);
        assert_eq!((status.last_error.as_deref(), status.last_success), (Some("connection_refused"), None));
    }

    #[test]
    fn a_success_clears_the_error_and_a_store_error_is_reported_once() {
        let mut book = StatusBook::default();
        book.attempt_ended(&failed("a"), &decision(Verdict::Retry, 1), "t1");
        let ok = AttemptResult::ok(Default::default());
        let events = book.attempt_ended(&ok, &decision(Verdict::Success, 0), "t2");
        assert_eq!(events[0].name(), "checkin_ok");
        let status = book.status("a1", "t2".into(), 0, BreakerState::Closed, 0);
        assert_eq!((status.last_success.as_deref(), status.last_error), (Some("t2"), None));
        assert!(book.saved(Err("disk full".into())).is_some());
        assert!(book.saved(Err("disk full".into())).is_none());
        assert!(book.saved(Ok(())).is_none());
        assert!(book.saved(Err("disk full".into())).is_some());
    }
}
