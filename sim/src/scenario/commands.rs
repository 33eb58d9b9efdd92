//! The command keys of a scenario: `[server]` (`delivery`, `redeliver_after`,
//! `commands_per_answer`), `[[commands]]`
//! (commands queued at given times) and `[workload]` (a steady stream, and how long the
//! simulated runner takes per command), validated with the file's line numbers; and the
//! expansion of both into the run's list of queued commands ([`Scenario::command_schedule`]),
//! which the simulation and the live mode queue identically.
//!
//! Reading only: queueing is `world/` (simulation) and `live/orchestrator.rs`; delivering is the
//! server model (`models/server/db.rs`); judging is `judge/no_lost_commands.rs` and
//! `judge/no_duplicate_execution.rs`.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::{Parser, Scenario, ScenarioError, fmt_duration, toml_to_json};

/// Limits of the command keys.
pub mod limits {
    use std::time::Duration;
    /// `[[commands]]` entries in one file.
    pub const COMMAND_ENTRIES_MAX: usize = 1_000;
    /// `count` of one `[[commands]]` entry, at most (per agent).
    pub const COUNT_MAX: u32 = 100_000;
    /// Commands queued in one run, all sources together (checked on the expected count).
    pub const COMMANDS_MAX: u64 = 200_000;
    pub const COMMANDS_PER_AGENT_PER_HOUR_MAX: f64 = 3_600.0;
    pub const EXECUTION_TIME_MAX: Duration = Duration::from_secs(3600);
    pub const REDELIVER_AFTER_MIN: Duration = Duration::from_secs(1);
    pub const REDELIVER_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);
    pub const COMMAND_TYPE_MAX_LEN: usize = 64;
    /// `commands_per_answer`, at most: a queue of this many sent in one answer is about 1 MiB
    /// per 6,000 (UUID ids, short params), so this is well past the agent's read limit.
    pub const COMMANDS_PER_ANSWER_MAX: usize = 100_000;
    pub const GRACE_MAX: Duration = Duration::from_secs(24 * 3600);
}
pub use limits::COMMANDS_PER_ANSWER_MAX;

/// How long the simulated runner takes per command when `[workload]` does not say.
pub const DEFAULT_EXECUTION_TIME: Duration = Duration::from_secs(2);
/// `commands_per_answer` when `[server]` does not say. (RedFlag 0.1.18's `GetCommands` sends at
/// most 10; the model's default is higher so that ordinary scenarios are not about paging.)
pub const DEFAULT_COMMANDS_PER_ANSWER: usize = 256;
/// `redeliver_after` when `[server]` does not say.
pub const DEFAULT_REDELIVER_AFTER: Duration = Duration::from_secs(30);
/// `[workload] type` when not given.
pub const DEFAULT_WORKLOAD_TYPE: &str = "scan_updates";
/// `no_lost_commands`' `grace` when not given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// How the server model hands out commands (`[server] delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// RedFlag 0.1.18: a command is marked `sent` as the check-in answer is built and never
    /// sent again (a background job times it out after 2 h).
    RedFlag0118,
    /// A command stays pending until a check-in acknowledges it; one sent and not acknowledged
    /// goes out again after `redeliver_after`.
    #[default]
    AtLeastOnce,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::RedFlag0118 => "redflag-0.1.18",
            DeliveryMode::AtLeastOnce => "at-least-once",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryMode> {
        match s {
            "redflag-0.1.18" => Some(DeliveryMode::RedFlag0118),
            "at-least-once" => Some(DeliveryMode::AtLeastOnce),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server model's delivery semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySpec {
    pub mode: DeliveryMode,
    pub redeliver_after: Duration,
    /// Commands one check-in answer carries, at most (the oldest due first).
    pub commands_per_answer: usize,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec {
            mode: DeliveryMode::AtLeastOnce,
            redeliver_after: DEFAULT_REDELIVER_AFTER,
            commands_per_answer: DEFAULT_COMMANDS_PER_ANSWER,
        }
    }
}

/// Which agents a `[[commands]]` entry is queued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAgents {
    All,
    /// The first N agents (`agent-0` .. `agent-{N-1}`).
    First(u32),
}

/// One `[[commands]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEntry {
    pub line: usize,
    pub at: Duration,
    pub kind: String,
    pub agents: CommandAgents,
    pub params: Value,
    /// Commands of this entry each agent gets at once (`count`, default 1): a queue of
    /// thousands is one entry.
    pub count: u32,
}

/// `[workload]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Mean commands per agent per hour (a Poisson stream per agent); 0 for none.
    pub commands_per_agent_per_hour: f64,
    pub kind: String,
    /// How long the simulated runner takes per command (any source).
    pub execution_time: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload { commands_per_agent_per_hour: 0.0, kind: DEFAULT_WORKLOAD_TYPE.into(), execution_time: DEFAULT_EXECUTION_TIME }
    }
}

/// One command of a run, as the harness queues it at the server.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCommand {
    pub at: Duration,
    pub agent: u32,
    pub id: String,
    pub kind: String,
    pub params: Value,
}

/// A command id: UUID-shaped, as RedFlag's are, and readable: the last group is the number.
pub fn command_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

impl Scenario {
    /// Every command of a run with `seed`: the `[[commands]]` entries and the `[workload]`
    /// stream, sorted by time then agent, numbered in that order. The same seed gives the same
    /// list.
    pub fn command_schedule(&self, seed: u64) -> Vec<QueuedCommand> {
        let mut out: Vec<(Duration, u32, String, Value)> = Vec::new();
        for c in &self.commands {
            let n = match c.agents {
                CommandAgents::All => self.fleet.agents,
                CommandAgents::First(n) => n.min(self.fleet.agents),
            };
            for agent in 0..n {
                for _ in 0..c.count {
                    out.push((c.at, agent, c.kind.clone(), c.params.clone()));
                }
            }
        }
        let rate_per_second = self.workload.commands_per_agent_per_hour / 3600.0;
        if rate_per_second > 0.0 {
            for agent in 0..self.fleet.agents {
                let mut rng = StdRng::seed_from_u64(crate::seed::workload(seed, agent));
                let mut t = 0.0f64;
                loop {
                    // Exponential gaps: a Poisson stream with the asked mean rate.
                    let u: f64 = rng.random();
                    t += -(1.0 - u).ln() / rate_per_second;
                    if t >= self.duration.as_secs_f64() || out.len() as u64 >= limits::COMMANDS_MAX {
                        break;
                    }
                    out.push((Duration::from_millis((t * 1000.0) as u64), agent, self.workload.kind.clone(), Value::Object(Default::default())));
                }
            }
        }
        out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out.into_iter()
            .enumerate()
            .map(|(n, (at, agent, kind, params))| QueuedCommand { at, agent, id: command_id(n as u64 + 1), kind, params })
            .collect()
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    at: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    agents: Option<Spanned<toml::Value>>,
    params: Option<Spanned<toml::Table>>,
    count: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    commands_per_agent_per_hour: Option<Spanned<f64>>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    execution_time: Option<Spanned<String>>,
}

impl Parser<'_> {
    /// The delivery keys of `[server]` (its capacity keys are read by `server.rs`).
    pub(super) fn delivery(&self, raw: Option<&Spanned<super::server::RawServer>>) -> Result<DeliverySpec, ScenarioError> {
        let mut spec = DeliverySpec::default();
        let Some(raw) = raw else { return Ok(spec) };
        let r = raw.get_ref();
        if let Some(d) = &r.delivery {
            spec.mode = DeliveryMode::parse(d.get_ref().trim()).ok_or_else(|| {
                self.at(d.span(), format!("unknown delivery {:?}; expected \"at-least-once\" or \"redflag-0.1.18\"", d.get_ref()))
            })?;
        }
        if let Some(a) = &r.redeliver_after {
            let d = self.duration(a, "redeliver_after")?;
            if d < limits::REDELIVER_AFTER_MIN || d > limits::REDELIVER_AFTER_MAX {
                return Err(self.at(a.span(), format!("redeliver_after must be between 1s and 24h, got {:?}", a.get_ref())));
            }
            if spec.mode == DeliveryMode::RedFlag0118 {
                return Err(self.at(a.span(), "redeliver_after does not apply to delivery \"redflag-0.1.18\", which never redelivers"));
            }
            spec.redeliver_after = d;
        }
        if let Some(n) = &r.commands_per_answer {
            spec.commands_per_answer = match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=limits::COMMANDS_PER_ANSWER_MAX).contains(&v) => v,
                _ => {
                    return Err(self.at(
                        n.span(),
                        format!("commands_per_answer must be between 1 and {}, got {}", limits::COMMANDS_PER_ANSWER_MAX, n.get_ref()),
                    ));
                }
            };
        }
        Ok(spec)
    }

    fn command_type(&self, s: &Spanned<String>) -> Result<String, ScenarioError> {
        let t = s.get_ref().trim();
        let ok = !t.is_empty() && t.len() <= limits::COMMAND_TYPE_MAX_LEN && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(self.at(s.span(), format!("command type {t:?} must be 1 to {} letters, digits or underscores, like \"scan_updates\"", limits::COMMAND_TYPE_MAX_LEN)));
        }
        Ok(t.to_string())
    }

    pub(super) fn command_entry(&self, raw: &Spanned<RawCommand>, agents_total: u32, run: Duration) -> Result<CommandEntry, ScenarioError> {
        let c = raw.get_ref();
        let at = self.duration(&c.at, "at")?;
        if at >= run {
            return Err(self.at(c.at.span(), format!("command at {:?} is not before the end of the run ({})", c.at.get_ref(), fmt_duration(run))));
        }
        let kind = self.command_type(&c.kind)?;
        let agents = match &c.agents {
            None => CommandAgents::All,
            Some(v) => match v.get_ref() {
                toml::Value::String(s) if s.trim() == "all" => CommandAgents::All,
                toml::Value::Integer(n) if (1..=i64::from(agents_total)).contains(n) => CommandAgents::First(*n as u32),
                other => {
                    return Err(self.at(v.span(), format!("agents must be \"all\" or a count from 1 to {agents_total} (the fleet's agents), got {other}")));
                }
            },
        };
        let params = c.params.as_ref().map_or(Value::Object(Default::default()), |p| toml_to_json(&toml::Value::Table(p.get_ref().clone())));
        let count = match &c.count {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=limits::COUNT_MAX).contains(&v) => v,
                _ => return Err(self.at(n.span(), format!("count must be from 1 to {}, got {}", limits::COUNT_MAX, n.get_ref()))),
            },
        };
        Ok(CommandEntry { line: self.line_of(raw.span().start), at, kind, agents, params, count })
    }

    pub(super) fn workload(&self, raw: Option<&Spanned<RawWorkload>>) -> Result<Workload, ScenarioError> {
        let mut w = Workload::default();
        let Some(raw) = raw else { return Ok(w) };
        let r = raw.get_ref();
        if let Some(rate) = &r.commands_per_agent_per_hour {
            let x = *rate.get_ref();
            if !(x.is_finite() && (0.0..=limits::COMMANDS_PER_AGENT_PER_HOUR_MAX).contains(&x)) {
                return Err(self.at(rate.span(), format!("commands_per_agent_per_hour must be from 0 to {}, got {x}", limits::COMMANDS_PER_AGENT_PER_HOUR_MAX)));
            }
            w.commands_per_agent_per_hour = x;
        }
        if let Some(k) = &r.kind {
            w.kind = self.command_type(k)?;
        }
        if let Some(e) = &r.execution_time {
            let d = self.duration(e, "execution_time")?;
            if d > limits::EXECUTION_TIME_MAX {
                return Err(self.at(e.span(), format!("execution_time must be at most 1h, got {:?}", e.get_ref())));
            }
            w.execution_time = d;
        }
        Ok(w)
    }

    /// The expected number of commands a run queues must stay within [`limits::COMMANDS_MAX`].
    pub(super) fn check_command_count(&self, span: std::ops::Range<usize>, entries: &[CommandEntry], workload: &Workload, agents: u32, run: Duration) -> Result<(), ScenarioError> {
        let fixed: u64 = entries
            .iter()
            .map(|c| {
                let agents = match c.agents {
                    CommandAgents::All => u64::from(agents),
                    CommandAgents::First(n) => u64::from(n),
                };
                agents * u64::from(c.count)
            })
            .sum();
        let streamed = workload.commands_per_agent_per_hour * f64::from(agents) * run.as_secs_f64() / 3600.0;
        let expected = fixed as f64 + streamed;
        if expected > limits::COMMANDS_MAX as f64 {
            return Err(self.at(span, format!("this scenario would queue about {expected:.0} commands, more than the limit of {}", limits::COMMANDS_MAX)));
        }
        Ok(())
    }
}
