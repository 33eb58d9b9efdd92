//! The result outbox (`state_dir/outbox.json`): command results waiting for the server's 2xx.
//!
//! A result is written here (atomically, fsync'd, through the loop's [`Store`]) before it is
//! sent, and leaves only when the server answered 2xx to it (or refused it for good), so a
//! result produced while the server is down, or while the agent is being killed, is delivered
//! later. The loop posts them oldest first, under the same resilience strategy and breaker as
//! its check-ins (`checkin/`).
//!
//! Bounded by count ([`OUTBOX_RESULTS_MAX`]) and bytes ([`OUTBOX_BYTES_MAX`], as sent): when a new
//! result does not fit, the oldest go, and the loop logs an error naming each command dropped.
//! If a write fails (disk full), the result is still kept in memory and sent: losing it would
//! be worse than not having it on disk.
//!
//! A corrupt or truncated outbox is moved aside as `outbox.json.corrupt` and replaced by an
//! empty one; the loop then puts back every result the journal still holds as undelivered.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::commands::journal::{Corrupt, Saved};
use crate::server::protocol::{RESULT_OUTPUT_MAX_BYTES, UpdateLogRequest};
use crate::store::Store;

/// The outbox's file name in `state_dir`.
pub const OUTBOX_FILE: &str = "outbox.json";
/// Results the outbox holds at most.
pub const OUTBOX_RESULTS_MAX: usize = 1000;
/// Bytes of results (as sent) the outbox holds at most.
pub const OUTBOX_BYTES_MAX: usize = 1024 * 1024;
/// The largest result a command can produce, as sent: `stdout` and `stderr` cut to
/// [`RESULT_OUTPUT_MAX_BYTES`] each (JSON escaping can at most sextuple a byte, `\u0000`), an
/// id and a type of at most 256 bytes each, and the rest of the object.
pub const RESULT_ENCODED_MAX_BYTES: usize = 2 * 6 * RESULT_OUTPUT_MAX_BYTES + 2 * 6 * 256 + 256;

const FORMAT: &str = "redflag-agent-outbox/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxFile {
    format: String,
    results: Vec<UpdateLogRequest>,
}

/// Results waiting for delivery, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    results: VecDeque<UpdateLogRequest>,
    /// Sum of the results' sizes as sent.
    bytes: usize,
}

impl Outbox {
    /// Reads the outbox from `store`; a corrupt one is moved aside and replaced by an empty one.
    pub fn load<S: Store + ?Sized>(store: &mut S) -> (Outbox, Option<Corrupt>) {
        super::journal::load_or_set_aside(store, OUTBOX_FILE, Outbox::parse)
    }

    /// Parses and checks an outbox file: format tag, non-empty unique ids, within the bounds.
    pub fn parse(bytes: &[u8]) -> Result<Outbox, String> {
        let file: OutboxFile = serde_json::from_slice(bytes).map_err(|e| format!("not an outbox file: {e}"))?;
        if file.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", file.format));
        }
        let mut outbox = Outbox::default();
        for (i, r) in file.results.into_iter().enumerate() {
            if r.command_id.is_empty() {
                return Err(format!("results[{i}]: empty command id"));
            }
            if outbox.contains(&r.command_id) {
                return Err(format!("results[{i}]: command {} appears twice", r.command_id));
            }
            outbox.bytes += r.encoded_len();
            outbox.results.push_back(r);
        }
        if outbox.results.len() > OUTBOX_RESULTS_MAX || outbox.bytes > OUTBOX_BYTES_MAX {
            return Err(format!("{} results in {} bytes, more than the outbox holds", outbox.results.len(), outbox.bytes));
        }
        Ok(outbox)
    }

    fn save<S: Store + ?Sized>(&self, store: &mut S) -> Result<Saved, String> {
        #[derive(Serialize)]
        struct Out<'a> {
            format: &'a str,
            results: &'a VecDeque<UpdateLogRequest>,
        }
        let mut bytes = serde_json::to_vec(&Out { format: FORMAT, results: &self.results }).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        store.save_state(OUTBOX_FILE, &bytes)?;
        Ok(Saved { entries: self.results.len() as u32, bytes: bytes.len() as u64 })
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Bytes of results held, as sent.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: &str) -> bool {
        self.results.iter().any(|r| r.command_id == id)
    }

    /// The oldest result.
    pub fn front(&self) -> Option<&UpdateLogRequest> {
        self.results.front()
    }

    /// Adds a result (a second one for the same command is ignored) and writes the outbox.
    /// Returns the ids of the oldest results dropped to make room, and the save's outcome (on
    /// `Err` the result is still held in memory).
    pub fn push<S: Store + ?Sized>(&mut self, result: UpdateLogRequest, store: &mut S) -> (Vec<String>, Result<Saved, String>) {
        let dropped = self.push_unsaved(result);
        let saved = self.save(store);
        (dropped, saved)
    }

    /// [`Outbox::push`] without the write, for a run of results written once with
    /// [`Outbox::save_now`]. Safe only for results the journal already holds as `done` and
    /// undelivered: a crash before the write loses nothing, since start-up puts every such
    /// result back in the outbox.
    pub fn push_unsaved(&mut self, result: UpdateLogRequest) -> Vec<String> {
        if self.contains(&result.command_id) {
            return Vec::new();
        }
        self.bytes += result.encoded_len();
        self.results.push_back(result);
        let mut dropped = Vec::new();
        while self.results.len() > 1 && (self.results.len() > OUTBOX_RESULTS_MAX || self.bytes > OUTBOX_BYTES_MAX) {
            if let Some(old) = self.results.pop_front() {
                self.bytes -= old.encoded_len();
                dropped.push(old.command_id);
            }
        }
        dropped
    }

    /// Writes the outbox as it is in memory.
    pub fn save_now<S: Store + ?Sized>(&self, store: &mut S) -> Result<Saved, String> {
        self.save(store)
    }

    /// Whether one more result of the largest size a command can produce fits without dropping
    /// the oldest: a command is not started when its result would push another one out.
    pub fn has_room(&self) -> bool {
        self.has_room_for(1)
    }

    /// Whether `n` more results of the largest size fit without dropping the oldest.
    pub fn has_room_for(&self, n: usize) -> bool {
        self.results.len().saturating_add(n) <= OUTBOX_RESULTS_MAX
            && self.bytes.saturating_add(n.saturating_mul(RESULT_ENCODED_MAX_BYTES)) <= OUTBOX_BYTES_MAX
    }

    /// Removes the result of `id` without the write (a delivery round writes once at its end,
    /// with [`Outbox::save_now`]). `true` when it was there.
    pub fn remove_unsaved(&mut self, id: &str) -> bool {
        let Some(i) = self.results.iter().position(|r| r.command_id == id) else { return false };
        if let Some(r) = self.results.remove(i) {
            self.bytes -= r.encoded_len();
        }
        true
    }

    /// Removes the results of `ids` (a delivery round's) with one write.
    pub fn remove_all<S: Store + ?Sized>(&mut self, ids: &[String], store: &mut S) -> Result<Saved, String> {
        let ids: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let before = self.results.len();
        let mut bytes = self.bytes;
        self.results.retain(|r| {
            let keep = !ids.contains(r.command_id.as_str());
            if !keep {
                bytes -= r.encoded_len();
            }
            keep
        });
        self.bytes = bytes;
        if self.results.len() == before {
            return Ok(Saved { entries: before as u32, bytes: 0 });
        }
        self.save(store)
    }

    /// Removes the result of command `id` (delivered, or refused for good) and writes the outbox.
    pub fn remove<S: Store + ?Sized>(&mut self, id: &str, store: &mut S) -> Result<Saved, String> {
        let Some(i) = self.results.iter().position(|r| r.command_id == id) else {
            return Ok(Saved { entries: self.results.len() as u32, bytes: 0 });
        };
        if let Some(r) = self.results.remove(i) {
            self.bytes -= r.encoded_len();
        }
        self.save(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::protocol::RESULT_FAILED;
    use crate::store::MemoryStore;

    fn result(id: &str, stdout_bytes: usize) -> UpdateLogRequest {
        UpdateLogRequest {
            command_id: id.into(),
            action: "scan_updates".into(),
            result: RESULT_FAILED.into(),
            stdout: "x".repeat(stdout_bytes),
            stderr: String::new(),
            exit_code: 1,
            duration_seconds: 0,
        }
    }

    #[test]
    fn results_survive_a_reload_and_leave_when_removed() {
        let mut store = MemoryStore::default();
        let mut o = Outbox::default();
        assert!(o.push(result("a", 0), &mut store).1.is_ok());
        o.push(result("b", 0), &mut store).1.unwrap();
        o.push(result("a", 0), &mut store).1.unwrap();
        assert_eq!(o.len(), 2, "a second result for a command is ignored");
        let (again, corrupt) = Outbox::load(&mut store);
        assert_eq!(corrupt, None);
        assert_eq!(again, o);
        o.remove("a", &mut store).unwrap();
        assert_eq!(Outbox::load(&mut store).0.front().map(|r| r.command_id.as_str()), Some("b"));
    }

    #[test]
    fn the_oldest_results_go_when_the_count_bound_is_reached() {
        let mut store = MemoryStore::default();
        let mut o = Outbox::default();
        let mut dropped = Vec::new();
        for i in 0..OUTBOX_RESULTS_MAX + 7 {
            dropped.extend(o.push(result(&format!("c{i}"), 0), &mut store).0);
        }
        assert_eq!(o.len(), OUTBOX_RESULTS_MAX);
        assert_eq!(dropped, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
        assert_eq!(o.front().unwrap().command_id, "c7");
        assert!(store.files[OUTBOX_FILE].len() <= OUTBOX_BYTES_MAX + 1024);
    }

    #[test]
    fn the_oldest_results_go_when_the_byte_bound_is_reached() {
        let mut store = MemoryStore::default();
        let mut o = Outbox::default();
        let mut dropped = 0;
        for i in 0..300 {
            dropped += o.push(result(&format!("c{i}"), 8 * 1024), &mut store).0.len();
        }
        assert!(o.bytes() <= OUTBOX_BYTES_MAX, "{} bytes", o.bytes());
        assert!(dropped > 0 && o.len() + dropped == 300);
        assert_eq!(Outbox::load(&mut store).0.bytes(), o.bytes());
    }

    #[test]
    fn a_run_of_results_is_written_once_and_room_is_kept_for_the_largest() {
        let mut store = MemoryStore::default();
        let mut o = Outbox::default();
        for i in 0..10 {
            assert!(o.push_unsaved(result(&format!("c{i}"), 0)).is_empty());
        }
        assert!(!store.files.contains_key(OUTBOX_FILE));
        o.save_now(&mut store).unwrap();
        assert_eq!(Outbox::load(&mut store).0.len(), 10);
        o.remove_all(&["c1".into(), "c5".into(), "nope".into()], &mut store).unwrap();
        assert_eq!(Outbox::load(&mut store).0, o);
        assert_eq!((o.len(), o.bytes()), (8, (0..8).map(|_| result("c0", 0).encoded_len()).sum()));
        // Room: while the largest result would not push another out.
        let biggest = UpdateLogRequest {
            command_id: "i".repeat(256),
            action: "\u{0}".repeat(256),
            stderr: "\u{0}".repeat(RESULT_OUTPUT_MAX_BYTES),
            ..result("big", RESULT_OUTPUT_MAX_BYTES)
        };
        assert!(biggest.encoded_len() <= RESULT_ENCODED_MAX_BYTES, "{}", biggest.encoded_len());
        let mut full = Outbox::default();
        while full.has_room() {
            let mut probe = full.clone();
            assert!(probe.push_unsaved(biggest.clone()).is_empty(), "the largest result pushed another out although there was room");
            assert!(full.push_unsaved(result(&format!("r{}", full.len()), RESULT_OUTPUT_MAX_BYTES)).is_empty());
        }
        assert!(full.len() > 50, "room ran out after {} results", full.len());
    }

    #[test]
    fn corrupt_and_truncated_outboxes_are_moved_aside() {
        let mut good = MemoryStore::default();
        let mut o = Outbox::default();
        o.push(result("a", 10), &mut good).1.unwrap();
        let bytes = good.files[OUTBOX_FILE].clone();
        for (what, bad) in [
            ("truncated", bytes[..bytes.len() - 5].to_vec()),
            ("garbage", b"\xff\xfe".to_vec()),
            ("wrong format", br#"{"format":"x","results":[]}"#.to_vec()),
            ("empty id", br#"{"format":"redflag-agent-outbox/1","results":[{"command_id":"","action":"a","result":"failed"}]}"#.to_vec()),
        ] {
            let mut store = MemoryStore::default();
            store.files.insert(OUTBOX_FILE.into(), bad.clone());
            let (o, corrupt) = Outbox::load(&mut store);
            assert!(corrupt.is_some(), "{what}: not detected");
            assert!(o.is_empty());
            assert_eq!(store.files.get("outbox.json.corrupt"), Some(&bad), "{what}");
        }
    }
}
