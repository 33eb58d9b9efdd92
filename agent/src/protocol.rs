//! The RedFlag v1 agent API as the agent speaks it: paths, request bodies, response parsing.
//!
//! * `GET  /api/v1/agents/{agent_id}/commands`, Bearer token, JSON metrics body:
//!   `{"commands":[{"id","type","params"}],"rapid_polling":...}`
//! * `POST /api/v1/agents/renew` `{"agent_id","refresh_token"}` -> `{"token"}`
//! * `GET  /health` -> 200
//!
//! Parsing is deliberately forgiving *inside* a valid answer (one bad command is skipped, an
//! odd `rapid_polling` is ignored) and strict about the answer's shape (a body that is not a
//! JSON object is a malformed answer, which the loop retries). The shared server model in the
//! simulation harness uses these same types, so both sides agree by construction.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const HEALTH_PATH: &str = "/health";
pub const RENEW_PATH: &str = "/api/v1/agents/renew";
/// The prefix of the check-in route; the full path is [`commands_path`].
pub const AGENTS_PREFIX: &str = "/api/v1/agents/";

/// Largest response body the agent reads, enforced while reading by both transports.
pub const RESPONSE_BODY_MAX_BYTES: usize = 1024 * 1024;
/// Commands handled from one check-in; the rest wait for the next one.
pub const MAX_COMMANDS_PER_CHECKIN: usize = 256;

/// This agent's version, sent with every check-in.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn commands_path(agent_id: &str) -> String {
    format!("{AGENTS_PREFIX}{agent_id}/commands")
}

/// The small JSON body sent with each check-in. All fields are optional on the server side.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// Seconds the agent process has been up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    pub version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenewRequest {
    pub agent_id: String,
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenewResponse {
    pub token: String,
}

/// One command the server queued for this agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Command {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub params: Value,
}

/// `rapid_polling` in a check-in answer, as RedFlag sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RapidPolling {
    pub enabled: bool,
    /// RFC 3339 end of the rapid-polling window.
    pub until: String,
}

/// The check-in answer as the server model writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CommandsResponse {
    pub commands: Vec<Command>,
    pub rapid_polling: Option<RapidPolling>,
}

/// A check-in answer as the agent understood it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckinAnswer {
    pub commands: Vec<Command>,
    /// Entries of `commands` that were not valid commands, as short descriptions.
    pub invalid_commands: Vec<String>,
    /// Entries beyond [`MAX_COMMANDS_PER_CHECKIN`], left for the next check-in.
    pub deferred_commands: usize,
    /// The end of a rapid-polling window the server asked for, if any.
    pub rapid_polling_until: Option<SystemTime>,
}

/// Parses a 200 check-in body. `Err` means the body is not a RedFlag answer at all (the loop
/// treats that as a retryable malformed response); problems inside a valid answer are reported
/// in the returned value instead.
pub fn parse_checkin_answer(body: &[u8]) -> Result<CheckinAnswer, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(format!("expected a JSON object, got {}", json_kind(&value)));
    };
    let mut answer = CheckinAnswer::default();
    match map.remove("commands") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let total = items.len();
            for (i, item) in items.into_iter().take(MAX_COMMANDS_PER_CHECKIN).enumerate() {
                match serde_json::from_value::<Command>(item) {
                    Ok(cmd) => answer.commands.push(cmd),
                    Err(e) => answer.invalid_commands.push(format!("commands[{i}]: {e}")),
                }
            }
            answer.deferred_commands = total.saturating_sub(MAX_COMMANDS_PER_CHECKIN);
        }
        Some(other) => return Err(format!("\"commands\" must be an array, got {}", json_kind(&other))),
    }
    if let Some(Value::Object(rp)) = map.remove("rapid_polling") {
        let enabled = rp.get("enabled").and_then(Value::as_bool).unwrap_or(false);
        // Any RFC 3339 offset (a Go server writes its local time), or a bare UTC time.
        let until = rp.get("until").and_then(Value::as_str).and_then(|s| crate::rfc3339::parse(s).or_else(|| humantime::parse_rfc3339_weak(s).ok()));
        if enabled {
            answer.rapid_polling_until = until;
        }
    }
    Ok(answer)
}

/// Parses a 200 renewal body: a JSON object with a non-empty string `token`.
pub fn parse_renew_answer(body: &[u8]) -> Result<String, String> {
    let answer: RenewResponse = serde_json::from_slice(body).map_err(|e| format!("not a renewal answer: {e}"))?;
    let token = answer.token.trim();
    if token.is_empty() || token.len() > crate::config::limits::TOKEN_MAX_LEN || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err("renewal answer has an empty or invalid token".into());
    }
    Ok(token.to_string())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_redflag_answer() {
        let a = parse_checkin_answer(
            br#"{"commands":[{"id":"c1","type":"scan_updates","params":{}},{"id":7}],"rapid_polling":{"enabled":true,"until":"2030-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(a.commands.len(), 1);
        assert_eq!(a.commands[0].kind, "scan_updates");
        assert_eq!(a.invalid_commands.len(), 1);
        assert!(a.rapid_polling_until.is_some());
    }

    #[test]
    fn empty_and_null_commands() {
        assert_eq!(parse_checkin_answer(br#"{"commands":[],"rapid_polling":null}"#).unwrap(), CheckinAnswer::default());
        assert_eq!(parse_checkin_answer(br#"{}"#).unwrap(), CheckinAnswer::default());
    }

    #[test]
    fn rejects_what_is_not_an_answer() {
        for body in [&b"<html>502 Bad Gateway</html>"[..], b"[]", b"\"x\"", br#"{"commands":"x"}"#, b""] {
            assert!(parse_checkin_answer(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bounds_the_commands_handled() {
        let cmds: Vec<String> = (0..300).map(|i| format!(r#"{{"id":"{i}","type":"x"}}"#)).collect();
        let body = format!(r#"{{"commands":[{}]}}"#, cmds.join(","));
        let a = parse_checkin_answer(body.as_bytes()).unwrap();
        assert_eq!(a.commands.len(), MAX_COMMANDS_PER_CHECKIN);
        assert_eq!(a.deferred_commands, 300 - MAX_COMMANDS_PER_CHECKIN);
    }

    #[test]
    fn renew_answer() {
        assert_eq!(parse_renew_answer(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert!(parse_renew_answer(br#"{"token":""}"#).is_err());
        assert!(parse_renew_answer(b"nope").is_err());
    }
}
