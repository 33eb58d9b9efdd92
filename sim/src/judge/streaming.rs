//! Judging a run while its trace is written: [`TraceJudge`] takes each line once, in trace
//! order, and keeps only what the checks read (the index, and the command lines when a command
//! check asks for them), so a million-agent run is judged without holding its trace.
//!
//! The verdicts are exactly [`super::evaluate`]'s on the same lines: both build the same
//! [`TraceIndex`] and run the same checks over it.

use std::time::Duration;

use redflag_agent::log::events::Event;

use super::{TraceIndex, TraceIndexBuilder, Verdict, evaluate_indexed};
use crate::scenario::{Check, Scenario};
use crate::trace::{Record, SimEvent};

/// A run's judge, fed as the trace is written.
pub struct TraceJudge {
    index: TraceIndexBuilder,
    /// The command lines, kept only when `no_lost_commands` or `no_duplicate_execution` is
    /// asked for (they read the lines, not the index).
    commands: Option<Vec<Record>>,
}

impl TraceJudge {
    pub fn new(scenario: &Scenario) -> Self {
        let command_checks =
            scenario.expect.iter().any(|e| matches!(e.check, Check::NoLostCommands { .. } | Check::NoDuplicateExecution));
        TraceJudge { index: TraceIndexBuilder::new(&scenario.fleet), commands: command_checks.then(Vec::new) }
    }

    /// Takes the next line of the trace.
    pub fn push(&mut self, r: &Record) {
        self.index.push(r);
        if let Some(commands) = &mut self.commands {
            if is_command_line(r) {
                commands.push(r.clone());
            }
        }
    }

    /// Judges every expectation (as [`super::evaluate`] does) and returns the index too, for
    /// the recoveries and fleet figures of the report.
    pub fn finish(self, scenario: &Scenario, tolerance: Duration) -> (Vec<Verdict>, TraceIndex) {
        let index = self.index.finish();
        let tol = tolerance.as_millis() as u64;
        let verdicts = evaluate_indexed(scenario, self.commands.as_deref().unwrap_or(&[]), &index, tol);
        (verdicts, index)
    }
}

/// The lines `no_lost_commands` and `no_duplicate_execution` read.
fn is_command_line(r: &Record) -> bool {
    match r.sim_event() {
        Some(e) => matches!(e, SimEvent::CommandQueued { .. } | SimEvent::CommandDelivered { .. } | SimEvent::CommandResult { .. }),
        None => matches!(
            r.agent_event(),
            Some(Event::CommandStarted { .. } | Event::CommandDuplicate { .. } | Event::CommandInterrupted { .. })
        ),
    }
}
