//! The one place the check-in loop talks to the [`Transport`]: it holds the agent's identity
//! and credentials, builds each request of the RedFlag API from its [`RequestKind`], sends it
//! under the request timeout, and reports it (`request_started`, then `request_finished` with
//! its class, time and the `Retry-After` it carried). What an answer *means* is
//! `answers.rs`'s business; what to do next is the loop's.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, timeout};

use crate::log::emitter::Emitter;
use crate::log::events::{Event, Observer, RequestKind, ms};

use super::answers::{cut_body_rule, request_outcome, retry_after, status_outcome};
use super::protocol::{HEALTH_PATH, RENEW_PATH, RenewRequest, commands_path, logs_path, system_info_path};
use super::secret::Secret;
use super::transport::{Method, Request, Response, Transport, TransportError};

/// Who the agent is to the server, and how it proves it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub agent_id: String,
    pub token: Secret,
    pub refresh_token: Secret,
}

/// The transport, the credentials and the request timeout.
#[derive(Debug)]
pub struct Exchange<T> {
    transport: T,
    credentials: Credentials,
    request_timeout: Duration,
}

impl<T: Transport> Exchange<T> {
    pub fn new(transport: T, credentials: Credentials, request_timeout: Duration) -> Self {
        Exchange { transport, credentials, request_timeout }
    }

    /// The refresh token is set (renewal is possible at all).
    pub fn can_renew(&self) -> bool {
        !self.credentials.refresh_token.is_empty()
    }

    /// A renewed access token, in use from the next request.
    pub fn set_token(&mut self, token: Secret) {
        self.credentials.token = token;
    }

    /// The request of `kind`, with `body` for the kinds that carry one (check-in, result).
    fn request(&self, kind: RequestKind, body: Option<Vec<u8>>) -> Request {
        let c = &self.credentials;
        match kind {
            RequestKind::Health => Request { method: Method::Get, path: HEALTH_PATH.into(), bearer: None, json_body: None },
            RequestKind::Checkin => {
                Request { method: Method::Get, path: commands_path(&c.agent_id), bearer: Some(c.token.clone()), json_body: body }
            }
            RequestKind::Result => {
                Request { method: Method::Post, path: logs_path(&c.agent_id), bearer: Some(c.token.clone()), json_body: body }
            }
            RequestKind::SystemInfo => {
                Request { method: Method::Post, path: system_info_path(&c.agent_id), bearer: Some(c.token.clone()), json_body: body }
            }
            RequestKind::Renew => {
                let renew = RenewRequest { agent_id: c.agent_id.clone(), refresh_token: c.refresh_token.expose().to_string() };
                let json_body = Some(serde_json::to_vec(&renew).unwrap_or_default());
                Request { method: Method::Post, path: RENEW_PATH.into(), bearer: None, json_body }
            }
        }
    }

    /// Sends one request of `kind` under the request timeout, reporting it through `emitter`.
    /// `wall` is read only to measure an HTTP-date `Retry-After` when the answer has no `Date`.
    pub async fn send<O: Observer>(
        &mut self,
        kind: RequestKind,
        body: Option<Vec<u8>>,
        emitter: &mut Emitter<O>,
        wall: impl Fn() -> SystemTime,
    ) -> Result<Response, TransportError> {
        let within = self.request_timeout;
        self.send_within(kind, body, within, emitter, wall).await
    }

    /// The request timeout: the longest any request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// [`Exchange::send`] under `within` instead of the request timeout (never longer): a
    /// result posted between check-ins gets the time left before the next one is due.
    pub async fn send_within<O: Observer>(
        &mut self,
        kind: RequestKind,
        body: Option<Vec<u8>>,
        within: Duration,
        emitter: &mut Emitter<O>,
        wall: impl Fn() -> SystemTime,
    ) -> Result<Response, TransportError> {
        let request = self.request(kind, body);
        emitter.emit(Event::RequestStarted { kind });
        let started = Instant::now();
        let sent = match timeout(within.min(self.request_timeout), self.transport.send(&request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout),
        };
        // Only a check-in answer may be read cut at the limit (its first MiB's commands).
        let result = cut_body_rule(kind, sent);
        let outcome = request_outcome(kind, &result);
        let (class, ok) = (outcome.class().to_string(), outcome == crate::resilience::Outcome::Success);
        // The Retry-After as given (before the clamp), so the trace can judge how it was honoured.
        let retry_after_ms = result.as_ref().ok().and_then(|r| retry_after(status_outcome(r.status), r, &wall)).map(ms);
        emitter.emit(Event::RequestFinished { kind, class, ok, elapsed_ms: ms(started.elapsed()), retry_after_ms });
        result
    }
}
