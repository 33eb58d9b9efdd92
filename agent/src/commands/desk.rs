//! The command desk: everything the agent does with commands between receiving one and the
//! server having its result, in one place. It owns the journal (`journal.rs`), the outbox
//! (`outbox.rs`) and the acknowledgements carried by the check-in in flight.
//!
//! The desk performs no network I/O and reads no clock: each method changes the desk, writes
//! through the [`Store`] it is given (atomically, in a fixed order), and returns the events that
//! say what happened, in order, for the loop's driver to emit. Deciding *when* to run commands
//! or post results is the driver's; running one is the runner's (`runner.rs`).
//!
//! The rules it keeps:
//! * a command is journaled (`received`) before it is acknowledged or run, and a command the
//!   journal knows is never run again: a finished one has its stored result re-sent;
//! * a command is journaled `running` before it starts; one found `running` at start-up was
//!   interrupted and is reported `failed`, never run again;
//! * a result is journaled `done` before it enters the outbox, and leaves the outbox only on the
//!   server's 2xx or a refusal for good (400, 413, 422); a full outbox drops its oldest, by name.

use std::time::Duration;

use crate::log::events::Event;
use crate::server::protocol::{ACKNOWLEDGED_COMMANDS_MAX, Command, RESULT_FAILED, RESULT_OUTPUT_MAX_BYTES, UpdateLogRequest, truncate_output};
use crate::store::Store;

use super::journal::{COMMAND_ID_MAX_LEN, Corrupt, Delivery, JOURNAL_FILE, Journal, Saved};
use super::outbox::{OUTBOX_BYTES_MAX, OUTBOX_FILE, OUTBOX_RESULTS_MAX, Outbox};
use super::runner::Execution;

/// The journal, the outbox and the acknowledgements in flight.
#[derive(Debug, Default)]
pub struct Desk {
    /// Every command received, by id (`state_dir/journal.json`).
    journal: Journal,
    /// Results waiting for the server's 2xx (`state_dir/outbox.json`).
    outbox: Outbox,
    /// The acknowledgements the check-in in flight carries.
    acks_in_flight: Vec<String>,
    /// A result entered the outbox since the last delivery began.
    results_added: bool,
}

/// A state file write as an event: `state_saved`, nothing for an unchanged file, or
/// `store_failed` naming `what`.
fn saved(events: &mut Vec<Event>, file: &str, what: &str, outcome: Result<Saved, String>) {
    match outcome {
        Ok(s) if s.bytes > 0 => events.push(Event::StateSaved { file: file.to_string(), entries: s.entries, bytes: s.bytes }),
        Ok(_) => {}
        Err(error) => events.push(Event::StoreFailed { what: what.to_string(), error }),
    }
}

fn corrupt(events: &mut Vec<Event>, corrupt: Option<Corrupt>) {
    if let Some(c) = corrupt {
        events.push(Event::StateCorrupt { file: c.file, error: c.error, moved_to: c.moved_to });
    }
}

impl Desk {
    /// At start-up: reads the journal and the outbox (a corrupt one is moved aside and
    /// replaced), puts back into the outbox every result the journal holds as undelivered, and
    /// reports every command that was running when the agent died as `failed`, never to run
    /// again.
    pub fn recover<S: Store + ?Sized>(store: &mut S) -> (Desk, Vec<Event>) {
        let mut events = Vec::new();
        let (journal, c) = Journal::load(store);
        corrupt(&mut events, c);
        let (outbox, c) = Outbox::load(store);
        corrupt(&mut events, c);
        let mut desk = Desk { journal, outbox, ..Desk::default() };
        for result in desk.journal.undelivered() {
            if !desk.outbox.contains(&result.command_id) {
                desk.queue_result(result, store, &mut events);
            }
        }
        for cmd in desk.journal.running() {
            events.push(Event::CommandInterrupted { id: cmd.id.clone(), kind: cmd.kind.clone() });
            let result = UpdateLogRequest {
                command_id: cmd.id.clone(),
                action: truncate_output(&cmd.kind, COMMAND_ID_MAX_LEN),
                result: RESULT_FAILED.into(),
                stdout: String::new(),
                stderr: "interrupted by agent restart".into(),
                exit_code: 1,
                duration_seconds: 0,
            };
            desk.record_result(result, store, &mut events);
        }
        (desk, events)
    }

    /// One command from a check-in answer: journaled before anything else, or recognised as one
    /// the journal knows (the server sent it again: never run again, a stored result re-sent).
    pub fn take<S: Store + ?Sized>(&mut self, cmd: &Command, store: &mut S) -> Vec<Event> {
        let mut events = vec![Event::CommandReceived { id: cmd.id.clone(), kind: cmd.kind.clone() }];
        if cmd.id.is_empty() || cmd.id.len() > COMMAND_ID_MAX_LEN || cmd.kind.len() > COMMAND_ID_MAX_LEN {
            let reason = format!("a command id must have 1 to {COMMAND_ID_MAX_LEN} bytes, and its type at most {COMMAND_ID_MAX_LEN}");
            events.push(Event::CommandSkipped { id: truncate_output(&cmd.id, 64), kind: truncate_output(&cmd.kind, 64), reason });
            return events;
        }
        let Some(entry) = self.journal.get(&cmd.id) else {
            let outcome = self.journal.receive(cmd, store);
            if let Err(e) = &outcome {
                let reason = format!("not recorded in the journal ({e}); not acknowledged, so the server sends it again");
                events.push(Event::CommandSkipped { id: cmd.id.clone(), kind: cmd.kind.clone(), reason });
            }
            saved(&mut events, JOURNAL_FILE, "journal", outcome);
            return events;
        };
        let (state, stored) = (entry.state, entry.result.clone());
        events.push(Event::CommandDuplicate { id: cmd.id.clone(), kind: cmd.kind.clone(), state: state.as_str().to_string() });
        let outcome = self.journal.redelivered(&cmd.id, store);
        saved(&mut events, JOURNAL_FILE, "journal", outcome);
        if let Some(result) = stored {
            if !self.outbox.contains(&cmd.id) {
                let outcome = self.journal.set_delivery(&cmd.id, Delivery::Pending, store);
                saved(&mut events, JOURNAL_FILE, "journal", outcome);
                self.queue_result(result, store, &mut events);
            }
        }
        events
    }

    /// The acknowledgements for the check-in about to go out: the journaled ids not yet seen
    /// acknowledged (at most [`ACKNOWLEDGED_COMMANDS_MAX`]). They are in flight until that
    /// check-in succeeds ([`Desk::checkin_succeeded`]) or the next one replaces them.
    pub fn acks_for_checkin(&mut self) -> Vec<String> {
        self.acks_in_flight = self.journal.acks(ACKNOWLEDGED_COMMANDS_MAX);
        self.acks_in_flight.clone()
    }

    /// The check-in that carried the acknowledgements in flight succeeded: the server has them.
    pub fn checkin_succeeded<S: Store + ?Sized>(&mut self, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        if self.acks_in_flight.is_empty() {
            return events;
        }
        let acks = std::mem::take(&mut self.acks_in_flight);
        let outcome = self.journal.acknowledged(&acks, store);
        saved(&mut events, JOURNAL_FILE, "journal", outcome);
        events
    }

    /// Whether there is work after an attempt: a command to run, or (after a successful
    /// check-in) results that entered the outbox since the last delivery.
    pub fn has_work(&self, checked_in: bool) -> bool {
        self.journal.next_to_run().is_some() || (checked_in && self.results_added)
    }

    /// Results entered the outbox since the last delivery began.
    pub fn results_added(&self) -> bool {
        self.results_added
    }

    /// The oldest journaled command not yet started.
    pub fn next_to_run(&self) -> Option<Command> {
        self.journal.next_to_run().cloned()
    }

    /// Journals `id` as `running` before it starts. `false`: it could not be written, so the
    /// command must not start (it is retried later).
    pub fn start<S: Store + ?Sized>(&mut self, id: &str, store: &mut S) -> (bool, Vec<Event>) {
        let mut events = Vec::new();
        let outcome = self.journal.start(id, store);
        let started = outcome.is_ok();
        saved(&mut events, JOURNAL_FILE, &format!("journal (command {id} not started; retried later)"), outcome);
        (started, events)
    }

    /// A command ran for `elapsed` and went as `exec` says: its result, journaled and queued.
    pub fn finish<S: Store + ?Sized>(&mut self, cmd: &Command, exec: &Execution, elapsed: Duration, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        let result = UpdateLogRequest {
            command_id: cmd.id.clone(),
            action: cmd.kind.clone(),
            result: exec.result.to_string(),
            stdout: truncate_output(&exec.stdout, RESULT_OUTPUT_MAX_BYTES),
            stderr: truncate_output(&exec.stderr, RESULT_OUTPUT_MAX_BYTES),
            exit_code: exec.exit_code,
            duration_seconds: elapsed.as_secs_f64().round() as i64,
        };
        self.record_result(result, store, &mut events);
        events
    }

    /// A delivery of the outbox's results begins.
    pub fn begin_delivery(&mut self) {
        self.results_added = false;
    }

    /// The oldest result waiting for the server.
    pub fn next_result(&self) -> Option<UpdateLogRequest> {
        self.outbox.front().cloned()
    }

    /// Results waiting for the server.
    pub fn pending_results(&self) -> usize {
        self.outbox.len()
    }

    /// The server took the result of `id` (2xx).
    pub fn delivered<S: Store + ?Sized>(&mut self, id: &str, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        self.settle_result(id, Delivery::Delivered, true, store, &mut events);
        events.push(Event::ResultDelivered { id: id.to_string() });
        events
    }

    /// The server refused the result of `id` for good (`status` 400, 413 or 422): dropped.
    pub fn refused<S: Store + ?Sized>(&mut self, id: &str, status: u16, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        self.settle_result(id, Delivery::Dropped, true, store, &mut events);
        let reason = format!("the server refused it for good (HTTP {status})");
        events.push(Event::ResultDropped { id: id.to_string(), reason });
        events
    }

    /// A finished command's result: journal first (`done`, durably), then the outbox.
    fn record_result<S: Store + ?Sized>(&mut self, result: UpdateLogRequest, store: &mut S, events: &mut Vec<Event>) {
        let outcome = self.journal.finish(&result, store);
        saved(events, JOURNAL_FILE, "journal", outcome);
        self.queue_result(result, store, events);
    }

    /// Puts a result in the outbox; results it had to drop to make room are named.
    fn queue_result<S: Store + ?Sized>(&mut self, result: UpdateLogRequest, store: &mut S, events: &mut Vec<Event>) {
        let (dropped, outcome) = self.outbox.push(result, store);
        self.results_added = true;
        saved(events, OUTBOX_FILE, "outbox", outcome);
        for id in dropped {
            let reason = format!("the outbox is full (at most {OUTBOX_RESULTS_MAX} results or {OUTBOX_BYTES_MAX} bytes); the oldest goes");
            self.settle_result(&id, Delivery::Dropped, false, store, events);
            events.push(Event::ResultDropped { id, reason });
        }
    }

    /// A result left the outbox for good: delivered, or dropped.
    fn settle_result<S: Store + ?Sized>(&mut self, id: &str, delivery: Delivery, remove: bool, store: &mut S, events: &mut Vec<Event>) {
        if remove {
            let outcome = self.outbox.remove(id, store);
            saved(events, OUTBOX_FILE, "outbox", outcome);
        }
        let outcome = self.journal.set_delivery(id, delivery, store);
        saved(events, JOURNAL_FILE, "journal", outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::protocol::RESULT_SUCCESS;
    use crate::store::MemoryStore;
    use serde_json::json;

    fn cmd(id: &str) -> Command {
        Command { id: id.into(), kind: "scan_updates".into(), params: json!({}) }
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::name).collect()
    }

    #[test]
    fn a_command_is_journaled_once_and_a_redelivery_is_recognised() {
        let mut store = MemoryStore::default();
        let (mut desk, events) = Desk::recover(&mut store);
        assert!(events.is_empty());
        assert_eq!(names(&desk.take(&cmd("c1"), &mut store)), ["command_received", "state_saved"]);
        assert_eq!(desk.acks_for_checkin(), ["c1"]);
        assert_eq!(names(&desk.take(&cmd("c1"), &mut store))[..2], ["command_received", "command_duplicate"]);
        assert_eq!(desk.next_to_run().map(|c| c.id), Some("c1".into()));
    }

    #[test]
    fn an_invalid_id_is_skipped_without_touching_the_journal() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        assert_eq!(names(&desk.take(&cmd(""), &mut store)), ["command_received", "command_skipped"]);
        assert!(desk.next_to_run().is_none());
        assert!(store.files.is_empty());
    }

    #[test]
    fn a_finished_command_waits_in_the_outbox_until_delivered() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        desk.take(&cmd("c1"), &mut store);
        let (started, _) = desk.start("c1", &mut store);
        assert!(started);
        let exec = Execution::success("ok", None);
        desk.finish(&cmd("c1"), &exec, Duration::from_millis(1600), &mut store);
        assert!(desk.has_work(true) && desk.results_added());
        let result = desk.next_result().unwrap();
        assert_eq!((result.result.as_str(), result.duration_seconds), (RESULT_SUCCESS, 2));
        desk.begin_delivery();
        assert!(!desk.has_work(true));
        assert_eq!(names(&desk.delivered("c1", &mut store)).last(), Some(&"result_delivered"));
        assert_eq!(desk.pending_results(), 0);
    }

    #[test]
    fn a_command_running_at_start_up_is_reported_failed_and_never_run() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        desk.take(&cmd("c1"), &mut store);
        desk.start("c1", &mut store);
        let (desk, events) = Desk::recover(&mut store);
        assert!(names(&events).contains(&"command_interrupted"));
        assert!(desk.next_to_run().is_none());
        assert_eq!(desk.next_result().map(|r| r.result), Some(RESULT_FAILED.to_string()));
    }
}
