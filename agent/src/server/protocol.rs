//! The RedFlag v1 agent API as the agent speaks it: paths, request bodies, response parsing.
//!
//! * `GET  /api/v1/agents/{agent_id}/commands`, Bearer token, JSON metrics body:
//!   `{"commands":[{"id","type","params"}],"rapid_polling":...}`
//! * `POST /api/v1/agents/renew` `{"agent_id","refresh_token"}` -> `{"token"}`
//! * `GET  /health` -> 200 `{"status":"healthy"}`; an unconfigured server (RedFlag's welcome
//!   mode) answers 200 `{"status":"waiting for configuration"}`, which [`health_not_ready`] spots
//! * `POST /api/v1/agents/{agent_id}/logs`, Bearer token, [`UpdateLogRequest`]: a command's
//!   result (RedFlag's own route and field types)
//! * `POST /api/v1/agents/{agent_id}/system-info`, Bearer token, [`SystemInfoReport`]: the
//!   machine's CPU, memory, disk, processes and address, which the server merges into the
//!   agent's metadata for its agent card
//!
//! The check-in body is RedFlag's metrics object plus one field RedFlag 0.1.18 does not know and
//! ignores, as its JSON binding ignores every unknown field: `acknowledged_commands`, the ids
//! of the commands the agent has durably recorded in its journal ([`CheckinBody`]).
//!
//! Reading is deliberately forgiving *inside* a valid answer (each command stands alone: one
//! with unreadable params is refused with a reason and the rest run; an odd `rapid_polling` is
//! ignored) and strict about the answer's shape (a body that is not a JSON object is a
//! malformed answer, which the loop retries): `checkin_answer.rs` reads it. The shared server model in the
//! simulation harness uses these same types, so both sides agree by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const HEALTH_PATH: &str = "/health";
pub const RENEW_PATH: &str = "/api/v1/agents/renew";
/// The prefix of the check-in route; the full path is [`commands_path`].
pub const AGENTS_PREFIX: &str = "/api/v1/agents/";

/// Largest response body the agent reads, enforced while reading by both transports.
pub const RESPONSE_BODY_MAX_BYTES: usize = 1024 * 1024;
/// The longest access or refresh token accepted, from the config or from the server.
pub const TOKEN_MAX_LEN: usize = 16 * 1024;

/// This build's own version (the crate's): logs, the status file, the `User-Agent` header, and
/// `metadata.agent_build_version` towards the server.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version this agent reports to the server as its `version` (check-ins) and
/// `agent_version` (registration): the RedFlag agent API release it implements. The server
/// compares this field with its `LATEST_AGENT_VERSION` (0.1.18 for a 0.1.18 server) to mark
/// agents "update available", and stores it as the agent's current version. Our crate version
/// (0.1.x of a different program) would make every agent look outdated, and an update to the Go
/// agent is not what this agent needs. Our own version travels in `metadata` instead.
pub const PROTOCOL_VERSION: &str = "0.1.18";

/// The `metadata` key carrying [`AGENT_VERSION`] at registration and with every check-in.
pub const BUILD_VERSION_KEY: &str = "agent_build_version";
/// The `metadata` key naming this implementation at registration and with every check-in.
pub const IMPLEMENTATION_KEY: &str = "agent_implementation";
/// Its value.
pub const IMPLEMENTATION: &str = "redflag-agent (Rust resilient check-in agent)";

pub fn commands_path(agent_id: &str) -> String {
    format!("{AGENTS_PREFIX}{agent_id}/commands")
}

/// `POST` a command's result here ([`UpdateLogRequest`]).
pub fn logs_path(agent_id: &str) -> String {
    format!("{AGENTS_PREFIX}{agent_id}/logs")
}

/// `POST` the machine's description here ([`SystemInfoReport`]).
pub fn system_info_path(agent_id: &str) -> String {
    format!("{AGENTS_PREFIX}{agent_id}/system-info")
}

/// Acknowledgements carried by one check-in, at most. More wait for the next check-in.
pub const ACKNOWLEDGED_COMMANDS_MAX: usize = 1024;
/// `stdout` and `stderr` of a result are cut to this many bytes each (at a char boundary).
pub const RESULT_OUTPUT_MAX_BYTES: usize = 8 * 1024;

/// The check-in body: RedFlag's metrics, plus the ids of the commands this agent has durably
/// recorded and not yet seen acknowledged by a successful check-in. A server that does not know
/// `acknowledged_commands` ignores it; one that does stops redelivering those commands.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CheckinBody {
    #[serde(flatten)]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged_commands: Vec<String>,
}

/// `result` of an [`UpdateLogRequest`]: RedFlag completes a command on `success` and fails it on
/// `failed`. (Its handler also reads `completed`, but its `update_logs` table only takes
/// `success`, `failed` and `partial`: `completed` is answered 500, so it is never sent.)
pub const RESULT_SUCCESS: &str = "success";
pub const RESULT_FAILED: &str = "failed";

/// RedFlag's `UpdateLogRequest`, field for field (Go `int` is 64-bit; `action` and `result` are
/// required by its binding): the result of one command, `POST`ed to [`logs_path`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateLogRequest {
    pub command_id: String,
    /// The command's type (`scan_updates`, `enable_heartbeat`, ...).
    pub action: String,
    /// [`RESULT_SUCCESS`] or [`RESULT_FAILED`].
    pub result: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub duration_seconds: i64,
}

impl UpdateLogRequest {
    /// The result's size as it is sent, for the outbox's byte bound.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }
}

/// `text` cut to at most `max` bytes at a char boundary, with a marker when it was cut.
pub fn truncate_output(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MARK: &str = "\n[output truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// The small JSON body sent with each check-in, field for field what RedFlag 0.1.18's
/// `GetCommands` binds (and what its Go agent sends): numbers for CPU, memory and disk
/// (gigabytes are GiB, as the Go agent computes them), a *string* for the system uptime (the
/// Go agent sends `uptime -p`'s "up 2 hours, 5 minutes"), the reported version, and free-form
/// `metadata` (where rapid-polling state goes). The server fails to bind the whole body when
/// one field has the wrong JSON type, so these types are not a matter of taste. Every field but
/// `version` is optional: the simulation's hosts send none.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_percent: Option<f64>,
    /// System uptime as text, e.g. "up 3 days, 2 hours, 5 minutes".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
    pub version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
}

/// RedFlag 0.1.18's system-info request, field for field as its `ReportSystemInfo` handler binds
/// it and its Go agent sends it (`SystemInfoReport` in the Go agent's `client.go`). What the
/// server does with it: each field that is set (non-empty, above zero) is written into the
/// agent's `metadata` under the same name (`cpu_cores` etc. become numbers there, where
/// registration left strings), `system_info_updated_at` is set, and every `metadata` key is
/// merged in as it is. Types are not a matter of taste: one wrong type and the handler answers
/// 400 for the whole body. Fields the Go agent leaves out when zero (`omitempty`) are `None`.
///
/// Sizes are bytes (the Go agent's `uint64`s); `cpu_cores` and `cpu_threads` are logical CPUs
/// (the Go agent counts `processor` lines of `/proc/cpuinfo` for both).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct SystemInfoReport {
    /// When it was collected, RFC 3339 (Go's `time.Time` binds RFC 3339 and nothing else).
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
    #[serde(rename = "memory_total", default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// The root filesystem's size (`metadata.disk_mount` says which).
    #[serde(rename = "disk_total", default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    #[serde(rename = "disk_used", default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// `uptime -p` text, as in the check-in metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
    /// The Go agent sends `disk_mount`, `disk_filesystem`, `collected_at`, `hostname`,
    /// `os_type`, `os_version` and `os_architecture` here; this agent adds its
    /// [`BUILD_VERSION_KEY`] and [`IMPLEMENTATION_KEY`].
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

/// Parses a 200 renewal body: a JSON object with a non-empty string `token`.
pub fn parse_renew_answer(body: &[u8]) -> Result<String, String> {
    let answer: RenewResponse = serde_json::from_slice(body).map_err(|e| format!("not a renewal answer: {e}"))?;
    let token = answer.token.trim();
    if token.is_empty() || token.len() > TOKEN_MAX_LEN || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err("renewal answer has an empty or invalid token".into());
    }
    Ok(token.to_string())
}

/// Whether a 2xx `/health` body says the server is up but cannot serve agents yet. RedFlag's
/// welcome mode (no database configured) answers `{"status":"waiting for configuration"}` and
/// has no `/api/v1` routes at all; such a server is "not ready", not healthy. Any other body
/// (including one that is not JSON, as some proxies answer) does not stop a check-in.
pub fn health_not_ready(body: &[u8]) -> bool {
    if body.len() > HEALTH_BODY_MAX_BYTES {
        return false;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else { return false };
    map.get("status").and_then(Value::as_str).is_some_and(|s| s.trim().eq_ignore_ascii_case(WAITING_FOR_CONFIGURATION))
}

/// The `/health` status of an unconfigured RedFlag server.
pub const WAITING_FOR_CONFIGURATION: &str = "waiting for configuration";
/// A health answer longer than this is not read for its status.
const HEALTH_BODY_MAX_BYTES: usize = 4096;

/// How a JSON value's type reads in an error message ("a string", "an array").
pub(crate) fn json_kind(v: &Value) -> &'static str {
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
    fn checkin_body_adds_acknowledgements_to_the_metrics() {
        let body = CheckinBody { metrics: Metrics { version: "1".into(), ..Metrics::default() }, acknowledged_commands: vec![] };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"version":"1"}"#);
        let body = CheckinBody { acknowledged_commands: vec!["a".into(), "b".into()], ..body };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"version":"1","acknowledged_commands":["a","b"]}"#);
        let back: CheckinBody = serde_json::from_str(r#"{"version":"1","uptime":"up 3 minutes","acknowledged_commands":["a"]}"#).unwrap();
        assert_eq!(back.metrics.uptime.as_deref(), Some("up 3 minutes"));
        assert_eq!(back.acknowledged_commands, ["a"]);
    }

    #[test]
    fn update_log_request_has_redflags_fields() {
        let r = UpdateLogRequest {
            command_id: "c".into(),
            action: "scan_updates".into(),
            result: RESULT_FAILED.into(),
            stdout: String::new(),
            stderr: "no".into(),
            exit_code: 1,
            duration_seconds: 2,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"command_id":"c","action":"scan_updates","result":"failed","stdout":"","stderr":"no","exit_code":1,"duration_seconds":2}"#
        );
        assert_eq!(truncate_output("héllo wörld", 100), "héllo wörld");
        let cut = truncate_output(&"é".repeat(100), 50);
        assert!(cut.len() <= 50 && cut.ends_with("[output truncated]"), "{cut}");
    }

    #[test]
    fn health_answers() {
        assert!(health_not_ready(br#"{"status":"waiting for configuration"}"#));
        assert!(health_not_ready(br#"{"status":" Waiting for configuration "}"#));
        for ready in [&br#"{"status":"healthy"}"#[..], b"OK", b"", br#"{"status":7}"#, br#"["waiting for configuration"]"#] {
            assert!(!health_not_ready(ready), "{:?}", String::from_utf8_lossy(ready));
        }
    }

    #[test]
    fn metrics_have_the_types_the_server_binds() {
        let m = Metrics { uptime: Some("up 5 minutes".into()), disk_total_gb: Some(10.5), version: PROTOCOL_VERSION.into(), ..Metrics::default() };
        let v: Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v, serde_json::json!({"uptime": "up 5 minutes", "disk_total_gb": 10.5, "version": "0.1.18"}));
    }

    #[test]
    fn system_info_report_has_the_go_agents_names_and_types() {
        let r = SystemInfoReport {
            timestamp: "2026-12-06T18:06:54Z".into(),
            cpu_model: Some("AMD EPYC".into()),
            cpu_cores: Some(2),
            cpu_threads: Some(2),
            memory_total_bytes: Some(25_276_182_528),
            disk_total_bytes: Some(270_582_939_648),
            disk_used_bytes: Some(31_138_512_896),
            ip_address: Some("192.0.2.2".into()),
            processes: Some(95),
            uptime: Some("up 42 minutes".into()),
            metadata: BTreeMap::from([("disk_mount".to_string(), Value::from("/"))]),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "timestamp": "2026-12-06T18:06:54Z", "cpu_model": "AMD EPYC", "cpu_cores": 2, "cpu_threads": 2,
                "memory_total": 25_276_182_528u64, "disk_total": 270_582_939_648u64, "disk_used": 31_138_512_896u64,
                "ip_address": "192.0.2.2", "processes": 95, "uptime": "up 42 minutes", "metadata": {"disk_mount": "/"}
            })
        );
        // What is not known is left out, as the Go agent's omitempty does.
        let bare = SystemInfoReport { timestamp: "2026-12-06T18:06:54Z".into(), ..SystemInfoReport::default() };
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"timestamp":"2026-12-06T18:06:54Z"}"#);
        assert_eq!(system_info_path("a-1"), "/api/v1/agents/a-1/system-info");
    }

    #[test]
    fn renew_answer() {
        assert_eq!(parse_renew_answer(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert!(parse_renew_answer(br#"{"token":""}"#).is_err());
        assert!(parse_renew_answer(b"nope").is_err());
    }
}
