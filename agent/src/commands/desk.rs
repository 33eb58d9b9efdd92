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
//! * every command an answer carries is journaled (`received`), all of them with **one** write,
//!   before any is acknowledged or run, up to the journal's limits; a command refused at a limit
//!   is named (`command_skipped`) and not acknowledged, so the server sends it again. A command
//!   the journal knows is never run again: a finished one has its stored result re-sent;
//! * a command the answer's reader refused (unreadable `params`, larger than the agent reads) is
//!   journaled `done` at once with a `failed` result saying why: answered, never run;
//! * a command is journaled `running` before it starts, in the same write that records the
//!   previous command's result (one write per command); one found `running` at start-up was
//!   interrupted and is reported `failed`, never run again;
//! * a result is journaled `done` before it enters the outbox, and leaves the outbox only on the
//!   server's 2xx or a refusal for good (400, 413, 422). The outbox file is written once per
//!   run of commands and once per delivery round: the journal holds every undelivered result,
//!   and start-up puts them back, so a crash in between loses nothing (a result delivered just
//!   before a crash may be sent once more). A command starts only while the outbox has room for
//!   its result, so the outbox never has to drop one of ours; a full outbox still drops its
//!   oldest, by name.

use std::time::Duration;

use crate::log::events::Event;
use crate::server::checkin_answer::{CheckinAnswer, RefusedCommand};
use crate::server::protocol::{ACKNOWLEDGED_COMMANDS_MAX, Command, RESULT_FAILED, RESULT_OUTPUT_MAX_BYTES, UpdateLogRequest, truncate_output};
use crate::store::Store;

use super::journal::{COMMAND_ID_MAX_LEN, Corrupt, Delivery, JOURNAL_FILE, Journal, NewEntry, Saved};
use super::kinds::{self, Action};
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
    /// The outbox in memory differs from its file (results added by a run of commands).
    outbox_unsaved: bool,
    /// Results the server took in the delivery round under way, to be recorded at its end.
    delivered_in_round: Vec<String>,
}

/// What taking in a check-in answer did.
#[derive(Debug, Default)]
pub struct Taken {
    /// What happened to each command, in the answer's order (and the journal write).
    pub events: Vec<Event>,
    /// A newly journaled `enable_heartbeat` with a usable window, or a `disable_heartbeat`: the next check-in may go out
    /// at once. A command that was not journaled triggers nothing.
    pub heartbeat: bool,
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

/// The `failed` result of a command that did not run, saying why.
fn failed_result(id: &str, kind: &str, why: &str) -> UpdateLogRequest {
    UpdateLogRequest {
        command_id: id.to_string(),
        action: truncate_output(kind, COMMAND_ID_MAX_LEN),
        result: RESULT_FAILED.into(),
        stdout: String::new(),
        stderr: truncate_output(why, RESULT_OUTPUT_MAX_BYTES),
        exit_code: 1,
        duration_seconds: 0,
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
            let result = failed_result(&cmd.id, &cmd.kind, "interrupted by agent restart");
            desk.record_result(result, store, &mut events);
        }
        (desk, events)
    }

    /// A check-in answer's commands, taken in: each known one recognised (never run again, a
    /// stored result re-sent), the new ones and the refused ones journaled with one write.
    pub fn take_answer<S: Store + ?Sized>(&mut self, answer: &CheckinAnswer, store: &mut S) -> Taken {
        let mut taken = Taken::default();
        let refused = answer.refused.iter().map(|r| (Command { id: r.id.clone(), kind: r.kind.clone(), params: serde_json::Value::Null }, Some(r)));
        let commands = answer.commands.iter().map(|c| (c.clone(), None));
        let mut new: Vec<NewEntry> = Vec::new();
        for (cmd, refusal) in commands.chain(refused) {
            taken.events.push(Event::CommandReceived { id: cmd.id.clone(), kind: cmd.kind.clone() });
            if cmd.id.is_empty() || cmd.id.len() > COMMAND_ID_MAX_LEN || cmd.kind.len() > COMMAND_ID_MAX_LEN {
                let reason = format!("a command id must have 1 to {COMMAND_ID_MAX_LEN} bytes, and its type at most {COMMAND_ID_MAX_LEN}");
                let (id, kind) = (truncate_output(&cmd.id, 64), truncate_output(&cmd.kind, 64));
                // An empty id stays empty in the event: it names no command.
                taken.events.push(Event::CommandSkipped { id: if cmd.id.is_empty() { String::new() } else { id }, kind, reason });
                continue;
            }
            if self.journal.get(&cmd.id).is_some() {
                self.redelivered(&cmd, store, &mut taken.events);
                continue;
            }
            let result = refusal.map(|r: &RefusedCommand| failed_result(&r.id, &r.kind, &r.reason));
            new.push(NewEntry { command: cmd, result });
        }
        self.journal_new(new, store, &mut taken);
        taken
    }

    /// Journals an answer's new commands (one write) and queues the results of refused ones.
    fn journal_new<S: Store + ?Sized>(&mut self, new: Vec<NewEntry>, store: &mut S, taken: &mut Taken) {
        if new.is_empty() {
            return;
        }
        let (outcomes, outcome) = self.journal.receive_all(new.clone(), store);
        saved(&mut taken.events, JOURNAL_FILE, "journal", outcome);
        let mut queued = false;
        for (entry, journaled) in new.into_iter().zip(outcomes) {
            let NewEntry { command, result } = entry;
            match (journaled, result) {
                (Err(e), _) => {
                    let reason = format!("not recorded in the journal ({e}); not acknowledged, so the server sends it again");
                    taken.events.push(Event::CommandSkipped { id: command.id, kind: command.kind, reason });
                }
                (Ok(()), Some(result)) => {
                    self.push_result(result, store, &mut taken.events);
                    queued = true;
                }
                (Ok(()), None) => {
                    taken.heartbeat |= matches!(kinds::decide(&command), Action::RapidPolling(_) | Action::StopRapidPolling);
                }
            }
        }
        if queued {
            taken.events.extend(self.flush_outbox(store));
        }
    }

    /// A known command came again: the server has not seen our acknowledgement.
    fn redelivered<S: Store + ?Sized>(&mut self, cmd: &Command, store: &mut S, events: &mut Vec<Event>) {
        let Some(entry) = self.journal.get(&cmd.id) else { return };
        let (state, stored) = (entry.state, entry.result.clone());
        events.push(Event::CommandDuplicate { id: cmd.id.clone(), kind: cmd.kind.clone(), state: state.as_str().to_string() });
        let outcome = self.journal.redelivered(&cmd.id, store);
        saved(events, JOURNAL_FILE, "journal", outcome);
        if let Some(result) = stored {
            if !self.outbox.contains(&cmd.id) {
                let outcome = self.journal.set_delivery(&cmd.id, Delivery::Pending, store);
                saved(events, JOURNAL_FILE, "journal", outcome);
                self.queue_result(result, store, events);
            }
        }
    }

    /// The acknowledgements for the check-in about to go out: the journaled ids not yet seen
    /// acknowledged (at most [`ACKNOWLEDGED_COMMANDS_MAX`]). They are in flight until that
    /// check-in succeeds ([`Desk::checkin_succeeded`]) or the next one replaces them.
    pub fn acks_for_checkin(&mut self) -> Vec<String> {
        self.acks_in_flight = self.journal.acks(ACKNOWLEDGED_COMMANDS_MAX);
        self.acks_in_flight.clone()
    }

    /// The check-in that carried the acknowledgements in flight succeeded: the server has them
    /// (known so in memory even when the journal cannot be written: sent once).
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

    /// The oldest journaled command not yet started, if its result would fit in the outbox
    /// without pushing another out (otherwise it waits for deliveries to make room).
    pub fn next_to_run(&self) -> Option<Command> {
        self.journal.next_to_run().filter(|_| self.outbox.has_room()).cloned()
    }

    /// The command to start after the one running now finishes (in the same journal write): the
    /// oldest not yet started, if the outbox has room for both their results.
    pub fn next_to_run_after_one_more(&self) -> Option<Command> {
        self.journal.next_to_run().filter(|_| self.outbox.has_room_for(2)).cloned()
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

    /// A command ran for `elapsed` and went as `exec` says: its result journaled (`done`) and
    /// queued, and `next` journaled `running` in the same write. Returns whether `next` may
    /// start. The outbox file is written by [`Desk::flush_outbox`] at the end of the run.
    pub fn finish<S: Store + ?Sized>(&mut self, cmd: &Command, exec: &Execution, elapsed: Duration, next: Option<&str>, store: &mut S) -> (bool, Vec<Event>) {
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
        let outcome = self.journal.finish_then_start(&result, next, store);
        let journaled = outcome.is_ok();
        let what = match next {
            Some(id) => format!("journal (command {id} not started; retried later)"),
            None => "journal".to_string(),
        };
        saved(&mut events, JOURNAL_FILE, &what, outcome);
        match journaled {
            // The journal holds it as undelivered: the outbox file can wait for the run's end.
            true => self.push_result(result, store, &mut events),
            // Not in the journal: only the outbox file keeps it across a crash.
            false => self.queue_result(result, store, &mut events),
        }
        (journaled && next.is_some(), events)
    }

    /// Writes the outbox if results entered it since its last write.
    pub fn flush_outbox<S: Store + ?Sized>(&mut self, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        if std::mem::take(&mut self.outbox_unsaved) {
            saved(&mut events, OUTBOX_FILE, "outbox", self.outbox.save_now(store));
        }
        events
    }

    /// Whether a journaled command waits to start.
    pub fn has_commands_to_run(&self) -> bool {
        self.journal.next_to_run().is_some()
    }

    /// The oldest result waiting for the server.
    pub fn next_result(&self) -> Option<UpdateLogRequest> {
        self.outbox.front().cloned()
    }

    /// Results waiting for the server.
    pub fn pending_results(&self) -> usize {
        self.outbox.len()
    }

    /// The server took the result of `id` (2xx): out of the outbox now, recorded (outbox and
    /// journal, one write each) at the end of the round ([`Desk::end_delivery`]).
    pub fn delivered(&mut self, id: &str) -> Vec<Event> {
        if self.outbox.remove_unsaved(id) {
            self.delivered_in_round.push(id.to_string());
        }
        vec![Event::ResultDelivered { id: id.to_string() }]
    }

    /// The end of a delivery round: what the server took, written down.
    pub fn end_delivery<S: Store + ?Sized>(&mut self, store: &mut S) -> Vec<Event> {
        let mut events = Vec::new();
        let ids = std::mem::take(&mut self.delivered_in_round);
        if ids.is_empty() {
            return events;
        }
        saved(&mut events, OUTBOX_FILE, "outbox", self.outbox.save_now(store));
        self.outbox_unsaved = false;
        saved(&mut events, JOURNAL_FILE, "journal", self.journal.delivered_all(&ids, store));
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

    /// Puts a result in the outbox and writes it.
    fn queue_result<S: Store + ?Sized>(&mut self, result: UpdateLogRequest, store: &mut S, events: &mut Vec<Event>) {
        self.push_result(result, store, events);
        events.extend(self.flush_outbox(store));
    }

    /// Puts a result in the outbox, to be written later; results it had to drop to make room
    /// are named (and recorded as dropped in the journal).
    fn push_result<S: Store + ?Sized>(&mut self, result: UpdateLogRequest, store: &mut S, events: &mut Vec<Event>) {
        let dropped = self.outbox.push_unsaved(result);
        self.outbox_unsaved = true;
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
    use crate::store::{CountingStore, MemoryStore};
    use serde_json::json;

    fn cmd(id: &str) -> Command {
        Command { id: id.into(), kind: "scan_updates".into(), params: json!({}) }
    }

    fn answer(commands: Vec<Command>) -> CheckinAnswer {
        CheckinAnswer { commands, ..CheckinAnswer::default() }
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::name).collect()
    }

    #[test]
    fn a_command_is_journaled_once_and_a_redelivery_is_recognised() {
        let mut store = MemoryStore::default();
        let (mut desk, events) = Desk::recover(&mut store);
        assert!(events.is_empty());
        assert_eq!(names(&desk.take_answer(&answer(vec![cmd("c1")]), &mut store).events), ["command_received", "state_saved"]);
        assert_eq!(desk.acks_for_checkin(), ["c1"]);
        assert_eq!(names(&desk.take_answer(&answer(vec![cmd("c1")]), &mut store).events)[..2], ["command_received", "command_duplicate"]);
        assert_eq!(desk.next_to_run().map(|c| c.id), Some("c1".into()));
    }

    #[test]
    fn an_invalid_id_is_skipped_without_touching_the_journal() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        assert_eq!(names(&desk.take_answer(&answer(vec![cmd("")]), &mut store).events), ["command_received", "command_skipped"]);
        assert!(desk.next_to_run().is_none());
        assert!(store.files.is_empty());
    }

    #[test]
    fn a_whole_answer_costs_one_write_and_each_refusal_is_named() {
        let mut store = CountingStore::default();
        let mut desk = Desk::default();
        let commands: Vec<Command> = (0..super::super::journal::JOURNAL_ENTRIES_MAX + 3).map(|i| cmd(&format!("c{i}"))).collect();
        let taken = desk.take_answer(&answer(commands), &mut store);
        assert_eq!(store.writes(JOURNAL_FILE), 1, "one journal write for the answer");
        let skipped: Vec<&str> = taken
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CommandSkipped { id, reason, .. } if reason.contains("full") => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, ["c4096", "c4097", "c4098"], "refused at the limit, by name");
        assert!(!taken.heartbeat);
    }

    #[test]
    fn a_refused_command_is_answered_failed_without_running() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        let refused = RefusedCommand { id: "bad".into(), kind: "install_updates".into(), reason: "its params cannot be read (number out of range)".into() };
        let a = CheckinAnswer { refused: vec![refused], ..answer(vec![cmd("ok")]) };
        desk.take_answer(&a, &mut store);
        assert_eq!(desk.acks_for_checkin(), ["ok", "bad"], "both journaled, both acknowledged");
        assert_eq!(desk.next_to_run().map(|c| c.id), Some("ok".into()));
        let result = desk.next_result().expect("the refused command's result waits");
        assert_eq!((result.command_id.as_str(), result.result.as_str(), result.action.as_str()), ("bad", RESULT_FAILED, "install_updates"));
        assert!(result.stderr.contains("params"));
        assert_eq!(Outbox::load(&mut store).0.len(), 1, "on disk");
    }

    #[test]
    fn only_a_journaled_heartbeat_counts() {
        let hb = Command { id: "hb".into(), kind: "enable_heartbeat".into(), params: json!({"duration_minutes": 5}) };
        let bad = Command { id: "hb-0".into(), kind: "enable_heartbeat".into(), params: json!({"duration_minutes": 0}) };
        let mut desk = Desk::default();
        assert!(!desk.take_answer(&answer(vec![bad]), &mut MemoryStore::default()).heartbeat, "an unusable heartbeat");
        assert!(desk.take_answer(&answer(vec![hb.clone()]), &mut MemoryStore::default()).heartbeat);
        assert!(!desk.take_answer(&answer(vec![hb.clone()]), &mut MemoryStore::default()).heartbeat, "a redelivery");
        struct Refusing;
        impl Store for Refusing {
            fn save_token(&mut self, _: &crate::server::secret::Secret) -> Result<(), String> {
                Ok(())
            }
            fn save_status(&mut self, _: &crate::store::Status) -> Result<(), String> {
                Ok(())
            }
            fn load_state(&mut self, _: &str) -> Result<Option<Vec<u8>>, String> {
                Ok(None)
            }
            fn save_state(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
                Err("read-only".into())
            }
            fn quarantine_state(&mut self, _: &str) -> Result<String, String> {
                Err("read-only".into())
            }
        }
        let taken = Desk::default().take_answer(&answer(vec![hb]), &mut Refusing);
        assert!(!taken.heartbeat, "not journaled: triggers nothing");
        assert!(names(&taken.events).contains(&"command_skipped"));
    }

    #[test]
    fn a_run_of_commands_costs_one_journal_write_each_and_one_outbox_write() {
        let mut store = CountingStore::default();
        let mut desk = Desk::default();
        desk.take_answer(&answer(vec![cmd("a"), cmd("b"), cmd("c")]), &mut store);
        let exec = Execution::success("ok", None);
        assert!(desk.start("a", &mut store).0);
        let mut current = cmd("a");
        let mut ran = vec![];
        loop {
            let next = desk.next_to_run_after_one_more();
            let (started, _) = desk.finish(&current, &exec, Duration::from_millis(1600), next.as_ref().map(|c| c.id.as_str()), &mut store);
            ran.push(current.id.clone());
            match next {
                Some(n) if started => current = n,
                _ => break,
            }
        }
        desk.flush_outbox(&mut store);
        assert_eq!(ran, ["a", "b", "c"]);
        assert_eq!((store.1[JOURNAL_FILE], store.1[OUTBOX_FILE]), (1 + 1 + 3, 1), "receive, start, three finishes; one outbox write");
        assert_eq!(Outbox::load(&mut store).0.len(), 3);
        let result = desk.next_result().unwrap();
        assert_eq!((result.result.as_str(), result.duration_seconds), (RESULT_SUCCESS, 2));
    }

    #[test]
    fn a_delivery_round_is_written_once_at_its_end() {
        let mut store = CountingStore::default();
        let mut desk = Desk::default();
        desk.take_answer(&answer(vec![cmd("a"), cmd("b")]), &mut store);
        for id in ["a", "b"] {
            desk.start(id, &mut store);
            desk.finish(&cmd(id), &Execution::success("ok", None), Duration::ZERO, None, &mut store);
        }
        desk.flush_outbox(&mut store);
        let before = store.1.clone();
        assert_eq!(names(&desk.delivered("a")), ["result_delivered"]);
        assert_eq!(desk.next_result().map(|r| r.command_id), Some("b".into()), "a delivered result is out of the way at once");
        desk.delivered("b");
        assert_eq!(store.1, before, "nothing written during the round");
        desk.end_delivery(&mut store);
        assert_eq!((store.1[OUTBOX_FILE] - before[OUTBOX_FILE], store.1[JOURNAL_FILE] - before[JOURNAL_FILE]), (1, 1));
        let (again, _) = Desk::recover(&mut store);
        assert_eq!(again.pending_results(), 0, "nothing comes back after a restart");
    }

    #[test]
    fn a_command_waits_while_the_outbox_has_no_room_for_its_result() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        for i in 0..super::super::outbox::OUTBOX_RESULTS_MAX {
            desk.outbox.push_unsaved(failed_result(&format!("r{i}"), "x", ""));
        }
        desk.take_answer(&answer(vec![cmd("waits")]), &mut store);
        assert!(desk.has_commands_to_run() && desk.next_to_run().is_none(), "journaled, but not started");
        desk.delivered("r0");
        assert_eq!(desk.next_to_run().map(|c| c.id), Some("waits".into()));
    }

    #[test]
    fn a_result_in_the_outbox_survives_a_journal_that_lost_its_command() {
        // The journal was moved aside as corrupt (or had let the entry go); the outbox on disk
        // still holds a result. It is delivered, not forgotten with the journal.
        let mut store = MemoryStore::default();
        let result = UpdateLogRequest {
            command_id: "kept".into(),
            action: "scan_updates".into(),
            result: RESULT_SUCCESS.into(),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            duration_seconds: 1,
        };
        let mut outbox = Outbox::default();
        let (_, saved) = outbox.push(result, &mut store);
        saved.unwrap();
        let (desk, _) = Desk::recover(&mut store);
        assert_eq!(desk.pending_results(), 1);
        assert_eq!(desk.next_result().map(|r| r.command_id), Some("kept".into()));
    }

    #[test]
    fn a_command_running_at_start_up_is_reported_failed_and_never_run() {
        let mut store = MemoryStore::default();
        let mut desk = Desk::default();
        desk.take_answer(&answer(vec![cmd("c1")]), &mut store);
        desk.start("c1", &mut store);
        let (desk, events) = Desk::recover(&mut store);
        assert!(names(&events).contains(&"command_interrupted"));
        assert!(desk.next_to_run().is_none());
        assert_eq!(desk.next_result().map(|r| r.result), Some(RESULT_FAILED.to_string()));
    }
}
