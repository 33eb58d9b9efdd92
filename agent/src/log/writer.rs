//! Where log lines go (stderr), written so that a failed write can never stop the agent.
//!
//! `redflag-agent 2>&1 | head -c 50`, a `| logger` that exits, a container whose log pipe goes
//! away: from then on every write to stderr fails with EPIPE. tracing-subscriber would report
//! that with `eprintln!`, which panics on the same closed stderr and kills the process. So the
//! subscriber writes through [`LogOutput`], whose writer always says "written": a line that
//! cannot be written is dropped and counted ([`dropped_lines`], also shown by
//! `redflag-agent status` from the status file). When a write works again after a loss (a full
//! disk that was cleared, a pipe that was only busy), one line first reports how many lines were
//! lost and why, in the log's own format. SIGPIPE itself is ignored (Rust does that before
//! `main`; `cli/signals.rs` makes sure), so a closed pipe is an error code here, never a signal.
//!
//! One line per `write` call: tracing-subscriber formats a whole event into a buffer and hands
//! it over with one `write_all`, which is what makes "lines" countable here.

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tracing_subscriber::fmt::MakeWriter;

use crate::log::format::LogFormat;

/// Lines dropped since the process started.
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);
/// Lines dropped since the last report of a loss, and the first error among them.
static UNREPORTED: Mutex<(u64, Option<String>)> = Mutex::new((0, None));

/// Log lines that could not be written since the agent started.
pub fn dropped_lines() -> u64 {
    DROPPED_LINES.load(Ordering::Relaxed)
}

/// The subscriber's writer factory: stderr, errors swallowed and counted.
#[derive(Debug, Clone, Copy)]
pub struct LogOutput {
    pub format: LogFormat,
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { format: self.format }
    }
}

/// Writes each buffer it is given to stderr as one line; never returns an error.
#[derive(Debug)]
pub struct LineWriter {
    format: LogFormat,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_line(self.format, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one complete line (with its newline) to stderr. On failure the line is dropped and
/// counted; after a loss, the next successful write is preceded by one line reporting it.
pub fn write_line(format: LogFormat, line: &[u8]) {
    write_line_to(&mut io::stderr().lock(), format, line);
}

fn write_line_to(out: &mut impl Write, format: LogFormat, line: &[u8]) {
    let mut unreported = UNREPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if unreported.0 > 0 {
        let note = loss_note(format, unreported.0, unreported.1.as_deref().unwrap_or("unknown error"));
        match out.write_all(note.as_bytes()) {
            Ok(()) => *unreported = (0, None),
            Err(_) => {
                // Still failing: this line is lost too.
                unreported.0 += 1;
                DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    if let Err(e) = out.write_all(line) {
        unreported.0 += 1;
        unreported.1.get_or_insert_with(|| e.to_string());
        DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
    }
}

/// The line reporting a loss, in the log's format.
fn loss_note(format: LogFormat, lines: u64, error: &str) -> String {
    let message = format!("{lines} log line(s) were dropped because writing the log failed ({error}); the agent kept running");
    line_in_format(format, "WARN", "log_lines_dropped", &message, &[("dropped", serde_json::Value::from(lines))])
}

/// One log line written outside tracing (start-up errors, loss reports), in the same shape as
/// the subscriber's: `TIMESTAMP  LEVEL message` or a flat JSON object carrying `event`.
pub fn line_in_format(
    format: LogFormat,
    level: &str,
    event: &str,
    message: &str,
    fields: &[(&str, serde_json::Value)],
) -> String {
    let timestamp = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
    match format {
        LogFormat::Text => format!("{timestamp} {level:>5} {}\n", crate::log::events::Untrusted(message)),
        LogFormat::Json => {
            let mut map = serde_json::Map::new();
            map.insert("timestamp".into(), timestamp.into());
            map.insert("level".into(), level.into());
            map.insert("message".into(), message.into());
            map.insert("event".into(), event.into());
            for (k, v) in fields {
                map.insert((*k).to_string(), v.clone());
            }
            map.insert("target".into(), "redflag_agent".into());
            let mut text = serde_json::Value::Object(map).to_string();
            text.push('\n');
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails every write until `ok` is set.
    struct Flaky {
        ok: bool,
        got: Vec<u8>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.ok {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.got.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lost_lines_are_counted_and_reported_once_when_writing_works_again() {
        let mut out = Flaky { ok: false, got: Vec::new() };
        let before = dropped_lines();
        for _ in 0..3 {
            write_line_to(&mut out, LogFormat::Json, b"{\"event\":\"x\"}\n");
        }
        assert_eq!(dropped_lines() - before, 3);
        out.ok = true;
        write_line_to(&mut out, LogFormat::Json, b"{\"event\":\"y\"}\n");
        write_line_to(&mut out, LogFormat::Json, b"{\"event\":\"z\"}\n");
        let text = String::from_utf8(out.got).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["event"], "log_lines_dropped");
        assert_eq!(lines[0]["dropped"], 3);
        assert!(lines[0]["message"].as_str().unwrap().contains("Broken pipe") || lines[0]["message"].as_str().unwrap().contains("broken pipe"));
        assert_eq!(lines[1]["event"], "y");
        assert_eq!(lines[2]["event"], "z");
    }
}
