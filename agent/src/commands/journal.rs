//! The command journal (`state_dir/journal.json`): what this agent knows about every command the
//! server sent it, so that no command is run twice and none is forgotten across a crash.
//!
//! Each entry goes `received` -> `running` -> `done`, and every step is written (atomically,
//! fsync'd, through the loop's [`Store`]) *before* the agent acts on it:
//!
//! * `received` is written before the command is acknowledged or run. Only journaled ids go into
//!   a check-in's `acknowledged_commands`; `ack_pending` says which have not yet travelled in a
//!   successful check-in.
//! * `running` is written before the command starts. An entry found `running` when the agent
//!   starts was interrupted by a crash or a kill: the loop reports it `failed` ("interrupted by
//!   agent restart") and never runs it again. Execution is at most once; delivery, through the
//!   server's redelivery and the acknowledgements, is at least once.
//! * `done` keeps the result, so a command the server sends again gets its stored result
//!   re-sent, and whether the server has it (`delivery`: pending, delivered, or dropped when the
//!   outbox had to give it up).
//!
//! Bounded: finished entries are remembered for the last [`JOURNAL_FINISHED_MAX`] commands (an
//! entry whose acknowledgement has not yet reached the server is never forgotten, or a
//! redelivery could run it again); at most [`JOURNAL_ENTRIES_MAX`] entries and
//! [`JOURNAL_BYTES_MAX`] bytes in all, beyond which a new command is refused (not acknowledged,
//! so the server sends it again later).
//!
//! A journal that cannot be read back (truncated by a power loss on a filesystem that does not
//! honour rename ordering, hand-edited, bit-rotten) is detected by its strict format, reported,
//! moved aside as `journal.json.corrupt` and replaced by an empty one: the agent keeps running
//! and checking in. What that costs is said where it happens, in [`Journal::load`].
//!
//! This file is the data structure and its persistence; deciding what to do with commands is the
//! loop's (`checkin/`), running them is the runner's (`runner.rs`), results in flight are the
//! outbox's (`outbox.rs`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::server::protocol::{Command, UpdateLogRequest};
use crate::store::Store;

/// The journal's file name in `state_dir`.
pub const JOURNAL_FILE: &str = "journal.json";
/// Finished commands remembered (their ids, so a redelivery is recognised, and their results).
pub const JOURNAL_FINISHED_MAX: usize = 1000;
/// Entries of any state the journal holds at most; a new command beyond it is refused.
pub const JOURNAL_ENTRIES_MAX: usize = 4096;
/// The journal file's size at most; a new command that would pass it is refused.
pub const JOURNAL_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest command id and type accepted from the server (RedFlag's are UUIDs and short words).
pub const COMMAND_ID_MAX_LEN: usize = 256;

/// The first field of the file, so that another file in its place is never mistaken for it.
const FORMAT: &str = "redflag-agent-journal/1";

/// Where a command is in its life on this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Recorded; not started.
    Received,
    /// Started and not finished. Found at start-up: interrupted.
    Running,
    /// Finished; its result is kept.
    Done,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Received => "received",
            CommandState::Running => "running",
            CommandState::Done => "done",
        }
    }
}

/// Whether the server has a finished command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// In the outbox (or to be put back there).
    Pending,
    /// The server answered 2xx.
    Delivered,
    /// The outbox gave it up (full, or the server refused it for good).
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub command: Command,
    pub state: CommandState,
    /// Not yet carried in `acknowledged_commands` by a successful check-in.
    pub ack_pending: bool,
    /// For a `done` entry: its result, and whether the server has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<UpdateLogRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    format: String,
    entries: Vec<Entry>,
}

/// A command for [`Journal::receive_all`]: to be `received`, or `done` at once with `result`
/// (refused before it could run: it is answered, never started).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub command: Command,
    pub result: Option<UpdateLogRequest>,
}

impl NewEntry {
    fn into_entry(self) -> Entry {
        let done = self.result.is_some();
        Entry {
            command: self.command,
            state: if done { CommandState::Done } else { CommandState::Received },
            ack_pending: true,
            delivery: done.then_some(Delivery::Pending),
            result: self.result,
        }
    }
}

/// What a save wrote, for the `state_saved` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub entries: u32,
    pub bytes: u64,
}

/// A state file that could not be read back and was moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub file: String,
    pub error: String,
    /// Where it went, or why it could not be moved.
    pub moved_to: String,
}

/// Reads state file `name` through `parse`: a missing file is the default value; one that cannot
/// be read or parsed is moved aside and replaced by the default, and the [`Corrupt`] says so.
pub(crate) fn load_or_set_aside<S: Store + ?Sized, T: Default>(
    store: &mut S,
    name: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> (T, Option<Corrupt>) {
    let parsed = match store.load_state(name) {
        Ok(None) => return (T::default(), None),
        Ok(Some(bytes)) => parse(&bytes),
        Err(e) => Err(e),
    };
    match parsed {
        Ok(value) => (value, None),
        Err(error) => {
            let moved_to = store.quarantine_state(name).unwrap_or_else(|e| format!("not moved: {e}"));
            (T::default(), Some(Corrupt { file: name.into(), error, moved_to }))
        }
    }
}

/// The journal, in the order commands were received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    entries: VecDeque<Entry>,
}

impl Journal {
    /// Reads the journal from `store`. A missing file is an empty journal. A corrupt one is moved
    /// aside and replaced by an empty journal; the [`Corrupt`] says so. Cost of a lost journal:
    /// commands it held as received or running, if the server sends them again, are run (they
    /// may have run once already), and results it held are re-sent only if the outbox has them.
    pub fn load<S: Store + ?Sized>(store: &mut S) -> (Journal, Option<Corrupt>) {
        load_or_set_aside(store, JOURNAL_FILE, Journal::parse)
    }

    /// Parses and checks a journal file: the format tag, non-empty unique ids, and the fields
    /// each state must (and must not) have.
    pub fn parse(bytes: &[u8]) -> Result<Journal, String> {
        let file: JournalFile = serde_json::from_slice(bytes).map_err(|e| format!("not a journal file: {e}"))?;
        if file.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", file.format));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in file.entries.iter().enumerate() {
            let id = &e.command.id;
            if id.is_empty() || id.len() > COMMAND_ID_MAX_LEN {
                return Err(format!("entries[{i}]: command id is empty or longer than {COMMAND_ID_MAX_LEN} bytes"));
            }
            if !seen.insert(id.clone()) {
                return Err(format!("entries[{i}]: command {id} appears twice"));
            }
            let done = e.state == CommandState::Done;
            if done != (e.result.is_some() && e.delivery.is_some()) {
                return Err(format!("entries[{i}]: command {id} is {} but {} a result", e.state.as_str(), if done { "lacks" } else { "has" }));
            }
            if e.result.as_ref().is_some_and(|r| &r.command_id != id) {
                return Err(format!("entries[{i}]: command {id} holds the result of another command"));
            }
        }
        if file.entries.len() > JOURNAL_ENTRIES_MAX {
            return Err(format!("{} entries, more than the {JOURNAL_ENTRIES_MAX} a journal holds", file.entries.len()));
        }
        Ok(Journal { entries: file.entries.into() })
    }

    fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            format: &'a str,
            entries: &'a VecDeque<Entry>,
        }
        let mut bytes = serde_json::to_vec(&Out { format: FORMAT, entries: &self.entries }).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes the journal; on failure the in-memory journal goes back to `before`, so memory
    /// never claims more than the disk holds.
    fn commit<S: Store + ?Sized>(&mut self, store: &mut S, before: Journal) -> Result<Saved, String> {
        let bytes = self.encode();
        if bytes.len() > JOURNAL_BYTES_MAX {
            *self = before;
            return Err(format!("the journal would be {} bytes, more than its limit of {JOURNAL_BYTES_MAX}", bytes.len()));
        }
        match store.save_state(JOURNAL_FILE, &bytes) {
            Ok(()) => Ok(Saved { entries: self.entries.len() as u32, bytes: bytes.len() as u64 }),
            Err(e) => {
                *self = before;
                Err(e)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.command.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.command.id == id)
    }

    /// Records a command never seen before as `received` (and to be acknowledged). `Err` when it
    /// could not be written or the journal is full: the command is then neither acknowledged
    /// nor run, and the server sends it again.
    pub fn receive<S: Store + ?Sized>(&mut self, command: &Command, store: &mut S) -> Result<Saved, String> {
        debug_assert!(self.get(&command.id).is_none(), "receive() is for new commands");
        let before = self.clone();
        self.forget_old();
        if self.entries.len() >= JOURNAL_ENTRIES_MAX {
            *self = before;
            return Err(format!("the journal is full ({JOURNAL_ENTRIES_MAX} entries)"));
        }
        self.entries.push_back(Entry {
            command: command.clone(),
            state: CommandState::Received,
            ack_pending: true,
            result: None,
            delivery: None,
        });
        self.commit(store, before)
    }

    /// Records the new commands of one check-in answer with **one** write (an answer of
    /// thousands costs one write, not thousands). Each [`NewEntry`] is `received`, or `done` at
    /// once when it carries a result (a command refused before it could run). The answer's
    /// order is kept. Per entry, `Ok` (journaled) or `Err` with why not: beyond
    /// [`JOURNAL_ENTRIES_MAX`] or [`JOURNAL_BYTES_MAX`], or the write failed. A refused entry is
    /// neither acknowledged nor run; the server sends it again.
    pub fn receive_all<S: Store + ?Sized>(&mut self, new: Vec<NewEntry>, store: &mut S) -> (Vec<Result<(), String>>, Result<Saved, String>) {
        let before = self.clone();
        self.forget_old();
        let mut bytes = self.encode().len();
        let mut ids: std::collections::BTreeSet<String> = self.entries.iter().map(|e| e.command.id.clone()).collect();
        let mut outcomes = Vec::with_capacity(new.len());
        for n in new {
            if ids.contains(&n.command.id) {
                outcomes.push(Err("it came twice in one answer".to_string()));
                continue;
            }
            let entry = n.into_entry();
            // Its size in the file: the entry and a comma.
            let size = serde_json::to_vec(&entry).map_or(usize::MAX, |v| v.len() + 1);
            if self.entries.len() >= JOURNAL_ENTRIES_MAX {
                outcomes.push(Err(format!("the journal is full ({JOURNAL_ENTRIES_MAX} entries)")));
            } else if bytes.saturating_add(size) > JOURNAL_BYTES_MAX {
                outcomes.push(Err(format!("the journal is full ({JOURNAL_BYTES_MAX} bytes)")));
            } else {
                bytes += size;
                ids.insert(entry.command.id.clone());
                self.entries.push_back(entry);
                outcomes.push(Ok(()));
            }
        }
        if !outcomes.iter().any(Result::is_ok) {
            *self = before;
            return (outcomes, Ok(Saved { entries: self.entries.len() as u32, bytes: 0 }));
        }
        match self.commit(store, before) {
            Ok(saved) => (outcomes, Ok(saved)),
            Err(e) => {
                let outcomes = outcomes.into_iter().map(|o| o.and(Err(format!("not written ({e})")))).collect();
                (outcomes, Err(e))
            }
        }
    }

    /// A known command came again: the server has not seen our acknowledgement, so send it again.
    pub fn redelivered<S: Store + ?Sized>(&mut self, id: &str, store: &mut S) -> Result<Saved, String> {
        let before = self.clone();
        match self.get_mut(id) {
            Some(e) if !e.ack_pending => e.ack_pending = true,
            _ => return Ok(Saved { entries: self.entries.len() as u32, bytes: 0 }),
        }
        self.commit(store, before)
    }

    /// Ids to carry in the next check-in's `acknowledged_commands`, oldest first, at most `max`.
    pub fn acks(&self, max: usize) -> Vec<String> {
        self.entries.iter().filter(|e| e.ack_pending).take(max).map(|e| e.command.id.clone()).collect()
    }

    /// Writes marks just set in memory (`changed`), and keeps them in memory even when the disk
    /// refuses them, so that what the server already knows is not sent again (issue 19 item 10).
    fn save_marks<S: Store + ?Sized>(&mut self, changed: bool, store: &mut S) -> Result<Saved, String> {
        if !changed {
            return Ok(Saved { entries: self.entries.len() as u32, bytes: 0 });
        }
        let kept = self.clone();
        let outcome = self.commit(store, Journal::default());
        *self = kept;
        outcome
    }

    /// A check-in carrying `ids` succeeded: the server has them. Unlike every other change,
    /// this one stays in memory when the write fails: the server *has* them, and sending them
    /// again in every check-in while the disk refuses would say nothing new. The disk catches up
    /// with the next write that succeeds; after a restart first, they are acknowledged once more.
    pub fn acknowledged<S: Store + ?Sized>(&mut self, ids: &[String], store: &mut S) -> Result<Saved, String> {
        let ids: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let mut changed = false;
        for e in self.entries.iter_mut().filter(|e| e.ack_pending && ids.contains(e.command.id.as_str())) {
            e.ack_pending = false;
            changed = true;
        }
        self.save_marks(changed, store)
    }

    /// The oldest command received and not yet started.
    pub fn next_to_run(&self) -> Option<&Command> {
        self.entries.iter().find(|e| e.state == CommandState::Received).map(|e| &e.command)
    }

    /// Commands that were running (at start-up: interrupted by the agent's death).
    pub fn running(&self) -> Vec<Command> {
        self.entries.iter().filter(|e| e.state == CommandState::Running).map(|e| e.command.clone()).collect()
    }

    /// `received` -> `running`, durably, before the command starts. On `Err` it must not start.
    pub fn start<S: Store + ?Sized>(&mut self, id: &str, store: &mut S) -> Result<Saved, String> {
        let before = self.clone();
        match self.get_mut(id) {
            Some(e) if e.state == CommandState::Received => e.state = CommandState::Running,
            Some(e) => return Err(format!("command {id} is {}, not received; not starting it", e.state.as_str())),
            None => return Err(format!("command {id} is not in the journal")),
        }
        self.commit(store, before)
    }

    /// -> `done` with its result (delivery pending).
    pub fn finish<S: Store + ?Sized>(&mut self, result: &UpdateLogRequest, store: &mut S) -> Result<Saved, String> {
        self.finish_then_start(result, None, store)
    }

    /// -> `done` with its result, and `next` (a received command) -> `running`, in **one**
    /// write: a queue of commands costs one write per command, not two. On `Err` neither
    /// changed: the result is not journaled and `next` must not start.
    pub fn finish_then_start<S: Store + ?Sized>(&mut self, result: &UpdateLogRequest, next: Option<&str>, store: &mut S) -> Result<Saved, String> {
        let before = self.clone();
        let Some(e) = self.get_mut(&result.command_id) else {
            return Err(format!("command {} is not in the journal", result.command_id));
        };
        e.state = CommandState::Done;
        e.result = Some(result.clone());
        e.delivery = Some(Delivery::Pending);
        if let Some(id) = next {
            match self.get_mut(id) {
                Some(n) if n.state == CommandState::Received => n.state = CommandState::Running,
                _ => {
                    *self = before;
                    return Err(format!("command {id} is not a received command; not starting it"));
                }
            }
        }
        self.forget_old();
        self.commit(store, before)
    }

    /// Records that the server got the results of `ids`, with one write for a whole delivery
    /// round. On `Err` memory keeps them delivered (they are: the server said so); the disk
    /// catches up with the next write, and after a crash first they are sent once more.
    pub fn delivered_all<S: Store + ?Sized>(&mut self, ids: &[String], store: &mut S) -> Result<Saved, String> {
        let ids: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let mut changed = false;
        for e in self.entries.iter_mut().filter(|e| e.state == CommandState::Done && ids.contains(e.command.id.as_str())) {
            if e.delivery != Some(Delivery::Delivered) {
                e.delivery = Some(Delivery::Delivered);
                changed = true;
            }
        }
        self.save_marks(changed, store)
    }

    /// Records whether the server got a finished command's result.
    pub fn set_delivery<S: Store + ?Sized>(&mut self, id: &str, delivery: Delivery, store: &mut S) -> Result<Saved, String> {
        let before = self.clone();
        match self.get_mut(id) {
            Some(e) if e.state == CommandState::Done && e.delivery != Some(delivery) => e.delivery = Some(delivery),
            _ => return Ok(Saved { entries: self.entries.len() as u32, bytes: 0 }),
        }
        self.commit(store, before)
    }

    /// Results of finished commands the server does not have yet (to put back in an outbox that
    /// lost them).
    pub fn undelivered(&self) -> Vec<UpdateLogRequest> {
        self.entries
            .iter()
            .filter(|e| e.delivery == Some(Delivery::Pending))
            .filter_map(|e| e.result.clone())
            .collect()
    }

    /// Forgets the oldest finished entries beyond [`JOURNAL_FINISHED_MAX`], except those whose
    /// acknowledgement has not reached the server (it could send them again).
    fn forget_old(&mut self) {
        let finished = self.entries.iter().filter(|e| e.state == CommandState::Done).count();
        let mut excess = finished.saturating_sub(JOURNAL_FINISHED_MAX);
        if excess == 0 {
            return;
        }
        self.entries.retain(|e| {
            if excess > 0 && e.state == CommandState::Done && !e.ack_pending {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::protocol::RESULT_SUCCESS;
    use crate::store::MemoryStore;

    fn cmd(id: &str) -> Command {
        Command { id: id.into(), kind: "scan_updates".into(), params: serde_json::json!({"x": 1}) }
    }

    fn result(id: &str) -> UpdateLogRequest {
        UpdateLogRequest {
            command_id: id.into(),
            action: "scan_updates".into(),
            result: RESULT_SUCCESS.into(),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            duration_seconds: 2,
        }
    }

    /// A store whose writes fail while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryStore,
        fail: bool,
    }

    impl Store for Flaky {
        fn save_token(&mut self, t: &crate::server::secret::Secret) -> Result<(), String> {
            self.inner.save_token(t)
        }
        fn save_status(&mut self, s: &crate::store::Status) -> Result<(), String> {
            self.inner.save_status(s)
        }
        fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
            self.inner.load_state(name)
        }
        fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
            if self.fail {
                return Err("disk full".into());
            }
            self.inner.save_state(name, bytes)
        }
        fn quarantine_state(&mut self, name: &str) -> Result<String, String> {
            self.inner.quarantine_state(name)
        }
    }

    #[test]
    fn a_command_goes_received_running_done_and_survives_a_reload() {
        let mut store = MemoryStore::default();
        let mut j = Journal::default();
        j.receive(&cmd("a"), &mut store).unwrap();
        assert_eq!(j.acks(10), ["a"]);
        assert_eq!(j.next_to_run().map(|c| c.id.as_str()), Some("a"));
        j.start("a", &mut store).unwrap();
        // The agent dies here: the reloaded journal says running.
        let (again, corrupt) = Journal::load(&mut store);
        assert_eq!(corrupt, None);
        assert_eq!(again.running(), vec![cmd("a")]);
        assert!(again.next_to_run().is_none(), "a running command is never started again");
        j.finish(&result("a"), &mut store).unwrap();
        j.acknowledged(&["a".into()], &mut store).unwrap();
        let (again, _) = Journal::load(&mut store);
        assert_eq!(again.get("a").unwrap().state, CommandState::Done);
        assert!(again.acks(10).is_empty());
        assert_eq!(again.undelivered(), vec![result("a")]);
        assert!(j.start("a", &mut store).is_err(), "a finished command cannot start again");
    }

    #[test]
    fn a_failed_write_leaves_memory_as_the_disk_is() {
        let mut store = Flaky::default();
        let mut j = Journal::default();
        j.receive(&cmd("a"), &mut store).unwrap();
        store.fail = true;
        assert!(j.start("a", &mut store).is_err());
        assert_eq!(j.get("a").unwrap().state, CommandState::Received, "not running, since the disk does not say so");
        assert!(j.receive(&cmd("b"), &mut store).is_err());
        assert!(j.get("b").is_none(), "not journaled, so neither acknowledged nor run");
        store.fail = false;
        j.start("a", &mut store).unwrap();
        assert_eq!(Journal::load(&mut store).0, j);
    }

    #[test]
    fn finished_entries_are_forgotten_beyond_the_window_unless_unacknowledged() {
        let mut store = MemoryStore::default();
        let mut j = Journal::default();
        let n = JOURNAL_FINISHED_MAX + 50;
        for i in 0..n {
            let id = format!("c{i}");
            j.receive(&cmd(&id), &mut store).unwrap();
            j.start(&id, &mut store).unwrap();
            j.finish(&result(&id), &mut store).unwrap();
            // The first ten are never acknowledged: they must be kept.
            if i >= 10 {
                j.acknowledged(&[id], &mut store).unwrap();
            }
        }
        assert!(j.len() <= JOURNAL_FINISHED_MAX + 1, "{} entries", j.len());
        for i in 0..10 {
            assert!(j.get(&format!("c{i}")).is_some(), "unacknowledged c{i} forgotten");
        }
        assert!(j.get("c10").is_none(), "the oldest acknowledged entries go first");
        assert!(j.get(&format!("c{}", n - 1)).is_some());
    }

    #[test]
    fn a_whole_answer_is_journaled_with_one_write_up_to_the_limit() {
        let mut store = crate::store::CountingStore::default();
        let mut j = Journal::default();
        let n = JOURNAL_ENTRIES_MAX + 10;
        let mut new: Vec<NewEntry> = (0..n).map(|i| NewEntry { command: cmd(&format!("c{i}")), result: None }).collect();
        new.insert(1, NewEntry { command: cmd("c0"), result: None });
        new[5].result = Some(result("c4"));
        let (outcomes, saved) = j.receive_all(new, &mut store);
        assert_eq!(store.all_writes(), 1, "one write for the whole answer");
        assert_eq!(saved.unwrap().entries as usize, JOURNAL_ENTRIES_MAX);
        assert!(outcomes[1].as_ref().unwrap_err().contains("twice"));
        let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert_eq!(refused.len(), 11, "ten beyond the limit and the duplicate");
        assert!(refused[1].contains("full (4096 entries)"), "{refused:?}");
        assert_eq!(j.get("c4").unwrap().state, CommandState::Done, "a refused command is done at once");
        assert_eq!(j.next_to_run().unwrap().id, "c0");
        assert_eq!(Journal::load(&mut store).0, j);
        // A failed write journals nothing and says so for each.
        let mut flaky = Flaky { fail: true, ..Flaky::default() };
        let mut j = Journal::default();
        let (outcomes, saved) = j.receive_all(vec![NewEntry { command: cmd("x"), result: None }], &mut flaky);
        assert!(saved.is_err() && outcomes[0].as_ref().unwrap_err().contains("not written") && j.is_empty());
        // The byte bound holds too.
        let big = Command { id: "big".into(), kind: "x".into(), params: serde_json::json!("y".repeat(JOURNAL_BYTES_MAX)) };
        let (outcomes, _) = Journal::default().receive_all(vec![NewEntry { command: big, result: None }], &mut MemoryStore::default());
        assert!(outcomes[0].as_ref().unwrap_err().contains("bytes"), "{outcomes:?}");
    }

    #[test]
    fn finishing_and_starting_the_next_is_one_write() {
        let mut store = Flaky::default();
        let mut j = Journal::default();
        let new = ["a", "b"].map(|id| NewEntry { command: cmd(id), result: None }).to_vec();
        j.receive_all(new, &mut store).1.unwrap();
        j.start("a", &mut store).unwrap();
        j.finish_then_start(&result("a"), Some("b"), &mut store).unwrap();
        let (again, _) = Journal::load(&mut store);
        assert_eq!((again.get("a").unwrap().state, again.get("b").unwrap().state), (CommandState::Done, CommandState::Running));
        assert!(j.finish_then_start(&result("b"), Some("a"), &mut store).is_err(), "a is done: it cannot start again");
        assert_eq!(j.get("b").unwrap().state, CommandState::Running, "nothing changed");
        store.fail = true;
        assert!(j.finish_then_start(&result("b"), None, &mut store).is_err());
        assert_eq!(j.get("b").unwrap().state, CommandState::Running);
    }

    #[test]
    fn acknowledgements_and_deliveries_stay_known_while_the_disk_refuses() {
        let mut store = Flaky::default();
        let mut j = Journal::default();
        j.receive(&cmd("a"), &mut store).unwrap();
        j.start("a", &mut store).unwrap();
        j.finish(&result("a"), &mut store).unwrap();
        store.fail = true;
        assert!(j.acknowledged(&["a".into()], &mut store).is_err());
        assert!(j.acks(10).is_empty(), "acknowledged once, not again in every check-in");
        assert!(j.delivered_all(&["a".into()], &mut store).is_err());
        assert!(j.undelivered().is_empty());
        assert_eq!(Journal::load(&mut store).0.acks(10), ["a"], "the disk still says unacknowledged");
        store.fail = false;
        j.receive(&cmd("b"), &mut store).unwrap();
        let (again, _) = Journal::load(&mut store);
        assert_eq!((again.acks(10), again.undelivered()), (vec!["b".to_string()], vec![]), "the disk caught up");
    }

    #[test]
    fn the_journal_refuses_commands_when_full() {
        let mut store = MemoryStore::default();
        let mut j = Journal::default();
        for i in 0..JOURNAL_ENTRIES_MAX {
            j.entries.push_back(Entry { command: cmd(&format!("c{i}")), state: CommandState::Received, ack_pending: true, result: None, delivery: None });
        }
        let err = j.receive(&cmd("one-more"), &mut store).unwrap_err();
        assert!(err.contains("full"), "{err}");
        assert_eq!(j.len(), JOURNAL_ENTRIES_MAX);
    }

    #[test]
    fn corrupt_and_truncated_journals_are_moved_aside() {
        let mut good = MemoryStore::default();
        let mut j = Journal::default();
        j.receive(&cmd("a"), &mut good).unwrap();
        let bytes = good.files[JOURNAL_FILE].clone();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", bytes[..bytes.len() / 2].to_vec()),
            ("empty", Vec::new()),
            ("garbage", b"\x00\x00\x00\x00".to_vec()),
            ("another format", br#"{"format":"something-else/1","entries":[]}"#.to_vec()),
            ("unknown field", br#"{"format":"redflag-agent-journal/1","entries":[],"x":1}"#.to_vec()),
            (
                "duplicate ids",
                br#"{"format":"redflag-agent-journal/1","entries":[{"command":{"id":"a","type":"t"},"state":"received","ack_pending":true},{"command":{"id":"a","type":"t"},"state":"received","ack_pending":true}]}"#.to_vec(),
            ),
            (
                "done without a result",
                br#"{"format":"redflag-agent-journal/1","entries":[{"command":{"id":"a","type":"t"},"state":"done","ack_pending":false}]}"#.to_vec(),
            ),
        ];
        for (what, bytes) in cases {
            let mut store = MemoryStore::default();
            store.files.insert(JOURNAL_FILE.into(), bytes.clone());
            let (j, corrupt) = Journal::load(&mut store);
            let corrupt = corrupt.unwrap_or_else(|| panic!("{what}: not detected"));
            assert!(j.is_empty(), "{what}");
            assert_eq!(corrupt.moved_to, "journal.json.corrupt", "{what}");
            assert_eq!(store.files.get("journal.json.corrupt"), Some(&bytes), "{what}: the bad file is kept aside");
            assert!(!store.files.contains_key(JOURNAL_FILE), "{what}");
        }
    }
}
