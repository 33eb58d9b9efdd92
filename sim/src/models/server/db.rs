//! The server's "database": what a real RedFlag server keeps in PostgreSQL (agents, access
//! tokens and their expiry, refresh tokens, commands and their results). [`ServerDb`] is
//! created *outside* the server host, so it survives a crash and restart of the `server` host;
//! the live mode persists it to a JSON file after every change.
//!
//! Command delivery follows the [`DeliveryMode`] the database is opened with (configuration,
//! not data: it is not saved in the file):
//!
//! * `redflag-0.1.18`: a command is marked `sent` as the check-in answer is built and never sent
//!   again; `sent` commands without a result time out after [`SENT_TIMEOUT`], as RedFlag's
//!   background job does. Acknowledgements are ignored, as RedFlag's JSON binding ignores them.
//! * `at-least-once`: a command stays pending until a check-in's `acknowledged_commands` names
//!   it; one sent and not acknowledged goes out again after `redeliver_after`.
//!
//! Either way a command is done when its result arrives (`POST /logs`): the first result per
//! command id is kept ([`RESULTS_KEPT_MAX`] per agent), later ones are answered 200 and counted
//! as duplicates.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use redflag_agent::server::protocol::{Command, UpdateLogRequest};
use serde::{Deserialize, Serialize};

use super::{AGENTS_MAX, COMMAND_QUEUE_MAX, DB_FILE_MAX_BYTES, TOKEN_TTL};
use crate::scenario::{DeliveryMode, DeliverySpec};

/// RedFlag's timeout of `sent` commands (its background job), in `redflag-0.1.18` delivery.
pub const SENT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Results (first per command id) the database keeps per agent; the oldest are forgotten.
pub const RESULTS_KEPT_MAX: usize = 4096;

/// What a real server keeps in its database. Cheap to clone (shared); survives host crashes
/// because it is created outside the host. Serializes as JSON for the live mode's data file.
#[derive(Clone)]
pub struct ServerDb(Arc<DbShared>);

struct DbShared {
    state: Mutex<DbState>,
    delivery: Mutex<DeliverySpec>,
    /// Where every change is saved (live mode); `None` in simulation.
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DbState {
    /// Tokens are derived from this and `tokens_issued`, so runs are reproducible.
    seed: u64,
    tokens_issued: u64,
    agents: BTreeMap<String, AgentRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRecord {
    refresh_token: String,
    /// The one valid access token, if any.
    access_token: Option<AccessToken>,
    /// Commands without a result yet, oldest first.
    commands: VecDeque<CommandRecord>,
    /// The first result of each finished command, oldest first.
    #[serde(default)]
    results: VecDeque<UpdateLogRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRecord {
    command: Command,
    status: CommandStatus,
    /// Unix milliseconds of the last time it went out in a check-in answer.
    #[serde(default)]
    sent_unix_ms: Option<u64>,
    /// How many check-in answers carried it.
    #[serde(default)]
    deliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CommandStatus {
    Pending,
    Sent,
    Acknowledged,
}

/// What a check-in did to the agent's commands (for the trace).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckinCommands {
    /// Acknowledged ids that were not acknowledged before.
    pub acknowledged: Vec<String>,
    /// Commands for the answer, with how many answers have now carried each.
    pub delivered: Vec<(Command, u32)>,
    /// Sent commands that timed out (`redflag-0.1.18`) without a result.
    pub timed_out: Vec<String>,
}

/// What the database made of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    /// The first result for this command id: kept, and the command is done.
    First,
    /// It already had one: the first is kept.
    Duplicate,
    UnknownAgent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessToken {
    token: String,
    /// Unix milliseconds after which the token is refused. `None`: the token was registered
    /// from outside any clock (the world sets agents up before the simulation starts, where
    /// there is no simulated time yet), and its TTL starts when the server first sees it.
    expires_unix_ms: Option<u64>,
}

/// Why a token was refused (for the 401 body and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    UnknownAgent,
    NoToken,
    WrongToken,
    Expired,
}

impl TokenCheck {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TokenCheck::Valid => "valid",
            TokenCheck::UnknownAgent => "unknown agent",
            TokenCheck::NoToken => "no valid access token; renew it",
            TokenCheck::WrongToken => "invalid access token",
            TokenCheck::Expired => "access token expired; renew it",
        }
    }
}

impl ServerDb {
    /// An empty database. Tokens it issues are derived from `seed` and a counter.
    pub fn new(seed: u64) -> Self {
        ServerDb::from_state(DbState { seed, ..DbState::default() }, None)
    }

    fn from_state(state: DbState, path: Option<PathBuf>) -> Self {
        ServerDb(Arc::new(DbShared { state: Mutex::new(state), delivery: Mutex::new(DeliverySpec::default()), path }))
    }

    /// How commands are delivered from now on (default: at-least-once, redelivery after 30 s).
    pub fn set_delivery(&self, spec: DeliverySpec) {
        *self.0.delivery.lock().unwrap_or_else(|p| p.into_inner()) = spec;
    }

    pub fn delivery(&self) -> DeliverySpec {
        *self.0.delivery.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, DbState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves after a change when the database is file-backed; a failed save is logged (the
    /// server keeps serving from memory, as a server with a full disk might).
    fn changed(&self, state: &DbState) {
        if let Some(path) = &self.0.path {
            if let Err(e) = save_state(state, path) {
                tracing::warn!(error = %e, "cannot save the server database");
            }
        }
    }

    /// Registers (or re-registers) an agent with an access token and a refresh token. Queued
    /// commands are kept. The token's TTL starts at its first use (see [`AccessToken`]).
    pub fn register(&self, agent_id: &str, token: &str, refresh_token: &str) {
        let mut s = self.lock();
        if !s.agents.contains_key(agent_id) && s.agents.len() >= AGENTS_MAX {
            tracing::warn!(agent_id, "database full ({AGENTS_MAX} agents); registration ignored");
            return;
        }
        let rec = s.agents.entry(agent_id.to_string()).or_default();
        rec.refresh_token = refresh_token.to_string();
        rec.access_token = (!token.is_empty()).then(|| AccessToken { token: token.to_string(), expires_unix_ms: None });
        self.changed(&s);
    }

    /// Every current access token becomes invalid at once; refresh tokens still work.
    pub fn expire_all_tokens(&self) {
        let mut s = self.lock();
        for rec in s.agents.values_mut() {
            rec.access_token = None;
        }
        self.changed(&s);
    }

    /// Queues a command for the agent's next check-in; `false` (and a warning) for an unknown
    /// agent, a full queue ([`COMMAND_QUEUE_MAX`] commands without a result) or an id it
    /// already has.
    pub fn queue_command(&self, agent_id: &str, command: Command) -> bool {
        let mut s = self.lock();
        let Some(rec) = s.agents.get_mut(agent_id) else {
            tracing::warn!(agent_id, "command for an unknown agent ignored");
            return false;
        };
        if rec.commands.len() >= COMMAND_QUEUE_MAX {
            tracing::warn!(agent_id, "command queue full ({COMMAND_QUEUE_MAX}); command dropped");
            return false;
        }
        let id = &command.id;
        if rec.commands.iter().any(|c| &c.command.id == id) || rec.results.iter().any(|r| &r.command_id == id) {
            tracing::warn!(agent_id, id, "command id already used; command dropped");
            return false;
        }
        rec.commands.push_back(CommandRecord { command, status: CommandStatus::Pending, sent_unix_ms: None, deliveries: 0 });
        self.changed(&s);
        true
    }

    /// The agent's current access token, if it has a valid one (tests, live-mode control).
    pub fn access_token(&self, agent_id: &str) -> Option<String> {
        self.lock().agents.get(agent_id)?.access_token.as_ref().map(|t| t.token.clone())
    }

    /// Commands of the agent without a result yet.
    pub fn queued_commands(&self, agent_id: &str) -> usize {
        self.lock().agents.get(agent_id).map_or(0, |r| r.commands.len())
    }

    /// The result kept for a command, if any.
    pub fn result(&self, agent_id: &str, command_id: &str) -> Option<UpdateLogRequest> {
        self.lock().agents.get(agent_id)?.results.iter().find(|r| r.command_id == command_id).cloned()
    }

    /// Registered agent ids, sorted.
    pub fn agent_ids(&self) -> Vec<String> {
        self.lock().agents.keys().cloned().collect()
    }

    /// Checks a bearer token for `agent_id` at `now_unix_ms`, starting the TTL of a token seen
    /// for the first time.
    pub fn check_token(&self, agent_id: &str, token: &str, now_unix_ms: u64) -> TokenCheck {
        let mut s = self.lock();
        let Some(rec) = s.agents.get_mut(agent_id) else { return TokenCheck::UnknownAgent };
        let Some(access) = rec.access_token.as_mut() else { return TokenCheck::NoToken };
        if access.token != token {
            return TokenCheck::WrongToken;
        }
        match access.expires_unix_ms {
            Some(expires) if now_unix_ms >= expires => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
            None => {
                access.expires_unix_ms = Some(now_unix_ms.saturating_add(ttl_ms()));
                self.changed(&s);
                TokenCheck::Valid
            }
        }
    }

    /// Issues a fresh access token if `refresh_token` is the agent's; the old one stops working.
    pub fn renew(&self, agent_id: &str, refresh_token: &str, now_unix_ms: u64) -> Option<String> {
        let mut s = self.lock();
        let seed = s.seed;
        let counter = s.tokens_issued;
        let rec = s.agents.get_mut(agent_id)?;
        if rec.refresh_token.is_empty() || rec.refresh_token != refresh_token {
            return None;
        }
        let token = derive_token(seed, counter);
        rec.access_token =
            Some(AccessToken { token: token.clone(), expires_unix_ms: Some(now_unix_ms.saturating_add(ttl_ms())) });
        s.tokens_issued = counter + 1;
        self.changed(&s);
        Some(token)
    }

    /// A check-in at `now_unix_ms` acknowledging `acks`: applies them (at-least-once only),
    /// times out old `sent` commands (redflag-0.1.18 only), and picks up to `max` commands for
    /// the answer, oldest first, marking them sent.
    pub fn checkin_commands(&self, agent_id: &str, acks: &[String], now_unix_ms: u64, max: usize) -> CheckinCommands {
        let spec = self.delivery();
        let mut s = self.lock();
        let mut out = CheckinCommands::default();
        let Some(rec) = s.agents.get_mut(agent_id) else { return out };
        match spec.mode {
            DeliveryMode::AtLeastOnce => {
                for c in rec.commands.iter_mut().filter(|c| c.status != CommandStatus::Acknowledged) {
                    if acks.contains(&c.command.id) {
                        c.status = CommandStatus::Acknowledged;
                        out.acknowledged.push(c.command.id.clone());
                    }
                }
            }
            DeliveryMode::RedFlag0118 => {
                let timeout_ms = SENT_TIMEOUT.as_millis() as u64;
                rec.commands.retain(|c| {
                    let expired = c.status == CommandStatus::Sent && c.sent_unix_ms.is_some_and(|t| now_unix_ms >= t.saturating_add(timeout_ms));
                    if expired {
                        out.timed_out.push(c.command.id.clone());
                    }
                    !expired
                });
            }
        }
        let redeliver_ms = spec.redeliver_after.as_millis() as u64;
        for c in rec.commands.iter_mut() {
            if out.delivered.len() >= max {
                break;
            }
            let due = match (c.status, spec.mode) {
                (CommandStatus::Pending, _) => true,
                (CommandStatus::Sent, DeliveryMode::AtLeastOnce) => {
                    c.sent_unix_ms.is_none_or(|t| now_unix_ms >= t.saturating_add(redeliver_ms))
                }
                _ => false,
            };
            if due {
                c.status = CommandStatus::Sent;
                c.sent_unix_ms = Some(now_unix_ms);
                c.deliveries = c.deliveries.saturating_add(1);
                out.delivered.push((c.command.clone(), c.deliveries));
            }
        }
        if out != CheckinCommands::default() {
            self.changed(&s);
        }
        out
    }

    /// Takes up to `max` commands for a check-in answer without acknowledgements, now (tests).
    pub fn drain_commands(&self, agent_id: &str, max: usize) -> Vec<Command> {
        self.checkin_commands(agent_id, &[], crate::clock::unix_now_ms(), max).delivered.into_iter().map(|(c, _)| c).collect()
    }

    /// A result arrived: the first per command id is kept and completes the command.
    pub fn store_result(&self, agent_id: &str, result: &UpdateLogRequest) -> ResultOutcome {
        let mut s = self.lock();
        let Some(rec) = s.agents.get_mut(agent_id) else { return ResultOutcome::UnknownAgent };
        if rec.results.iter().any(|r| r.command_id == result.command_id) {
            return ResultOutcome::Duplicate;
        }
        rec.commands.retain(|c| c.command.id != result.command_id);
        if rec.results.len() >= RESULTS_KEPT_MAX {
            rec.results.pop_front();
        }
        rec.results.push_back(result.clone());
        self.changed(&s);
        ResultOutcome::First
    }

    /// Reads a database file written by [`ServerDb::save`].
    pub fn load(path: &Path) -> Result<ServerDb, String> {
        Ok(ServerDb::from_state(load_state(path)?, None))
    }

    /// Writes the database to `path` atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        save_state(&self.lock(), path)
    }

    /// A database backed by `path`: loaded from it when it exists, created with `seed`
    /// otherwise, and saved after every change, so a killed and restarted server keeps it.
    pub fn open(path: &Path, seed: u64) -> Result<ServerDb, String> {
        let state = match std::fs::metadata(path) {
            Ok(_) => load_state(path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DbState { seed, ..DbState::default() },
            Err(e) => return Err(format!("server database {}: {e}", path.display())),
        };
        save_state(&state, path)?;
        Ok(ServerDb::from_state(state, Some(path.to_path_buf())))
    }
}

impl std::fmt::Debug for ServerDb {
    /// Counts only: the database holds tokens, which never go to logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("ServerDb")
            .field("agents", &s.agents.len())
            .field("tokens_issued", &s.tokens_issued)
            .field("path", &self.0.path)
            .finish()
    }
}

impl Serialize for ServerDb {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.lock().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServerDb {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ServerDb::from_state(DbState::deserialize(deserializer)?, None))
    }
}

fn ttl_ms() -> u64 {
    u64::try_from(TOKEN_TTL.as_millis()).unwrap_or(u64::MAX)
}

fn load_state(path: &Path) -> Result<DbState, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("server database {}: {e}", path.display()))?;
    if meta.len() > DB_FILE_MAX_BYTES {
        return Err(format!("server database {} is {} bytes; at most {DB_FILE_MAX_BYTES}", path.display(), meta.len()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("server database {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("server database {} is not a database file: {e}", path.display()))
}

fn save_state(state: &DbState, path: &Path) -> Result<(), String> {
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| format!("cannot encode the server database: {e}"))?;
    json.push(b'\n');
    redflag_agent::store::write_atomic(path, &json, 0o600).map_err(|e| format!("cannot save the server database: {e}"))
}

/// A token derived from the seed and a counter, so the same seed issues the same tokens.
fn derive_token(seed: u64, counter: u64) -> String {
    let a = crate::seed::mix_seed(seed, counter, 0x746f6b);
    let b = crate::seed::mix_seed(a, counter, 0x5eed_7043);
    format!("rf-{a:016x}{b:016x}")
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_deterministic_and_distinct() {
        assert_eq!(derive_token(1, 0), derive_token(1, 0));
        assert_ne!(derive_token(1, 0), derive_token(1, 1));
        assert_ne!(derive_token(1, 0), derive_token(2, 0));
    }

    #[test]
    fn token_lifecycle() {
        let db = ServerDb::new(7);
        db.register("a", "t0", "r0");
        assert_eq!(db.check_token("a", "t0", 1_000), TokenCheck::Valid); // TTL starts here
        assert_eq!(db.check_token("a", "t0", 1_000 + ttl_ms() - 1), TokenCheck::Valid);
        assert_eq!(db.check_token("a", "t0", 1_000 + ttl_ms()), TokenCheck::Expired);
        assert_eq!(db.check_token("a", "nope", 2_000), TokenCheck::WrongToken);
        assert_eq!(db.check_token("b", "t0", 2_000), TokenCheck::UnknownAgent);
        assert_eq!(db.renew("a", "wrong", 2_000), None);
        let t1 = db.renew("a", "r0", 2_000).unwrap();
        assert_eq!(db.check_token("a", "t0", 2_000), TokenCheck::WrongToken);
        assert_eq!(db.check_token("a", &t1, 2_000), TokenCheck::Valid);
        db.expire_all_tokens();
        assert_eq!(db.check_token("a", &t1, 2_000), TokenCheck::NoToken);
        assert!(db.renew("a", "r0", 3_000).is_some());
    }

    #[test]
    fn command_queue_is_bounded() {
        let db = ServerDb::new(1);
        db.register("a", "t", "r");
        for i in 0..COMMAND_QUEUE_MAX + 5 {
            db.queue_command("a", Command { id: i.to_string(), kind: "x".into(), params: serde_json::Value::Null });
        }
        assert!(!db.queue_command("ghost", Command { id: "g".into(), kind: "x".into(), params: serde_json::Value::Null }));
        assert_eq!(db.queued_commands("a"), COMMAND_QUEUE_MAX);
        let out = db.checkin_commands("a", &[], 0, 3).delivered;
        assert_eq!(out.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
        // Delivered but without a result: still the server's to deliver.
        assert_eq!(db.queued_commands("a"), COMMAND_QUEUE_MAX);
        assert!(db.agent_ids() == ["a"]);
    }

    fn cmd(id: &str) -> Command {
        Command { id: id.into(), kind: "scan_updates".into(), params: serde_json::json!({}) }
    }

    fn result(id: &str) -> UpdateLogRequest {
        UpdateLogRequest {
            command_id: id.into(),
            action: "scan_updates".into(),
            result: "success".into(),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            duration_seconds: 2,
        }
    }

    fn ids(c: &CheckinCommands) -> Vec<(&str, u32)> {
        c.delivered.iter().map(|(c, n)| (c.id.as_str(), *n)).collect()
    }

    #[test]
    fn at_least_once_redelivers_until_acknowledged() {
        let db = ServerDb::new(1);
        db.register("a", "t", "r");
        assert!(db.queue_command("a", cmd("c1")));
        assert!(!db.queue_command("a", cmd("c1")), "an id is queued once");
        assert_eq!(ids(&db.checkin_commands("a", &[], 1_000, 10)), [("c1", 1)]);
        // The answer was lost: nothing until redeliver_after, then again.
        assert_eq!(ids(&db.checkin_commands("a", &[], 30_999, 10)), []);
        assert_eq!(ids(&db.checkin_commands("a", &[], 31_000, 10)), [("c1", 2)]);
        let acked = db.checkin_commands("a", &["c1".into(), "unknown".into()], 70_000, 10);
        assert_eq!(acked.acknowledged, ["c1"]);
        assert_eq!(ids(&acked), [], "acknowledged before the answer is built: not sent again");
        assert_eq!(ids(&db.checkin_commands("a", &[], 999_000, 10)), []);
        assert_eq!(db.store_result("a", &result("c1")), ResultOutcome::First);
        assert_eq!(db.store_result("a", &result("c1")), ResultOutcome::Duplicate);
        assert_eq!(db.queued_commands("a"), 0);
        assert_eq!(db.store_result("ghost", &result("c1")), ResultOutcome::UnknownAgent);
    }

    #[test]
    fn redflag_0_1_18_delivers_once_and_ignores_acknowledgements() {
        let db = ServerDb::new(1);
        db.set_delivery(DeliverySpec { mode: DeliveryMode::RedFlag0118, ..DeliverySpec::default() });
        db.register("a", "t", "r");
        db.queue_command("a", cmd("c1"));
        assert_eq!(ids(&db.checkin_commands("a", &[], 1_000, 10)), [("c1", 1)]);
        let later = db.checkin_commands("a", &["c1".into()], 500_000, 10);
        assert_eq!((later.acknowledged.len(), later.delivered.len()), (0, 0), "never again, acknowledgements ignored");
        let expired = db.checkin_commands("a", &[], 1_000 + SENT_TIMEOUT.as_millis() as u64, 10);
        assert_eq!(expired.timed_out, ["c1"]);
        assert_eq!(db.queued_commands("a"), 0);
    }

    #[test]
    fn results_are_bounded_per_agent() {
        let db = ServerDb::new(1);
        db.register("a", "t", "r");
        for i in 0..RESULTS_KEPT_MAX + 3 {
            db.store_result("a", &result(&format!("c{i}")));
        }
        assert!(db.result("a", "c0").is_none());
        assert!(db.result("a", &format!("c{}", RESULTS_KEPT_MAX + 2)).is_some());
    }

    #[test]
    fn database_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        let db = ServerDb::open(&path, 3).unwrap();
        db.register("a", "t", "r");
        db.queue_command("a", Command { id: "c".into(), kind: "scan".into(), params: serde_json::json!({"x": 1}) });
        db.queue_command("a", cmd("d"));
        db.store_result("a", &result("d"));
        let token = db.renew("a", "r", 5).unwrap();
        // Every change was saved: a "restarted" server sees it.
        let again = ServerDb::open(&path, 99).unwrap();
        assert_eq!(again.access_token("a"), Some(token.clone()));
        assert_eq!(again.queued_commands("a"), 1);
        assert_eq!(again.result("a", "d"), Some(result("d")));
        // The counter survived too: the next token differs from the last one.
        assert_ne!(again.renew("a", "r", 6).unwrap(), token);
        let loaded = ServerDb::load(&path).unwrap();
        assert_eq!(loaded.agent_ids(), ["a"]);
        std::fs::write(&path, "{not json").unwrap();
        assert!(ServerDb::load(&path).unwrap_err().contains("not a database file"));
    }
}
