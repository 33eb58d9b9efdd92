//! The run trace: one JSON object per line, in the order things happened.
//!
//! Every line has `t_ms` (simulated milliseconds since the run started; in live mode, wall
//! milliseconds since the run started), `host`, optionally `agent`, `event`, and the event's
//! details. Agent events are the agent's own [`redflag_agent::log::events::Event`] values, unchanged;
//! the harness adds fault, host and request events ([`SimEvent`]).
//!
//! The expectations in `judge/` read the trace, nothing else, which is why the simulation and
//! the live mode judge a scenario identically. The same seed must give the same bytes, so the
//! trace holds no wall-clock time, no addresses that vary and no `HashMap` iteration.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use redflag_agent::log::events::Event;
use serde::{Deserialize, Serialize};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub t_ms: u64,
    pub host: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Arc<str>>,
    #[serde(flatten)]
    pub event: TraceEvent,
}

/// An agent's own event, or one the harness observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceEvent {
    Agent(Event),
    Sim(SimEvent),
}

/// What the harness itself records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SimEvent {
    RunStarted { scenario: String, seed: u64, agents: u32, hosts: u32 },
    /// Fault number `fault` (its index in the scenario file) took effect.
    FaultApplied { fault: usize, action: String, target: String },
    /// Fault number `fault`'s duration ended and its effect was reverted.
    FaultEnded { fault: usize, action: String, target: String },
    HostCrashed,
    HostRestarted,
    /// The server model answered a request.
    ServerRequest { method: String, path: String, status: u16 },
    /// The proxy answered a request; `upstream` says what happened behind it
    /// (`ok`, `refused`, `timeout`, `reset`, `injected`, ...).
    ProxyRequest { method: String, path: String, status: u16, upstream: String },
    /// Under a finite server capacity, one request's fate in the server's queue, at the time its
    /// work ended (or it was shed): `cost` in work units, `queued_ms` from arrival to that time.
    ServerWork { outcome: WorkOutcome, cost: f64, queued_ms: u64 },
    /// An agent loop returned or panicked. Must never happen.
    LoopEnded { reason: String },
    RunEnded,
    /// The harness queued a command for `agent` at the server (the database accepted it).
    CommandQueued { id: String, kind: String },
    /// The server put a command in a check-in answer (`delivery`: 1 the first time, 2 on the
    /// first redelivery, ...). The answer may still be lost on its way.
    CommandDelivered { id: String, delivery: u32 },
    /// A check-in's `acknowledged_commands` reached the server (at-least-once delivery only).
    CommandAcknowledged { id: String },
    /// The server received a result (`success`/`failed`); `duplicate`: it already had one, kept
    /// the first and answered 200.
    CommandResult { id: String, result: String, duplicate: bool },
}

impl Record {
    /// The `event` name of this line.
    pub fn name(&self) -> &'static str {
        match &self.event {
            TraceEvent::Agent(e) => e.name(),
            TraceEvent::Sim(e) => e.name(),
        }
    }

    pub fn agent_event(&self) -> Option<&Event> {
        match &self.event {
            TraceEvent::Agent(e) => Some(e),
            TraceEvent::Sim(_) => None,
        }
    }

    pub fn sim_event(&self) -> Option<&SimEvent> {
        match &self.event {
            TraceEvent::Sim(e) => Some(e),
            TraceEvent::Agent(_) => None,
        }
    }
}

impl SimEvent {
    pub fn name(&self) -> &'static str {
        match self {
            SimEvent::RunStarted { .. } => "run_started",
            SimEvent::FaultApplied { .. } => "fault_applied",
            SimEvent::FaultEnded { .. } => "fault_ended",
            SimEvent::HostCrashed => "host_crashed",
            SimEvent::HostRestarted => "host_restarted",
            SimEvent::ServerRequest { .. } => "server_request",
            SimEvent::ProxyRequest { .. } => "proxy_request",
            SimEvent::ServerWork { .. } => "server_work",
            SimEvent::LoopEnded { .. } => "loop_ended",
            SimEvent::RunEnded => "run_ended",
            SimEvent::CommandQueued { .. } => "command_queued",
            SimEvent::CommandDelivered { .. } => "command_delivered",
            SimEvent::CommandAcknowledged { .. } => "command_acknowledged",
            SimEvent::CommandResult { .. } => "command_result",
        }
    }
}

/// What became of a request at a server with finite capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOutcome {
    /// Worked on and answered to a client that still waited (goodput).
    Served,
    /// Refused at once with 503: the queue was full. No work done.
    Shed,
    /// Worked on, but its client had gone (timed out or closed) before the answer.
    Wasted,
}

/// Where every part of a run writes its trace lines. Cheap to clone; shared by all hosts of a
/// simulation (which run on one thread, so the lock is never contended; it is a `Mutex` only
/// because axum state must be `Send + Sync`).
///
/// Lines arrive nearly, not exactly, in time order: hosts run one after another within a step,
/// each through its whole tick, and wasted server work is recorded at its (later) finish time.
/// The trace is the lines in time order, same-time lines in arrival order (a stable sort).
/// [`TraceSink::drain_before`] hands out, in that order, the lines older than a time no later
/// line can be older than (the simulation's current time), so a run can write and judge its
/// trace as it goes and hold only the last step's lines, not the whole trace.
#[derive(Clone, Default)]
pub struct TraceSink {
    inner: Arc<Mutex<Pending>>,
    /// Subtracted from `clock::unix_now_ms()` to give `t_ms`: the run's start.
    origin_unix_ms: u64,
}

/// Lines not yet handed out.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    /// Times a line may still be written at although they are already past (see
    /// [`TraceSink::hold`]), with how many holders each.
    holds: BTreeMap<u64, u32>,
    /// Every line handed out so far was older than this.
    drained_before_ms: u64,
    /// Lines that arrived older than `drained_before_ms`: they cannot take their place in the
    /// trace any more (a harness bug; [`TraceSink::late`] reports them).
    late: u64,
}

impl TraceSink {
    /// A sink whose `t_ms` counts from `origin_unix_ms` (see [`crate::clock::unix_now_ms`]).
    pub fn new(origin_unix_ms: u64) -> Self {
        TraceSink { inner: Arc::default(), origin_unix_ms }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since the run started, by the clock of whoever is calling: simulated time
    /// inside a turmoil host, the system clock outside.
    pub fn now_ms(&self) -> u64 {
        crate::clock::unix_now_ms().saturating_sub(self.origin_unix_ms)
    }

    /// Records an event now.
    pub fn record(&self, host: &Arc<str>, agent: Option<&Arc<str>>, event: TraceEvent) {
        let t_ms = self.now_ms();
        self.record_at(t_ms, host, agent, event);
    }

    /// Records an event at a given time (the world uses this between simulation steps, where
    /// there is no current host to read the clock from).
    pub fn record_at(&self, t_ms: u64, host: &Arc<str>, agent: Option<&Arc<str>>, event: TraceEvent) {
        let rec = Record { t_ms, host: host.clone(), agent: agent.cloned(), event };
        let mut pending = self.pending();
        if t_ms < pending.drained_before_ms {
            pending.late += 1;
        }
        pending.records.push(rec);
    }

    /// Lines not yet handed out.
    pub fn len(&self) -> usize {
        self.pending().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every line not yet handed out, in arrival order, leaving the sink empty (the live
    /// mode's processes append them to a file; the orchestrator puts the files in order).
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut self.pending().records)
    }

    /// Promises a line at `t_ms` may still come, even once `t_ms` is past: until the returned
    /// hold is dropped, [`TraceSink::drain_before`] hands out nothing at or after `t_ms`. (The
    /// server's queue records wasted work at the time the work would have finished, which is
    /// known when the request is admitted and may be long past when its client is found gone.)
    pub fn hold(&self, t_ms: u64) -> TraceHold {
        *self.pending().holds.entry(t_ms).or_insert(0) += 1;
        TraceHold { sink: self.clone(), t_ms }
    }

    /// Moves the lines older than `before_ms` (and than every [`TraceSink::hold`]) into `out`,
    /// in trace order (by time, same-time lines in arrival order). The caller promises that no
    /// line older than `before_ms` will arrive any more, holds aside; one that does is counted
    /// by [`TraceSink::late`].
    pub fn drain_before(&self, before_ms: u64, out: &mut Vec<Record>) {
        let mut pending = self.pending();
        let pending = &mut *pending;
        let before_ms = pending.holds.keys().next().map_or(before_ms, |&held| held.min(before_ms));
        // What is left from earlier calls is in order and older than what arrived since, so
        // this stable sort keeps the trace's order; the lines are nearly sorted, which the
        // standard library's sort detects (it costs little more than a pass).
        if !pending.records.is_sorted_by_key(|r| r.t_ms) {
            pending.records.sort_by_key(|r| r.t_ms);
        }
        let n = pending.records.partition_point(|r| r.t_ms < before_ms);
        out.extend(pending.records.drain(..n));
        pending.drained_before_ms = pending.drained_before_ms.max(before_ms);
    }

    /// Lines that arrived after lines newer than them had been handed out. Always 0 unless the
    /// harness broke its promise to [`TraceSink::drain_before`].
    pub fn late(&self) -> u64 {
        self.pending().late
    }
}

/// A line that may still be written at a time already past: see [`TraceSink::hold`].
pub struct TraceHold {
    sink: TraceSink,
    t_ms: u64,
}

impl Drop for TraceHold {
    fn drop(&mut self) {
        let mut pending = self.sink.pending();
        if let Some(n) = pending.holds.get_mut(&self.t_ms) {
            *n -= 1;
            if *n == 0 {
                pending.holds.remove(&self.t_ms);
            }
        }
    }
}

/// Writes a trace as JSON Lines while a run goes, line by line, through a buffer. A write error
/// stops the writing (the run goes on) and is kept for [`TraceWriter::finish`].
pub struct TraceWriter {
    path: std::path::PathBuf,
    out: Option<io::BufWriter<std::fs::File>>,
    lines: u64,
    error: Option<String>,
}

impl TraceWriter {
    /// Creates the file at `path` (and its folder). An error is kept, not returned: the run
    /// still goes on and is reported; [`TraceWriter::finish`] returns it.
    pub fn create(path: &std::path::Path) -> Self {
        let opened = (|| {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        })();
        let (out, error) = match opened {
            Ok(f) => (Some(io::BufWriter::with_capacity(TRACE_WRITE_BUFFER_BYTES, f)), None),
            Err(e) => (None, Some(e)),
        };
        TraceWriter { path: path.to_path_buf(), out, lines: 0, error }
    }

    /// Writes one line.
    pub fn write(&mut self, r: &Record) {
        let Some(out) = &mut self.out else { return };
        let written = serde_json::to_writer(&mut *out, r).map_err(io::Error::from).and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => self.lines += 1,
            Err(e) => {
                self.error = Some(format!("cannot write {}: {e}", self.path.display()));
                self.out = None;
            }
        }
    }

    /// Flushes the file: the number of lines written, or the first error.
    pub fn finish(mut self) -> Result<u64, String> {
        if let Some(mut out) = self.out.take() {
            if let Err(e) = out.flush() {
                return Err(format!("cannot write {}: {e}", self.path.display()));
            }
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.lines),
        }
    }
}

/// The trace file's write buffer.
const TRACE_WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Writes records as JSON Lines.
pub fn write_jsonl<W: Write>(records: &[Record], mut out: W) -> io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes records as a JSON Lines file at `path`, creating its folder if needed.
pub fn write_jsonl_file(path: &std::path::Path, records: &[Record]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    write_jsonl(records, io::BufWriter::new(file)).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads JSON Lines back (used by tests and by the live mode's merge of process traces).
pub fn read_jsonl(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("trace line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redflag_agent::log::events::RequestKind;

    #[test]
    fn lines_round_trip() {
        let host: Arc<str> = "agents-0".into();
        let agent: Arc<str> = "agent-0".into();
        let records = vec![
            Record {
                t_ms: 5,
                host: host.clone(),
                agent: Some(agent.clone()),
                event: TraceEvent::Agent(Event::RequestStarted { kind: RequestKind::Health }),
            },
            Record {
                t_ms: 6,
                host: "server".into(),
                agent: Some(agent),
                event: TraceEvent::Sim(SimEvent::ServerRequest { method: "GET".into(), path: "/health".into(), status: 200 }),
            },
            Record { t_ms: 7, host, agent: None, event: TraceEvent::Sim(SimEvent::HostCrashed) },
        ];
        let mut buf = Vec::new();
        write_jsonl(&records, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with(r#"{"t_ms":5,"host":"agents-0","agent":"agent-0","event":"request_started","kind":"health"}"#), "{text}");
        assert_eq!(read_jsonl(&text).unwrap(), records);
    }

    /// A line told apart by `n`.
    fn line(n: u16) -> TraceEvent {
        TraceEvent::Sim(SimEvent::ServerRequest { method: "GET".into(), path: "/".into(), status: n })
    }

    #[test]
    fn draining_in_steps_gives_the_stable_sort_of_the_whole() {
        // Lines as a world writes them: each step's a little out of order, some (wasted work)
        // far in the future, same-time lines from different steps.
        let arrivals: &[(u64, &[u64])] =
            &[(10, &[3, 1, 10, 40]), (20, &[10, 12, 11, 20]), (30, &[20, 25, 22, 35]), (40, &[30, 40, 31])];
        let sink = TraceSink::new(0);
        let host: Arc<str> = "h".into();
        let mut all = Vec::new();
        let mut out = Vec::new();
        let mut n = 0u16;
        for (watermark, times) in arrivals {
            for &t in *times {
                sink.record_at(t, &host, None, line(n));
                all.push(Record { t_ms: t, host: host.clone(), agent: None, event: line(n) });
                n += 1;
            }
            sink.drain_before(*watermark, &mut out);
            assert!(out.iter().all(|r| r.t_ms < *watermark));
        }
        sink.drain_before(u64::MAX, &mut out);
        all.sort_by_key(|r| r.t_ms);
        assert_eq!(out, all);
        assert_eq!(sink.late(), 0);
        assert!(sink.is_empty());
    }

    #[test]
    fn a_hold_keeps_its_time_open_until_dropped() {
        let sink = TraceSink::new(0);
        let host: Arc<str> = "h".into();
        let mut out = Vec::new();
        sink.record_at(5, &host, None, line(0));
        let hold = sink.hold(8);
        sink.record_at(9, &host, None, line(1));
        sink.drain_before(20, &mut out);
        assert_eq!(out.iter().map(|r| r.t_ms).collect::<Vec<_>>(), [5]);
        // The held line comes long after its time, and still takes its place.
        sink.record_at(8, &host, None, line(2));
        drop(hold);
        sink.drain_before(20, &mut out);
        assert_eq!(out.iter().map(|r| r.t_ms).collect::<Vec<_>>(), [5, 8, 9]);
        assert_eq!(sink.late(), 0);
    }

    #[test]
    fn a_line_older_than_what_was_handed_out_is_counted_late() {
        let sink = TraceSink::new(0);
        let host: Arc<str> = "h".into();
        let mut out = Vec::new();
        sink.record_at(5, &host, None, line(0));
        sink.drain_before(10, &mut out);
        sink.record_at(10, &host, None, line(1));
        assert_eq!(sink.late(), 0);
        sink.record_at(9, &host, None, line(2));
        assert_eq!(sink.late(), 1);
    }
}
