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

use crate::server::protocol::{Command, truncate_output};

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
    /// Not run: the command gets a `failed` result with this reason (a type this agent does not
    /// run, or parameters it cannot use).
    Skip { reason: String },
}

pub fn decide(cmd: &Command) -> Action {
    match cmd.kind.as_str() {
        "enable_heartbeat" => match heartbeat_window(&cmd.params) {
            Ok(window) => Action::RapidPolling(window),
            Err(reason) => Action::Skip { reason },
        },
        "disable_heartbeat" => Action::StopRapidPolling,
        other => Action::Skip { reason: format!("command type {other:?} is not implemented by this agent") },
    }
}

/// `enable_heartbeat`'s window from its `params`: `duration_minutes` (RedFlag's server allows 1
/// to 60), clamped to [`RAPID_POLLING_MAX`]; [`HEARTBEAT_DEFAULT`] when it is absent or null.
/// A value that is not a number of minutes above 0 is refused with the reason: −5 or 0 minutes
/// is a mistake to report, not a request for the default.
fn heartbeat_window(params: &Value) -> Result<Duration, String> {
    let minutes = match params.get("duration_minutes") {
        None | Some(Value::Null) => return Ok(HEARTBEAT_DEFAULT),
        Some(value) => value,
    };
    match minutes.as_f64() {
        Some(m) if m.is_finite() && m > 0.0 => Ok(Duration::from_secs_f64((m * 60.0).min(RAPID_POLLING_MAX.as_secs_f64()))),
        _ => Err(format!(
            "enable_heartbeat: duration_minutes must be a number of minutes above 0 (at most {} is used), got {}; \
             rapid polling was not changed",
            RAPID_POLLING_MAX.as_secs() / 60,
            truncate_output(&minutes.to_string(), PARAM_QUOTE_MAX_BYTES)
        )),
    }
}

/// The longest parameter value quoted in a reason.
const PARAM_QUOTE_MAX_BYTES: usize = 64;

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
        assert_eq!(decide(&cmd("enable_heartbeat", json!({}))), Action::RapidPolling(HEARTBEAT_DEFAULT));
        assert_eq!(decide(&cmd("enable_heartbeat", json!({"duration_minutes": null}))), Action::RapidPolling(HEARTBEAT_DEFAULT));
        assert_eq!(decide(&cmd("enable_heartbeat", Value::Null)), Action::RapidPolling(HEARTBEAT_DEFAULT));
        assert_eq!(decide(&cmd("disable_heartbeat", Value::Null)), Action::StopRapidPolling);
        assert!(matches!(decide(&cmd("reboot", Value::Null)), Action::Skip { .. }));
    }

    #[test]
    fn an_unusable_heartbeat_duration_is_refused_with_the_reason() {
        for bad in [json!(-5), json!(0), json!(-0.0), json!("x"), json!("10"), json!(true), json!([1]), json!({"m": 1})] {
            let Action::Skip { reason } = decide(&cmd("enable_heartbeat", json!({ "duration_minutes": bad }))) else {
                panic!("{bad} was accepted");
            };
            assert!(reason.contains("duration_minutes") && reason.contains(&bad.to_string()), "{reason}");
        }
        let long = "y".repeat(10_000);
        let Action::Skip { reason } = decide(&cmd("enable_heartbeat", json!({ "duration_minutes": long }))) else { panic!() };
        assert!(reason.len() < 400, "{reason}");
    }
}
