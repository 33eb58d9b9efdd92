//! What the server's answers mean to the check-in loop: pure rules from a [`Response`] (or a
//! [`TransportError`]) to how the attempt went. No I/O: the wall clock, needed only to measure
//! an HTTP-date `Retry-After` when the server sent no `Date`, comes in as a function.
//!
//! * **Health probe** ([`health_answer`]): only an "unavailable" answer (5xx, 408, 429, a
//!   refusal, RedFlag's welcome mode) stops the attempt; a server without `/health` (404, 405)
//!   does not block check-ins.
//! * **Check-in** ([`checkin_answer`]): 2xx is an answer (204 or an empty body: no commands),
//!   a body that is not a RedFlag answer is retryable (`malformed_body`). A 404 with RedFlag's
//!   JSON error body (setup mode, a deleted agent) fails fast; a *bare* 404 (HTML or empty: a
//!   gateway whose backend is gone) is retried like a 502, at most [`BARE_404_RETRIES_MAX`]
//!   times in a row.
//! * **Renewal** ([`renew_answer`]): a new token, a refused refresh token (only re-registration
//!   helps), or a failure.
//! * **Result delivery** ([`result_answer`]): delivered, renew once on 401, refused for good
//!   (400, 413, 422), the server failing (the attempt ends), or "not now" (keep it, go on).
//! * **System information** ([`system_info_answer`]): stored (2xx), or not, with the outcome
//!   and the server's `Retry-After`; it never decides anything about check-ins.

use std::time::{Duration, SystemTime};

use crate::log::events::RequestKind;
use crate::resilience::{Outcome, Verdict, classify, classify_status, honours_retry_after, parse_http_date, parse_retry_after};

use super::checkin_answer::{BodyEnd, CheckinAnswer, read_checkin_answer};
use super::protocol::{self, RESPONSE_BODY_MAX_BYTES};
use super::transport::{Response, TransportError};

/// Bare 404s (no RedFlag JSON body) retried with backoff in a row; beyond this a 404 is taken
/// at its word and the agent waits for the next regular check-in. With the default settings
/// 20 attempts span about 5 minutes of outage (one breaker period of 15 s each, once open),
/// the regular interval: a gateway whose backend is restarting is usually back by then.
pub const BARE_404_RETRIES_MAX: u32 = 20;

/// The longest server error message quoted in a log line's cause.
const SERVER_ERROR_QUOTE_MAX_CHARS: usize = 200;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// The request that decided the attempt (a failed probe, renewal or result, or the
    /// check-in).
    pub request: RequestKind,
    /// The outcome of the request that decided the attempt.
    pub outcome: Outcome,
    pub verdict: Verdict,
    pub retry_after: Option<Duration>,
    pub answer: Option<CheckinAnswer>,
    /// What went wrong beneath the outcome's class, when known (no secrets in it).
    pub cause: Option<String>,
}

impl AttemptResult {
    pub fn failed(request: RequestKind, outcome: Outcome, verdict: Verdict, retry_after: Option<Duration>) -> Self {
        AttemptResult { request, outcome, verdict, retry_after, answer: None, cause: None }
    }

    /// The failure of `request` with a transport error, its cause kept.
    pub fn transport(request: RequestKind, e: &TransportError) -> Self {
        AttemptResult { cause: transport_cause(e), ..AttemptResult::failed(request, e.outcome(), Verdict::Retry, None) }
    }

    /// A check-in that succeeded with `answer`.
    pub fn ok(answer: CheckinAnswer) -> Self {
        AttemptResult {
            request: RequestKind::Checkin,
            outcome: Outcome::Success,
            verdict: Verdict::Success,
            retry_after: None,
            answer: Some(answer),
            cause: None,
        }
    }

    pub fn caused_by(mut self, cause: Option<String>) -> Self {
        self.cause = cause;
        self
    }
}

/// A status code as an outcome (2xx is success).
pub fn status_outcome(status: u16) -> Outcome {
    if (200..300).contains(&status) { Outcome::Success } else { Outcome::Status(status) }
}

/// A `/health` answer as an outcome: its status, except that a 2xx saying the server is
/// waiting for configuration (RedFlag's welcome mode, which has no agent routes) is
/// [`Outcome::NotReady`].
pub fn health_outcome(resp: &Response) -> Outcome {
    match status_outcome(resp.status) {
        Outcome::Success if protocol::health_not_ready(&resp.body) => Outcome::NotReady,
        other => other,
    }
}

/// The outcome of one request of kind `kind`, for its `request_finished` event.
pub fn request_outcome(kind: RequestKind, result: &Result<Response, TransportError>) -> Outcome {
    match result {
        Ok(resp) if kind == RequestKind::Health => health_outcome(resp),
        Ok(resp) => status_outcome(resp.status),
        Err(e) => e.outcome(),
    }
}

/// A transport error's cause beyond its class, for the log.
pub fn transport_cause(e: &TransportError) -> Option<String> {
    match e {
        TransportError::Other(msg) if !msg.is_empty() => Some(msg.clone()),
        TransportError::BodyTooLarge => Some(format!("the answer's body passed the {RESPONSE_BODY_MAX_BYTES}-byte limit")),
        _ => None,
    }
}

/// Whether a body is a JSON object (RedFlag answers errors as `{"error":"..."}`).
pub fn is_json_object(body: &[u8]) -> bool {
    matches!(serde_json::from_slice::<serde_json::Value>(body), Ok(serde_json::Value::Object(_)))
}

/// RedFlag's `{"error":"..."}` message, quoted (shortened) for a log line's cause.
pub fn server_error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value.get("error")?.as_str()?;
    let mut quoted: String = text.chars().take(SERVER_ERROR_QUOTE_MAX_CHARS).collect();
    if text.chars().count() > SERVER_ERROR_QUOTE_MAX_CHARS {
        quoted.push('…');
    }
    Some(format!("the server said {quoted:?}"))
}

/// The server's Retry-After, on the answers where it is honoured (429, 503), as given (before
/// the agent's clamp). An HTTP-date is measured against the server's own `Date` when it sent
/// one, else against `wall()`.
pub fn retry_after(outcome: Outcome, resp: &Response, wall: impl FnOnce() -> SystemTime) -> Option<Duration> {
    if !honours_retry_after(outcome) {
        return None;
    }
    let value = resp.retry_after.as_deref()?;
    let reference = resp.date.as_deref().and_then(parse_http_date).unwrap_or_else(wall);
    parse_retry_after(value, reference)
}

/// A health probe's answer: `None` lets the check-in go; `Some` is the failure that ends the
/// attempt (the server is unavailable or not ready).
pub fn health_answer(resp: &Response, wall: impl FnOnce() -> SystemTime) -> Option<AttemptResult> {
    let outcome = health_outcome(resp);
    // A server without /health (404, 405, ...) must not block check-ins: only "unavailable"
    // answers stop the attempt here.
    (classify(outcome) == Verdict::Retry).then(|| {
        let ra = retry_after(outcome, resp, wall);
        AttemptResult::failed(RequestKind::Health, outcome, Verdict::Retry, ra)
    })
}

/// Which answers may be read cut at [`RESPONSE_BODY_MAX_BYTES`]: only the check-in's, whose
/// first MiB holds commands worth taking. Any other 2xx cut short is
/// [`TransportError::BodyTooLarge`] ([`Response::whole`]).
pub fn cut_body_rule(kind: RequestKind, result: Result<Response, TransportError>) -> Result<Response, TransportError> {
    match kind {
        RequestKind::Checkin => result,
        _ => result.and_then(Response::whole),
    }
}

/// A check-in's answer, given how many bare 404s came in a row before it; also returns the new
/// count (a transport error resets it: see [`checkin_failed`]).
///
/// A 2xx is read command by command (`checkin_answer.rs`): one poisoned command does not spoil
/// the answer, and a body cut at the read limit is an answer of the commands complete within
/// it. A cut body that does not even begin like an answer is `body_too_large`.
pub fn checkin_answer(resp: &Response, bare_404_streak: u32, wall: impl FnOnce() -> SystemTime) -> (AttemptResult, u32) {
    let bare_404 = resp.status == 404 && !is_json_object(&resp.body);
    let streak = if bare_404 { bare_404_streak.saturating_add(1) } else { 0 };
    if (200..300).contains(&resp.status) {
        // 204 No Content (or an empty 200) is "no commands", not a malformed answer.
        if !resp.body_truncated && resp.body.iter().all(u8::is_ascii_whitespace) {
            return (AttemptResult::ok(CheckinAnswer::default()), streak);
        }
        let end = if resp.body_truncated { BodyEnd::CutAtLimit } else { BodyEnd::Complete };
        let result = match (read_checkin_answer(&resp.body, end), resp.body_truncated) {
            (Ok(answer), _) => AttemptResult::ok(answer),
            (Err(why), true) => AttemptResult::failed(RequestKind::Checkin, Outcome::BodyTooLarge, Verdict::Retry, None).caused_by(
                Some(format!("the answer passed the {RESPONSE_BODY_MAX_BYTES}-byte limit, and what was read is not a RedFlag check-in answer: {why}")),
            ),
            (Err(why), false) => AttemptResult::failed(RequestKind::Checkin, Outcome::Malformed, Verdict::Retry, None)
                .caused_by(Some(format!("the {} answer is not a RedFlag check-in answer: {why}", resp.status))),
        };
        return (result, streak);
    }
    let outcome = status_outcome(resp.status);
    let retry_after = retry_after(outcome, resp, wall);
    let verdict = match bare_404 {
        // A gateway whose backend is gone, most likely: retry like a 502, a bounded number of
        // times. A 404 with RedFlag's JSON body keeps the table's fail-fast verdict.
        true if streak <= BARE_404_RETRIES_MAX => Verdict::Retry,
        _ => classify(outcome),
    };
    let cause = match bare_404 {
        true => Some("404 without RedFlag's JSON error body (a gateway whose backend is gone?)".to_string()),
        false => server_error_message(&resp.body),
    };
    (AttemptResult::failed(RequestKind::Checkin, outcome, verdict, retry_after).caused_by(cause), streak)
}

/// A check-in that got no answer at all; the bare-404 count starts again.
pub fn checkin_failed(e: &TransportError) -> (AttemptResult, u32) {
    (AttemptResult::transport(RequestKind::Checkin, e), 0)
}

/// What a renewal answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewAnswer {
    /// The new access token.
    Renewed(String),
    /// The server refused the refresh token itself (class given): only re-registration helps.
    Rejected(AttemptResult),
    /// The renewal failed otherwise (retryable or not, as the result says).
    Failed(AttemptResult),
}

/// A renewal's answer.
pub fn renew_answer(resp: &Response, wall: impl FnOnce() -> SystemTime) -> RenewAnswer {
    let outcome = status_outcome(resp.status);
    match resp.status {
        200..=299 => match protocol::parse_renew_answer(&resp.body) {
            Ok(token) => RenewAnswer::Renewed(token),
            Err(why) => RenewAnswer::Failed(
                AttemptResult::failed(RequestKind::Renew, Outcome::Malformed, Verdict::Retry, None).caused_by(Some(why)),
            ),
        },
        // The refresh token itself was refused. The loop keeps checking in at the regular
        // interval (the operator may fix the config, or the server may recover its database).
        401 | 403 => RenewAnswer::Rejected(AttemptResult::failed(RequestKind::Renew, outcome, Verdict::FailFast, None)),
        _ => {
            let retry_after = retry_after(outcome, resp, wall);
            let verdict = match classify_status(resp.status) {
                Verdict::Retry => Verdict::Retry,
                _ => Verdict::FailFast,
            };
            RenewAnswer::Failed(
                AttemptResult::failed(RequestKind::Renew, outcome, verdict, retry_after).caused_by(server_error_message(&resp.body)),
            )
        }
    }
}

/// What an answer to a posted result means.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultAnswer {
    /// 2xx: the server has it.
    Delivered,
    /// 401, the first time in this delivery: renew the token, then go on.
    Renew,
    /// 400, 413 or 422: this result will never be accepted.
    Refused(u16),
    /// The server is failing: the attempt ends here, the result stays.
    Failed(AttemptResult),
    /// "Not now" (403, 404, a second 401, ...): keep the result, let the check-in go on.
    NotNow,
}

/// The answer to one posted result; `renewed`: a renewal was already tried in this delivery.
pub fn result_answer(resp: &Response, renewed: bool, wall: impl FnOnce() -> SystemTime) -> ResultAnswer {
    match resp.status {
        200..=299 => ResultAnswer::Delivered,
        401 if !renewed => ResultAnswer::Renew,
        400 | 413 | 422 => ResultAnswer::Refused(resp.status),
        status => {
            let outcome = status_outcome(status);
            if classify(outcome) == Verdict::Retry {
                let retry_after = retry_after(outcome, resp, wall);
                return ResultAnswer::Failed(AttemptResult::failed(RequestKind::Result, outcome, Verdict::Retry, retry_after));
            }
            ResultAnswer::NotNow
        }
    }
}

/// The answer to a `POST /system-info` (or the transport's error): `Ok` when the server stored
/// it, else the outcome and the `Retry-After` the server sent (honoured for 429 and 503).
pub fn system_info_answer(
    result: &Result<Response, TransportError>,
    wall: impl FnOnce() -> SystemTime,
) -> Result<(), (Outcome, Option<Duration>)> {
    match result {
        Ok(resp) => match status_outcome(resp.status) {
            Outcome::Success => Ok(()),
            outcome => Err((outcome, retry_after(outcome, resp, wall))),
        },
        Err(e) => Err((e.outcome(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response { status, body: body.as_bytes().to_vec(), ..Response::default() }
    }

    /// For answers that carry no Retry-After: the wall clock is not read.
    fn never() -> SystemTime {
        panic!("the wall clock is read only for a Retry-After without a Date")
    }

    #[test]
    fn a_bare_404_is_retried_a_bounded_number_of_times_and_a_json_404_fails_fast() {
        let (r, streak) = checkin_answer(&resp(404, "<html>"), 0, never);
        assert_eq!((r.verdict, streak), (Verdict::Retry, 1));
        let (r, streak) = checkin_answer(&resp(404, ""), BARE_404_RETRIES_MAX, never);
        assert_eq!((r.verdict, streak), (Verdict::FailFast, BARE_404_RETRIES_MAX + 1));
        let (r, streak) = checkin_answer(&resp(404, r#"{"error":"agent not found"}"#), 5, never);
        assert_eq!((r.verdict, streak), (Verdict::FailFast, 0));
        assert_eq!(r.cause.as_deref(), Some(r#"the server said "agent not found""#));
        assert_eq!(checkin_failed(&TransportError::Refused).1, 0);
    }

    #[test]
    fn an_empty_2xx_is_no_commands_and_garbage_is_malformed() {
        assert_eq!(checkin_answer(&resp(204, ""), 0, never).0, AttemptResult::ok(CheckinAnswer::default()));
        let (r, _) = checkin_answer(&resp(200, "<html>"), 0, never);
        assert_eq!((r.outcome, r.verdict), (Outcome::Malformed, Verdict::Retry));
    }

    #[test]
    fn a_cut_check_in_answer_gives_its_commands_and_other_cut_answers_are_too_large() {
        let entry = r#"{"id":"c1","type":"scan_updates","params":{}},"#;
        let cut = Response { body: format!(r#"{{"commands":[{entry}{entry}{{"id":"c"#).into_bytes(), body_truncated: true, ..resp(200, "")};
        let (r, _) = checkin_answer(&cut, 0, never);
        let answer = r.answer.expect("an answer");
        assert!(answer.cut_short && answer.commands.len() == 2);
        let garbage = Response { body: vec![b'x'; 100], body_truncated: true, ..resp(200, "") };
        let (r, _) = checkin_answer(&garbage, 0, never);
        assert_eq!((r.outcome, r.verdict), (Outcome::BodyTooLarge, Verdict::Retry));
        assert!(r.cause.unwrap().contains("limit"));
        let blank = Response { body: vec![b' '; 100], body_truncated: true, ..resp(200, "") };
        assert_eq!(checkin_answer(&blank, 0, never).0.outcome, Outcome::BodyTooLarge, "a cut body is never \"empty\"");
        assert_eq!(cut_body_rule(RequestKind::Renew, Ok(cut.clone())), Err(TransportError::BodyTooLarge));
        assert_eq!(cut_body_rule(RequestKind::Checkin, Ok(cut.clone())), Ok(cut));
        let not_ok = Response { body: vec![b'x'; 10], body_truncated: true, ..resp(502, "") };
        assert_eq!(cut_body_rule(RequestKind::Result, Ok(not_ok)).unwrap().body, b"");
    }

    #[test]
    fn a_missing_health_route_does_not_block_and_welcome_mode_does() {
        assert_eq!(health_answer(&resp(404, ""), never), None);
        assert_eq!(health_answer(&resp(200, r#"{"status":"healthy"}"#), never), None);
        let r = health_answer(&resp(200, r#"{"status":"waiting for configuration"}"#), never).unwrap();
        assert_eq!(r.outcome, Outcome::NotReady);
        assert_eq!(health_answer(&resp(503, ""), never).unwrap().request, RequestKind::Health);
    }

    #[test]
    fn retry_after_is_read_only_where_honoured() {
        let mut r = resp(503, "");
        r.retry_after = Some("7".into());
        let wall = || SystemTime::UNIX_EPOCH;
        assert_eq!(retry_after(Outcome::Status(503), &r, wall), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Outcome::Status(500), &r, never), None);
    }

    #[test]
    fn renewal_and_result_answers() {
        assert_eq!(renew_answer(&resp(200, r#"{"token":"t2"}"#), never), RenewAnswer::Renewed("t2".into()));
        assert!(matches!(renew_answer(&resp(401, ""), never), RenewAnswer::Rejected(_)));
        let RenewAnswer::Failed(r) = renew_answer(&resp(400, ""), never) else { panic!() };
        assert_eq!(r.verdict, Verdict::FailFast);
        assert_eq!(result_answer(&resp(201, ""), false, never), ResultAnswer::Delivered);
        assert_eq!(result_answer(&resp(401, ""), false, never), ResultAnswer::Renew);
        assert_eq!(result_answer(&resp(401, ""), true, never), ResultAnswer::NotNow);
        assert_eq!(result_answer(&resp(422, ""), false, never), ResultAnswer::Refused(422));
        assert!(matches!(result_answer(&resp(502, ""), false, never), ResultAnswer::Failed(_)));
        assert_eq!(result_answer(&resp(404, ""), false, never), ResultAnswer::NotNow);
    }

    #[test]
    fn a_system_info_answer_is_stored_or_says_why_not() {
        assert_eq!(system_info_answer(&Ok(resp(200, r#"{"message":"system info updated successfully"}"#)), never), Ok(()));
        assert_eq!(system_info_answer(&Ok(resp(500, "")), never), Err((Outcome::Status(500), None)));
        assert_eq!(system_info_answer(&Ok(resp(401, "")), never), Err((Outcome::Status(401), None)));
        let throttled = Response { retry_after: Some("30".into()), ..resp(429, "") };
        let (outcome, wait) = system_info_answer(&Ok(throttled), || SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(outcome, Outcome::Status(429));
        assert!(wait.is_some_and(|w| w >= Duration::from_secs(30) && w <= Duration::from_secs(32)), "{wait:?}");
        assert_eq!(system_info_answer(&Err(TransportError::Timeout), never), Err((Outcome::Timeout, None)));
    }
}
