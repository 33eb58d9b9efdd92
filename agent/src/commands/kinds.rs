//! What each command type the server may send means to this agent.
//!
//! This agent is the resilient check-in core. Of RedFlag's command types it runs the two that
//! concern the check-in loop itself, `enable_heartbeat` and `disable_heartbeat` (RedFlag's
//! rapid polling: check in every few seconds for a while). Every other type (`scan_updates`,
//! `install_updates`, `reboot`, ...) is not for this agent ([`Action::Skip`]): the production
//! runner (`runner.rs`) answers it with a `failed` result, never fatal: an unknown command must
//! not stop check-ins. Pure: decides, the runner and the loop act.

use std::time::Duration;

use serde_json::Value;

use crate::server::protocol::Command;

use super::heartbeat::RAPID_POLLING_MAX;

/// `enable_heartbeat` without `duration_minutes`.
const HEARTBEAT_DEFAULT: Duration = Duration::from_secs(600);

/// What the loop should do about one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Poll every [`RAPID_POLLING_INTERVAL`] for this long (already clamped).
    RapidPolling(Duration),
    /// Back to the regular interval.
    StopRapidPolling,
    /// Not something this agent runs; log and move on.
    Skip { reason: String },
}

pub fn decide(cmd: &Command) -> Action {
    match cmd.kind.as_str() {
        "enable_heartbeat" => {
            let minutes = cmd.params.get("duration_minutes").and_then(Value::as_f64);
            let window = match minutes {
                Some(m) if m.is_finite() && m > 0.0 => Duration::from_secs_f64((m * 60.0).min(RAPID_POLLING_MAX.as_secs_f64())),
                _ => HEARTBEAT_DEFAULT,
            };
            Action::RapidPolling(window)
        }
        "disable_heartbeat" => Action::StopRapidPolling,
        other => Action::Skip { reason: format!("command type {other:?} is not supported by this agent") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(kind: &str, params: Value) -> Command {
        Command { id: "1".into(), kind: kind.into(), params }
    }

    #[test]
    fn heartbeat_is_bounded() {
        assert_eq!(decide(&cmd("enable_heartbeat", json!({"duration_minutes": 2}))), Action::RapidPolling(Duration::from_secs(120)));
        assert_eq!(decide(&cmd("enable_heartbeat", json!({"duration_minutes": 1e9}))), Action::RapidPolling(RAPID_POLLING_MAX));
        assert_eq!(decide(&cmd("enable_heartbeat", json!({"duration_minutes": "x"}))), Action::RapidPolling(HEARTBEAT_DEFAULT));
        assert_eq!(decide(&cmd("disable_heartbeat", Value::Null)), Action::StopRapidPolling);
        assert!(matches!(decide(&cmd("reboot", Value::Null)), Action::Skip { .. }));
    }
}
