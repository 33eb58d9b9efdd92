//! The keys RedFlag 0.1.18's Go agent writes into `/etc/aggregator/config.json` that this agent
//! does not act on, read so that a Go-written file runs unchanged and `check-config` can say
//! what becomes of each.
//!
//! A file the Go agent saved at registration looks like this (a real one, from
//! `agent/tests/fixtures/go-agent-config.json`):
//!
//! ```json
//! "registration_token": "6ea4…", "rapid_polling_enabled": false,
//! "rapid_polling_until": "0001-01-01T00:00:00Z",
//! "network": {"timeout": 30000000000, "retry_count": 3, "retry_delay": 5000000000, "max_idle_conn": 10},
//! "logging": {"level": "info", "max_size": 100, "max_backups": 3, "max_age": 28},
//! "tags": ["web"], "display_name": "web-01", "organization": "Acme"   (with -tags, -name, -organization)
//! ```
//!
//! What becomes of them (the Go agent itself uses none of them at run time but the rapid-polling
//! pair; its HTTP client has a fixed 30 s timeout and it always logs everything):
//! * `network.*`: Go `time.Duration`s in **nanoseconds**. Not used: `resilience` governs
//!   timeouts and retries. `network.timeout` is shown by `check-config` beside the timeout that
//!   applies.
//! * `rapid_polling_enabled` / `rapid_polling_until`: the Go agent's heartbeat state (Go's zero
//!   time `0001-01-01T00:00:00Z` when none). Read into [`GoAgentKeys::rapid_polling_until`]; this
//!   agent keeps its own heartbeat in `state_dir`.
//! * `registration_token`: used once, by the Go agent's `-register`. Never shown, never sent.
//! * `logging`: not used (`--log-level` and `RUST_LOG` apply).
//! * `tags`, `metadata`, `display_name`, `organization`: kept in the file, not sent (the Go
//!   agent does not send them either).
//!
//! Nothing here can refuse a config: a value of an unexpected type is noted by `check-config`
//! and otherwise ignored, because this agent does not depend on it. Pure: no I/O.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::server::rfc3339;
use crate::server::secret::Secret;

/// Go's zero `time.Time`, which its JSON encoder writes for "no time".
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The Go agent's keys, as found (every field `None` / empty when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoAgentKeys {
    /// `network.timeout` (nanoseconds in the file).
    pub network_timeout: Option<Duration>,
    /// `network.retry_delay` (nanoseconds in the file).
    pub network_retry_delay: Option<Duration>,
    /// `network.retry_count`.
    pub network_retry_count: Option<u64>,
    /// `logging.level`.
    pub logging_level: Option<String>,
    /// `registration_token`, when not empty (never printed: its `Display` is redacted).
    pub registration_token: Option<Secret>,
    /// `rapid_polling_enabled`.
    pub rapid_polling_enabled: bool,
    /// `rapid_polling_until`; `None` for Go's zero time or no key.
    pub rapid_polling_until: Option<SystemTime>,
    /// `tags`, `metadata`, `display_name`, `organization`: which of them the file has.
    pub descriptive_keys: Vec<&'static str>,
    /// Values that were not what the Go agent writes, each as "key: what was wrong".
    pub unreadable: Vec<String>,
}

/// The raw values of the Go agent's keys (each `None` when absent).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RawGoAgentKeys {
    pub registration_token: Option<Value>,
    pub rapid_polling_enabled: Option<Value>,
    pub rapid_polling_until: Option<Value>,
    pub network: Option<Value>,
    pub logging: Option<Value>,
    pub tags: Option<Value>,
    pub metadata: Option<Value>,
    pub display_name: Option<Value>,
    pub organization: Option<Value>,
}

/// Longest nanosecond count taken as a duration: 100 days (a Go `Duration` is an i64 of ns).
const GO_DURATION_MAX: Duration = Duration::from_secs(100 * 86_400);

impl GoAgentKeys {
    /// Interprets the raw values. Never fails: what cannot be read goes to `unreadable`.
    pub fn read(raw: RawGoAgentKeys) -> GoAgentKeys {
        let mut keys = GoAgentKeys::default();
        if let Some(network) = raw.network.filter(|v| !v.is_null()) {
            match network.as_object() {
                Some(n) => {
                    keys.network_timeout = keys.nanoseconds("network.timeout", n.get("timeout"));
                    keys.network_retry_delay = keys.nanoseconds("network.retry_delay", n.get("retry_delay"));
                    keys.network_retry_count = n.get("retry_count").and_then(Value::as_u64);
                }
                None => keys.unreadable.push("network: not an object".into()),
            }
        }
        if let Some(logging) = raw.logging.filter(|v| !v.is_null()) {
            match logging.get("level") {
                Some(Value::String(level)) if !level.is_empty() => keys.logging_level = Some(level.clone()),
                None | Some(Value::String(_)) => {}
                Some(_) => keys.unreadable.push("logging.level: not a string".into()),
            }
        }
        match raw.registration_token {
            Some(Value::String(t)) if !t.trim().is_empty() => keys.registration_token = Some(Secret::new(t.trim())),
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => keys.unreadable.push("registration_token: not a string".into()),
        }
        match raw.rapid_polling_enabled {
            Some(Value::Bool(b)) => keys.rapid_polling_enabled = b,
            None | Some(Value::Null) => {}
            Some(_) => keys.unreadable.push("rapid_polling_enabled: not true or false".into()),
        }
        match raw.rapid_polling_until {
            Some(Value::String(t)) => match go_time(&t) {
                Ok(at) => keys.rapid_polling_until = at,
                Err(e) => keys.unreadable.push(format!("rapid_polling_until: {e}")),
            },
            None | Some(Value::Null) => {}
            Some(_) => keys.unreadable.push("rapid_polling_until: not a string".into()),
        }
        for (name, value) in
            [("tags", &raw.tags), ("metadata", &raw.metadata), ("display_name", &raw.display_name), ("organization", &raw.organization)]
        {
            if value.as_ref().is_some_and(|v| !is_empty(v)) {
                keys.descriptive_keys.push(name);
            }
        }
        keys
    }

    /// Whether the file had any of the Go agent's keys worth a line in `check-config`.
    pub fn any(&self) -> bool {
        *self != GoAgentKeys::default()
    }

    /// A Go `time.Duration` (integer nanoseconds), bounded; noted when it is something else.
    fn nanoseconds(&mut self, key: &str, value: Option<&Value>) -> Option<Duration> {
        let value = value?;
        match value.as_u64() {
            Some(ns) => Some(Duration::from_nanos(ns).min(GO_DURATION_MAX)),
            None => {
                self.unreadable.push(format!("{key}: not a whole number of nanoseconds ({value})"));
                None
            }
        }
    }

    /// `check-config`'s lines for these keys: (name, what becomes of it).
    pub fn describe(&self, request_timeout: Duration) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(t) = self.network_timeout {
            out.push((
                "network.timeout (Go agent)".to_string(),
                format!("{}s, not used: resilience.request_timeout_seconds ({}s) applies", t.as_secs_f64(), request_timeout.as_secs_f64()),
            ));
        }
        if self.network_retry_delay.is_some() || self.network_retry_count.is_some() {
            out.push(("network.retry_* (Go agent)".to_string(), "not used: resilience governs retries".to_string()));
        }
        if let Some(level) = &self.logging_level {
            out.push(("logging.level (Go agent)".to_string(), format!("{level:?}, not used: --log-level applies")));
        }
        if let Some(t) = &self.registration_token {
            out.push(("registration_token (Go agent)".to_string(), format!("{t}, not used (registration is done)")));
        }
        let heartbeat = match (self.rapid_polling_enabled, self.rapid_polling_until) {
            (_, None) => None,
            (enabled, Some(until)) => Some(format!(
                "{}{}",
                humantime::format_rfc3339_seconds(until),
                if enabled { " (enabled)" } else { "" }
            )),
        };
        if let Some(h) = heartbeat {
            out.push(("rapid_polling_until (Go agent)".to_string(), format!("{h}; this agent keeps its heartbeat in state_dir")));
        }
        if !self.descriptive_keys.is_empty() {
            out.push((self.descriptive_keys.join(", "), "kept in the file, not sent (nor did the Go agent send them)".to_string()));
        }
        for u in &self.unreadable {
            out.push(("(Go agent key, ignored)".to_string(), u.clone()));
        }
        out
    }
}

/// A Go `time.Time` as its JSON encoder writes it (RFC 3339, nanoseconds optional); `None` for
/// the zero time and for any time before 1970 (no heartbeat can have been set then).
pub fn go_time(text: &str) -> Result<Option<SystemTime>, String> {
    let text = text.trim();
    if text.is_empty() || text == GO_ZERO_TIME || text.starts_with("0001-01-01") {
        return Ok(None);
    }
    match rfc3339::parse(text) {
        Some(t) => Ok(Some(t)),
        None if text.len() >= 4 && text[..4].parse::<u32>().is_ok_and(|y| y < 1970) => Ok(None),
        None => Err(format!("not an RFC 3339 time ({:?})", text.chars().take(40).collect::<String>())),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> GoAgentKeys {
        GoAgentKeys::read(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_go_written_file_reads_whole() {
        let keys = read(json!({
            "registration_token": "6ea4421fb6dcc2e9",
            "rapid_polling_enabled": false,
            "rapid_polling_until": "0001-01-01T00:00:00Z",
            "network": {"timeout": 30_000_000_000u64, "retry_count": 3, "retry_delay": 5_000_000_000u64, "max_idle_conn": 10},
            "logging": {"level": "info", "max_size": 100, "max_backups": 3, "max_age": 28},
            "tags": ["web", "prod"], "display_name": "web-01", "organization": "Acme Ops"
        }));
        assert_eq!(keys.network_timeout, Some(Duration::from_secs(30)));
        assert_eq!(keys.network_retry_delay, Some(Duration::from_secs(5)));
        assert_eq!(keys.network_retry_count, Some(3));
        assert_eq!(keys.logging_level.as_deref(), Some("info"));
        assert_eq!(keys.rapid_polling_until, None);
        assert!(!keys.rapid_polling_enabled);
        assert_eq!(keys.descriptive_keys, ["tags", "display_name", "organization"]);
        assert!(keys.unreadable.is_empty(), "{:?}", keys.unreadable);
        let lines = keys.describe(Duration::from_secs(10));
        let text = format!("{lines:?}");
        assert!(text.contains("30s, not used: resilience.request_timeout_seconds (10s) applies"), "{text}");
        assert!(!text.contains("6ea4421fb6dcc2e9"), "the registration token was shown: {text}");
        assert!(text.contains("[redacted, 16 chars]"), "{text}");
    }

    #[test]
    fn an_active_go_heartbeat_is_read_in_any_offset() {
        let keys = read(json!({"rapid_polling_enabled": true, "rapid_polling_until": "2026-12-06T13:06:54.123456789-05:00"}));
        assert!(keys.rapid_polling_enabled);
        let want = rfc3339::parse("2026-12-06T18:06:54.123456789Z").unwrap();
        assert_eq!(keys.rapid_polling_until, Some(want));
    }

    #[test]
    fn odd_values_are_noted_never_refused() {
        let keys = read(json!({
            "network": {"timeout": "30s", "retry_delay": -1},
            "logging": {"level": 3},
            "rapid_polling_until": "yesterday",
            "rapid_polling_enabled": "yes",
            "registration_token": 12,
            "tags": [], "metadata": {}, "display_name": ""
        }));
        assert_eq!(keys.network_timeout, None);
        assert_eq!(keys.unreadable.len(), 6, "{:?}", keys.unreadable);
        assert!(keys.descriptive_keys.is_empty());
        assert_eq!(read(json!({"network": 5})).unreadable, ["network: not an object"]);
        // A huge nanosecond count is bounded, not an overflow.
        assert_eq!(read(json!({"network": {"timeout": u64::MAX}})).network_timeout, Some(GO_DURATION_MAX));
    }

    #[test]
    fn zero_and_ancient_times_are_no_time() {
        assert_eq!(go_time(GO_ZERO_TIME), Ok(None));
        assert_eq!(go_time("0001-01-01T00:00:00.000Z"), Ok(None));
        assert_eq!(go_time("1969-12-31T23:59:59Z"), Ok(None));
        assert_eq!(go_time(""), Ok(None));
        assert!(go_time("2026-01-01T00:00:00Z").unwrap().is_some());
        assert!(go_time("tomorrow").is_err());
    }
}
