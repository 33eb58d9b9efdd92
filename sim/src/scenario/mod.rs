//! Scenario files: the TOML schema, and its validation into a [`Scenario`].
//!
//! A scenario is one failure story: a fleet, agent config overrides, faults at simulated times,
//! and the expectations that must hold. The full schema reference is `scenarios/README.md`.
//! Validation is strict and every error names the file, the line and the offending word, with
//! what was expected: a misspelt action or key must never be silently ignored, because a fault
//! that is not applied makes a scenario pass for the wrong reason.
//!
//! This file only reads and checks. Applying faults is `world/faults.rs` (simulation) and `live/fault_state.rs`
//! (real processes); judging expectations is `judge/`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redflag_agent::config::Config;
use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

mod commands;

pub use commands::{
    COMMANDS_PER_ANSWER_MAX, CommandAgents, CommandEntry, DEFAULT_COMMANDS_PER_ANSWER, DEFAULT_EXECUTION_TIME, DEFAULT_GRACE,
    DEFAULT_REDELIVER_AFTER, DeliveryMode, DeliverySpec, QueuedCommand, Workload, command_id,
};
use commands::{RawCommand, RawWorkload};
pub mod explore;
mod server;
mod strategy;

pub use server::limits as server_limits;
pub use server::{COST_HEALTH, COST_REQUEST, Capacity, SHED_COST_DEFAULT, ServerSettings, ShedRetryAfter, cost_of};
pub use strategy::StrategyName;

/// Limits, so that a typo cannot ask for a billion agents or a century of simulated time.
pub mod limits {
    use std::time::Duration;
    /// A million agents run on one 24 GB machine (`scenarios/soak/million-agents.toml`).
    pub const AGENTS_MAX: u64 = 1_000_000;
    pub const HOSTS_MAX: u64 = 1_000;
    pub const DURATION_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
    pub const FAULTS_MAX: usize = 1_000;
    pub const EXPECT_MAX: usize = 100;
    pub const TICK_MIN: Duration = Duration::from_millis(1);
    pub const TICK_MAX: Duration = Duration::from_secs(1);
    pub const RETRY_AFTER_MAX_SECONDS: i64 = 86_400;
    pub const SCENARIO_FILE_MAX_BYTES: u64 = 1024 * 1024;
}

/// The agent's check-in interval in a scenario that does not set one (RedFlag's default).
pub const DEFAULT_CHECK_IN_INTERVAL_SECONDS: f64 = 300.0;
/// `seed` when the file has none.
pub const DEFAULT_SEED: u64 = 1;

pub const ACTIONS: &[&str] = &[
    "crash",
    "restart",
    "partition",
    "latency",
    "loss",
    "http_status",
    "slow",
    "setup_mode",
    "expire_tokens",
    "revoke_refresh",
    "broken_health",
    "broken_route",
];
pub const CHECKS: &[&str] = &[
    "recovers_within",
    "never_gives_up",
    "max_request_rate",
    "breaker_opens",
    "honours_retry_after",
    "bounded_waits",
    "no_lost_commands",
    "no_duplicate_execution",
    "fleet_recovers_within",
    "max_amplification",
    "load_settles",
    "max_wasted_share",
    "max_peak_load",
];
/// `[agent]` keys a scenario may override; the harness owns the rest (server_url, agent_id,
/// token, refresh_token, state_dir).
pub const AGENT_KEYS: &[&str] = &["check_in_interval", "resilience", "strategy"];

// ---- the validated scenario ----------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from, for messages and repro lines.
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub duration: Duration,
    pub seed: u64,
    pub tick: Option<Duration>,
    /// Whether `redflag-sim live` may run it.
    pub live: bool,
    pub fleet: Fleet,
    /// `[fleet] start_spread`: agents start spread over this (default: their check-in interval,
    /// at most 10 s).
    pub start_spread: Option<Duration>,
    /// The `[agent]` table as JSON, merged over the harness's base config for every agent.
    pub agent_overrides: Map<String, Value>,
    /// The agent config every agent runs with (agent 0's, as validated).
    pub agent_config: Config,
    /// `[agent] strategy`: the decision-maker every agent runs (default: the production policy).
    pub strategy: StrategyName,
    /// `[server]`: the server model's capacity (unlimited by default).
    pub server: ServerSettings,
    pub faults: Vec<Fault>,
    pub expect: Vec<Expectation>,
    /// `[server]`: how the server model delivers commands.
    pub delivery: DeliverySpec,
    /// `[[commands]]`: commands queued at given times.
    pub commands: Vec<CommandEntry>,
    /// `[workload]`: a steady stream of commands, and the simulated runner's execution time.
    pub workload: Workload,
    /// The scenario must fail (it shows a failure on purpose): `run` and `sweep` count it as
    /// passing only when some expectation fails.
    pub expect_failure: bool,
    /// The `[explore]` space of fault schedules, if the file has one (`redflag-sim explore`).
    pub explore: Option<explore::ExploreSpace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    pub agents: u32,
    pub hosts: u32,
}

impl Fleet {
    /// The agent host running agent `index` (agents are dealt round-robin).
    pub fn host_of(&self, index: u32) -> u32 {
        index % self.hosts
    }

    pub fn host_name(host: u32) -> String {
        format!("agents-{host}")
    }

    pub fn agent_name(index: u32) -> String {
        format!("agent-{index}")
    }
}

/// Which host or hosts a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Server,
    Proxy,
    /// Every agent host.
    Agents,
    /// One agent host, `agents-N`.
    AgentHost(u32),
}

impl Target {
    /// The turmoil host names this target covers.
    pub fn host_names(&self, fleet: &Fleet) -> Vec<String> {
        match self {
            Target::Server => vec!["server".into()],
            Target::Proxy => vec!["proxy".into()],
            Target::Agents => (0..fleet.hosts).map(Fleet::host_name).collect(),
            Target::AgentHost(h) => vec![Fleet::host_name(*h)],
        }
    }

    /// Whether agent host `host` is (part of) this target.
    pub fn covers_agent_host(&self, host: u32) -> bool {
        match self {
            Target::Agents => true,
            Target::AgentHost(h) => *h == host,
            _ => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Server => f.write_str("server"),
            Target::Proxy => f.write_str("proxy"),
            Target::Agents => f.write_str("agents"),
            Target::AgentHost(h) => write!(f, "agents-{h}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Both,
    /// target -> peer only.
    To,
    /// peer -> target only.
    From,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Crash,
    Restart,
    Partition { peer: Target, direction: Direction },
    Latency { peer: Target, delay: Duration },
    Loss { peer: Target, rate: f64 },
    HttpStatus { status: u16, retry_after_seconds: Option<u64> },
    Slow { delay: Duration },
    SetupMode,
    ExpireTokens,
    RevokeRefresh,
    /// One route alone misbehaves (`broken_route`, or `broken_health` for `/health`): it answers
    /// `status` instead of working, `delay` late (the work done first when there is no status),
    /// or, with neither, hangs; every other route works. It opens no fault window.
    BrokenRoute { route: ApiRoute, status: Option<u16>, delay: Option<Duration> },
}

/// A route of the agent API that a `broken_route` fault can break on its own. The check-in
/// route is not one of them: breaking it is an outage (`http_status`), not a broken side route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiRoute {
    /// `GET /health`.
    Health,
    /// `POST /api/v1/agents/{id}/logs`: command results.
    Logs,
    /// `POST /api/v1/agents/renew`.
    Renew,
    /// `POST /api/v1/agents/{id}/system-info`.
    SystemInfo,
}

impl ApiRoute {
    pub const ALL: [ApiRoute; 4] = [ApiRoute::Health, ApiRoute::Logs, ApiRoute::Renew, ApiRoute::SystemInfo];

    /// The word scenario files use: `health`, `logs`, `renew`, `system-info`.
    pub fn name(self) -> &'static str {
        match self {
            ApiRoute::Health => "health",
            ApiRoute::Logs => "logs",
            ApiRoute::Renew => "renew",
            ApiRoute::SystemInfo => "system-info",
        }
    }

    pub fn from_name(name: &str) -> Option<ApiRoute> {
        ApiRoute::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether a request path is this route.
    pub fn matches(self, path: &str) -> bool {
        use redflag_agent::server::protocol::{AGENTS_PREFIX, HEALTH_PATH, RENEW_PATH};
        let agent_route = |suffix: &str| {
            path.strip_prefix(AGENTS_PREFIX)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        };
        match self {
            ApiRoute::Health => path == HEALTH_PATH,
            ApiRoute::Renew => path == RENEW_PATH,
            ApiRoute::Logs => agent_route("/logs"),
            ApiRoute::SystemInfo => agent_route("/system-info"),
        }
    }
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Crash => "crash",
            Action::Restart => "restart",
            Action::Partition { .. } => "partition",
            Action::Latency { .. } => "latency",
            Action::Loss { .. } => "loss",
            Action::HttpStatus { .. } => "http_status",
            Action::Slow { .. } => "slow",
            Action::SetupMode => "setup_mode",
            Action::ExpireTokens => "expire_tokens",
            Action::RevokeRefresh => "revoke_refresh",
            Action::BrokenRoute { .. } => "broken_route",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Position in the file (0-based), used in traces and reports.
    pub index: usize,
    pub line: usize,
    pub at: Duration,
    pub duration: Option<Duration>,
    pub target: Target,
    pub action: Action,
}

impl Fault {
    /// When the fault's effect ends; `None` for a fault that lasts to the end of the run.
    /// Instant actions (`restart`, `expire_tokens`) end when they start unless given a duration.
    pub fn end(&self) -> Option<Duration> {
        match (&self.action, self.duration) {
            (_, Some(d)) => Some(self.at + d),
            (Action::Restart | Action::ExpireTokens, None) => Some(self.at),
            _ => None,
        }
    }

    /// One line for timelines: `crash server for 40s`.
    pub fn describe(&self) -> String {
        let detail = match &self.action {
            Action::Partition { peer, direction } => {
                let arrow = match direction {
                    Direction::Both => "<->",
                    Direction::To => "->",
                    Direction::From => "<-",
                };
                format!(" {arrow} {peer}")
            }
            Action::Latency { peer, delay } => format!(" <-> {peer} +{}", fmt_duration(*delay)),
            Action::Loss { peer, rate } => format!(" <-> {peer} {}%", (rate * 1000.0).round() / 10.0),
            Action::HttpStatus { status, retry_after_seconds: Some(s) } => format!(" {status} Retry-After {s}"),
            Action::HttpStatus { status, retry_after_seconds: None } => format!(" {status}"),
            Action::Slow { delay } => format!(" +{}", fmt_duration(*delay)),
            Action::BrokenRoute { route, status, delay } => {
                let late = delay.map(|d| format!(" after {}", fmt_duration(d))).unwrap_or_default();
                match status {
                    Some(s) => format!(" {} {s}{late}", route.name()),
                    None if delay.is_some() => format!(" {} slow{late}", route.name()),
                    None => format!(" {} hangs", route.name()),
                }
            }
            _ => String::new(),
        };
        let span = match self.duration {
            Some(d) => format!(" for {}", fmt_duration(d)),
            None => String::new(),
        };
        format!("{} {}{}{}", self.action.name(), self.target, detail, span)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAt {
    Server,
    Proxy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    RecoversWithin { within: Duration },
    NeverGivesUp { max_gap: Option<Duration> },
    MaxRequestRate { at: RateAt, limit_per_second: f64 },
    BreakerOpens,
    NoLostCommands { grace: Duration },
    NoDuplicateExecution,
    /// No request to a route before a Retry-After given on it elapsed (clamped).
    HonoursRetryAfter,
    /// No wait between two attempts longer than the agent's config allows.
    BoundedWaits,
    /// Every disturbed agent checks in within this after each fault window.
    FleetRecoversWithin { within: FleetBound },
    /// Server work per recovered agent, from a fault's end to the fleet's recovery.
    MaxAmplification { limit: f64 },
    /// Utilization falls below `below` within `within` of each fault's end, and stays there.
    LoadSettles { below: f64, within: Duration },
    /// At most this share of the server's work went to clients that had gone.
    MaxWastedShare { limit: f64 },
    /// The busiest second's offered work is at most `limit` × the server's full capacity,
    /// over the part of the run `during` names.
    MaxPeakLoad { limit: f64, during: PeakDuring },
}

/// The part of a run `max_peak_load` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakDuring {
    /// Before the first fault window: the fleet starting.
    Start,
    /// From the first fault window's start to the end: riding out faults and coming back.
    Recovery,
    /// The whole run.
    Run,
}

impl PeakDuring {
    pub fn as_str(self) -> &'static str {
        match self {
            PeakDuring::Start => "start",
            PeakDuring::Recovery => "recovery",
            PeakDuring::Run => "run",
        }
    }
}

/// The bound of `fleet_recovers_within`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FleetBound {
    Within(Duration),
    /// This many times the physical limit (the disturbed agents' work ÷ capacity).
    LimitFactor(f64),
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::RecoversWithin { .. } => "recovers_within",
            Check::NeverGivesUp { .. } => "never_gives_up",
            Check::MaxRequestRate { .. } => "max_request_rate",
            Check::BreakerOpens => "breaker_opens",
            Check::NoLostCommands { .. } => "no_lost_commands",
            Check::NoDuplicateExecution => "no_duplicate_execution",
            Check::HonoursRetryAfter => "honours_retry_after",
            Check::BoundedWaits => "bounded_waits",
            Check::FleetRecoversWithin { .. } => "fleet_recovers_within",
            Check::MaxAmplification { .. } => "max_amplification",
            Check::LoadSettles { .. } => "load_settles",
            Check::MaxWastedShare { .. } => "max_wasted_share",
            Check::MaxPeakLoad { .. } => "max_peak_load",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub line: usize,
    pub check: Check,
}

/// A scenario that could not be read. `Display`: `path:line: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// The order in which a scenario's faults begin and end, at the same instant: a fault that
/// began earlier ends before anything begins ("A ends, B begins"), and a fault with no
/// duration ends right after it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    EndEarlier,
    Apply,
    EndInstant,
}

impl Scenario {
    /// Every fault start and end, in the order the simulation and the live mode apply them:
    /// `(when, phase, fault index)`.
    pub fn schedule(&self) -> Vec<(Duration, Phase, usize)> {
        let mut events = Vec::new();
        for f in &self.faults {
            events.push((f.at, Phase::Apply, f.index));
            match f.end() {
                Some(end) if end == f.at => events.push((end, Phase::EndInstant, f.index)),
                Some(end) => events.push((end, Phase::EndEarlier, f.index)),
                None => {}
            }
        }
        events.sort();
        events
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    duration: Spanned<String>,
    seed: Option<Spanned<i64>>,
    tick: Option<Spanned<String>>,
    #[serde(default)]
    live: bool,
    fleet: Option<Spanned<RawFleet>>,
    agent: Option<Spanned<toml::Table>>,
    server: Option<Spanned<server::RawServer>>,
    #[serde(default)]
    faults: Vec<Spanned<RawFault>>,
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
    #[serde(default)]
    expect_failure: bool,
    #[serde(default)]
    commands: Vec<Spanned<RawCommand>>,
    workload: Option<Spanned<RawWorkload>>,
    explore: Option<Spanned<explore::RawExplore>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    agents: Option<Spanned<i64>>,
    hosts: Option<Spanned<i64>>,
    start_spread: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Spanned<String>,
    action: Spanned<String>,
    target: Spanned<String>,
    duration: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    status: Option<Spanned<i64>>,
    retry_after: Option<Spanned<i64>>,
    route: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    check: Spanned<String>,
    within: Option<Spanned<String>>,
    max_gap: Option<Spanned<String>>,
    at: Option<Spanned<String>>,
    limit: Option<Spanned<f64>>,
    grace: Option<Spanned<String>>,
    limit_factor: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    during: Option<Spanned<String>>,
}

// ---- reading -------------------------------------------------------------------------------

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError { path: path.to_path_buf(), line: None, message };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read scenario file: {e}")))?;
        if meta.len() > limits::SCENARIO_FILE_MAX_BYTES {
            return Err(err(format!("is {} bytes; a scenario file is at most {}", meta.len(), limits::SCENARIO_FILE_MAX_BYTES)));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read scenario file: {e}")))?;
        Scenario::parse(&text, path)
    }

    /// Validates scenario text; `path` is used in messages and repro lines.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let p = Parser { text, path };
        let raw: RawScenario = toml::from_str(text).map_err(|e| p.toml_error(&e))?;
        p.scenario(raw)
    }

    /// The full JSON config of agent `index` in a run with `seed`, as the agent would read it
    /// from its file.
    pub fn agent_config_json(&self, index: u32, seed: u64, server_url: &str, state_dir: &str) -> Value {
        agent_config_json(&self.agent_overrides, index, &initial_tokens(seed, index), server_url, state_dir)
    }

    /// Host names of every agent host.
    pub fn agent_hosts(&self) -> Vec<String> {
        (0..self.fleet.hosts).map(Fleet::host_name).collect()
    }

    /// `redflag-sim run FILE --seed N`, for reports and sweeps.
    pub fn repro(&self, seed: u64) -> String {
        format!("cargo run --release -p redflag-sim -- run {} --seed {seed}", self.path.display())
    }
}

/// Initial tokens are derived from the seed so that a run is reproducible, and differ per agent.
pub fn initial_tokens(seed: u64, index: u32) -> (String, String) {
    let mix = crate::seed::initial_tokens(seed, index);
    (format!("tok-{index}-{mix:016x}"), format!("ref-{index}-{:016x}", mix.rotate_left(29) ^ 0x5bd1_e995))
}

/// The harness's base config for agent `index`, with the scenario's overrides merged over it.
pub fn agent_config_json(
    overrides: &Map<String, Value>,
    index: u32,
    (token, refresh): &(String, String),
    server_url: &str,
    state_dir: &str,
) -> Value {
    let mut base = serde_json::json!({
        "server_url": server_url,
        "agent_id": Fleet::agent_name(index),
        "token": token,
        "refresh_token": refresh,
        "check_in_interval": DEFAULT_CHECK_IN_INTERVAL_SECONDS,
        "state_dir": state_dir,
        // The simulated network (`http://proxy`) and the live mode's (loopback, or a veth
        // address with --netns) are plain http by design; the agent refuses that off loopback
        // unless told.
        "allow_insecure_http": true,
    });
    merge(&mut base, &Value::Object(overrides.clone()));
    base
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

struct Parser<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Parser<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError { path: self.path.to_path_buf(), line: Some(self.line_of(span.start)), message: message.into() }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ScenarioError {
        let line = e.span().map(|s| self.line_of(s.start));
        let mut message = e.message().trim().to_string();
        // serde says "invalid type: string \"many\", expected i64"; say for which key.
        if let Some(key) = e.span().and_then(|s| self.key_at(s.start)).filter(|_| message.starts_with("invalid")) {
            message = format!("{key}: {message}");
        }
        // serde says "unknown variant"/"unknown field"; add which section when we can tell.
        if message.starts_with("unknown field") {
            message = format!("{message}. Check the spelling; see scenarios/README.md for the schema");
        }
        ScenarioError { path: self.path.to_path_buf(), line, message }
    }

    /// The dotted key (`fleet.agents`) whose value starts at byte `at`, when it is written
    /// `key = value` on its line under a `[table]` (or `[[table]]`) header or at the top.
    fn key_at(&self, at: usize) -> Option<String> {
        let text = self.text.get(..at)?;
        let line_start = text.rfind('\n').map_or(0, |i| i + 1);
        let key = text[line_start..].split_once('=')?.0.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
            return None;
        }
        let table = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
        Some(match table.map(|t| t.trim_matches(|c| c == '[' || c == ']').trim()) {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_string(),
        })
    }

    fn duration(&self, s: &Spanned<String>, what: &str) -> Result<Duration, ScenarioError> {
        let d = humantime::parse_duration(s.get_ref().trim()).map_err(|e| {
            self.at(s.span(), format!("{what} {:?} is not a duration ({e}); write it like \"45s\", \"10m\" or \"24h\"", s.get_ref()))
        })?;
        if d > limits::DURATION_MAX {
            return Err(self.at(s.span(), format!("{what} {:?} is longer than the limit of 30 days", s.get_ref())));
        }
        Ok(d)
    }

    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.at(raw.name.span(), "name must not be empty"));
        }
        let duration = self.duration(&raw.duration, "duration")?;
        if duration.is_zero() {
            return Err(self.at(raw.duration.span(), "duration must be longer than zero"));
        }
        let seed = match &raw.seed {
            None => DEFAULT_SEED,
            Some(s) => u64::try_from(*s.get_ref()).map_err(|_| self.at(s.span(), format!("seed must be >= 0, got {}", s.get_ref())))?,
        };
        let tick = match &raw.tick {
            None => None,
            Some(t) => {
                let d = self.duration(t, "tick")?;
                if d < limits::TICK_MIN || d > limits::TICK_MAX {
                    return Err(self.at(t.span(), format!("tick must be between 1ms and 1s, got {:?}", t.get_ref())));
                }
                Some(d)
            }
        };
        let fleet = self.fleet(raw.fleet.as_ref())?;
        let start_spread = match raw.fleet.as_ref().and_then(|f| f.get_ref().start_spread.as_ref()) {
            None => None,
            Some(s) => {
                let d = self.duration(s, "[fleet] start_spread")?;
                if d >= duration {
                    return Err(self.at(s.span(), format!("[fleet] start_spread {:?} must be shorter than the run ({})", s.get_ref(), fmt_duration(duration))));
                }
                Some(d)
            }
        };
        let (agent_overrides, agent_config, strategy) = self.agent(raw.agent.as_ref())?;
        let server = self.server(raw.server.as_ref(), duration)?;

        if raw.faults.len() > limits::FAULTS_MAX {
            return Err(self.at(raw.faults[limits::FAULTS_MAX].span(), format!("more than {} faults", limits::FAULTS_MAX)));
        }
        let faults = raw
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| self.fault(i, f, &fleet, duration))
            .collect::<Result<Vec<_>, _>>()?;

        if raw.expect.len() > limits::EXPECT_MAX {
            return Err(self.at(raw.expect[limits::EXPECT_MAX].span(), format!("more than {} expectations", limits::EXPECT_MAX)));
        }
        let expect = raw.expect.iter().map(|e| self.expect(e)).collect::<Result<Vec<_>, _>>()?;
        let settle = explore::settle_time(&agent_config, &expect);
        let explore = raw.explore.as_ref().map(|e| self.explore(e, &fleet, duration, settle)).transpose()?;

        let delivery = self.delivery(raw.server.as_ref())?;
        if raw.commands.len() > commands::limits::COMMAND_ENTRIES_MAX {
            let span = raw.commands[commands::limits::COMMAND_ENTRIES_MAX].span();
            return Err(self.at(span, format!("more than {} [[commands]] entries", commands::limits::COMMAND_ENTRIES_MAX)));
        }
        let command_entries = raw
            .commands
            .iter()
            .map(|c| self.command_entry(c, fleet.agents, duration))
            .collect::<Result<Vec<_>, _>>()?;
        let workload = self.workload(raw.workload.as_ref())?;
        let count_span = raw.workload.as_ref().map(|w| w.span()).or_else(|| raw.commands.first().map(|c| c.span())).unwrap_or(0..0);
        self.check_command_count(count_span, &command_entries, &workload, fleet.agents, duration)?;

        for (e, raw_e) in expect.iter().zip(&raw.expect) {
            self.needs_capacity(e, raw_e, &server)?;
        }

        Ok(Scenario {
            path: self.path.to_path_buf(),
            name,
            description: raw.description.trim().to_string(),
            duration,
            seed,
            tick,
            live: raw.live,
            fleet,
            start_spread,
            agent_overrides,
            agent_config,
            strategy,
            server,
            faults,
            expect,
            delivery,
            commands: command_entries,
            workload,
            expect_failure: raw.expect_failure,
            explore,
        })
    }

    fn fleet(&self, raw: Option<&Spanned<RawFleet>>) -> Result<Fleet, ScenarioError> {
        let Some(raw) = raw else { return Ok(Fleet { agents: 1, hosts: 1 }) };
        let f = raw.get_ref();
        let count = |v: &Option<Spanned<i64>>, what: &str, max: u64| -> Result<u32, ScenarioError> {
            match v {
                None => Ok(1),
                Some(n) => match u64::try_from(*n.get_ref()) {
                    Ok(x) if (1..=max).contains(&x) => Ok(x as u32),
                    _ => Err(self.at(n.span(), format!("fleet.{what} must be between 1 and {max}, got {}", n.get_ref()))),
                },
            }
        };
        let agents = count(&f.agents, "agents", limits::AGENTS_MAX)?;
        let hosts = count(&f.hosts, "hosts", limits::HOSTS_MAX)?;
        if hosts > agents {
            let span = f.hosts.as_ref().map_or(raw.span(), |h| h.span());
            return Err(self.at(span, format!("fleet.hosts ({hosts}) must not exceed fleet.agents ({agents}): every agent host runs at least one agent")));
        }
        Ok(Fleet { agents, hosts })
    }

    fn agent(&self, raw: Option<&Spanned<toml::Table>>) -> Result<(Map<String, Value>, Config, StrategyName), ScenarioError> {
        let (mut table, span) = match raw {
            Some(t) => (t.get_ref().clone(), t.span()),
            None => (toml::Table::new(), 0..0),
        };
        // `strategy` picks the decision-maker; it is not a key of the agent's config file.
        let strategy = match table.remove("strategy") {
            None => StrategyName::Default,
            Some(v) => {
                let line_span = self.key_in_table("agent", "strategy").unwrap_or(span.clone());
                match v.as_str().and_then(StrategyName::parse) {
                    Some(name) => name,
                    None => {
                        return Err(self.at(line_span, format!("unknown [agent] strategy {v}; expected one of: {}", StrategyName::list())));
                    }
                }
            }
        };
        for key in table.keys() {
            if !AGENT_KEYS.contains(&key.as_str()) {
                let line_span = self.key_in_table("agent", key).unwrap_or(span.clone());
                let owned = ["server_url", "agent_id", "token", "refresh_token", "state_dir"];
                let message = if owned.contains(&key.as_str()) {
                    format!("[agent] key {key:?} is set by the harness and cannot be overridden")
                } else {
                    format!("unknown [agent] key {key:?}; expected one of: {}", AGENT_KEYS.join(", "))
                };
                return Err(self.at(line_span, message));
            }
        }
        let overrides = match toml_to_json(&toml::Value::Table(table)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let json = agent_config_json(&overrides, 0, &initial_tokens(0, 0), "http://proxy", "/var/lib/redflag-agent");
        let config = Config::from_value(json, "[agent]").map_err(|e| {
            let line_span = e.field().and_then(|field| self.agent_field_span(field));
            let message = e.to_string();
            self.at(line_span.unwrap_or(span.clone()), message)
        })?;
        Ok((overrides, config, strategy))
    }

    /// Where `key = ...` is written directly under the header `[table]` (dotted, like
    /// `agent.resilience`), if anywhere. Used to put a line number on errors found after
    /// parsing, such as the agent config's validation.
    fn key_in_table(&self, table: &str, key: &str) -> Option<Range<usize>> {
        let mut current = String::new();
        let mut offset = 0;
        for line in self.text.split_inclusive('\n') {
            let code = line.split('#').next().unwrap_or("").trim();
            if code.starts_with('[') {
                current = code.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            } else if current == table {
                if let Some(rest) = code.strip_prefix(key) {
                    if rest.trim_start().starts_with('=') {
                        return Some(offset..offset + line.len());
                    }
                }
            }
            offset += line.len();
        }
        None
    }

    /// The line of an agent config field (`check_in_interval`, `resilience.backoff_factor`).
    fn agent_field_span(&self, field: &str) -> Option<Range<usize>> {
        match field.split_once('.') {
            None => self.key_in_table("agent", field),
            Some((table, key)) => self
                .key_in_table(&format!("agent.{table}"), key)
                .or_else(|| self.key_in_table("agent", table)),
        }
    }

    fn target(&self, s: &Spanned<String>, fleet: &Fleet, what: &str) -> Result<Target, ScenarioError> {
        let v = s.get_ref().trim();
        let target = match v {
            "server" => Target::Server,
            "proxy" => Target::Proxy,
            "agents" => Target::Agents,
            other => match other.strip_prefix("agents-").and_then(|n| n.parse::<u32>().ok()) {
                Some(h) if h < fleet.hosts => Target::AgentHost(h),
                Some(_) => {
                    return Err(self.at(
                        s.span(),
                        format!("{what} {other:?} does not exist: the fleet has agents-0 .. agents-{} ({} hosts)", fleet.hosts - 1, fleet.hosts),
                    ));
                }
                None => {
                    return Err(self.at(
                        s.span(),
                        format!("unknown {what} {other:?}; expected \"server\", \"proxy\", \"agents\" or an agent host \"agents-N\""),
                    ));
                }
            },
        };
        Ok(target)
    }

    fn fault(&self, index: usize, raw: &Spanned<RawFault>, fleet: &Fleet, run: Duration) -> Result<Fault, ScenarioError> {
        let f = raw.get_ref();
        let line = self.line_of(raw.span().start);
        let at = self.duration(&f.at, "at")?;
        if at >= run {
            return Err(self.at(f.at.span(), format!("fault at {:?} is not before the end of the run ({})", f.at.get_ref(), fmt_duration(run))));
        }
        let duration = match &f.duration {
            None => None,
            Some(d) => {
                let d2 = self.duration(d, "duration")?;
                if d2.is_zero() {
                    return Err(self.at(d.span(), "a fault's duration must be longer than zero; leave it out for a permanent fault"));
                }
                Some(d2)
            }
        };
        let target = self.target(&f.target, fleet, "target")?;
        let action_name = f.action.get_ref().trim();
        if !ACTIONS.contains(&action_name) {
            return Err(self.at(f.action.span(), format!("unknown action {action_name:?}; expected one of: {}", ACTIONS.join(", "))));
        }

        // Which extra keys each action takes; anything else is an error naming the key.
        let allowed: &[&str] = match action_name {
            "partition" => &["peer", "direction"],
            "latency" => &["peer", "delay"],
            "loss" => &["peer", "rate"],
            "http_status" => &["status", "retry_after"],
            "slow" => &["delay"],
            "broken_health" => &["status"],
            "broken_route" => &["route", "status", "delay"],
            _ => &[],
        };
        let present: [(&str, Option<Range<usize>>); 7] = [
            ("peer", f.peer.as_ref().map(|v| v.span())),
            ("direction", f.direction.as_ref().map(|v| v.span())),
            ("delay", f.delay.as_ref().map(|v| v.span())),
            ("rate", f.rate.as_ref().map(|v| v.span())),
            ("status", f.status.as_ref().map(|v| v.span())),
            ("retry_after", f.retry_after.as_ref().map(|v| v.span())),
            ("route", f.route.as_ref().map(|v| v.span())),
        ];
        for (key, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&key) {
                    let takes = if allowed.is_empty() { "no extra keys".to_string() } else { allowed.join(", ") };
                    return Err(self.at(span, format!("key {key:?} does not apply to action {action_name:?} (it takes {takes})")));
                }
            }
        }
        if action_name == "restart" && duration.is_some() {
            let span = f.duration.as_ref().map(|d| d.span()).unwrap_or(raw.span());
            return Err(self.at(span, "action \"restart\" is an instant crash and restart and takes no duration; use \"crash\" with a duration for a longer outage"));
        }

        let peer = || -> Result<Target, ScenarioError> {
            let peer = match &f.peer {
                None => Target::Proxy,
                Some(p) => self.target(p, fleet, "peer")?,
            };
            let overlap = peer == target
                || (peer == Target::Agents && matches!(target, Target::AgentHost(_)))
                || (target == Target::Agents && matches!(peer, Target::AgentHost(_)));
            if overlap {
                let span = f.peer.as_ref().map_or(f.target.span(), |p| p.span());
                return Err(self.at(span, format!("peer {peer} is the target itself; a network fault needs two different sides (peer defaults to \"proxy\")")));
            }
            Ok(peer)
        };
        let required_delay = || -> Result<Duration, ScenarioError> {
            match &f.delay {
                None => Err(self.at(f.action.span(), format!("action {action_name:?} needs a delay, like delay = \"3s\""))),
                Some(d) => self.duration(d, "delay"),
            }
        };
        let server_only = |name: &str| -> Result<(), ScenarioError> {
            if target != Target::Server {
                return Err(self.at(f.target.span(), format!("action {name:?} changes the server; its target must be \"server\", got {:?}", f.target.get_ref())));
            }
            Ok(())
        };

        let action = match action_name {
            "crash" => Action::Crash,
            "restart" => Action::Restart,
            "partition" => {
                let direction = match f.direction.as_ref().map(|d| (d.get_ref().trim(), d.span())) {
                    None | Some(("both", _)) => Direction::Both,
                    Some(("to", _)) => Direction::To,
                    Some(("from", _)) => Direction::From,
                    Some((other, span)) => {
                        return Err(self.at(span, format!("unknown direction {other:?}; expected \"both\", \"to\" or \"from\"")));
                    }
                };
                Action::Partition { peer: peer()?, direction }
            }
            "latency" => Action::Latency { peer: peer()?, delay: required_delay()? },
            "loss" => {
                let rate = f.rate.as_ref().ok_or_else(|| self.at(f.action.span(), "action \"loss\" needs a rate between 0 and 1, like rate = 0.3"))?;
                let r = *rate.get_ref();
                if !(r > 0.0 && r <= 1.0) {
                    return Err(self.at(rate.span(), format!("rate must be above 0 and at most 1, got {r}")));
                }
                Action::Loss { peer: peer()?, rate: r }
            }
            "http_status" => {
                if !matches!(target, Target::Proxy | Target::Server) {
                    return Err(self.at(f.target.span(), "action \"http_status\" is answered by the proxy; its target must be \"proxy\" (or \"server\")"));
                }
                let status = f.status.as_ref().ok_or_else(|| self.at(f.action.span(), "action \"http_status\" needs a status, like status = 502"))?;
                let s = *status.get_ref();
                if !(100..=599).contains(&s) {
                    return Err(self.at(status.span(), format!("status must be an HTTP status between 100 and 599, got {s}")));
                }
                let retry_after_seconds = match &f.retry_after {
                    None => None,
                    Some(r) if (0..=limits::RETRY_AFTER_MAX_SECONDS).contains(r.get_ref()) => Some(*r.get_ref() as u64),
                    Some(r) => {
                        return Err(self.at(r.span(), format!("retry_after must be between 0 and {} seconds, got {}", limits::RETRY_AFTER_MAX_SECONDS, r.get_ref())));
                    }
                };
                Action::HttpStatus { status: s as u16, retry_after_seconds }
            }
            "slow" => {
                server_only("slow")?;
                Action::Slow { delay: required_delay()? }
            }
            "setup_mode" => {
                server_only("setup_mode")?;
                Action::SetupMode
            }
            "expire_tokens" => {
                server_only("expire_tokens")?;
                Action::ExpireTokens
            }
            "revoke_refresh" => {
                server_only("revoke_refresh")?;
                Action::RevokeRefresh
            }
            "broken_health" | "broken_route" => {
                server_only(action_name)?;
                let status = match &f.status {
                    None => None,
                    Some(s) if (100..=599).contains(s.get_ref()) => Some(*s.get_ref() as u16),
                    Some(s) => return Err(self.at(s.span(), format!("status must be an HTTP status between 100 and 599, got {}", s.get_ref()))),
                };
                let route = match (&f.route, action_name) {
                    (_, "broken_health") => ApiRoute::Health,
                    (None, _) => {
                        let routes: Vec<String> = ApiRoute::ALL.iter().map(|r| format!("{:?}", r.name())).collect();
                        return Err(self.at(f.action.span(), format!("action \"broken_route\" needs a route: one of {}", routes.join(", "))));
                    }
                    (Some(r), _) => ApiRoute::from_name(r.get_ref().trim()).ok_or_else(|| {
                        let routes: Vec<String> = ApiRoute::ALL.iter().map(|r| format!("{:?}", r.name())).collect();
                        self.at(r.span(), format!("unknown route {:?}; expected one of {} (the check-in route breaks with http_status)", r.get_ref(), routes.join(", ")))
                    })?,
                };
                let delay = match &f.delay {
                    None => None,
                    Some(d) => Some(self.duration(d, "delay")?),
                };
                Action::BrokenRoute { route, status, delay }
            }
            _ => unreachable!("checked against ACTIONS above"),
        };
        Ok(Fault { index, line, at, duration, target, action })
    }

    fn expect(&self, raw: &Spanned<RawExpect>) -> Result<Expectation, ScenarioError> {
        let e = raw.get_ref();
        let line = self.line_of(raw.span().start);
        let name = e.check.get_ref().trim();
        if !CHECKS.contains(&name) {
            return Err(self.at(e.check.span(), format!("unknown check {name:?}; expected one of: {}", CHECKS.join(", "))));
        }
        let allowed: &[&str] = match name {
            "recovers_within" => &["within"],
            "never_gives_up" => &["max_gap"],
            "max_request_rate" => &["at", "limit"],
            "no_lost_commands" => &["grace"],
            "fleet_recovers_within" => &["within", "limit_factor"],
            "max_amplification" | "max_wasted_share" => &["limit"],
            "load_settles" => &["below", "within"],
            "max_peak_load" => &["limit", "during"],
            _ => &[],
        };
        let present = [
            ("grace", e.grace.as_ref().map(|v| v.span())),
            ("within", e.within.as_ref().map(|v| v.span())),
            ("max_gap", e.max_gap.as_ref().map(|v| v.span())),
            ("at", e.at.as_ref().map(|v| v.span())),
            ("limit", e.limit.as_ref().map(|v| v.span())),
            ("limit_factor", e.limit_factor.as_ref().map(|v| v.span())),
            ("below", e.below.as_ref().map(|v| v.span())),
            ("during", e.during.as_ref().map(|v| v.span())),
        ];
        for (key, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&key) {
                    let takes = if allowed.is_empty() { "no extra keys".to_string() } else { allowed.join(", ") };
                    return Err(self.at(span, format!("key {key:?} does not apply to check {name:?} (it takes {takes})")));
                }
            }
        }
        let check = match name {
            "recovers_within" => {
                let w = e.within.as_ref().ok_or_else(|| self.at(e.check.span(), "check \"recovers_within\" needs within, like within = \"30s\""))?;
                Check::RecoversWithin { within: self.duration(w, "within")? }
            }
            "never_gives_up" => Check::NeverGivesUp { max_gap: e.max_gap.as_ref().map(|g| self.duration(g, "max_gap")).transpose()? },
            "max_request_rate" => {
                let at = match e.at.as_ref().map(|a| (a.get_ref().trim(), a.span())) {
                    Some(("server", _)) => RateAt::Server,
                    Some(("proxy", _)) => RateAt::Proxy,
                    Some((other, span)) => return Err(self.at(span, format!("unknown at {other:?}; expected \"server\" or \"proxy\""))),
                    None => return Err(self.at(e.check.span(), "check \"max_request_rate\" needs at = \"server\" or \"proxy\"")),
                };
                let limit = e.limit.as_ref().ok_or_else(|| self.at(e.check.span(), "check \"max_request_rate\" needs a limit (requests per second)"))?;
                let l = *limit.get_ref();
                if !(l.is_finite() && l > 0.0) {
                    return Err(self.at(limit.span(), format!("limit must be a positive number of requests per second, got {l}")));
                }
                Check::MaxRequestRate { at, limit_per_second: l }
            }
            "breaker_opens" => Check::BreakerOpens,
            "no_lost_commands" => {
                let grace = match &e.grace {
                    None => DEFAULT_GRACE,
                    Some(g) => {
                        let d = self.duration(g, "grace")?;
                        if d > commands::limits::GRACE_MAX {
                            return Err(self.at(g.span(), format!("grace must be at most 24h, got {:?}", g.get_ref())));
                        }
                        d
                    }
                };
                Check::NoLostCommands { grace }
            }
            "no_duplicate_execution" => Check::NoDuplicateExecution,
            "honours_retry_after" => Check::HonoursRetryAfter,
            "bounded_waits" => Check::BoundedWaits,
            "fleet_recovers_within" => {
                let within = match (&e.within, &e.limit_factor) {
                    (Some(w), None) => FleetBound::Within(self.duration(w, "within")?),
                    (None, Some(f)) => {
                        let x = *f.get_ref();
                        if !(x.is_finite() && (1.0..=1000.0).contains(&x)) {
                            return Err(self.at(f.span(), format!("limit_factor must be at least 1 (the physical limit itself) and at most 1000, got {x}")));
                        }
                        FleetBound::LimitFactor(x)
                    }
                    (Some(_), Some(f)) => return Err(self.at(f.span(), "check \"fleet_recovers_within\" takes within or limit_factor, not both")),
                    (None, None) => {
                        return Err(self.at(e.check.span(), "check \"fleet_recovers_within\" needs within = \"30s\" or limit_factor = 1.5"));
                    }
                };
                Check::FleetRecoversWithin { within }
            }
            "max_amplification" => {
                let l = self.positive(e.limit.as_ref(), e, "max_amplification", "server work units per recovered agent, like limit = 2")?;
                Check::MaxAmplification { limit: l }
            }
            "max_wasted_share" => {
                let l = self.positive(e.limit.as_ref(), e, "max_wasted_share", "a share between 0 and 1, like limit = 0.1")?;
                if l > 1.0 {
                    return Err(self.at(e.limit.as_ref().map_or(e.check.span(), |l| l.span()), format!("limit of max_wasted_share is a share of the work, between 0 and 1, got {l}")));
                }
                Check::MaxWastedShare { limit: l }
            }
            "load_settles" => {
                let below = self.positive(e.below.as_ref(), e, "load_settles", "a utilization between 0 and 1, like below = 0.8")?;
                if below > 1.0 {
                    return Err(self.at(e.below.as_ref().map_or(e.check.span(), |b| b.span()), format!("below is a utilization between 0 and 1, got {below}")));
                }
                let w = e.within.as_ref().ok_or_else(|| self.at(e.check.span(), "check \"load_settles\" needs within, like within = \"2m\""))?;
                Check::LoadSettles { below, within: self.duration(w, "within")? }
            }
            "max_peak_load" => {
                let limit = self.positive(e.limit.as_ref(), e, "max_peak_load", "a multiple of the server's capacity, like limit = 2")?;
                let during = match e.during.as_ref().map(|d| (d, d.get_ref().trim())) {
                    None => PeakDuring::Run,
                    Some((_, "start")) => PeakDuring::Start,
                    Some((_, "recovery")) => PeakDuring::Recovery,
                    Some((_, "run")) => PeakDuring::Run,
                    Some((d, other)) => {
                        return Err(self.at(d.span(), format!("during of max_peak_load must be \"start\", \"recovery\" or \"run\", got {other:?}")));
                    }
                };
                Check::MaxPeakLoad { limit, during }
            }
            _ => unreachable!("checked against CHECKS above"),
        };
        Ok(Expectation { line, check })
    }

    /// A required positive number key of a check.
    fn positive(&self, v: Option<&Spanned<f64>>, e: &RawExpect, check: &str, like: &str) -> Result<f64, ScenarioError> {
        let v = v.ok_or_else(|| self.at(e.check.span(), format!("check {check:?} needs {like}")))?;
        let x = *v.get_ref();
        if !(x.is_finite() && x > 0.0) {
            return Err(self.at(v.span(), format!("check {check:?} needs {like}; got {x}")));
        }
        Ok(x)
    }

    /// Checks judged against the server's capacity need one.
    fn needs_capacity(&self, e: &Expectation, raw: &Spanned<RawExpect>, server: &ServerSettings) -> Result<(), ScenarioError> {
        if server.capacity.is_some() {
            return Ok(());
        }
        let what = match &e.check {
            Check::FleetRecoversWithin { within: FleetBound::LimitFactor(_) } => "fleet_recovers_within with limit_factor",
            Check::LoadSettles { .. } => "load_settles",
            Check::MaxWastedShare { .. } => "max_wasted_share",
            Check::MaxPeakLoad { .. } => "max_peak_load",
            _ => return Ok(()),
        };
        let span = raw.get_ref().check.span();
        Err(self.at(span, format!("check {what} is judged against the server's capacity; give the scenario a [server] capacity_per_second")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "server-restart"
description = "the server is rebuilt"
duration = "20m"
seed = 7

[fleet]
agents = 4
hosts = 2

[agent]
check_in_interval = 30
[agent.resilience]
initial_delay_seconds = 1
max_delay_minutes = 0.25

[[faults]]
at = "5m"
action = "crash"
target = "server"
duration = "40s"

[[faults]]
at = "10m"
action = "partition"
target = "agents-1"
direction = "to"
duration = "1m"

[[expect]]
check = "recovers_within"
within = "30s"

[[expect]]
check = "max_request_rate"
at = "server"
limit = 50
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("t.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_a_full_scenario() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "server-restart");
        assert_eq!(s.duration, Duration::from_secs(1200));
        assert_eq!(s.seed, 7);
        assert_eq!(s.fleet, Fleet { agents: 4, hosts: 2 });
        assert_eq!(s.agent_config.check_in_interval, Duration::from_secs(30));
        assert_eq!(s.agent_config.resilience.max_delay, Duration::from_secs(15));
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.faults[0].line, 17);
        assert_eq!(s.faults[0].end(), Some(Duration::from_secs(340)));
        assert_eq!(s.faults[1].action, Action::Partition { peer: Target::Proxy, direction: Direction::To });
        assert_eq!(s.faults[1].target, Target::AgentHost(1));
        assert_eq!(s.expect[1].check, Check::MaxRequestRate { at: RateAt::Server, limit_per_second: 50.0 });
    }

    #[test]
    fn misspelt_action_names_the_word_and_line() {
        let e = error(&GOOD.replace("action = \"crash\"", "action = \"crsh\""));
        assert!(e.starts_with("t.toml:19:") && e.contains("\"crsh\""), "{e}");
    }

    #[test]
    fn unknown_keys_name_the_word_and_line() {
        let e = error(&GOOD.replace("duration = \"40s\"", "duraton = \"40s\""));
        assert!(e.starts_with("t.toml:21:") && e.contains("duraton"), "{e}");
        let e = error(&GOOD.replace("seed = 7", "sed = 7"));
        assert!(e.starts_with("t.toml:5:") && e.contains("sed"), "{e}");
        let e = error(&GOOD.replace("initial_delay_seconds = 1", "initial_delay_secs = 1"));
        assert!(e.contains("initial_delay_secs") && e.starts_with("t.toml:14:"), "{e}");
        let e = error(&GOOD.replace("check_in_interval = 30", "check_interval = 30"));
        assert!(e.contains("check_interval") && e.starts_with("t.toml:12:"), "{e}");
        let e = error(&GOOD.replace("check = \"recovers_within\"", "check = \"recovers\""));
        assert!(e.contains("\"recovers\"") && e.starts_with("t.toml:31:"), "{e}");
    }

    #[test]
    fn one_server_table_holds_capacity_and_delivery() {
        let both = format!("{GOOD}\n[server]\ncapacity_per_second = 50\ndelivery = \"redflag-0.1.18\"\n");
        let s = parse(&both).unwrap();
        assert_eq!(s.server.capacity.map(|c| c.per_second), Some(50.0));
        assert_eq!(s.delivery.mode, DeliveryMode::RedFlag0118);
        // Either set alone.
        let s = parse(&format!("{GOOD}\n[server]\nredeliver_after = \"10s\"\n")).unwrap();
        assert!(s.server.capacity.is_none());
        assert_eq!(s.delivery.redeliver_after, Duration::from_secs(10));
        // A misspelt key names itself and its line, whichever set it was meant for.
        let e = error(&format!("{GOOD}\n[server]\ncapacity_per_sec = 50\n"));
        assert!(e.contains("capacity_per_sec") && e.starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let e = error(&GOOD.replace("max_delay_minutes = 0.25", "max_delay_minutes = 0.25\nbackoff_factor = 0.5"));
        assert!(e.contains("resilience.backoff_factor must be >= 1") && e.starts_with("t.toml:16:"), "{e}");
        let e = error(&GOOD.replace("at = \"5m\"", "at = \"5 minutes-ish\""));
        assert!(e.starts_with("t.toml:18:") && e.contains("not a duration"), "{e}");
        let e = error(&GOOD.replace("target = \"agents-1\"", "target = \"agents-2\""));
        assert!(e.contains("agents-2") && e.contains("does not exist"), "{e}");
        let e = error(&GOOD.replace("direction = \"to\"", "delay = \"1s\""));
        assert!(e.contains("\"delay\" does not apply to action \"partition\""), "{e}");
        let e = error(&GOOD.replace("at = \"10m\"", "at = \"30m\""));
        assert!(e.contains("not before the end"), "{e}");
    }

    #[test]
    fn fleet_counts_are_bounded_and_a_bad_one_names_its_key_and_line() {
        let s = parse(&GOOD.replace("agents = 4", "agents = 1000000")).unwrap();
        assert_eq!(s.fleet.agents, 1_000_000);
        for bad in ["1000001", "0", "-3"] {
            let e = error(&GOOD.replace("agents = 4", &format!("agents = {bad}")));
            assert!(e.starts_with("t.toml:8:") && e.contains("fleet.agents must be between 1 and 1000000") && e.contains(bad), "{e}");
        }
        let e = error(&GOOD.replace("agents = 4", "agents = \"many\""));
        assert!(e.starts_with("t.toml:8: fleet.agents: invalid type") && e.contains("many"), "{e}");
    }

    #[test]
    fn a_broken_route_names_its_route() {
        let fault = |keys: &str| format!("{GOOD}\n[[faults]]\nat = \"1m\"\naction = \"broken_route\"\ntarget = \"server\"\n{keys}");
        let s = parse(&fault("route = \"logs\"\nstatus = 500\n")).unwrap();
        let f = s.faults.last().unwrap();
        assert_eq!(f.action, Action::BrokenRoute { route: ApiRoute::Logs, status: Some(500), delay: None });
        assert_eq!(f.describe(), "broken_route server logs 500");
        let s = parse(&fault("route = \"system-info\"\n")).unwrap();
        assert_eq!(s.faults.last().unwrap().action, Action::BrokenRoute { route: ApiRoute::SystemInfo, status: None, delay: None });
        let s = parse(&fault("route = \"logs\"\ndelay = \"3s\"\n")).unwrap();
        let slow = Action::BrokenRoute { route: ApiRoute::Logs, status: None, delay: Some(Duration::from_secs(3)) };
        assert_eq!((&s.faults.last().unwrap().action, s.faults.last().unwrap().describe().as_str()), (&slow, "broken_route server logs slow after 3s"));
        let e = error(&fault(""));
        assert!(e.contains("needs a route") && e.contains("\"logs\""), "{e}");
        let e = error(&fault("route = \"commands\"\n"));
        assert!(e.contains("unknown route \"commands\"") && e.contains("http_status"), "{e}");
        let e = error(&fault("route = \"logs\"\nstatus = 700\n"));
        assert!(e.contains("between 100 and 599"), "{e}");
        let e = error(&fault("route = \"logs\"\n").replace("target = \"server\"\nroute", "target = \"proxy\"\nroute"));
        assert!(e.contains("its target must be \"server\""), "{e}");
        // broken_health is broken_route for /health, and takes no route.
        let s = parse(&fault("").replace("broken_route", "broken_health")).unwrap();
        assert_eq!(s.faults.last().unwrap().action, Action::BrokenRoute { route: ApiRoute::Health, status: None, delay: None });
        let e = error(&fault("route = \"logs\"\n").replace("broken_route", "broken_health"));
        assert!(e.contains("\"route\" does not apply to action \"broken_health\""), "{e}");
        for route in ApiRoute::ALL {
            assert_eq!(ApiRoute::from_name(route.name()), Some(route));
        }
        assert!(ApiRoute::Logs.matches("/api/v1/agents/a-1/logs") && !ApiRoute::Logs.matches("/api/v1/agents/a-1/commands"));
        assert!(ApiRoute::SystemInfo.matches("/api/v1/agents/a-1/system-info") && ApiRoute::Renew.matches("/api/v1/agents/renew"));
        assert!(!ApiRoute::Logs.matches("/api/v1/agents//logs") && ApiRoute::Health.matches("/health"));
    }

    #[test]
    fn agent_configs_merge_overrides() {
        let s = parse(GOOD).unwrap();
        let v = s.agent_config_json(3, 9, "http://proxy", "/x");
        assert_eq!(v["token"], initial_tokens(9, 3).0);
        assert_eq!(v["agent_id"], "agent-3");
        assert_eq!(v["check_in_interval"], 30);
        assert_eq!(v["resilience"]["initial_delay_seconds"], 1);
        assert_eq!(v["resilience"]["max_delay_minutes"], 0.25);
    }
}
