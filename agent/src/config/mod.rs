//! The agent's JSON config file (`/etc/aggregator/config.json` by default) and its validation.
//!
//! RedFlag's own keys (`server_url`, `agent_id`, `token`, `refresh_token`, `check_in_interval`)
//! are read as RedFlag writes them; other RedFlag keys (`logging`, `tags`, ...) are accepted and
//! ignored, except `tls` and `proxy`, which are implemented. The `resilience` object is strict:
//! an unknown key there is an error that names it, because a misspelt tuning knob that silently
//! does nothing is worse than a refusal to start.
//!
//! Every error names the file, the field, what was wrong and, for syntax errors, the line and
//! column. Nothing here panics on input, and no error or listing prints a secret: token values
//! are never echoed and URL passwords are redacted. The file is read with `file_read` (regular
//! files only, bounded); a leading UTF-8 byte-order mark is skipped. Writing the renewed token
//! back lives in `store/config_rewrite.rs`.

pub mod file_read;
pub mod go_agent;
pub mod server_address;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use file_read::ReadError;
use go_agent::{GoAgentKeys, RawGoAgentKeys};
pub use server_address::{AddressScope, address_scope, is_loopback};
use crate::resilience::{BackoffConfig, BreakerConfig, Jitter, PolicyConfig};
use crate::server::secret::{Secret, redact_userinfo};
pub use crate::server::transport::Proxy;
use crate::server::transport::TransportOptions;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/aggregator/config.json";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/redflag-agent";

/// Largest config file the agent will read; a bigger one is certainly not a config file.
pub const CONFIG_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// Recovery target from the seed document: back within 30 s of the server's return.
pub const RECOVERY_TARGET: Duration = Duration::from_secs(30);

/// Limits on every knob, so a typo cannot make the agent wait a year or retry a million times,
/// nor hammer the server: the floors on delays keep one agent against a failing server to about
/// ten attempts per second at the very worst (a 0.1 s delay that never grows, a breaker that
/// never opens), and to about one per second once the breaker (open at least 1 s) or the cap
/// (at least 1 s) is reached, where 1 ms values made over 1,000 requests in 10 s.
pub mod limits {
    pub const CHECK_IN_INTERVAL_MIN_SECONDS: f64 = 1.0;
    pub const CHECK_IN_INTERVAL_WARN_BELOW_SECONDS: f64 = 30.0;
    pub const CHECK_IN_INTERVAL_MAX_SECONDS: f64 = 86_400.0;
    pub const MAX_RETRIES_MAX: f64 = 1_000.0;
    pub const INITIAL_DELAY_MIN_SECONDS: f64 = 0.1;
    pub const INITIAL_DELAY_MAX_SECONDS: f64 = 3_600.0;
    pub const MAX_DELAY_MIN_SECONDS: f64 = 1.0;
    pub const MAX_DELAY_MAX_MINUTES: f64 = 1_440.0;
    pub const BACKOFF_FACTOR_MAX: f64 = 10.0;
    pub const BREAKER_THRESHOLD_MAX: f64 = 10_000.0;
    pub const BREAKER_TIMEOUT_MIN_SECONDS: f64 = 1.0;
    pub const BREAKER_TIMEOUT_MAX_MINUTES: f64 = 1_440.0;
    pub const REQUEST_TIMEOUT_MIN_SECONDS: f64 = 1.0;
    pub const REQUEST_TIMEOUT_MAX_SECONDS: f64 = 600.0;
    pub const RETRY_AFTER_MAX_MAX_SECONDS: f64 = 86_400.0;
    pub const AGENT_ID_MAX_LEN: usize = 128;
    pub use crate::server::protocol::TOKEN_MAX_LEN;
    /// Below this steady retry period during an outage, `check-config` warns with the rate.
    pub const OUTAGE_RETRY_WARN_BELOW_SECONDS: f64 = 5.0;
}

/// The defaults. Chosen so that the worst-case recovery after an outage of any length,
/// `request_timeout + max(max_delay, breaker_timeout)`, is 10 + 15 = 25 s: inside the seed's
/// 30 s target. The seed's own example values (5-minute caps) would allow 5 minutes.
pub mod defaults {
    pub const CHECK_IN_INTERVAL_SECONDS: f64 = 300.0;
    pub const MAX_RETRIES: u32 = 5;
    pub const INITIAL_DELAY_SECONDS: f64 = 1.0;
    pub const MAX_DELAY_MINUTES: f64 = 0.25;
    pub const BACKOFF_FACTOR: f64 = 2.0;
    pub const CIRCUIT_BREAKER_THRESHOLD: u32 = 5;
    pub const CIRCUIT_BREAKER_TIMEOUT_MINUTES: f64 = 0.25;
    pub const REQUEST_TIMEOUT_SECONDS: f64 = 10.0;
    pub const RETRY_AFTER_MAX_SECONDS: f64 = 60.0;
    pub const HEALTH_CHECK: bool = true;
}

/// The keys `resilience` accepts; anything else is refused by name.
pub const RESILIENCE_KEYS: &[&str] = &[
    "max_retries",
    "initial_delay_seconds",
    "max_delay_minutes",
    "backoff_factor",
    "circuit_breaker_threshold",
    "circuit_breaker_timeout_minutes",
    "jitter",
    "request_timeout_seconds",
    "retry_after_max_seconds",
    "health_check",
];

/// The top-level key that lets `server_url` be plain `http://` to a host off loopback.
pub const ALLOW_INSECURE_HTTP_KEY: &str = "allow_insecure_http";

/// A config that passed validation, with durations resolved. Its `Debug` hides the tokens and
/// any password in the URLs.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub server_url: Url,
    pub agent_id: String,
    pub token: Secret,
    pub refresh_token: Secret,
    pub check_in_interval: Duration,
    pub state_dir: PathBuf,
    pub resilience: Resilience,
    pub tls: Tls,
    pub proxy: Option<Proxy>,
    /// `allow_insecure_http`: plain `http://` to any host is allowed (with a warning). Without
    /// it, only to this machine and (with a warning) to a private or link-local address.
    pub allow_insecure_http: bool,
    /// What the RedFlag 0.1.18 Go agent wrote into the file and this agent does not act on.
    pub go_agent: GoAgentKeys,
    /// Legal but questionable settings, to be logged at start-up and shown by `check-config`.
    pub warnings: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server_url", &redact_userinfo(self.server_url.as_str()))
            .field("agent_id", &self.agent_id)
            .field("token", &self.token)
            .field("refresh_token", &self.refresh_token)
            .field("check_in_interval", &self.check_in_interval)
            .field("state_dir", &self.state_dir)
            .field("resilience", &self.resilience)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy.as_ref().map(Proxy::redacted))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("go_agent", &self.go_agent)
            .field("warnings", &self.warnings)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub backoff_factor: f64,
    pub circuit_breaker_threshold: u32,
    pub circuit_breaker_timeout: Duration,
    pub jitter: Jitter,
    pub request_timeout: Duration,
    pub retry_after_max: Duration,
    pub health_check: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// Extra CA certificate (PEM) to trust, for servers with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification entirely. Logged as a warning; for lab setups only.
    pub insecure_skip_verify: bool,
}

/// A CA file bigger than this is not a CA file.
const CA_FILE_MAX_BYTES: u64 = 1024 * 1024;

impl Config {
    /// What the production transport is built from: the server's URL, the request timeout,
    /// `tls` (with `tls.ca_file` read here: a regular file, bounded) and `proxy`.
    pub fn transport_options(&self) -> Result<TransportOptions, String> {
        let ca_pem = match &self.tls.ca_file {
            // A regular file, read up to the limit (not a FIFO that blocks, nor /dev/zero).
            Some(ca) => Some((ca.clone(), file_read::read_regular_file(ca, CA_FILE_MAX_BYTES).map_err(|e| format!("tls.ca_file: {e}"))?)),
            None => None,
        };
        Ok(TransportOptions {
            base_url: self.server_url.as_str().trim_end_matches('/').to_string(),
            request_timeout: self.resilience.request_timeout,
            ca_pem,
            insecure_skip_verify: self.tls.insecure_skip_verify,
            proxy: self.proxy.clone(),
        })
    }
}

/// Why a config was refused. `Display` gives the sentence an operator needs.
#[derive(Debug)]
pub enum ConfigError {
    NotFound { path: PathBuf },
    Unreadable { path: PathBuf, reason: String },
    /// More than [`CONFIG_FILE_MAX_BYTES`] (reading stopped there).
    TooLarge { path: PathBuf },
    Syntax { origin: String, line: usize, column: usize, reason: String },
    Field { origin: String, field: String, reason: String },
}

impl fmt::Display for ConfigError {
    /// Any URL quoted in the message has its password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_userinfo(&self.unredacted()))
    }
}

impl ConfigError {
    fn unredacted(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let f = &mut out;
        let _ = match self {
            ConfigError::NotFound { path } => write!(
                f,
                "config file {} not found; create it (see the README) or pass --config FILE",
                path.display()
            ),
            ConfigError::Unreadable { path, reason } => {
                write!(f, "cannot read config file {}: {reason}", path.display())
            }
            ConfigError::TooLarge { path } => write!(
                f,
                "config file {} is larger than {CONFIG_FILE_MAX_BYTES} bytes, the most a config file may be",
                path.display()
            ),
            ConfigError::Syntax { origin, line, column, reason } => {
                write!(f, "{origin}: line {line}, column {column}: {reason}")
            }
            ConfigError::Field { origin, field, reason } => write!(f, "{origin}: {field} {reason}"),
        };
        out
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The dotted name of the offending field, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct RawConfig {
    server_url: Option<String>,
    agent_id: Option<String>,
    token: Option<String>,
    refresh_token: Option<String>,
    check_in_interval: Option<f64>,
    state_dir: Option<String>,
    resilience: Option<RawResilience>,
    tls: Option<RawTls>,
    proxy: Option<RawProxy>,
    allow_insecure_http: Option<bool>,
    // The Go agent's own keys (`go_agent.rs`): read leniently, never refused.
    registration_token: Option<Value>,
    rapid_polling_enabled: Option<Value>,
    rapid_polling_until: Option<Value>,
    network: Option<Value>,
    logging: Option<Value>,
    tags: Option<Value>,
    metadata: Option<Value>,
    display_name: Option<Value>,
    organization: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResilience {
    max_retries: Option<f64>,
    initial_delay_seconds: Option<f64>,
    max_delay_minutes: Option<f64>,
    backoff_factor: Option<f64>,
    circuit_breaker_threshold: Option<f64>,
    circuit_breaker_timeout_minutes: Option<f64>,
    jitter: Option<String>,
    request_timeout_seconds: Option<f64>,
    retry_after_max_seconds: Option<f64>,
    health_check: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawTls {
    ca_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    /// The Go agent's client-certificate keys: never used by it, not implemented here.
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawProxy {
    #[serde(default)]
    enabled: bool,
    http: Option<String>,
    https: Option<String>,
    no_proxy: Option<String>,
    /// The Go agent's proxy credentials keys: never used by it, not implemented here (a proxy
    /// URL carries its own: `http://user:password@proxy:3128`).
    username: Option<String>,
    password: Option<String>,
}

// ---- loading -------------------------------------------------------------------------------

impl Config {
    /// Reads and validates the config file at `path`. Besides the text's own warnings, warns
    /// when the file is read-only (a renewed token cannot be saved) or readable by others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        let mut config = Config::from_json_str(&text, &path.display().to_string())?;
        config.warnings.extend(file_warnings(path));
        Ok(config)
    }

    /// Parses and validates JSON text. `origin` names the source in error messages. A leading
    /// UTF-8 byte-order mark (Windows editors write one) is skipped.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            json_error(origin, &path, &inner)
        })?;
        // Trailing garbage after the object.
        let mut de = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        if let (Some(Ok(_)), Some(Err(e))) = (de.next(), de.next()) {
            return Err(json_error(origin, ".", &e));
        }
        validate(raw, origin)
    }

    /// Validates an already-parsed JSON value (the simulation builds agent configs this way).
    pub fn from_value(value: Value, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let reason = hide_secret_value(&path, clean_serde_message(&inner.to_string()));
            ConfigError::Field { origin: origin.to_string(), field: path, reason }
        })?;
        validate(raw, origin)
    }

    /// The resilience settings in the form the pure core takes.
    pub fn policy(&self) -> PolicyConfig {
        let r = &self.resilience;
        PolicyConfig {
            backoff: BackoffConfig {
                initial_delay: r.initial_delay,
                max_delay: r.max_delay,
                factor: r.backoff_factor,
                jitter: r.jitter,
            },
            breaker: BreakerConfig {
                failure_threshold: r.circuit_breaker_threshold,
                open_timeout: r.circuit_breaker_timeout,
                half_open_max_probes: BreakerConfig::DEFAULT_HALF_OPEN_MAX_PROBES,
            },
            max_retries: r.max_retries,
            check_in_interval: self.check_in_interval,
            retry_after_max: r.retry_after_max,
            health_check: r.health_check,
        }
    }

    /// Worst-case time from the server's return to the agent's first successful check-in,
    /// not counting Retry-After waits the server itself asks for: an attempt that started just
    /// before the return can run for one request timeout, then the longest backoff or breaker
    /// wait, then the health probe and check-in themselves (one more request timeout at most).
    pub fn worst_case_recovery(&self) -> Duration {
        let r = &self.resilience;
        r.request_timeout + r.max_delay.max(r.circuit_breaker_timeout)
    }

    /// The steady wait between attempts in a long outage: the breaker's open period when the
    /// breaker opens within a burst, else the backoff cap a burst rests for. (A burst's first
    /// attempts come faster, a few of them at most.) Every attempt in an outage may carry a
    /// `/health` probe, so the request rate is up to twice the attempt rate.
    pub fn outage_retry_period(&self) -> Duration {
        let r = &self.resilience;
        if r.circuit_breaker_threshold <= r.max_retries { r.circuit_breaker_timeout } else { r.max_delay }
    }

    /// `outage_retry_period` in words, with the request rate it implies for one agent and a
    /// fleet of 1,000.
    pub fn outage_rate_text(&self) -> String {
        let period = self.outage_retry_period().as_secs_f64();
        let per_minute = 60.0 / period;
        let fleet_per_second = 1000.0 / period * if self.resilience.health_check { 2.0 } else { 1.0 };
        format!(
            "one attempt every {period}s per agent in a long outage ({per_minute:.1}/min; {fleet_per_second:.0} requests/s from a fleet of 1,000)"
        )
    }

    /// `check-config`'s listing: every effective setting, secrets redacted.
    pub fn describe(&self) -> String {
        let r = &self.resilience;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<34} {v}\n"));
        line("server_url", self.server_url_redacted());
        line("agent_id", self.agent_id.clone());
        line("token", self.token.to_string());
        line("refresh_token", self.refresh_token.to_string());
        line("check_in_interval", secs(self.check_in_interval));
        line("state_dir", self.state_dir.display().to_string());
        line("resilience.max_retries", r.max_retries.to_string());
        line("resilience.initial_delay_seconds", secs(r.initial_delay));
        line("resilience.max_delay_minutes", format!("{} min ({})", r.max_delay.as_secs_f64() / 60.0, secs(r.max_delay)));
        line("resilience.backoff_factor", r.backoff_factor.to_string());
        line("resilience.circuit_breaker_threshold", r.circuit_breaker_threshold.to_string());
        line(
            "resilience.circuit_breaker_timeout_minutes",
            format!("{} min ({})", r.circuit_breaker_timeout.as_secs_f64() / 60.0, secs(r.circuit_breaker_timeout)),
        );
        line("resilience.jitter", r.jitter.to_string());
        line("resilience.request_timeout_seconds", secs(r.request_timeout));
        line("resilience.retry_after_max_seconds", secs(r.retry_after_max));
        line("resilience.health_check", r.health_check.to_string());
        line("tls.ca_file", self.tls.ca_file.as_ref().map_or("(system roots)".into(), |p| p.display().to_string()));
        line("tls.insecure_skip_verify", self.tls.insecure_skip_verify.to_string());
        line("proxy", self.proxy.as_ref().map_or("(none)".into(), Proxy::redacted));
        line(ALLOW_INSECURE_HTTP_KEY, self.allow_insecure_http.to_string());
        for (key, what) in self.go_agent.describe(r.request_timeout) {
            line(&key, what);
        }
        line("worst-case recovery", format!("{} (target {})", secs(self.worst_case_recovery()), secs(RECOVERY_TARGET)));
        line("outage request rate", self.outage_rate_text());
        out
    }

    /// The server URL as printed: its password, if any, redacted.
    pub fn server_url_redacted(&self) -> String {
        redact_userinfo(self.server_url.as_str())
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The config file's text: a regular file (not a FIFO or a device: those would block or never
/// end), at most [`CONFIG_FILE_MAX_BYTES`] read, UTF-8.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = file_read::read_regular_file(path, CONFIG_FILE_MAX_BYTES).map_err(|e| match e {
        ReadError::NotFound { path } => ConfigError::NotFound { path },
        ReadError::Unreadable { path, reason } => ConfigError::Unreadable { path, reason },
        ReadError::NotRegular { path, kind } => {
            ConfigError::Unreadable { path, reason: format!("it is a {kind}, not a regular file") }
        }
        ReadError::TooLarge { path, .. } => ConfigError::TooLarge { path },
    })?;
    String::from_utf8(bytes)
        .map_err(|e| ConfigError::Unreadable { path: path.to_path_buf(), reason: format!("not UTF-8 text ({e})") })
}

/// Warnings about the config file itself (not its text): read-only, or readable by others.
fn file_warnings(path: &Path) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(path) else { return Vec::new() };
    let mode = meta.permissions().mode() & 0o7777;
    let mut out = Vec::new();
    if mode & 0o200 == 0 {
        out.push(format!(
            "config file {} is read-only (mode {mode:04o}): a renewed token cannot be saved to it and is lost when the agent restarts; make it writable by its owner (chmod 600) if the agent should keep renewed tokens",
            path.display()
        ));
    }
    if mode & 0o077 != 0 {
        out.push(format!(
            "config file {} is readable or writable by group or others (mode {mode:04o}) and holds the agent's tokens; chmod 600 it",
            path.display()
        ));
    }
    out
}

/// Serde's message for a bad token would quote the value (`invalid type: integer `12345``):
/// for the secret fields, say what is wrong without it.
fn hide_secret_value(path: &str, reason: String) -> String {
    let field = path.rsplit('.').next().unwrap_or(path);
    if matches!(field, "token" | "refresh_token") && reason.starts_with("invalid ") {
        return "must be a string (the value is not shown: it is a secret)".to_string();
    }
    reason
}

/// serde_json errors end in " at line L column C"; we report position separately.
fn clean_serde_message(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn json_error(origin: &str, path: &str, e: &serde_json::Error) -> ConfigError {
    let reason = hide_secret_value(path, clean_serde_message(&e.to_string()));
    if e.is_syntax() || e.is_eof() || path == "." {
        ConfigError::Syntax { origin: origin.to_string(), line: e.line(), column: e.column(), reason }
    } else {
        // A type error or an unknown key: name the field and the position.
        let field = unknown_field_path(path, &reason);
        ConfigError::Field {
            origin: origin.to_string(),
            field,
            reason: format!("{reason} (line {}, column {})", e.line(), e.column()),
        }
    }
}

/// For "unknown field `x`" errors at `resilience`, the field is `resilience.x`.
/// (serde_path_to_error's path usually ends at the unknown key already; do not name it twice.)
fn unknown_field_path(path: &str, reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("unknown field `") {
        if let Some(name) = rest.split('`').next() {
            if path == name || path.ends_with(&format!(".{name}")) {
                return path.to_string();
            }
            return if path == "." || path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        }
    }
    path.to_string()
}

// ---- validation ----------------------------------------------------------------------------

struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Field { origin: self.origin.to_string(), field: field.to_string(), reason: reason.into() }
    }

    /// A finite number within `[min, max]`.
    fn number(&self, field: &str, value: f64, min: f64, max: f64) -> Result<f64, ConfigError> {
        if !value.is_finite() {
            return Err(self.err(field, format!("must be a finite number, got {value}")));
        }
        if value < min {
            return Err(self.err(field, format!("must be >= {min}, got {value}")));
        }
        if value > max {
            return Err(self.err(field, format!("must be <= {max}, got {value}")));
        }
        Ok(value)
    }

    /// A finite number of minutes, at least `min_seconds` (said in seconds: "at least 0.016667"
    /// minutes helps nobody) and at most `max_minutes`.
    fn minutes(&self, field: &str, value: f64, min_seconds: f64, max_minutes: f64) -> Result<f64, ConfigError> {
        let v = self.number(field, value, 0.0, max_minutes)?;
        if v * 60.0 < min_seconds {
            return Err(self.err(
                field,
                format!(
                    "must be at least {min_seconds} s ({:.4} minutes), got {value} ({}s): shorter waits let a fleet hammer a failing server",
                    min_seconds / 60.0,
                    v * 60.0
                ),
            ));
        }
        Ok(v)
    }

    fn whole(&self, field: &str, value: f64, min: f64, max: f64) -> Result<u32, ConfigError> {
        let v = self.number(field, value, min, max)?;
        if v.fract() != 0.0 {
            return Err(self.err(field, format!("must be a whole number, got {value}")));
        }
        Ok(v as u32)
    }

    fn required_string(&self, field: &str, value: Option<String>) -> Result<String, ConfigError> {
        match value {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(_) => Err(self.err(field, "must not be empty")),
            None => Err(self.err(field, "is missing; it is required")),
        }
    }
}

/// Plain `http://`: silent to this machine; a warning to a private or link-local address; to
/// anything else, a warning when `allow_insecure_http` is set and an error naming the way out
/// when it is not.
fn plain_http_rule(c: &Check, url: &Url, allow_insecure_http: bool) -> Result<Option<String>, ConfigError> {
    let host = url.host_str().unwrap_or("");
    let scope = address_scope(url);
    match scope {
        AddressScope::Loopback => Ok(None),
        AddressScope::Private | AddressScope::LinkLocal => Ok(Some(format!(
            "INSECURE: server_url is plain http:// to {host}, {}: the agent's tokens travel in clear on that network; put RedFlag behind TLS and use https://",
            scope.describe()
        ))),
        AddressScope::Other if allow_insecure_http => Ok(Some(format!(
            "INSECURE: server_url is plain http:// to {host} ({ALLOW_INSECURE_HTTP_KEY} is true): the agent's tokens travel in clear; use https://"
        ))),
        AddressScope::Other => Err(c.err(
            "server_url",
            format!(
                "is plain http:// to {host}, which is {}: the agent's tokens would travel in clear. Use https://{host}/... (RedFlag behind a TLS proxy); or, on a network you trust, give the server's private IP address (http://192.168.1.10:8080 is allowed, with a warning) or set \"{ALLOW_INSECURE_HTTP_KEY}\": true",
                scope.describe()
            ),
        )),
    }
}

impl RawConfig {
    /// The Go agent's own keys (`go_agent.rs`), taken out of the file as read.
    fn take_go_agent_keys(&mut self) -> RawGoAgentKeys {
        RawGoAgentKeys {
            registration_token: self.registration_token.take(),
            rapid_polling_enabled: self.rapid_polling_enabled.take(),
            rapid_polling_until: self.rapid_polling_until.take(),
            network: self.network.take(),
            logging: self.logging.take(),
            tags: self.tags.take(),
            metadata: self.metadata.take(),
            display_name: self.display_name.take(),
            organization: self.organization.take(),
        }
    }
}

/// `tls`: the CA file and verification switch; warnings for skipped verification and for the
/// Go agent's client-certificate keys, which nothing implements.
fn validate_tls(raw: Option<RawTls>, warnings: &mut Vec<String>) -> Tls {
    let Some(t) = raw else { return Tls::default() };
    let ca_file = t.ca_file.filter(|s| !s.trim().is_empty()).map(PathBuf::from);
    if t.insecure_skip_verify {
        warnings.push("tls.insecure_skip_verify is true: the server's certificate is not checked".into());
    }
    let client_cert: Vec<&str> = [("tls.cert_file", &t.cert_file), ("tls.key_file", &t.key_file)]
        .into_iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
        .map(|(k, _)| k)
        .collect();
    if !client_cert.is_empty() {
        warnings.push(format!(
            "{} set, but client certificates are not implemented (RedFlag 0.1.18's Go agent did not use them either): no certificate is sent",
            client_cert.join(" and ")
        ));
    }
    Tls { ca_file, insecure_skip_verify: t.insecure_skip_verify }
}

/// `proxy` when enabled: its URLs checked; a warning for the Go agent's credential keys.
fn validate_proxy(c: &Check, raw: Option<RawProxy>, warnings: &mut Vec<String>) -> Result<Option<Proxy>, ConfigError> {
    let Some(p) = raw.filter(|p| p.enabled) else { return Ok(None) };
    if [&p.username, &p.password].iter().any(|v| v.as_deref().is_some_and(|v| !v.is_empty())) {
        warnings.push(
            "proxy.username and proxy.password are not used (RedFlag 0.1.18's Go agent did not use them either); put the credentials in the proxy URL instead: http://user:password@proxy:3128".into(),
        );
    }
    for (field, v) in [("proxy.http", &p.http), ("proxy.https", &p.https)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            Url::parse(v).map_err(|e| c.err(field, format!("is not a valid URL ({e}), got {v:?}")))?;
        }
    }
    Ok(Some(Proxy { http: p.http.filter(|s| !s.is_empty()), https: p.https.filter(|s| !s.is_empty()), no_proxy: p.no_proxy }))
}

/// `url` without a user name or password, and the warning that says they were removed.
///
/// RedFlag authenticates agents by their token (`Authorization: Bearer`). Credentials in the URL
/// would go out as a *second* `Authorization` header (`Basic`, added by the HTTP client), and a
/// server or proxy that reads the first one refuses every request. They can never help, so they
/// are not sent. Stripped with a warning rather than refused: an agent already deployed with
/// such a URL keeps checking in (`register` refuses them instead: an operator is at the prompt).
pub fn strip_userinfo(mut url: Url) -> (Url, Option<String>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url, None);
    }
    let what = match url.password() {
        Some(_) => format!("a user name ({:?}) and a password", url.username()),
        None => format!("a user name ({:?})", url.username()),
    };
    // Both only fail for URLs that cannot have credentials (no host), refused before.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let warning = format!(
        "server_url carries {what}; RedFlag authenticates this agent by its token, so they are not sent (they would \
         be a second Authorization header): remove them from server_url"
    );
    (url, Some(warning))
}

fn validate(mut raw: RawConfig, origin: &str) -> Result<Config, ConfigError> {
    use limits::*;
    let go_agent = GoAgentKeys::read(raw.take_go_agent_keys());
    let c = Check { origin };
    let mut warnings = Vec::new();

    let url_text = c.required_string("server_url", raw.server_url)?;
    let server_url = Url::parse(&url_text).map_err(|e| c.err("server_url", format!("is not a valid URL ({e}), got {url_text:?}")))?;
    let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
    if !matches!(server_url.scheme(), "http" | "https") {
        return Err(c.err("server_url", format!("must start with http:// or https://, got {url_text:?}")));
    }
    if server_url.host_str().is_none() {
        return Err(c.err("server_url", format!("has no host, got {url_text:?}")));
    }
    if server_url.query().is_some() || server_url.fragment().is_some() {
        return Err(c.err("server_url", format!("must not have a query or fragment, got {url_text:?}")));
    }
    let (server_url, userinfo_warning) = strip_userinfo(server_url);
    warnings.extend(userinfo_warning);
    // The Bearer token and the refresh token travel with every request: over plain http, anyone
    // on the path reads them (`server_address.rs` says which addresses pass and why).
    if server_url.scheme() == "http" {
        if let Some(warning) = plain_http_rule(&c, &server_url, allow_insecure_http)? {
            warnings.push(warning);
        }
    }

    let agent_id = c.required_string("agent_id", raw.agent_id)?;
    if agent_id.len() > AGENT_ID_MAX_LEN {
        return Err(c.err("agent_id", format!("is {} characters long; at most {AGENT_ID_MAX_LEN}", agent_id.len())));
    }
    if let Some(bad) = agent_id.chars().find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))) {
        return Err(c.err("agent_id", format!("contains {bad:?}; use letters, digits, '-', '_' and '.' only")));
    }

    let token = Secret::new(raw.token.unwrap_or_default().trim());
    let refresh_token = Secret::new(raw.refresh_token.unwrap_or_default().trim());
    for (field, s) in [("token", &token), ("refresh_token", &refresh_token)] {
        if s.expose().len() > TOKEN_MAX_LEN {
            return Err(c.err(field, format!("is longer than {TOKEN_MAX_LEN} bytes")));
        }
        if s.expose().chars().any(|ch| ch.is_control() || ch == ' ') {
            return Err(c.err(field, "contains spaces or control characters; copy it again from the server"));
        }
    }
    if token.is_empty() && refresh_token.is_empty() {
        return Err(c.err("token", "and refresh_token are both empty; register the agent first"));
    }
    if refresh_token.is_empty() {
        warnings.push("refresh_token is empty: an expired token cannot be renewed and the agent will need re-registration".into());
    }

    let interval = c.number(
        "check_in_interval",
        raw.check_in_interval.unwrap_or(defaults::CHECK_IN_INTERVAL_SECONDS),
        CHECK_IN_INTERVAL_MIN_SECONDS,
        CHECK_IN_INTERVAL_MAX_SECONDS,
    )?;
    if interval < CHECK_IN_INTERVAL_WARN_BELOW_SECONDS {
        warnings.push(format!(
            "check_in_interval is {interval}s; below {CHECK_IN_INTERVAL_WARN_BELOW_SECONDS}s a large fleet loads the server heavily"
        ));
    }

    let state_dir = PathBuf::from(raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.to_string()));
    if state_dir.as_os_str().is_empty() {
        return Err(c.err("state_dir", "must not be empty"));
    }

    let resilience = validate_resilience(&c, raw.resilience.unwrap_or_default())?;
    let tls = validate_tls(raw.tls, &mut warnings);
    let proxy = validate_proxy(&c, raw.proxy, &mut warnings)?;

    let config = Config {
        server_url,
        agent_id,
        token,
        refresh_token,
        check_in_interval: Duration::from_secs_f64(interval),
        state_dir,
        resilience,
        tls,
        proxy,
        allow_insecure_http,
        go_agent,
        warnings,
    };
    let worst = config.worst_case_recovery();
    let mut config = config;
    if worst > RECOVERY_TARGET {
        config.warnings.push(format!(
            "with these resilience settings recovery after an outage can take up to {}s (request_timeout_seconds + max(max_delay, circuit_breaker_timeout)); the target is {}s",
            worst.as_secs_f64(),
            RECOVERY_TARGET.as_secs()
        ));
    }
    if config.outage_retry_period().as_secs_f64() < OUTAGE_RETRY_WARN_BELOW_SECONDS {
        config.warnings.push(format!(
            "short waits: {}; the defaults (15 s) keep a fleet's load low",
            config.outage_rate_text()
        ));
    }
    Ok(config)
}

fn validate_resilience(c: &Check, r: RawResilience) -> Result<Resilience, ConfigError> {
    use limits::*;
    let max_retries =
        c.whole("resilience.max_retries", r.max_retries.unwrap_or(defaults::MAX_RETRIES.into()), 1.0, MAX_RETRIES_MAX)?;
    let initial = c.number(
        "resilience.initial_delay_seconds",
        r.initial_delay_seconds.unwrap_or(defaults::INITIAL_DELAY_SECONDS),
        INITIAL_DELAY_MIN_SECONDS,
        INITIAL_DELAY_MAX_SECONDS,
    )?;
    let max_delay_minutes = c.minutes(
        "resilience.max_delay_minutes",
        r.max_delay_minutes.unwrap_or(defaults::MAX_DELAY_MINUTES),
        MAX_DELAY_MIN_SECONDS,
        MAX_DELAY_MAX_MINUTES,
    )?;
    if initial > max_delay_minutes * 60.0 {
        return Err(c.err(
            "resilience.initial_delay_seconds",
            format!(
                "must not exceed resilience.max_delay_minutes ({max_delay_minutes} min = {}s), got {initial}",
                max_delay_minutes * 60.0
            ),
        ));
    }
    let factor = c.number(
        "resilience.backoff_factor",
        r.backoff_factor.unwrap_or(defaults::BACKOFF_FACTOR),
        1.0,
        BACKOFF_FACTOR_MAX,
    )?;
    let threshold = c.whole(
        "resilience.circuit_breaker_threshold",
        r.circuit_breaker_threshold.unwrap_or(defaults::CIRCUIT_BREAKER_THRESHOLD.into()),
        1.0,
        BREAKER_THRESHOLD_MAX,
    )?;
    let breaker_minutes = c.minutes(
        "resilience.circuit_breaker_timeout_minutes",
        r.circuit_breaker_timeout_minutes.unwrap_or(defaults::CIRCUIT_BREAKER_TIMEOUT_MINUTES),
        BREAKER_TIMEOUT_MIN_SECONDS,
        BREAKER_TIMEOUT_MAX_MINUTES,
    )?;
    let jitter = match r.jitter {
        None => Jitter::default(),
        Some(s) => s.parse::<Jitter>().map_err(|e| c.err("resilience.jitter", e))?,
    };
    let request_timeout = c.number(
        "resilience.request_timeout_seconds",
        r.request_timeout_seconds.unwrap_or(defaults::REQUEST_TIMEOUT_SECONDS),
        REQUEST_TIMEOUT_MIN_SECONDS,
        REQUEST_TIMEOUT_MAX_SECONDS,
    )?;
    let retry_after_max = c.number(
        "resilience.retry_after_max_seconds",
        r.retry_after_max_seconds.unwrap_or(defaults::RETRY_AFTER_MAX_SECONDS),
        0.0,
        RETRY_AFTER_MAX_MAX_SECONDS,
    )?;
    Ok(Resilience {
        max_retries,
        initial_delay: Duration::from_secs_f64(initial),
        max_delay: Duration::from_secs_f64(max_delay_minutes * 60.0),
        backoff_factor: factor,
        circuit_breaker_threshold: threshold,
        circuit_breaker_timeout: Duration::from_secs_f64(breaker_minutes * 60.0),
        jitter,
        request_timeout: Duration::from_secs_f64(request_timeout),
        retry_after_max: Duration::from_secs_f64(retry_after_max),
        health_check: r.health_check.unwrap_or(defaults::HEALTH_CHECK),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"server_url":"http://127.0.0.1:8080","agent_id":"a-1","token":"t","refresh_token":"r"}"#;

    fn with_resilience(body: &str) -> String {
        format!(
            r#"{{"server_url":"http://127.0.0.1:8080","agent_id":"a-1","token":"t","refresh_token":"r",
"resilience":{{{body}}}}}"#
        )
    }

    fn err(text: &str) -> String {
        Config::from_json_str(text, "test.json").unwrap_err().to_string()
    }

    #[test]
    fn defaults_meet_the_recovery_target() {
        let c = Config::from_json_str(MINIMAL, "x").unwrap();
        assert!(c.worst_case_recovery() < RECOVERY_TARGET);
        assert_eq!(c.check_in_interval, Duration::from_secs(300));
        assert_eq!(c.resilience.jitter, Jitter::Full);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn fractional_minutes() {
        let c = Config::from_json_str(&with_resilience(r#""max_delay_minutes":0.05"#), "x").unwrap();
        assert_eq!(c.resilience.max_delay, Duration::from_secs(3));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            err(&with_resilience(r#""backoff_factor":0.5"#)),
            "test.json: resilience.backoff_factor must be >= 1, got 0.5"
        );
        let e = err(&with_resilience(r#""max_retriez":3"#));
        assert!(e.contains("resilience.max_retriez") && e.contains("line 2"), "{e}");
        let e = err(&with_resilience(r#""max_retries":"five""#));
        assert!(e.contains("resilience.max_retries") && e.contains("invalid type"), "{e}");
        let e = err(&with_resilience(r#""max_retries":2.5"#));
        assert!(e.contains("whole number"), "{e}");
        let e = err(&with_resilience(r#""jitter":"fulll""#));
        assert!(e.contains("resilience.jitter") && e.contains("fulll"), "{e}");
        let e = err(r#"{"server_url":"ftp://x","agent_id":"a","token":"t"}"#);
        assert!(e.contains("server_url"), "{e}");
        let e = err(r#"{"agent_id":"a","token":"t"}"#);
        assert!(e.contains("server_url is missing"), "{e}");
        let e = err(r#"{"server_url":"http://127.0.0.1:1","agent_id":"a","token":"t","check_in_interval":0.5}"#);
        assert!(e.contains("check_in_interval must be >= 1"), "{e}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = err("{\n  \"server_url\": \"http://x\",\n  \"agent_id\" \"a\"\n}");
        assert!(e.starts_with("test.json: line 3, column"), "{e}");
        let e = err("{\"server_url\":\"http://x\"} trailing");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn short_interval_warns() {
        let c = Config::from_json_str(
            r#"{"server_url":"http://127.0.0.1:1","agent_id":"a","token":"t","refresh_token":"r","check_in_interval":1}"#,
            "x",
        )
        .unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("check_in_interval")));
    }

    #[test]
    fn other_redflag_keys_are_ignored() {
        let c = Config::from_json_str(
            r#"{"server_url":"http://127.0.0.1:1","agent_id":"a","token":"t","refresh_token":"r",
                "logging":{"level":"info"},"tags":["x"],"version":"0.1.20"}"#,
            "x",
        );
        assert!(c.is_ok());
    }

    #[test]
    fn describe_never_shows_tokens() {
        let c = Config::from_json_str(
            r#"{"server_url":"http://127.0.0.1:1","agent_id":"a","token":"SECRET-A","refresh_token":"SECRET-B"}"#,
            "x",
        )
        .unwrap();
        let d = c.describe();
        assert!(!d.contains("SECRET"), "{d}");
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let with_bom = format!("\u{feff}{MINIMAL}");
        assert!(Config::from_json_str(&with_bom, "x").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, with_bom.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn delays_have_floors() {
        let e = err(&with_resilience(r#""initial_delay_seconds":0.001"#));
        assert!(e.contains("resilience.initial_delay_seconds must be >= 0.1"), "{e}");
        let e = err(&with_resilience(r#""max_delay_minutes":0.00001"#));
        assert!(e.contains("resilience.max_delay_minutes must be at least 1 s"), "{e}");
        let e = err(&with_resilience(r#""circuit_breaker_timeout_minutes":0.00001"#));
        assert!(e.contains("resilience.circuit_breaker_timeout_minutes must be at least 1 s"), "{e}");
        let e = err(&with_resilience(r#""request_timeout_seconds":0.01"#));
        assert!(e.contains("resilience.request_timeout_seconds must be >= 1"), "{e}");
        // The smallest values the tests and live scenarios use stay valid, with a warning.
        let c = Config::from_json_str(
            &with_resilience(
                r#""initial_delay_seconds":0.2,"max_delay_minutes":0.05,"circuit_breaker_timeout_minutes":0.05,"request_timeout_seconds":2"#,
            ),
            "x",
        )
        .unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("one attempt every 3s") && w.contains("20.0/min")), "{:?}", c.warnings);
        assert!(c.describe().contains("outage request rate"), "{}", c.describe());
    }

    #[test]
    fn plain_http_to_a_public_address_or_a_name_is_refused_unless_allowed() {
        for host in ["redflag.example.com", "203.0.113.5", "[2001:db8::5]"] {
            let remote = format!(r#"{{"server_url":"http://{host}:8080","agent_id":"a","token":"t","refresh_token":"r"}}"#);
            let e = err(&remote);
            assert!(e.contains(&format!("server_url is plain http:// to {host}")) && e.contains("https://"), "{e}");
            assert!(e.contains("\"allow_insecure_http\": true") && e.contains("private IP address"), "{e}");
            let allowed = remote.replace(r#""agent_id""#, r#""allow_insecure_http":true,"agent_id""#);
            let c = Config::from_json_str(&allowed, "x").unwrap();
            assert!(c.allow_insecure_http);
            assert!(c.warnings.iter().any(|w| w.starts_with("INSECURE") && w.contains("https://")), "{:?}", c.warnings);
        }
        for ok in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080", "https://redflag.example.com", "https://192.168.1.10"] {
            let text = format!(r#"{{"server_url":"{ok}","agent_id":"a","token":"t","refresh_token":"r"}}"#);
            let c = Config::from_json_str(&text, "x").unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(c.warnings.is_empty(), "{ok}: {:?}", c.warnings);
        }
    }

    #[test]
    fn plain_http_to_a_private_or_link_local_address_runs_with_a_warning() {
        for (url, scope) in [
            ("http://192.168.1.10:8080", "a private address"),
            ("http://10.0.0.5:8080", "a private address"),
            ("http://172.20.1.1:8080", "a private address"),
            ("http://[fd00::5]:8080", "a private address"),
            ("http://169.254.10.10:8080", "a link-local address"),
            ("http://[fe80::1]:8080", "a link-local address"),
        ] {
            let text = format!(r#"{{"server_url":"{url}","agent_id":"a","token":"t","refresh_token":"r"}}"#);
            let c = Config::from_json_str(&text, "x").unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!c.allow_insecure_http);
            let warning = c.warnings.iter().find(|w| w.starts_with("INSECURE")).unwrap_or_else(|| panic!("{url}: {:?}", c.warnings));
            assert!(warning.contains(scope) && warning.contains("in clear") && warning.contains("https://"), "{url}: {warning}");
        }
    }

    #[test]
    fn a_config_the_go_agent_wrote_is_valid_as_it_stands() {
        let text = include_str!("../../tests/fixtures/go-agent-config.json");
        let c = Config::from_json_str(text, "go.json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.check_in_interval, Duration::from_secs(300));
        assert_eq!(c.agent_id, "937f725a-e7e5-41c0-adf1-73cb93642408");
        assert_eq!(c.go_agent.network_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.go_agent.rapid_polling_until, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let text = include_str!("../../tests/fixtures/go-agent-config-flags.json");
        let c = Config::from_json_str(text, "go.json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.go_agent.descriptive_keys, ["tags", "display_name", "organization"]);
        assert_eq!(c.go_agent.logging_level.as_deref(), Some("debug"));
        let shown = c.describe();
        assert!(shown.contains("network.timeout (Go agent)") && shown.contains("tags, display_name, organization"), "{shown}");
        assert!(!shown.contains(c.go_agent.registration_token.as_ref().unwrap().expose()), "{shown}");
    }

    #[test]
    fn go_keys_the_agent_cannot_honour_are_warned_about() {
        let text = r#"{"server_url":"https://h","agent_id":"a","token":"t","refresh_token":"r",
            "tls":{"insecure_skip_verify":false,"cert_file":"/etc/c.pem","key_file":"/etc/k.pem"},
            "proxy":{"enabled":true,"http":"http://p:3128","username":"u","password":"PASSWORD9"}}"#;
        let c = Config::from_json_str(text, "x").unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("tls.cert_file and tls.key_file") && w.contains("not implemented")), "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("proxy.username") && w.contains("http://user:password@")), "{:?}", c.warnings);
        assert!(!format!("{:?}{}", c.warnings, c.describe()).contains("PASSWORD9"));
    }

    #[test]
    fn secrets_never_reach_errors_or_listings() {
        let text = r#"{"server_url":"https://bob:PASSWORD1@h.example","agent_id":"a","token":"t","refresh_token":"r",
            "proxy":{"enabled":true,"http":"http://u:PASSWORD2@p:3128","https":"http://u:PASSWORD3@p:3128"}}"#;
        let c = Config::from_json_str(text, "x").unwrap();
        let shown = format!("{}\n{c:?}", c.describe());
        assert!(!shown.contains("PASSWORD"), "{shown}");
        assert!(shown.contains("http://u:[redacted]@p:3128"), "{shown}");
        // The server URL's credentials are not kept at all (see `strip_userinfo`).
        assert_eq!(c.server_url.as_str(), "https://h.example/");
        assert_eq!(c.transport_options().unwrap().base_url, "https://h.example");
        let warned = c.warnings.iter().find(|w| w.contains("server_url carries")).expect("a warning");
        assert!(warned.contains("\"bob\"") && warned.contains("password") && !warned.contains("PASSWORD1"), "{warned}");
        let user_only = Config::from_json_str(&text.replace("bob:PASSWORD1@", "bob@"), "x").unwrap();
        assert_eq!(user_only.server_url.as_str(), "https://h.example/");
        assert!(user_only.warnings.iter().any(|w| w.contains("a user name (\"bob\");")), "{:?}", user_only.warnings);
        let e = err(r#"{"server_url":"https://bob:PASSWORD4@h.example:99999","agent_id":"a","token":"t"}"#);
        assert!(e.contains("server_url") && !e.contains("PASSWORD"), "{e}");
        let e = err(r#"{"server_url":"https://h","agent_id":"a","token":123456789}"#);
        assert!(e.contains("token must be a string") && !e.contains("123456789"), "{e}");
        let v = serde_json::json!({"server_url":"https://h","agent_id":"a","token":"t","refresh_token":987654321});
        let e = Config::from_value(v, "[agent]").unwrap_err().to_string();
        assert!(e.contains("refresh_token must be a string") && !e.contains("987654321"), "{e}");
    }

    #[test]
    fn only_regular_files_are_read_and_only_so_much() {
        let e = Config::load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; CONFIG_FILE_MAX_BYTES as usize + 1]).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_read_only_or_shared_config_file_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, MINIMAL).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("read-only (mode 0400)")), "{:?}", c.warnings);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("group or others (mode 0644)")), "{:?}", c.warnings);
    }
}
