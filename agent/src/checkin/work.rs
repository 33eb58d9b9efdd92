//! After an attempt: running the commands the desk has journaled, one after another, and then
//! delivering their fresh results at once, as one more attempt under the strategy.
//!
//! Every command is journaled `running` before it starts (one whose `running` cannot be written
//! does not start), and its result journaled and queued after. While a command runs the agent
//! does not check in. Hundreds of commands cost a few log lines (the emitter's budget).

use tokio::time::Instant;

use crate::commands::journal::JOURNAL_ENTRIES_MAX;
use crate::commands::kinds::Action;
use crate::commands::runner::CommandRunner;
use crate::log::emitter::CommandLines;
use crate::log::events::{Event, ms};
use crate::resilience::{Gate, Outcome, Strategy, Verdict};

use super::{CheckinLoop, Host, Parts};

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// Runs every journaled command not yet started, oldest first. After a successful check-in,
    /// the new results are delivered at once, as one more attempt under the strategy. Returns
    /// when the next attempt is due instead, if the strategy said so.
    ///
    /// `at_once`: the check-in's answer asked for an immediate check-in; the decision after the
    /// results keeps it.
    pub(super) async fn run_commands_then_deliver(&mut self, checked_in: bool, at_once: bool) -> Option<Instant> {
        self.run_commands().await;
        if !(checked_in && self.desk.results_added()) {
            return None;
        }
        let now = Instant::now();
        let (gate, transition) = self.strategy.admit(now.into_std());
        self.emit_transition(transition);
        if let Gate::Wait { .. } = gate {
            return None;
        }
        let failed = self.deliver_results().await;
        let now = Instant::now();
        let ended = failed.as_ref().map_or((Verdict::Success, None, Outcome::Success), |f| (f.verdict, f.retry_after, f.outcome));
        let decision = self.decide(now, ended, at_once);
        self.emit_transition(decision.transition);
        if let Some(f) = failed {
            let pending = self.desk.pending_results() as u32;
            self.emitter.emit(Event::ResultsHeld { pending, class: f.outcome.class().to_string(), delay_ms: ms(decision.delay) });
        }
        Some(Instant::from_std(decision.next_attempt_at))
    }

    /// Runs the journaled commands not yet started (at most the journal's size in one go).
    async fn run_commands(&mut self) {
        let mut lines = CommandLines::default();
        for _ in 0..JOURNAL_ENTRIES_MAX {
            let Some(cmd) = self.desk.next_to_run() else { break };
            let (started, events) = self.desk.start(&cmd.id, &mut self.store);
            self.emitter.emit_all(events);
            if !started {
                break;
            }
            let event = Event::CommandStarted { id: cmd.id.clone(), kind: cmd.kind.clone() };
            self.emitter.command_line(&mut lines, event, Some(cmd.kind.clone()));
            let began = Instant::now();
            let exec = self.runner.run(&cmd).await;
            let elapsed = began.elapsed();
            match &exec.effect {
                Some(Action::RapidPolling(window)) => {
                    let (now, wall) = (Instant::now().into_std(), self.host.wall_clock());
                    let events = self.rapid.enable_heartbeat(now, wall, *window, &mut self.store);
                    self.emitter.emit_all(events);
                }
                Some(Action::StopRapidPolling) => {
                    let events = self.rapid.stop(&mut self.store);
                    self.emitter.emit_all(events);
                }
                Some(Action::Skip { .. }) | None => {}
            }
            let event = Event::CommandFinished {
                id: cmd.id.clone(),
                kind: cmd.kind.clone(),
                result: exec.result.to_string(),
                elapsed_ms: ms(elapsed),
            };
            self.emitter.command_line(&mut lines, event, None);
            let events = self.desk.finish(&cmd, &exec, elapsed, &mut self.store);
            self.emitter.emit_all(events);
        }
        self.emitter.end_command_lines(lines);
    }
}
