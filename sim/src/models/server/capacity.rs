//! The server's finite capacity: a FIFO queue in front of the routes, worked at
//! `capacity_per_second` work units per second, ramping up over the warm-up after every start
//! (the curve is `scenario::Capacity`). Process memory: it lives inside `run_server`, so a crash
//! loses every queued request, as a real crash does.
//!
//! Off the hot path by construction: nothing is polled per unit of work. The queue is its own
//! arithmetic: admitting a request computes, once, when the server will have finished it (the
//! FIFO's "virtual finish time": after everything ahead of it, at the rate of the curve), and the
//! request's handler sleeps until then. Beyond `queue_max` waiting requests, a new one is shed at
//! once with 503 (and `Retry-After` when configured). Refusing costs work too: `shed_cost` of
//! the request's own cost is taken from the server's time at once, so requests admitted after a
//! shed wait for it (the requests already queued keep their finish times; in aggregate the
//! server loses the same time).
//!
//! A request is worked on even if its client has gone: its place in the queue is kept (the
//! server does not know), so the work is done and *wasted*. That is recorded when the handler is
//! dropped before its finish time (the client, or the proxy in front, closed the connection),
//! with the finish time as its time; a handler dropped because the process died records nothing
//! (the work was lost, not done).
//!
//! Trace: one `server_work` line per request (`served`, `shed` or `wasted`, its cost and how
//! long it queued), besides the usual `server_request` line for every answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::scenario::{Capacity, ShedRetryAfter};
use crate::scenario::server_limits::SHED_RETRY_AFTER_MAX_SECONDS;
use crate::trace::{SimEvent, TraceEvent, TraceHold, TraceSink, WorkOutcome};

/// What the queue says to an arriving request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// The queue is full: answer 503 now, with this `Retry-After` (seconds) if any.
    Shed { retry_after_seconds: Option<u64> },
    /// Wait in line; the server has finished this request at `finish`.
    Queued { finish: Instant },
}

/// The queue of one server process.
#[derive(Debug)]
pub struct CapacityQueue {
    capacity: Capacity,
    /// When this process started (the warm-up counts from here).
    started: Instant,
    /// Finish times of the requests admitted and not yet finished, in FIFO (so rising) order.
    in_system: VecDeque<Instant>,
    /// When everything admitted so far is done.
    busy_until: Instant,
}

impl CapacityQueue {
    pub fn new(capacity: Capacity, started: Instant) -> Self {
        CapacityQueue { capacity, started, in_system: VecDeque::new(), busy_until: started }
    }

    /// Requests waiting at `now`, not counting the one being worked on.
    pub fn waiting(&mut self, now: Instant) -> usize {
        while self.in_system.front().is_some_and(|f| *f <= now) {
            self.in_system.pop_front();
        }
        self.in_system.len().saturating_sub(1)
    }

    /// A request costing `cost` work units arrives at `now`.
    pub fn admit(&mut self, now: Instant, cost: f64) -> Admission {
        // Full: one request in service and `queue_max` waiting behind it.
        if self.waiting(now) >= self.capacity.queue_max as usize && !self.in_system.is_empty() {
            let retry_after_seconds = self.capacity.shed_retry_after.map(|ra| match ra {
                ShedRetryAfter::Seconds(s) => s,
                ShedRetryAfter::Auto => {
                    let drain = self.busy_until.saturating_duration_since(now).as_secs_f64().ceil() as u64;
                    drain.clamp(1, SHED_RETRY_AFTER_MAX_SECONDS)
                }
            });
            let shed_work = self.capacity.shed_cost * cost;
            if shed_work > 0.0 {
                let start = self.busy_until.max(now);
                self.busy_until = self.started + self.capacity.finish_after(start - self.started, shed_work);
            }
            return Admission::Shed { retry_after_seconds };
        }
        let start = self.busy_until.max(now);
        let finish = self.started + self.capacity.finish_after(start - self.started, cost);
        self.busy_until = finish;
        self.in_system.push_back(finish);
        debug_assert!(self.in_system.len() <= self.capacity.queue_max as usize + 1);
        Admission::Queued { finish }
    }
}

/// Held by a queued request's handler: if it is dropped before [`WorkTicket::done`], the client
/// left and the server's work on it is wasted.
pub struct WorkTicket {
    trace: TraceSink,
    /// Keeps the trace open at `finish_ms` until this ticket is settled: a wasted line is
    /// written then, at that (by then past) time.
    _hold: TraceHold,
    host: Arc<str>,
    agent: Option<Arc<str>>,
    cost: f64,
    queued_ms: u64,
    /// The finish time, in trace milliseconds.
    finish_ms: u64,
    done: bool,
}

impl WorkTicket {
    /// A ticket for a request admitted `now` and finished at `finish`.
    pub fn new(trace: &TraceSink, host: &Arc<str>, agent: Option<Arc<str>>, cost: f64, now: Instant, finish: Instant) -> Self {
        let queued_ms = ms(finish.saturating_duration_since(now));
        let finish_ms = trace.now_ms() + queued_ms;
        let _hold = trace.hold(finish_ms);
        WorkTicket { trace: trace.clone(), _hold, host: host.clone(), agent, cost, queued_ms, finish_ms, done: false }
    }

    /// The work is done and the answer goes to a client that waited: goodput.
    pub fn done(mut self) {
        self.done = true;
        record(&self.trace, &self.host, self.agent.as_ref(), WorkOutcome::Served, self.cost, self.queued_ms, None);
    }
}

impl Drop for WorkTicket {
    fn drop(&mut self) {
        // Dropped outside a runtime: the process is being torn down (a crash). The queue died
        // with it, so the work was never done.
        if self.done || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        record(&self.trace, &self.host, self.agent.as_ref(), WorkOutcome::Wasted, self.cost, self.queued_ms, Some(self.finish_ms));
    }
}

/// Records one `server_work` line, now or at `at_ms`.
pub fn record(trace: &TraceSink, host: &Arc<str>, agent: Option<&Arc<str>>, outcome: WorkOutcome, cost: f64, queued_ms: u64, at_ms: Option<u64>) {
    let event = TraceEvent::Sim(SimEvent::ServerWork { outcome, cost, queued_ms });
    match at_ms {
        Some(t) => trace.record_at(t, host, agent, event),
        None => trace.record(host, agent, event),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(queue_max: u32, shed: Option<ShedRetryAfter>) -> Capacity {
        Capacity { per_second: 10.0, queue_max, shed_retry_after: shed, warmup: Duration::ZERO, shed_cost: 0.0 }
    }

    #[test]
    fn fifo_at_the_rate_then_shed() {
        let t0 = Instant::now();
        let mut q = CapacityQueue::new(capacity(2, Some(ShedRetryAfter::Auto)), t0);
        // 10 units per second: each request takes 100 ms, one after the other.
        let finishes: Vec<_> = (0..3)
            .map(|_| match q.admit(t0, 1.0) {
                Admission::Queued { finish } => finish - t0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(finishes, [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(300)]);
        // One in service, two waiting: the next is shed, told to come back when it drains.
        assert_eq!(q.admit(t0, 1.0), Admission::Shed { retry_after_seconds: Some(1) });
        // Once the first is done there is room again, after the others.
        match q.admit(t0 + Duration::from_millis(150), 0.1) {
            Admission::Queued { finish } => assert_eq!(finish - t0, Duration::from_millis(310)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shedding_takes_the_servers_time() {
        let t0 = Instant::now();
        let mut q = CapacityQueue::new(Capacity { shed_cost: 0.5, ..capacity(0, None) }, t0);
        // One in service (100 ms), nothing may wait: the next is shed and costs 50 ms.
        assert!(matches!(q.admit(t0, 1.0), Admission::Queued { .. }));
        assert_eq!(q.admit(t0, 1.0), Admission::Shed { retry_after_seconds: None });
        // Once the first is done, the next waits for the shed's work too: 100 + 50 + 100 ms.
        match q.admit(t0 + Duration::from_millis(120), 1.0) {
            Admission::Queued { finish } => assert_eq!(finish - t0, Duration::from_millis(250)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_idle_server_starts_at_once() {
        let t0 = Instant::now();
        let mut q = CapacityQueue::new(capacity(0, None), t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(q.admit(later, 1.0), Admission::Queued { finish: later + Duration::from_millis(100) });
        // queue_max 0: nothing may wait behind the one in service.
        assert_eq!(q.admit(later, 1.0), Admission::Shed { retry_after_seconds: None });
    }
}
