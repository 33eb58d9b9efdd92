//! The chaos switches as JSON: what the control APIs of `redflag-sim serve` and
//! `redflag-sim proxy` accept and answer, and how it maps onto the models' own switches
//! ([`ServerModes`], [`ProxyMode`]).
//!
//! Only the words live here (types, validation, conversions); the HTTP that carries them is
//! `control_http.rs` (answering) and `control_client.rs` (asking).
//!
//! Server: `{"slow_ms":1500,"setup_mode":false,"revoke_refresh":false,
//! "http_status":{"status":503,"retry_after":5},"broken_routes":{"logs":{"status":500}}}`
//! (`broken_routes` by route name, `{}` for a route that hangs); a missing key means "off", so a `PUT` always
//! states the whole desired state and is idempotent.
//!
//! Proxy (toxiproxy style): `{"mode":"pass"}`, `{"mode":"refuse"}`, `{"mode":"blackhole"}`,
//! `{"mode":"reset"}`, `{"mode":"latency","delay_ms":1500}`, `{"mode":"loss","rate":0.3}`,
//! `{"mode":"http_status","status":502,"retry_after":5}`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::models::proxy::{LATENCY_MAX, ProxyMode};
use crate::models::server::{Broken, RETRY_AFTER_MAX_SECONDS, SLOW_DELAY_MAX, ServerModes};
use crate::scenario::ApiRoute;

/// A broken route: `{"status":503}` answers that status, `{"delay_ms":3000}` answers as usual
/// 3 s late (both: the status, late), `{}` hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl RouteSpec {
    pub fn to_mode(self) -> Broken {
        Broken { status: self.status, delay: self.delay_ms.map(Duration::from_millis) }
    }

    pub fn from_mode(mode: Broken) -> Self {
        RouteSpec { status: mode.status, delay_ms: mode.delay.map(|d| d.as_millis() as u64) }
    }
}

/// A status answered by a fault mode, with an optional `Retry-After` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    pub status: u16,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

impl StatusSpec {
    fn validate(&self) -> Result<(), String> {
        if !(100..=599).contains(&self.status) {
            return Err(format!("status must be an HTTP status between 100 and 599, got {}", self.status));
        }
        if let Some(s) = self.retry_after.filter(|s| *s > RETRY_AFTER_MAX_SECONDS) {
            return Err(format!("retry_after must be at most {RETRY_AFTER_MAX_SECONDS} seconds, got {s}"));
        }
        Ok(())
    }
}

/// Every server switch at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerModesSpec {
    /// Hold every response this long (milliseconds); `null` or missing: off.
    #[serde(default)]
    pub slow_ms: Option<u64>,
    /// 404 on agent routes, `/health` still 200.
    #[serde(default)]
    pub setup_mode: bool,
    /// Renewal answers 401.
    #[serde(default)]
    pub revoke_refresh: bool,
    /// Answer this status to every agent route.
    #[serde(default)]
    pub http_status: Option<StatusSpec>,
    /// Routes broken alone (the `broken_route` fault), by route name: `health`, `logs`,
    /// `renew`, `system-info`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broken_routes: BTreeMap<String, RouteSpec>,
}

impl ServerModesSpec {
    /// Checks the values against the models' limits; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let slow_max_ms = SLOW_DELAY_MAX.as_millis() as u64;
        if let Some(ms) = self.slow_ms.filter(|ms| *ms > slow_max_ms) {
            return Err(format!("slow_ms must be at most {slow_max_ms}, got {ms}"));
        }
        if let Some(s) = &self.http_status {
            s.validate().map_err(|e| format!("http_status: {e}"))?;
        }
        for (name, spec) in &self.broken_routes {
            if ApiRoute::from_name(name).is_none() {
                let names: Vec<&str> = ApiRoute::ALL.iter().map(|r| r.name()).collect();
                return Err(format!("broken_routes: unknown route {name:?}; expected one of {}", names.join(", ")));
            }
            if let Some(s) = spec.status.filter(|s| !(100..=599).contains(s)) {
                return Err(format!("broken_routes.{name}.status must be an HTTP status between 100 and 599, got {s}"));
            }
            if let Some(ms) = spec.delay_ms.filter(|ms| *ms > slow_max_ms) {
                return Err(format!("broken_routes.{name}.delay_ms must be at most {slow_max_ms}, got {ms}"));
            }
        }
        Ok(())
    }

    /// Sets the model's switches to exactly this state.
    pub fn apply_to(&self, modes: &ServerModes) {
        modes.set_slow(self.slow_ms.map(Duration::from_millis));
        modes.set_setup_mode(self.setup_mode);
        modes.set_revoke_refresh(self.revoke_refresh);
        modes.set_http_status(self.http_status.map(|s| (s.status, s.retry_after)));
        for route in ApiRoute::ALL {
            modes.set_broken(route, self.broken_routes.get(route.name()).map(|s| s.to_mode()));
        }
    }

    /// The model's switches as they are.
    pub fn read(modes: &ServerModes) -> Self {
        ServerModesSpec {
            slow_ms: modes.slow().map(|d| d.as_millis() as u64),
            setup_mode: modes.setup_mode(),
            revoke_refresh: modes.revoke_refresh(),
            http_status: modes.http_status().map(|(status, retry_after)| StatusSpec { status, retry_after }),
            broken_routes: modes
                .broken_routes()
                .into_iter()
                .map(|(route, b)| (route.name().to_string(), RouteSpec::from_mode(b)))
                .collect(),
        }
    }
}

/// One proxy mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProxyModeSpec {
    // Empty struct variants rather than unit ones: serde ignores stray keys on unit variants
    // of an internally tagged enum, and a typo must not pass silently.
    Pass {},
    Refuse {},
    Blackhole {},
    Reset {},
    Latency { delay_ms: u64 },
    Loss { rate: f64 },
    HttpStatus {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
}

impl ProxyModeSpec {
    /// Checks the values against the proxy's limits; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ProxyModeSpec::Latency { delay_ms } => {
                let max = LATENCY_MAX.as_millis() as u64;
                if *delay_ms > max {
                    return Err(format!("delay_ms must be at most {max}, got {delay_ms}"));
                }
            }
            ProxyModeSpec::Loss { rate } => {
                if !(rate.is_finite() && (0.0..=1.0).contains(rate)) {
                    return Err(format!("rate must be between 0 and 1, got {rate}"));
                }
            }
            ProxyModeSpec::HttpStatus { status, retry_after } => {
                StatusSpec { status: *status, retry_after: *retry_after }.validate()?;
            }
            ProxyModeSpec::Pass {} | ProxyModeSpec::Refuse {} | ProxyModeSpec::Blackhole {} | ProxyModeSpec::Reset {} => {}
        }
        Ok(())
    }

    pub fn to_mode(&self) -> ProxyMode {
        match self {
            ProxyModeSpec::Pass {} => ProxyMode::Pass,
            ProxyModeSpec::Refuse {} => ProxyMode::Refuse,
            ProxyModeSpec::Blackhole {} => ProxyMode::Blackhole,
            ProxyModeSpec::Reset {} => ProxyMode::Reset,
            ProxyModeSpec::Latency { delay_ms } => ProxyMode::Latency(Duration::from_millis(*delay_ms)),
            ProxyModeSpec::Loss { rate } => ProxyMode::Loss(*rate),
            ProxyModeSpec::HttpStatus { status, retry_after } => {
                ProxyMode::HttpStatus { status: *status, retry_after_seconds: *retry_after }
            }
        }
    }

    pub fn from_mode(mode: &ProxyMode) -> Self {
        match mode {
            ProxyMode::Pass => ProxyModeSpec::Pass {},
            ProxyMode::Refuse => ProxyModeSpec::Refuse {},
            ProxyMode::Blackhole => ProxyModeSpec::Blackhole {},
            ProxyMode::Reset => ProxyModeSpec::Reset {},
            ProxyMode::Latency(d) => ProxyModeSpec::Latency { delay_ms: d.as_millis() as u64 },
            ProxyMode::Loss(rate) => ProxyModeSpec::Loss { rate: *rate },
            ProxyMode::HttpStatus { status, retry_after_seconds } => {
                ProxyModeSpec::HttpStatus { status: *status, retry_after: *retry_after_seconds }
            }
        }
    }
}

/// Parses and validates a JSON control body; the error says what was wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8], validate: impl Fn(&T) -> Result<(), String>) -> Result<T, String> {
    let value: T = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    validate(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_modes_round_trip_and_validate() {
        let m: ProxyModeSpec = parse(br#"{"mode":"latency","delay_ms":1500}"#, ProxyModeSpec::validate).unwrap();
        assert_eq!(m.to_mode(), ProxyMode::Latency(Duration::from_millis(1500)));
        assert_eq!(ProxyModeSpec::from_mode(&m.to_mode()), m);
        let m: ProxyModeSpec = parse(br#"{"mode":"http_status","status":502}"#, ProxyModeSpec::validate).unwrap();
        assert_eq!(m.to_mode(), ProxyMode::HttpStatus { status: 502, retry_after_seconds: None });
        assert_eq!(serde_json::to_string(&ProxyModeSpec::Pass {}).unwrap(), r#"{"mode":"pass"}"#);
        let e = parse::<ProxyModeSpec>(br#"{"mode":"latncy","delay_ms":1}"#, ProxyModeSpec::validate).unwrap_err();
        assert!(e.contains("latncy"), "{e}");
        let e = parse::<ProxyModeSpec>(br#"{"mode":"loss","rate":1.5}"#, ProxyModeSpec::validate).unwrap_err();
        assert!(e.contains("rate"), "{e}");
        let e = parse::<ProxyModeSpec>(br#"{"mode":"pass","delay_ms":1}"#, ProxyModeSpec::validate).unwrap_err();
        assert!(e.contains("delay_ms"), "{e}");
        let e = parse::<ProxyModeSpec>(br#"{"mode":"http_status","status":999}"#, ProxyModeSpec::validate).unwrap_err();
        assert!(e.contains("999"), "{e}");
    }

    #[test]
    fn server_modes_apply_and_read_back() {
        let spec: ServerModesSpec =
            parse(br#"{"slow_ms":250,"revoke_refresh":true,"http_status":{"status":503,"retry_after":4}}"#, ServerModesSpec::validate)
                .unwrap();
        let modes = ServerModes::default();
        spec.apply_to(&modes);
        assert_eq!(ServerModesSpec::read(&modes), spec);
        ServerModesSpec::default().apply_to(&modes);
        assert_eq!(ServerModesSpec::read(&modes), ServerModesSpec::default());
        let e = parse::<ServerModesSpec>(br#"{"slow":1}"#, ServerModesSpec::validate).unwrap_err();
        assert!(e.contains("slow"), "{e}");
    }
}
