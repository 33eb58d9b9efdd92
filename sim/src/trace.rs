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
#[derive(Clone, Default)]
pub struct TraceSink {
    records: Arc<Mutex<Vec<Record>>>,
    /// Subtracted from `clock::unix_now_ms()` to give `t_ms`: the run's start.
    origin_unix_ms: u64,
}

impl TraceSink {
    /// A sink whose `t_ms` counts from `origin_unix_ms` (see [`crate::clock::unix_now_ms`]).
    pub fn new(origin_unix_ms: u64) -> Self {
        TraceSink { records: Arc::default(), origin_unix_ms }
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
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every record so far, leaving the sink empty.
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

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
}
