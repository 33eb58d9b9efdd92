//! The server's "database": what a real RedFlag server keeps in PostgreSQL (agents, access
//! tokens and their expiry, refresh tokens, queued commands). [`ServerDb`] is created *outside*
//! the server host, so it survives a crash and restart of the `server` host; the live mode
//! persists it to a JSON file after every change.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redflag_agent::protocol::Command;
use serde::{Deserialize, Serialize};

use super::{AGENTS_MAX, COMMAND_QUEUE_MAX, DB_FILE_MAX_BYTES, TOKEN_TTL};

/// What a real server keeps in its database. Cheap to clone (shared); survives host crashes
/// because it is created outside the host. Serializes as JSON for the live mode's data file.
#[derive(Clone)]
pub struct ServerDb(Arc<DbShared>);

struct DbShared {
    state: Mutex<DbState>,
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
    commands: VecDeque<Command>,
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
        ServerDb(Arc::new(DbShared { state: Mutex::new(state), path }))
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

    /// Queues a command for the agent's next check-in. Ignored (and logged) for an unknown
    /// agent or a full queue ([`COMMAND_QUEUE_MAX`]).
    pub fn queue_command(&self, agent_id: &str, command: Command) {
        let mut s = self.lock();
        let Some(rec) = s.agents.get_mut(agent_id) else {
            tracing::warn!(agent_id, "command for an unknown agent ignored");
            return;
        };
        if rec.commands.len() >= COMMAND_QUEUE_MAX {
            tracing::warn!(agent_id, "command queue full ({COMMAND_QUEUE_MAX}); command dropped");
            return;
        }
        rec.commands.push_back(command);
        self.changed(&s);
    }

    /// The agent's current access token, if it has a valid one (tests, live-mode control).
    pub fn access_token(&self, agent_id: &str) -> Option<String> {
        self.lock().agents.get(agent_id)?.access_token.as_ref().map(|t| t.token.clone())
    }

    /// Commands waiting for the agent's next check-in.
    pub fn queued_commands(&self, agent_id: &str) -> usize {
        self.lock().agents.get(agent_id).map_or(0, |r| r.commands.len())
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

    /// Takes up to `max` queued commands, oldest first.
    pub fn drain_commands(&self, agent_id: &str, max: usize) -> Vec<Command> {
        let mut s = self.lock();
        let Some(rec) = s.agents.get_mut(agent_id) else { return Vec::new() };
        let n = rec.commands.len().min(max);
        let out: Vec<Command> = rec.commands.drain(..n).collect();
        if !out.is_empty() {
            self.changed(&s);
        }
        out
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
        db.queue_command("ghost", Command { id: "g".into(), kind: "x".into(), params: serde_json::Value::Null });
        assert_eq!(db.queued_commands("a"), COMMAND_QUEUE_MAX);
        assert_eq!(db.drain_commands("a", 3).iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
        assert_eq!(db.queued_commands("a"), COMMAND_QUEUE_MAX - 3);
        assert!(db.agent_ids() == ["a"]);
    }

    #[test]
    fn database_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        let db = ServerDb::open(&path, 3).unwrap();
        db.register("a", "t", "r");
        db.queue_command("a", Command { id: "c".into(), kind: "scan".into(), params: serde_json::json!({"x": 1}) });
        let token = db.renew("a", "r", 5).unwrap();
        // Every change was saved: a "restarted" server sees it.
        let again = ServerDb::open(&path, 99).unwrap();
        assert_eq!(again.access_token("a"), Some(token.clone()));
        assert_eq!(again.queued_commands("a"), 1);
        // The counter survived too: the next token differs from the last one.
        assert_ne!(again.renew("a", "r", 6).unwrap(), token);
        let loaded = ServerDb::load(&path).unwrap();
        assert_eq!(loaded.agent_ids(), ["a"]);
        std::fs::write(&path, "{not json").unwrap();
        assert!(ServerDb::load(&path).unwrap_err().contains("not a database file"));
    }
}
