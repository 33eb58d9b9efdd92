//! The one way the check-in loop's events go out, and the log budget for command lines.
//!
//! [`Emitter::emit`] writes an event as a log line (`events::log_event`) and hands it to the
//! [`Observer`] (the simulation's trace; nothing in production). Components of the loop do not
//! emit: they return their events, and the loop's driver passes them here, so "why did this
//! event go out, and when" has one answer.
//!
//! The only other path is the command-line budget ([`CommandLines`]): hundreds of commands in
//! one check-in must not cost hundreds of log lines. The first [`COMMAND_LOG_LINES_MAX`] command
//! lines of a check-in are logged one by one; the rest reach the observer only (the trace keeps
//! every event) and are summarised in one `command_lines_summarised` line.

use std::collections::BTreeMap;

use super::events::{COMMAND_LOG_LINES_MAX, Event, Observer, log_commands_summary, log_event};

/// Logs events and hands them to the observer.
#[derive(Debug)]
pub struct Emitter<O> {
    agent_id: String,
    observer: O,
}

/// The command lines one check-in has logged one by one, and what it only summarised.
#[derive(Debug, Default)]
pub struct CommandLines {
    logged: usize,
    not_logged: usize,
    /// Commands not logged one by one, by type.
    kinds: BTreeMap<String, usize>,
}

impl<O: Observer> Emitter<O> {
    pub fn new(agent_id: String, observer: O) -> Self {
        Emitter { agent_id, observer }
    }

    /// Logs `event` and hands it to the observer.
    pub fn emit(&mut self, event: Event) {
        log_event(&self.agent_id, &event);
        self.observer.on_event(&event);
    }

    /// [`Emitter::emit`] for each event, in order.
    pub fn emit_all(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.emit(event);
        }
    }

    /// One command log line under `budget`: logged while the budget lasts, then only observed
    /// and counted by `kind` for the summary.
    pub fn command_line(&mut self, budget: &mut CommandLines, event: Event, kind: Option<String>) {
        if budget.logged < COMMAND_LOG_LINES_MAX {
            budget.logged += 1;
            self.emit(event);
            return;
        }
        budget.not_logged += 1;
        if let Some(kind) = kind {
            *budget.kinds.entry(kind).or_default() += 1;
        }
        self.observer.on_event(&event);
    }

    /// The summary of what `budget` did not log one by one, if anything.
    pub fn end_command_lines(&mut self, budget: CommandLines) {
        if budget.not_logged > 0 {
            log_commands_summary(&self.agent_id, budget.not_logged, &budget.kinds);
        }
    }

    /// The events of a check-in answer taken in: command lines under one budget (each command
    /// counted once, by its `command_received`), everything else emitted as is.
    pub fn answer_events(&mut self, events: Vec<Event>) {
        let mut budget = CommandLines::default();
        for event in events {
            // The skips of invalid or deferred entries have no type of their own.
            let kind = match &event {
                Event::CommandReceived { kind, .. } => Some(kind.as_str()),
                Event::CommandSkipped { kind, .. } if kind.is_empty() => Some("(invalid or deferred)"),
                Event::CommandSkipped { .. } | Event::CommandDuplicate { .. } => None,
                _ => {
                    self.emit(event);
                    continue;
                }
            };
            let kind = kind.map(str::to_string);
            self.command_line(&mut budget, event, kind);
        }
        self.end_command_lines(budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen(Vec<&'static str>);

    impl Observer for Seen {
        fn on_event(&mut self, event: &Event) {
            self.0.push(event.name());
        }
    }

    #[test]
    fn every_event_reaches_the_observer_even_past_the_budget() {
        let mut emitter = Emitter::new("a".into(), Seen::default());
        let mut events: Vec<Event> =
            (0..COMMAND_LOG_LINES_MAX + 5).map(|i| Event::CommandReceived { id: i.to_string(), kind: "scan".into() }).collect();
        events.push(Event::RapidPolling { for_ms: 1 });
        emitter.answer_events(events);
        assert_eq!(emitter.observer.0.len(), COMMAND_LOG_LINES_MAX + 6);
        assert_eq!(emitter.observer.0.last(), Some(&"rapid_polling"));
    }

    #[test]
    fn the_budget_counts_what_it_did_not_log_by_kind() {
        let mut emitter = Emitter::new("a".into(), Seen::default());
        let mut budget = CommandLines::default();
        for i in 0..COMMAND_LOG_LINES_MAX + 3 {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            emitter.command_line(&mut budget, Event::CommandStarted { id: i.to_string(), kind: kind.into() }, Some(kind.into()));
        }
        assert_eq!((budget.logged, budget.not_logged), (COMMAND_LOG_LINES_MAX, 3));
        assert_eq!(budget.kinds.values().sum::<usize>(), 3);
    }
}
