//! Error classification: what happened to a request ([`Outcome`]) and what the loop should do
//! about it ([`Verdict`]).
//!
//! Both transports (reqwest in production, hyper over turmoil in simulation) report through the
//! same [`Outcome`] type, so one table decides for both. No verdict ends the loop: the worst a
//! request can earn is "wait for the next regular check-in".

use std::fmt;

/// What happened to one HTTP request, as seen by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 2xx with a body the agent could read.
    Success,
    /// The server (or a proxy in front of it) answered with a non-2xx status.
    Status(u16),
    /// Nothing listens at the address (ECONNREFUSED).
    Refused,
    /// The connection was reset or closed before a full answer arrived.
    Reset,
    /// No full answer within the request timeout (connect, headers or body).
    Timeout,
    /// The answer's body was larger than the agent accepts; it was not read to the end.
    BodyTooLarge,
    /// A 2xx answer whose body was not the JSON the API promises.
    Malformed,
    /// Any other failure to talk to the server: DNS, TLS, an invalid HTTP answer.
    Network,
    /// The server answered its health check but says it cannot serve agents yet (RedFlag's
    /// "waiting for configuration" welcome mode).
    NotReady,
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The request worked.
    Success,
    /// The server is unreachable, unavailable or throttling: back off and retry.
    Retry,
    /// The access token was refused (401): renew it, then try again at once.
    Renew,
    /// The server answered but refused this request for a reason retrying will not fix soon
    /// (other 4xx). Wait for the next regular check-in; never stop.
    FailFast,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Retry => "retry",
            Verdict::Renew => "renew",
            Verdict::FailFast => "fail_fast",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision table.
pub fn classify(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Success => Verdict::Success,
        Outcome::Refused
        | Outcome::Reset
        | Outcome::Timeout
        | Outcome::BodyTooLarge
        | Outcome::Malformed
        | Outcome::Network
        | Outcome::NotReady => Verdict::Retry,
        Outcome::Status(code) => classify_status(code),
    }
}

/// Status codes alone. 2xx is success here; the caller turns an unreadable 2xx body into
/// [`Outcome::Malformed`] before asking.
pub fn classify_status(code: u16) -> Verdict {
    match code {
        200..=299 => Verdict::Success,
        401 => Verdict::Renew,
        // Request Timeout and Too Many Requests are the server asking us to come back later.
        408 | 429 => Verdict::Retry,
        // 501 Not Implemented and 505 HTTP Version Not Supported will not heal by waiting a
        // few seconds; every other 5xx (500, 502, 503, 504, and the 52x family proxies and CDNs
        // use for "origin unreachable") is a server or gateway that is down for now.
        501 | 505 => Verdict::FailFast,
        500..=599 => Verdict::Retry,
        // 1xx (unexpected as a final answer), 3xx (redirects are not followed: a moved server
        // is a configuration problem) and the rest of 4xx.
        _ => Verdict::FailFast,
    }
}

/// Whether this outcome may carry a Retry-After the agent should honour (RFC 9110 §10.2.3:
/// the agent honours it on 429 and 503).
pub fn honours_retry_after(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Status(429) | Outcome::Status(503))
}

impl Outcome {
    /// A short, stable name for logs, traces and the status file: `connection_refused`,
    /// `http_502`, ...
    pub fn class(self) -> ErrorClass {
        ErrorClass(self)
    }

    /// The status code, when the server answered.
    pub fn status(self) -> Option<u16> {
        match self {
            Outcome::Status(code) => Some(code),
            _ => None,
        }
    }
}

/// Display wrapper giving an [`Outcome`] its stable log name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass(pub Outcome);

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Outcome::Success => f.write_str("ok"),
            Outcome::Status(code) => write!(f, "http_{code}"),
            Outcome::Refused => f.write_str("connection_refused"),
            Outcome::Reset => f.write_str("connection_reset"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::BodyTooLarge => f.write_str("body_too_large"),
            Outcome::Malformed => f.write_str("malformed_body"),
            Outcome::Network => f.write_str("network_error"),
            Outcome::NotReady => f.write_str("server_not_ready"),
        }
    }
}

impl ErrorClass {
    /// Parses the spelling of `Display` back (used when reading JSON logs in live mode).
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "ok" => Outcome::Success,
            "connection_refused" => Outcome::Refused,
            "connection_reset" => Outcome::Reset,
            "timeout" => Outcome::Timeout,
            "body_too_large" => Outcome::BodyTooLarge,
            "malformed_body" => Outcome::Malformed,
            "network_error" => Outcome::Network,
            "server_not_ready" => Outcome::NotReady,
            other => Outcome::Status(other.strip_prefix("http_")?.parse().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert_eq!(classify(Outcome::Status(code)), Verdict::Retry, "{code}");
        }
        assert_eq!(classify(Outcome::Status(401)), Verdict::Renew);
        for code in [400, 403, 404, 405, 409, 410, 422, 301, 501] {
            assert_eq!(classify(Outcome::Status(code)), Verdict::FailFast, "{code}");
        }
        for o in [
            Outcome::Refused,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::Malformed,
            Outcome::BodyTooLarge,
            Outcome::Network,
            Outcome::NotReady,
        ] {
            assert_eq!(classify(o), Verdict::Retry, "{o:?}");
        }
        assert_eq!(classify(Outcome::Status(204)), Verdict::Success);
    }

    #[test]
    fn class_names_round_trip() {
        for o in [
            Outcome::Success,
            Outcome::Status(502),
            Outcome::Refused,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::BodyTooLarge,
            Outcome::Malformed,
            Outcome::Network,
            Outcome::NotReady,
        ] {
            assert_eq!(ErrorClass::parse(&o.class().to_string()), Some(o));
        }
        assert_eq!(ErrorClass::parse("http_x"), None);
    }
}
