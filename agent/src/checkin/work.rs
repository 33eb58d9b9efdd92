//! After an attempt, until the next check-in is due: running the commands the desk has
//! journaled, then posting results on their own schedule (`result_lane.rs`).
//!
//! Both share the time before the next check-in, so neither a queue of thousands of commands
//! nor a slow or broken `/logs` holds the check-ins back:
//!
//! * **Commands** run oldest first while the check-in is not yet due (the first of a round
//!   always runs), and only while the outbox has room for their results. Each is journaled
//!   `running` before it starts, in the same write as the previous one's result; while a
//!   command runs the agent does not check in, so a long command delays a check-in by its own
//!   length. Hundreds of commands cost a few log lines (the emitter's budget).
//! * **Results** go out after a successful check-in, when the result lane is due, each request
//!   within the time left before the check-in (at least half a request timeout); a failure
//!   holds them on the lane's backoff, reported as `results_held`. The check-in strategy never
//!   hears of result failures.

use tokio::time::Instant;

use crate::commands::journal::JOURNAL_ENTRIES_MAX;
use crate::commands::kinds::Action;
use crate::commands::outbox::OUTBOX_RESULTS_MAX;
use crate::commands::runner::{CommandRunner, Execution};
use crate::log::emitter::CommandLines;
use crate::log::events::{Event, RequestKind, ms};
use crate::resilience::{Outcome, Strategy};
use crate::server::answers::ResultAnswer;
use crate::server::protocol::Command;
use crate::server::transport::TransportError;

use super::result_lane::{may_post, request_budget};
use super::{CheckinLoop, Host, Parts};

/// How a delivery round ended.
enum Posted {
    /// The outbox is empty, or the round's time is used up.
    Done,
    /// A post failed: the lane waits (the outcome and the server's Retry-After, if any).
    Held(Outcome, Option<std::time::Duration>),
}

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// Whether there is work after an attempt that `checked_in` (or not), at `now`.
    pub(super) fn has_work(&self, checked_in: bool, now: Instant) -> bool {
        self.desk.has_commands_to_run() || (checked_in && self.desk.pending_results() > 0 && self.results.due(now.into_std()))
    }

    /// Runs commands, then (after a successful check-in) posts results, until the next check-in
    /// is `due`.
    pub(super) async fn work(&mut self, checked_in: bool, due: Instant) {
        self.run_commands(due).await;
        if checked_in && self.desk.pending_results() > 0 && self.results.due(Instant::now().into_std()) {
            self.deliver_results(due).await;
        }
    }

    /// Runs journaled commands, oldest first, while the check-in is not due (at least one).
    async fn run_commands(&mut self, due: Instant) {
        let Some(mut cmd) = self.desk.next_to_run() else { return };
        let (started, events) = self.desk.start(&cmd.id, &mut self.store);
        self.emitter.emit_all(events);
        if !started {
            return;
        }
        let mut lines = CommandLines::default();
        for _ in 0..JOURNAL_ENTRIES_MAX {
            let (exec, elapsed) = self.run_one(&cmd, &mut lines).await;
            // The next one starts in the same journal write, while there is time.
            let next = match Instant::now() < due {
                true => self.desk.next_to_run_after_one_more(),
                false => None,
            };
            let (next_started, events) = self.desk.finish(&cmd, &exec, elapsed, next.as_ref().map(|c| c.id.as_str()), &mut self.store);
            self.emitter.emit_all(events);
            match next {
                Some(n) if next_started => cmd = n,
                _ => break,
            }
        }
        let events = self.desk.flush_outbox(&mut self.store);
        self.emitter.emit_all(events);
        self.emitter.end_command_lines(lines);
    }

    /// Runs one command (journaled `running` already) and applies its effect on rapid polling.
    async fn run_one(&mut self, cmd: &Command, lines: &mut CommandLines) -> (Execution, std::time::Duration) {
        let event = Event::CommandStarted { id: cmd.id.clone(), kind: cmd.kind.clone() };
        self.emitter.command_line(lines, event, Some(cmd.kind.clone()));
        let began = Instant::now();
        let exec = self.runner.run(cmd).await;
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
        let event = Event::CommandFinished { id: cmd.id.clone(), kind: cmd.kind.clone(), result: exec.result.to_string(), elapsed_ms: ms(elapsed) };
        self.emitter.command_line(lines, event, None);
        (exec, elapsed)
    }

    /// Posts the outbox's results, oldest first, until it is empty, the check-in is due, or a
    /// post fails (the lane then waits its backoff); what the server took is written down once.
    async fn deliver_results(&mut self, due: Instant) {
        let posted = self.post_results(due).await;
        let events = self.desk.end_delivery(&mut self.store);
        self.emitter.emit_all(events);
        if let Posted::Held(outcome, retry_after) = posted {
            let delay = self.results.failed(Instant::now().into_std(), retry_after);
            let pending = self.desk.pending_results() as u32;
            self.emitter.emit(Event::ResultsHeld { pending, class: outcome.class().to_string(), delay_ms: ms(delay) });
        }
    }

    async fn post_results(&mut self, due: Instant) -> Posted {
        let mut renewed = false;
        for posted in 0..OUTBOX_RESULTS_MAX + 1 {
            let now = Instant::now();
            let Some(result) = self.desk.next_result().filter(|_| may_post(now.into_std(), due.into_std(), posted)) else {
                return Posted::Done;
            };
            let within = request_budget(now.into_std(), due.into_std(), self.exchange.request_timeout());
            let body = serde_json::to_vec(&result).unwrap_or_default();
            let sent = self.exchange.send_within(RequestKind::Result, Some(body), within, &mut self.emitter, || self.host.wall_clock()).await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => return Posted::Held(TransportError::outcome(&e), None),
            };
            let id = result.command_id;
            match crate::server::answers::result_answer(&resp, renewed, || self.host.wall_clock()) {
                ResultAnswer::Delivered => {
                    self.results.delivered();
                    let events = self.desk.delivered(&id);
                    self.emitter.emit_all(events);
                }
                ResultAnswer::Renew => {
                    renewed = true;
                    if let Err(failed) = self.renew().await {
                        return Posted::Held(failed.outcome, failed.retry_after);
                    }
                }
                ResultAnswer::Refused(status) => {
                    let events = self.desk.refused(&id, status, &mut self.store);
                    self.emitter.emit_all(events);
                }
                ResultAnswer::Failed(failed) => return Posted::Held(failed.outcome, failed.retry_after),
                ResultAnswer::NotNow => return Posted::Held(crate::server::answers::status_outcome(resp.status), None),
            }
        }
        Posted::Done
    }
}
