//! The driver: the loop that awaits, asks the strategy, and hands what happened to the
//! components. Nothing here decides a delay (the strategy does), reads an answer (the answer
//! rules do) or touches a state file (the desk does); the driver sequences them and emits the
//! events they return.
//!
//! One round: wait until the next attempt is due; ask the strategy to admit it (an open breaker
//! says when to ask again); run the attempt (`attempt.rs`); take the answer in (its commands to
//! the desk, its rapid polling to the window); ask the strategy when the next attempt is due,
//! with the rapid interval or "at once" after a heartbeat command; report the attempt and save
//! the status; acknowledge; then, until the next check-in is due, run the commands received and
//! post results on their own schedule (`work.rs`, `result_lane.rs`);
//! after a successful check-in, report the system information if it is due, in the time left
//! before the next attempt (`system_info.rs`). At start, an operator's heartbeat kept in
//! `state_dir` goes on (`commands::heartbeat`).

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until};

use crate::commands::desk::Desk;
use crate::log::events::{Event, ms};
use crate::resilience::{Decision, Gate, Outcome, Report, Strategy, Transition, Verdict};
use crate::server::answers::AttemptResult;
use crate::server::checkin_answer::CheckinAnswer;
use crate::server::protocol::{AGENT_VERSION, RESPONSE_BODY_MAX_BYTES};
use crate::store::Store;

use super::{CheckinLoop, Host, Parts};

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// Runs until `shutdown` completes. There is no other way out: every failure the server or
    /// the network can produce leads to another attempt, after a bounded wait.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next_due = Instant::now();
        self.emitter.emit(Event::AgentStarted { agent_id: self.agent_id.clone(), version: AGENT_VERSION.to_string() });
        let (desk, events) = Desk::recover(&mut self.store);
        self.desk = desk;
        self.emitter.emit_all(events);
        // An operator's heartbeat kept in state_dir goes on: the first check-in reports it.
        let events = self.rapid.restore(Instant::now().into_std(), self.host.wall_clock(), &mut self.store);
        self.emitter.emit_all(events);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = sleep_until(next_due) => {}
            }
            let probe_health = match self.admit() {
                Ok(probe_health) => probe_health,
                Err(until) => {
                    next_due = until;
                    continue;
                }
            };
            let result = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = self.attempt(probe_health) => r,
            };
            let decision = self.after_attempt(result);
            next_due = Instant::from_std(decision.next_attempt_at);
            let checked_in = decision.verdict == Verdict::Success;
            if checked_in {
                let events = self.desk.checkin_succeeded(&mut self.store);
                self.emitter.emit_all(events);
            }
            // Commands, then results, in the time before the next check-in is due.
            if self.has_work(checked_in, Instant::now()) {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = self.work(checked_in, next_due) => {}
                }
            }
            if checked_in {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = self.report_system_info(next_due) => {}
                }
            }
        }
        self.emitter.emit(Event::Stopped);
    }

    /// An attempt is due now: `Ok(probe_health)` if the strategy lets it go, or `Err(until)`
    /// when the breaker is open (reported as `breaker_rejected`).
    fn admit(&mut self) -> Result<bool, Instant> {
        let now = Instant::now();
        let (gate, transition) = self.strategy.admit(now.into_std());
        self.emit_transition(transition);
        match gate {
            Gate::Go { probe_health } => Ok(probe_health),
            Gate::Wait { until } => {
                let until = Instant::from_std(until).max(now);
                self.emitter.emit(Event::BreakerRejected { wait_ms: ms(until - now) });
                Err(until)
            }
        }
    }

    /// Everything that follows an attempt: the answer taken in (its rapid polling already
    /// shortens the delay decided now), the next attempt decided, the attempt reported and the
    /// status saved.
    fn after_attempt(&mut self, result: AttemptResult) -> Decision {
        let now = Instant::now();
        let (answer_events, heartbeat) = match (&result.answer, result.verdict) {
            (Some(answer), Verdict::Success) => self.take_answer(answer, self.host.wall_clock()),
            _ => (Vec::new(), false),
        };
        // Only a heartbeat that was journaled (it will run) makes the next check-in immediate.
        let at_once = self.rapid.choose_at_once(heartbeat);
        let decision = self.decide(now, (result.verdict, result.retry_after, result.outcome), at_once);
        self.report(&result, &decision, answer_events);
        decision
    }

    /// Asks the strategy when the next attempt is due after one that ended at `now` as
    /// `ended` says (verdict, Retry-After, outcome). `at_once`: right after an answer carrying
    /// `enable_heartbeat`; otherwise the rapid-polling window's interval applies, if any.
    pub(super) fn decide(&mut self, now: Instant, ended: (Verdict, Option<Duration>, Outcome), at_once: bool) -> Decision {
        let (verdict, retry_after, outcome) = ended;
        let interval = match at_once {
            true => Some(Duration::ZERO),
            false => self.rapid.interval(now.into_std()),
        };
        let report = Report { verdict, retry_after, interval, outcome: Some(outcome) };
        self.strategy.complete(now.into_std(), report, &mut self.rng)
    }

    /// Takes in a check-in answer: its commands into the desk (journaled, not yet run), its
    /// rapid polling on. Returns the events that say so, to be reported after `checkin_ok`, and
    /// whether a heartbeat command was journaled.
    fn take_answer(&mut self, answer: &CheckinAnswer, wall: SystemTime) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        if answer.cut_short {
            let taken = (answer.commands.len() + answer.refused.len()) as u32;
            events.push(Event::AnswerCutShort { commands: taken, limit_bytes: RESPONSE_BODY_MAX_BYTES as u64 });
        }
        for reason in &answer.invalid_commands {
            events.push(Event::CommandSkipped { id: String::new(), kind: String::new(), reason: reason.clone() });
        }
        let taken = self.desk.take_answer(answer, &mut self.store);
        events.extend(taken.events);
        // A strategy whose system ignores the answer's window (RedFlag 0.1.18) keeps its pace;
        // its own heartbeat command still switches rapid polling on.
        let follows = self.strategy.follows_answer_rapid_polling();
        if let Some(until) = answer.rapid_polling_until.filter(|_| follows) {
            if let Ok(window) = until.duration_since(wall) {
                events.extend(self.rapid.extend(Instant::now().into_std(), window));
            }
        }
        (events, taken.heartbeat)
    }

    /// Reports an attempt's end (transition, then `checkin_ok` and the answer's events, or
    /// `attempt_failed`) and saves the status.
    fn report(&mut self, result: &AttemptResult, decision: &Decision, answer_events: Vec<Event>) {
        self.emit_transition(decision.transition);
        let wall = humantime::format_rfc3339_millis(self.host.wall_clock()).to_string();
        let events = self.status.attempt_ended(result, decision, &wall);
        self.emitter.emit_all(events);
        if decision.verdict == Verdict::Success {
            self.emitter.answer_events(answer_events);
        }
        let (failures, breaker) = (self.strategy.consecutive_failures(), self.strategy.breaker_state());
        let status = self.status.status(&self.agent_id, wall, failures, breaker, self.host.log_lines_dropped());
        let saved = self.store.save_status(&status);
        if let Some(event) = self.status.saved(saved) {
            self.emitter.emit(event);
        }
    }

    pub(super) fn emit_transition(&mut self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.emitter.emit(Event::Breaker { from: t.from.to_string(), to: t.to.to_string() });
        }
    }
}
