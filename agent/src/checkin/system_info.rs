//! `POST /api/v1/agents/{id}/system-info`: the machine's description (CPU, memory, disk,
//! processes, address: `host::system_info`), which RedFlag 0.1.18's server merges into the
//! agent's metadata for its agent card. The Go agent sends it at start and then hourly; so does
//! this agent, with two rules of its own:
//!
//! * **A report never delays or blocks a check-in.** It goes out only after a successful
//!   check-in (the server is there), in the time before the next attempt is due, and it is
//!   abandoned (counted as failed) the moment that attempt is due. Its outcome never reaches the
//!   resilience strategy: a broken `/system-info` cannot open the breaker or slow check-ins.
//! * **A failed report is retried on its own bounded schedule** ([`SystemInfoSchedule`]): one
//!   minute after the first failure, doubling to at most an hour, or later when the server's
//!   `Retry-After` says so (at most an hour). The route allows 30 requests a minute per agent;
//!   this sends at most one a minute, and one an hour in steady state. (The Go agent retries at
//!   every check-in until one succeeds.)
//!
//! The schedule is pure (`now` comes in); the sending is [`CheckinLoop::report_system_info`].
//! A host with nothing to describe (the simulation's) sends nothing.

use std::time::{Duration, Instant};

use tokio::time::sleep_until;

use crate::log::events::{Event, RequestKind, ms};
use crate::resilience::Strategy;
use crate::server::answers::system_info_answer;

use super::{CheckinLoop, Host, Parts};

/// A report is due this long after the last one that succeeded.
pub const SYSTEM_INFO_INTERVAL: Duration = Duration::from_secs(3600);
/// The wait after a first failed report; it doubles with each failure in a row.
pub const SYSTEM_INFO_RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait after failed reports, `Retry-After` included.
pub const SYSTEM_INFO_RETRY_MAX: Duration = SYSTEM_INFO_INTERVAL;

/// When the next system-info report is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemInfoSchedule {
    /// `None`: due now (the agent has just started).
    next_due: Option<Instant>,
    /// Failed reports in a row.
    failures: u32,
}

impl SystemInfoSchedule {
    /// Whether a report is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_due.is_none_or(|due| now >= due)
    }

    /// The report sent at `now` was stored: the next one in an hour.
    pub fn succeeded(&mut self, now: Instant) {
        self.failures = 0;
        self.next_due = Some(now + SYSTEM_INFO_INTERVAL);
    }

    /// The report sent at `now` failed (or was abandoned for a check-in); `retry_after` is the
    /// server's, if it sent one. Returns the wait before the next try.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doubled = SYSTEM_INFO_RETRY_FIRST.saturating_mul(1u32 << self.failures.saturating_sub(1).min(16));
        let wait = doubled.max(retry_after.unwrap_or_default()).min(SYSTEM_INFO_RETRY_MAX);
        self.next_due = Some(now + wait);
        wait
    }
}

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// After a successful check-in: the system-info report, if one is due, sent in the time
    /// before `next_due` (the next attempt) and abandoned when that comes first. Its outcome
    /// goes to the schedule and the log only, never to the strategy.
    pub(super) async fn report_system_info(&mut self, next_due: tokio::time::Instant) {
        if !self.system_info.due(tokio::time::Instant::now().into_std()) {
            return;
        }
        let Some(report) = self.host.system_info(self.host.wall_clock()) else { return };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let sent = tokio::select! {
            biased;
            _ = sleep_until(next_due) => None,
            r = self.exchange.send(RequestKind::SystemInfo, Some(body), &mut self.emitter, || self.host.wall_clock()) => Some(r),
        };
        let now = tokio::time::Instant::now().into_std();
        let Some(result) = sent else {
            let retry_in = self.system_info.failed(now, None);
            return self.emitter.emit(Event::SystemInfoFailed { class: "abandoned".into(), retry_in_ms: ms(retry_in) });
        };
        match system_info_answer(&result, || self.host.wall_clock()) {
            Ok(()) => {
                self.system_info.succeeded(now);
                self.emitter.emit(Event::SystemInfoReported);
            }
            Err((outcome, retry_after)) => {
                let retry_in = self.system_info.failed(now, retry_after);
                self.emitter.emit(Event::SystemInfoFailed { class: outcome.class().to_string(), retry_in_ms: ms(retry_in) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_start_then_hourly() {
        let t0 = Instant::now();
        let mut s = SystemInfoSchedule::default();
        assert!(s.due(t0));
        s.succeeded(t0);
        assert!(!s.due(t0 + Duration::from_secs(3599)));
        assert!(s.due(t0 + SYSTEM_INFO_INTERVAL));
    }

    #[test]
    fn failures_back_off_to_an_hour_and_a_success_resets() {
        let t0 = Instant::now();
        let mut s = SystemInfoSchedule::default();
        let waits: Vec<u64> = (0..10).map(|_| s.failed(t0, None).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]);
        assert!(!s.due(t0 + Duration::from_secs(3599)) && s.due(t0 + Duration::from_secs(3600)));
        for _ in 0..100 {
            s.failed(t0, None);
        }
        assert_eq!(s.failed(t0, None), SYSTEM_INFO_RETRY_MAX, "no overflow after many failures");
        s.succeeded(t0);
        assert_eq!(s.failed(t0, None), SYSTEM_INFO_RETRY_FIRST);
    }

    #[test]
    fn retry_after_raises_the_wait_within_the_bound() {
        let t0 = Instant::now();
        let mut s = SystemInfoSchedule::default();
        assert_eq!(s.failed(t0, Some(Duration::from_secs(300))), Duration::from_secs(300));
        assert_eq!(s.failed(t0, Some(Duration::from_secs(5))), Duration::from_secs(120), "never below the backoff");
        assert_eq!(s.failed(t0, Some(Duration::from_secs(86_400))), SYSTEM_INFO_RETRY_MAX);
    }

    #[test]
    fn never_more_than_one_report_a_minute() {
        // The route's limit is 30 a minute: whatever happens, one report per minute at most.
        let t0 = Instant::now();
        let mut s = SystemInfoSchedule::default();
        let mut sent = 0;
        for step in 0..600 {
            let now = t0 + Duration::from_secs(step);
            if s.due(now) {
                sent += 1;
                s.failed(now, None);
            }
        }
        assert!(sent <= 10, "{sent} reports in 10 minutes");
    }
}
