//! Trace files of the live mode's own processes (`serve`, `proxy`): written as they go, read
//! back and merged by the orchestrator.
//!
//! The models record into a [`TraceSink`] (in memory). A process that can be killed with
//! SIGKILL at any moment must not keep its lines there, so [`spawn_flusher`] appends them to the
//! `--trace` file every [`FLUSH_INTERVAL`], one `write` per batch, and [`flush`] writes the rest
//! on a clean exit. A SIGKILL loses at most the last interval's lines (requests answered in the
//! last few milliseconds before the kill), as a real server loses its unflushed access log.
//! A restarted process appends to the same file.
//!
//! Lines carry `t_ms` in Unix milliseconds (`TraceSink::new(0)`); [`read`] shifts them to
//! milliseconds since the run started.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::trace::{Record, TraceSink, write_jsonl};

/// How often a process appends its new trace lines.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Longest trace line read back; longer ones are skipped.
pub const LINE_MAX_BYTES: usize = 64 * 1024;

/// Opens `path` for appending (created if missing).
pub fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("cannot open trace file {}: {e}", path.display()))
}

/// Appends every record the sink holds to `file` in one write.
pub fn flush(sink: &TraceSink, file: &mut File) -> Result<(), String> {
    let records = sink.take();
    if records.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::with_capacity(records.len() * 128);
    write_jsonl(&records, &mut buf).map_err(|e| format!("cannot encode trace lines: {e}"))?;
    file.write_all(&buf).map_err(|e| format!("cannot append to the trace file: {e}"))
}

/// Appends the sink's lines to `path` every [`FLUSH_INTERVAL`] until the task is dropped; with
/// no path, just empties the sink so it does not grow. Must run inside a tokio `LocalSet`.
pub fn spawn_flusher(sink: TraceSink, path: Option<PathBuf>) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut file = path.as_deref().map(open_append).transpose()?;
    Ok(tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            match file.as_mut() {
                Some(f) => {
                    if let Err(e) = flush(&sink, f) {
                        tracing::warn!("{e}");
                    }
                }
                None => drop(sink.take()),
            }
        }
    }))
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub records: Vec<Record>,
    /// Lines that were not trace records (cut short by a kill, too long), skipped.
    pub skipped: usize,
    /// Lines beyond `records_max`, not read.
    pub dropped: usize,
}

/// Reads a trace file written by [`spawn_flusher`], shifting `t_ms` by `origin_unix_ms`
/// (records before the origin get 0). A missing file reads as empty (the process never
/// answered a request). At most `records_max` records are kept.
pub fn read(path: &Path, origin_unix_ms: u64, records_max: usize) -> Result<ReadBack, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadBack::default()),
        Err(e) => return Err(format!("cannot read trace file {}: {e}", path.display())),
    };
    let mut out = ReadBack::default();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = super::agent_log::read_line_bounded(&mut reader, &mut line, LINE_MAX_BYTES)
            .map_err(|e| format!("cannot read trace file {}: {e}", path.display()))?;
        let Some(complete) = n else { break };
        if !complete {
            out.skipped += 1;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(mut r) if out.records.len() < records_max => {
                r.t_ms = r.t_ms.saturating_sub(origin_unix_ms);
                out.records.push(r);
            }
            Ok(_) => out.dropped += 1,
            Err(_) => out.skipped += 1,
        }
    }
    Ok(out)
}
