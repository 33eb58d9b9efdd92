//! The requests of one admitted attempt, in order: the `/health` probe (while recovering), the
//! check-in, and a token renewal on 401 followed by one more check-in. Each request goes through
//! the exchange; what its answer means comes from `server::answers`.
//!
//! * Results are not part of an attempt: they go out after it, on their own schedule
//!   (`work.rs`, `result_lane.rs`), so a slow or broken `/logs` never holds a check-in back.
//! * The probe is an optimisation, not a gate: after a failed probe the next attempt goes
//!   straight to the check-in, so probes never block check-ins twice in a row.


use crate::log::events::{Event, RequestKind};
use crate::resilience::{Outcome, Strategy, Verdict};
use crate::server::answers::{AttemptResult, RenewAnswer, checkin_answer, checkin_failed, health_answer, renew_answer};
use crate::server::protocol::{AGENT_VERSION, BUILD_VERSION_KEY, CheckinBody, Metrics, PROTOCOL_VERSION};
use crate::server::secret::Secret;
use crate::store::Store;

use super::{CheckinLoop, Host, Parts};

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// Health probe (while recovering, unless the last probe failed), check-in, and token
    /// renewal on 401.
    pub(super) async fn attempt(&mut self, probe_health: bool) -> AttemptResult {
        let probe = probe_health && !std::mem::take(&mut self.skip_next_probe);
        if probe {
            if let Some(failed) = self.probe().await {
                self.skip_next_probe = true;
                return failed;
            }
        }
        let result = self.checkin().await;
        if result.verdict != Verdict::Renew {
            return result;
        }
        match self.renew().await {
            Ok(()) => {
                let again = self.checkin().await;
                if again.verdict == Verdict::Renew {
                    // Refused even with a brand-new token: nothing more to do this round.
                    return AttemptResult::failed(RequestKind::Checkin, again.outcome, Verdict::FailFast, None);
                }
                again
            }
            Err(failed) => failed,
        }
    }

    /// `GET /health`: `Some` is the failure that ends the attempt.
    async fn probe(&mut self) -> Option<AttemptResult> {
        let sent = self.exchange.send(RequestKind::Health, None, &mut self.emitter, || self.host.wall_clock()).await;
        match sent {
            Ok(resp) => health_answer(&resp, || self.host.wall_clock()),
            Err(e) => Some(AttemptResult::transport(RequestKind::Health, &e)),
        }
    }

    async fn checkin(&mut self) -> AttemptResult {
        let body = self.checkin_body();
        let sent = self.exchange.send(RequestKind::Checkin, Some(body), &mut self.emitter, || self.host.wall_clock()).await;
        let (result, streak) = match sent {
            Err(e) => checkin_failed(&e),
            Ok(resp) => checkin_answer(&resp, self.bare_404_streak, || self.host.wall_clock()),
        };
        self.bare_404_streak = streak;
        result
    }

    /// The check-in body: the host's metrics, the version the server compares
    /// ([`PROTOCOL_VERSION`]), our own build in `metadata`, the operator's heartbeat while it is
    /// on, or its end once (see `commands::heartbeat`), and the journal's unacknowledged ids when there are any
    /// (without them the body is exactly the metrics, as RedFlag's own agent sends it).
    fn checkin_body(&mut self) -> Vec<u8> {
        let mut metrics = Metrics { version: PROTOCOL_VERSION.to_string(), ..Metrics::default() };
        self.host.metrics(&mut metrics);
        metrics.metadata.insert(BUILD_VERSION_KEY.into(), AGENT_VERSION.into());
        for (key, value) in self.rapid.report(self.host.wall_clock()) {
            metrics.metadata.insert(key.into(), value);
        }
        let body = CheckinBody { metrics, acknowledged_commands: self.desk.acks_for_checkin() };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// `POST /api/v1/agents/renew`. On success the new token is in use at once and saved.
    pub(super) async fn renew(&mut self) -> Result<(), AttemptResult> {
        if !self.exchange.can_renew() {
            self.emitter.emit(Event::RenewalRejected { class: "no_refresh_token".into() });
            return Err(AttemptResult::failed(RequestKind::Checkin, Outcome::Status(401), Verdict::FailFast, None));
        }
        let resp = match self.exchange.send(RequestKind::Renew, None, &mut self.emitter, || self.host.wall_clock()).await {
            Ok(resp) => resp,
            Err(e) => return Err(AttemptResult::transport(RequestKind::Renew, &e)),
        };
        match renew_answer(&resp, || self.host.wall_clock()) {
            RenewAnswer::Renewed(token) => {
                let token = Secret::new(token);
                let saved = match self.store.save_token(&token) {
                    Ok(()) => true,
                    Err(error) => {
                        self.emitter.emit(Event::StoreFailed { what: "renewed token".into(), error });
                        false
                    }
                };
                self.exchange.set_token(token);
                self.emitter.emit(Event::TokenRenewed { saved });
                Ok(())
            }
            // Only re-registration helps; the loop keeps checking in at the regular interval.
            RenewAnswer::Rejected(failed) => {
                self.emitter.emit(Event::RenewalRejected { class: failed.outcome.class().to_string() });
                Err(failed)
            }
            RenewAnswer::Failed(failed) => Err(failed),
        }
    }
}
