//! `redflag-sim serve`: the RedFlag server model on a real socket, with its database in a file
//! and a chaos control API on a separate loopback address.
//!
//! The database (agents, tokens, refresh tokens, queued commands) is saved to `--data` after
//! every change, atomically, so a server killed with SIGKILL and started again on the same file
//! keeps it, as a real server keeps its database. Everything else (the rate limiter, open
//! connections, and the chaos modes, which belong to whoever injects faults) starts afresh;
//! `--modes` lets the live orchestrator restart a server with the modes still in effect.
//!
//! Commands: `--delivery` and `--redeliver-after` are the scenario's `[server]` keys (how
//! commands are handed out; configuration, not data); the orchestrator queues the scenario's
//! commands at their times through `POST /commands` (or straight into the database file while
//! the server is down).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use http::{Method, StatusCode};
use redflag_agent::server::protocol::Command;
use serde::Deserialize;

use super::control_http::{self, Handler, error, require_loopback};
use super::modes::{self, ServerModesSpec};
use super::service::{self, EXIT_INVALID};
use crate::net::TokioNet;
use crate::models::server::{ServerDb, ServerModes, run_server_with};
use crate::scenario::server_limits::{CAPACITY_PER_SECOND_MAX, QUEUE_MAX_LIMIT, SHED_COST_MAX, SHED_RETRY_AFTER_MAX_SECONDS};
use crate::scenario::{
    COMMANDS_PER_ANSWER_MAX, Capacity, DEFAULT_COMMANDS_PER_ANSWER, DEFAULT_REDELIVER_AFTER, DeliveryMode, DeliverySpec,
    SHED_COST_DEFAULT, ShedRetryAfter,
};

const CONTROL_HELP: &str = "\
Chaos control API (on --control, which must be a loopback address; peers that are not on
loopback are answered 403):
  GET  /modes            the switches in effect, as JSON
  PUT  /modes            set every switch at once; a missing key means off:
                         {\"slow_ms\":1500,\"setup_mode\":false,\"revoke_refresh\":false,
                          \"http_status\":{\"status\":503,\"retry_after\":5}}
  POST /expire_tokens    every access token becomes invalid; renewal still works
  POST /commands         queue a command: {\"agent_id\":\"agent-0\",\"id\":\"...\",\"type\":\"scan_updates\",
                          \"params\":{}}; 200 {\"queued\":true}, 409 if the database refused it
                          (unknown agent, full queue, id already used)
Requests answered on --listen are traced as JSON Lines to --trace (t_ms in Unix ms).";

/// `redflag-sim serve`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = CONTROL_HELP)]
pub struct ServeArgs {
    /// Address of the RedFlag agent API (`/api/v1/agents/...`, `/health`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The database file: read when it exists, created otherwise, saved after every change.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Loopback address of the chaos control API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8079")]
    pub control: SocketAddr,
    /// Append a JSON Lines trace of every answered request here.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Seed of the tokens a new database issues.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Switches to start with, as the JSON `PUT /modes` takes.
    #[arg(long, value_name = "JSON")]
    pub modes: Option<String>,
    /// How commands are handed out: `at-least-once` (kept until acknowledged, sent again after
    /// --redeliver-after) or `redflag-0.1.18` (marked sent on read, never sent again).
    #[arg(long, value_name = "MODE", default_value = "at-least-once", value_parser = parse_delivery)]
    pub delivery: DeliveryMode,
    /// With at-least-once delivery: when a command sent and not acknowledged goes out again.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_redeliver_after)]
    pub redeliver_after: Duration,
    /// Commands one check-in answer carries, at most (the scenario's `[server]
    /// commands_per_answer`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COMMANDS_PER_ANSWER, value_parser = parse_commands_per_answer)]
    pub commands_per_answer: usize,
    /// Finite capacity: work units per second (a check-in 1, a /health probe 0.1), as a
    /// scenario's `[server] capacity_per_second`. Unlimited without it.
    #[arg(long, value_name = "UNITS")]
    pub capacity_per_second: Option<f64>,
    /// Requests waiting beyond which new ones are shed with 503 (default: 2 s of work).
    #[arg(long, value_name = "N", requires = "capacity_per_second")]
    pub queue_max: Option<u64>,
    /// `Retry-After` of a shed 503: whole seconds, or `auto` (the time the queue needs to drain).
    #[arg(long, value_name = "SECONDS|auto", requires = "capacity_per_second")]
    pub shed_retry_after: Option<String>,
    /// After every start, capacity ramps from 10% to 100% over this long (`60s`, `2m`).
    #[arg(long, value_name = "DURATION", requires = "capacity_per_second")]
    pub warmup: Option<String>,
    /// What a shed 503 costs, as a share of the refused request's work (0-1; default 0.1).
    #[arg(long, value_name = "SHARE", requires = "capacity_per_second")]
    pub shed_cost: Option<f64>,
}

fn parse_delivery(s: &str) -> Result<DeliveryMode, String> {
    DeliveryMode::parse(s).ok_or_else(|| format!("unknown delivery {s:?}; expected at-least-once or redflag-0.1.18"))
}

fn parse_commands_per_answer(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=COMMANDS_PER_ANSWER_MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of commands from 1 to {COMMANDS_PER_ANSWER_MAX}, got {s:?}")),
    }
}

fn parse_redeliver_after(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s:?}: expected 1s to 24h (default {})", humantime::format_duration(DEFAULT_REDELIVER_AFTER)));
    }
    Ok(d)
}

/// `POST /commands`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueCommandRequest {
    pub agent_id: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub params: serde_json::Value,
}

/// The `serve` arguments that give it `capacity` (none for an unlimited server).
pub fn capacity_args(capacity: Option<&Capacity>) -> Vec<String> {
    let Some(c) = capacity else { return Vec::new() };
    let mut args = vec!["--capacity-per-second".to_string(), c.per_second.to_string(), "--queue-max".into(), c.queue_max.to_string()];
    match c.shed_retry_after {
        Some(ShedRetryAfter::Auto) => args.extend(["--shed-retry-after".to_string(), "auto".to_string()]),
        Some(ShedRetryAfter::Seconds(s)) => args.extend(["--shed-retry-after".to_string(), s.to_string()]),
        None => {}
    }
    args.extend(["--warmup".to_string(), format!("{}ms", c.warmup.as_millis())]);
    args.extend(["--shed-cost".to_string(), c.shed_cost.to_string()]);
    args
}

/// The capacity the arguments describe, validated like the scenario keys.
fn capacity_of(args: &ServeArgs) -> Result<Option<Capacity>, String> {
    let Some(per_second) = args.capacity_per_second else { return Ok(None) };
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= CAPACITY_PER_SECOND_MAX) {
        return Err(format!("--capacity-per-second must be above 0 and at most {CAPACITY_PER_SECOND_MAX}, got {per_second}"));
    }
    let queue_max = match args.queue_max {
        None => (per_second * 2.0).ceil().max(1.0) as u32,
        Some(q) if q <= QUEUE_MAX_LIMIT => q as u32,
        Some(q) => return Err(format!("--queue-max must be at most {QUEUE_MAX_LIMIT}, got {q}")),
    };
    let shed_retry_after = match args.shed_retry_after.as_deref().map(str::trim) {
        None => None,
        Some("auto") => Some(ShedRetryAfter::Auto),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= SHED_RETRY_AFTER_MAX_SECONDS => Some(ShedRetryAfter::Seconds(n)),
            _ => return Err(format!("--shed-retry-after must be whole seconds up to {SHED_RETRY_AFTER_MAX_SECONDS} or \"auto\", got {s:?}")),
        },
    };
    let warmup = match &args.warmup {
        None => Duration::ZERO,
        Some(w) => humantime::parse_duration(w.trim()).map_err(|e| format!("--warmup {w:?} is not a duration ({e}); write it like \"60s\""))?,
    };
    let shed_cost = match args.shed_cost {
        None => SHED_COST_DEFAULT,
        Some(c) if c.is_finite() && (0.0..=SHED_COST_MAX).contains(&c) => c,
        Some(c) => return Err(format!("--shed-cost must be a share of one request's work between 0 and {SHED_COST_MAX}, got {c}")),
    };
    Ok(Some(Capacity { per_second, queue_max, shed_retry_after, warmup, shed_cost }))
}

/// Runs `redflag-sim serve` until SIGTERM/SIGINT; the exit code.
pub fn main(args: ServeArgs) -> u8 {
    service::init_logging();
    if let Err(e) = require_loopback(&args.control, "--control") {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let initial = match &args.modes {
        None => ServerModesSpec::default(),
        Some(json) => match modes::parse::<ServerModesSpec>(json.as_bytes(), ServerModesSpec::validate) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: --modes: {e}");
                return EXIT_INVALID;
            }
        },
    };
    let capacity = match capacity_of(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let db = match ServerDb::open(&args.data, args.seed) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: --data: {e}");
            return EXIT_INVALID;
        }
    };
    db.set_delivery(DeliverySpec {
        mode: args.delivery,
        redeliver_after: args.redeliver_after,
        commands_per_answer: args.commands_per_answer,
    });
    let server_modes = ServerModes::default();
    initial.apply_to(&server_modes);
    service::run(args.trace.clone(), move |trace| async move {
        let listener = service::bind(args.listen, "agent API").await?;
        let control = service::bind(args.control, "control API").await?;
        eprintln!(
            "redflag-sim serve: agent API on {}, control API on {}, database {}",
            args.listen,
            args.control,
            args.data.display()
        );
        let handler = control_handler(db.clone(), server_modes.clone());
        let control_task = tokio::task::spawn_local(control_http::serve_control(control, handler));
        let served = run_server_with::<TokioNet>(listener, db, server_modes, trace, "server".into(), capacity).await;
        control_task.abort();
        served.map_err(|e| format!("server: {e}"))
    })
}

fn control_handler(db: ServerDb, server_modes: ServerModes) -> Handler {
    Rc::new(move |method: &Method, path: &str, body: &[u8]| match (method.as_str(), path) {
        ("GET", "/modes") => (StatusCode::OK, json(&ServerModesSpec::read(&server_modes))),
        ("PUT", "/modes") => match modes::parse::<ServerModesSpec>(body, ServerModesSpec::validate) {
            Ok(spec) => {
                spec.apply_to(&server_modes);
                (StatusCode::OK, json(&ServerModesSpec::read(&server_modes)))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        ("POST", "/expire_tokens") => {
            db.expire_all_tokens();
            (StatusCode::OK, serde_json::json!({ "expired": db.agent_ids().len() }))
        }
        ("POST", "/commands") => match serde_json::from_slice::<QueueCommandRequest>(body) {
            Ok(req) if req.id.is_empty() => error(StatusCode::BAD_REQUEST, "a command needs a non-empty id"),
            Ok(req) => match db.queue_command(&req.agent_id, Command { id: req.id, kind: req.kind, params: req.params }) {
                true => (StatusCode::OK, serde_json::json!({ "queued": true })),
                false => error(StatusCode::CONFLICT, "the database refused the command (unknown agent, full queue or an id already used)"),
            },
            Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid command: {e}; expected {{\"agent_id\",\"id\",\"type\",\"params\"}}")),
        },
        (_, "/modes" | "/expire_tokens" | "/commands") => error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}")),
        _ => error(StatusCode::NOT_FOUND, format!("no {path}; try GET|PUT /modes, POST /expire_tokens or POST /commands")),
    })
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
