//! Reading a real agent's `--log-format json` output back into trace records.
//!
//! `redflag-agent` writes one flat JSON object per log line on stderr:
//! `{"timestamp":"2026-…Z","level":"INFO","message":"…","event":"attempt_failed","agent":"agent-0",
//! …the event's fields…,"target":"…"}`. A line with an `event` field, minus the logging keys
//! (`timestamp`, `level`, `message`, `target`, `agent`), deserializes into the agent's own
//! [`Event`], the same value the simulation traces. Its `timestamp` becomes `t_ms` (milliseconds
//! since the run started), and the record is filed under the agent's name and host as the
//! simulation files it (`agent-N` on `agents-{N % hosts}`).
//!
//! Other lines (config warnings, library debug output, a crash message) are kept, the last few,
//! to explain an agent that exited on its own. Everything is bounded: the line length
//! ([`LINE_MAX_BYTES`]) and the records kept across all agents ([`Collector`]).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redflag_agent::log::events::Event;
use serde_json::Value;

use crate::trace::{Record, TraceEvent};

/// Longest agent log line parsed; longer lines are skipped (no event line comes close).
pub const LINE_MAX_BYTES: usize = 64 * 1024;
/// Non-event lines kept per agent, to explain an early exit.
pub const OTHER_LINES_KEPT: usize = 8;
/// The logging keys around an event's own fields.
const LOG_KEYS: [&str; 5] = ["timestamp", "level", "message", "target", "agent"];

/// Reads one line into `buf` (without its newline), keeping at most `max` bytes of it.
/// `Ok(None)`: end of input. `Ok(Some(false))`: the line was longer than `max` and was cut
/// (the rest is consumed and discarded). `Ok(Some(true))`: a whole line.
pub fn read_line_bounded<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    let mut complete = true;
    let mut read_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(complete));
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            complete = false;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok(Some(complete));
        }
    }
}

/// What one log line is.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// An agent event, at Unix milliseconds.
    Event { unix_ms: u64, event: Event },
    /// Anything else worth keeping (a warning, an error, text).
    Other(String),
}

/// Parses one line of `--log-format json` output.
pub fn parse_line(line: &str) -> Line {
    let other = || Line::Other(line.trim().to_string());
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(line) else { return other() };
    if !map.contains_key("event") {
        return other();
    }
    let Some(unix_ms) = map.get("timestamp").and_then(Value::as_str).and_then(rfc3339_unix_ms) else { return other() };
    for key in LOG_KEYS {
        map.remove(key);
    }
    match serde_json::from_value::<Event>(Value::Object(map)) {
        Ok(event) => Line::Event { unix_ms, event },
        Err(_) => other(),
    }
}

/// `2026-01-05T12:34:56.123456Z` as Unix milliseconds.
pub fn rfc3339_unix_ms(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_millis()).ok()
}

/// Where every agent reader thread puts its records, up to a total.
#[derive(Debug)]
pub struct Collector {
    records: Vec<Record>,
    records_max: usize,
    /// Records not kept because the total was reached.
    pub dropped: usize,
}

impl Collector {
    pub fn new(records_max: usize) -> Arc<Mutex<Collector>> {
        Arc::new(Mutex::new(Collector { records: Vec::new(), records_max, dropped: 0 }))
    }

    fn push(&mut self, r: Record) {
        if self.records.len() < self.records_max {
            self.records.push(r);
        } else {
            self.dropped += 1;
        }
    }

    pub fn take(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }
}

/// One agent process's stderr, being read on its own thread.
pub struct AgentLogReader {
    thread: JoinHandle<()>,
    /// The last non-event lines, newest last.
    pub other_lines: Arc<Mutex<VecDeque<String>>>,
}

impl AgentLogReader {
    /// Starts reading `stderr` until it ends (the process exited). Records get `t_ms` relative
    /// to `origin_unix_ms`.
    pub fn spawn<R: Read + Send + 'static>(
        stderr: R,
        host: Arc<str>,
        agent: Arc<str>,
        origin_unix_ms: u64,
        collector: Arc<Mutex<Collector>>,
    ) -> io::Result<AgentLogReader> {
        let other_lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let others = other_lines.clone();
        let thread = std::thread::Builder::new().name(format!("log-{agent}")).spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match read_line_bounded(&mut reader, &mut buf, LINE_MAX_BYTES) {
                    Ok(None) | Err(_) => break,
                    Ok(Some(false)) => continue,
                    Ok(Some(true)) => {}
                }
                let text = String::from_utf8_lossy(&buf);
                if text.trim().is_empty() {
                    continue;
                }
                match parse_line(&text) {
                    Line::Event { unix_ms, event } => {
                        let r = Record {
                            t_ms: unix_ms.saturating_sub(origin_unix_ms),
                            host: host.clone(),
                            agent: Some(agent.clone()),
                            event: TraceEvent::Agent(event),
                        };
                        collector.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                    }
                    Line::Other(s) => {
                        let mut q = others.lock().unwrap_or_else(|p| p.into_inner());
                        if q.len() >= OTHER_LINES_KEPT {
                            q.pop_front();
                        }
                        q.push_back(s);
                    }
                }
            }
        })?;
        Ok(AgentLogReader { thread, other_lines })
    }

    /// Whether the process's stderr has ended and everything was read.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the reader to reach the end of the stream.
    pub fn join(self) {
        let _ = self.thread.join();
    }

    /// The last non-event lines, joined for a message.
    pub fn last_lines(&self) -> String {
        let q = self.other_lines.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// A JSON object's keys other than the logging ones (for tests).
#[cfg(test)]
fn event_keys(map: &serde_json::Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).filter(|k| !LOG_KEYS.contains(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redflag_agent::log::events::RequestKind;
    use serde_json::Map;

    #[test]
    fn event_lines_become_events() {
        let line = r#"{"timestamp":"2026-11-28T16:58:50.127937Z","level":"WARN","message":"check-in failed","event":"attempt_failed","agent":"agent-0","attempt":1,"max_attempts":5,"class":"connection_refused","verdict":"retry","delay_ms":42,"reason":"backoff","consecutive_failures":1,"target":"redflag_agent::log::events"}"#;
        let Line::Event { unix_ms, event } = parse_line(line) else { panic!("not an event") };
        assert_eq!(unix_ms % 1000, 127);
        assert_eq!(rfc3339_unix_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert!(matches!(event, Event::AttemptFailed { attempt: 1, delay_ms: 42, .. }), "{event:?}");
        let line = r#"{"timestamp":"2026-11-28T16:58:50.127513Z","level":"DEBUG","message":"checkin request started","event":"request_started","agent":"agent-0","kind":"checkin","target":"redflag_agent::log::events"}"#;
        assert_eq!(parse_line(line), Line::Event { unix_ms: rfc3339_unix_ms("2026-11-28T16:58:50.127513Z").unwrap(), event: Event::RequestStarted { kind: RequestKind::Checkin } });
        let line = r#"{"timestamp":"2026-11-28T16:58:50.126262Z","level":"INFO","message":"started","event":"agent_started","agent_id":"agent-0","version":"0.1.0","target":"redflag_agent::log::events"}"#;
        assert!(matches!(parse_line(line), Line::Event { event: Event::AgentStarted { .. }, .. }));
        let v: Map<String, Value> = serde_json::from_str(line).unwrap();
        assert_eq!(event_keys(&v), ["event", "agent_id", "version"]);
    }

    #[test]
    fn other_lines_are_kept_as_text() {
        assert_eq!(parse_line("error: bad config"), Line::Other("error: bad config".into()));
        let warn = r#"{"timestamp":"2026-11-28T16:58:50.098750Z","level":"WARN","message":"config: x","target":"redflag_agent"}"#;
        assert!(matches!(parse_line(warn), Line::Other(_)));
        let unknown = r#"{"timestamp":"2026-11-28T16:58:50.098750Z","event":"from_the_future"}"#;
        assert!(matches!(parse_line(unknown), Line::Other(_)));
        let no_time = r#"{"event":"stopped"}"#;
        assert!(matches!(parse_line(no_time), Line::Other(_)));
    }

    #[test]
    fn lines_are_bounded() {
        let input = format!("short\n{}\nlast", "x".repeat(100));
        let mut r = BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(true));
        assert_eq!(buf, b"short");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(false));
        assert_eq!(buf.len(), 10);
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(true));
        assert_eq!(buf, b"last");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), None);
    }
}
