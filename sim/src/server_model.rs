//! The RedFlag server model: the agent API in axum ([`run_server`]), its "database"
//! ([`ServerDb`]) and its chaos switches ([`ServerModes`]).
//!
//! What lives where matters, because a crash must lose exactly what a real crash loses:
//!
//! * [`ServerDb`] is what a database would hold: agents, access tokens and their expiry,
//!   refresh tokens, queued commands. The world creates it *outside* the host closure, so it
//!   survives a crash and restart of the `server` host; the live mode persists it to a JSON file.
//! * Process memory lives inside [`run_server`] and dies with it: the per-agent rate limiter
//!   and the open connections.
//! * [`ServerModes`] are the fault switches; they belong to whoever injects faults (the world in
//!   simulation, the control API in live mode), not to the server process.
//!
//! Routes (paths from `redflag_agent::protocol`, so both sides agree by construction):
//!
//! * `GET  /api/v1/agents/{id}/commands`, Bearer token: 401 for a missing, unknown or expired
//!   token; 429 with `Retry-After` past [`RATE_LIMIT_CHECKINS_MAX`] check-ins in
//!   [`RATE_LIMIT_WINDOW`]; otherwise 200 with up to `MAX_COMMANDS_PER_CHECKIN` queued commands.
//! * `POST /api/v1/agents/renew` `{"agent_id","refresh_token"}`: 200 `{"token"}` with a fresh
//!   token (the old one stops working), 401 for a wrong refresh token, 400 for a bad body.
//! * `GET  /health`: 200 `{"status":"healthy"}`.
//!
//! Every answered request is recorded in the trace as `server_request`.
//!
//! Time: token expiry uses [`crate::clock::unix_now`] (simulated inside turmoil); the rate
//! limiter and the slow mode use `tokio::time` (also simulated). Nothing here reads the system
//! clock directly, and hyper's own `Date` header (which would) is replaced by ours.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use redflag_agent::protocol::{
    AGENTS_PREFIX, Command, CommandsResponse, HEALTH_PATH, MAX_COMMANDS_PER_CHECKIN, RENEW_PATH, RenewRequest,
    RenewResponse,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::clock;
use crate::net::{Connections, Net};
use crate::trace::{SimEvent, TraceEvent, TraceSink};

/// The port the server listens on, in simulation and by default in live mode.
pub const SERVER_PORT: u16 = 8080;
/// Access-token lifetime, measured with [`clock::unix_now`].
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Check-ins one agent may make per [`RATE_LIMIT_WINDOW`] before it is answered 429.
pub const RATE_LIMIT_CHECKINS_MAX: usize = 30;
/// The sliding window of the rate limiter.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(10);
/// Agents the rate limiter tracks at once; beyond this, idle entries are swept and, if still
/// full, new agents are not limited (the limiter protects the server, it must not grow with it).
pub const RATE_LIMIT_TRACKED_AGENTS_MAX: usize = 100_000;
/// Largest request body accepted (check-in metrics and renewals are a few hundred bytes).
pub const REQUEST_BODY_MAX_BYTES: usize = 64 * 1024;
/// Commands queued per agent; further ones are dropped (and logged).
pub const COMMAND_QUEUE_MAX: usize = 1024;
/// Agents the database holds.
pub const AGENTS_MAX: usize = 1_000_000;
/// The longest the slow mode holds a response.
pub const SLOW_DELAY_MAX: Duration = Duration::from_secs(60 * 60);
/// How long a connection may take to send a request's headers (also closes idle keep-alive
/// connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest database file `load` reads.
pub const DB_FILE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// A Retry-After the http_status mode sends is capped at one day.
pub const RETRY_AFTER_MAX_SECONDS: u64 = 24 * 60 * 60;

// ---- the database ---------------------------------------------------------------------------

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
    fn reason(self) -> &'static str {
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

// ---- chaos modes ----------------------------------------------------------------------------

/// The server's fault switches. Cheap to clone (shared); default: all off.
#[derive(Clone, Default)]
pub struct ServerModes(Arc<Mutex<ModesState>>);

#[derive(Debug, Clone, Default, PartialEq)]
struct ModesState {
    slow: Option<Duration>,
    setup_mode: bool,
    revoke_refresh: bool,
    http_status: Option<(u16, Option<u64>)>,
}

impl ServerModes {
    fn lock(&self) -> MutexGuard<'_, ModesState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold every response this long (capped at [`SLOW_DELAY_MAX`]); `None` ends it.
    pub fn set_slow(&self, delay: Option<Duration>) {
        self.lock().slow = delay.map(|d| d.min(SLOW_DELAY_MAX));
    }

    /// The server "restarted unconfigured": 404 on agent routes, `/health` still 200.
    pub fn set_setup_mode(&self, on: bool) {
        self.lock().setup_mode = on;
    }

    /// Renewal answers 401 while on.
    pub fn set_revoke_refresh(&self, on: bool) {
        self.lock().revoke_refresh = on;
    }

    /// Answer this status (with `Retry-After: seconds` when given, capped at
    /// [`RETRY_AFTER_MAX_SECONDS`]) to every agent route; `/health` is unaffected. A status
    /// outside 100..=599 is answered as 500.
    pub fn set_http_status(&self, status: Option<(u16, Option<u64>)>) {
        self.lock().http_status = status.map(|(code, ra)| (code, ra.map(|s| s.min(RETRY_AFTER_MAX_SECONDS))));
    }

    pub fn slow(&self) -> Option<Duration> {
        self.lock().slow
    }

    pub fn setup_mode(&self) -> bool {
        self.lock().setup_mode
    }

    pub fn revoke_refresh(&self) -> bool {
        self.lock().revoke_refresh
    }

    pub fn http_status(&self) -> Option<(u16, Option<u64>)> {
        self.lock().http_status
    }
}

// ---- process memory: the rate limiter -------------------------------------------------------

/// Per-agent sliding-window limiter. Lives inside [`run_server`], so a crash forgets it.
#[derive(Default)]
struct RateLimiter {
    /// Admission times of each agent's recent check-ins, at most [`RATE_LIMIT_CHECKINS_MAX`].
    recent: BTreeMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// `Ok` admits the check-in (and counts it); `Err(wait)` says when the next one may come.
    fn admit(&mut self, agent_id: &str, now: Instant) -> Result<(), Duration> {
        if !self.recent.contains_key(agent_id) && self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
            self.recent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < RATE_LIMIT_WINDOW));
            if self.recent.len() >= RATE_LIMIT_TRACKED_AGENTS_MAX {
                return Ok(());
            }
        }
        let times = self.recent.entry(agent_id.to_string()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= RATE_LIMIT_WINDOW) {
            times.pop_front();
        }
        if times.len() >= RATE_LIMIT_CHECKINS_MAX {
            let oldest = *times.front().expect("a full window has a first entry");
            return Err(RATE_LIMIT_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        debug_assert!(times.len() <= RATE_LIMIT_CHECKINS_MAX);
        Ok(())
    }
}

// ---- the HTTP service -----------------------------------------------------------------------

#[derive(Clone)]
struct App {
    db: ServerDb,
    modes: ServerModes,
    limiter: Arc<Mutex<RateLimiter>>,
}

/// Set by the renew handler so the trace can name the agent (it is in the body, not the path).
#[derive(Clone)]
struct AgentIdFromBody(Arc<str>);

fn router(app: App) -> Router {
    Router::new()
        .route("/api/v1/agents/{agent_id}/commands", get(checkin))
        .route(RENEW_PATH, post(renew))
        .route(HEALTH_PATH, get(health))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_MAX_BYTES))
        .with_state(app)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "healthy" })).into_response()
}

async fn checkin(
    State(app): State<App>,
    UrlPath(agent_id): UrlPath<String>,
    headers: HeaderMap,
    _metrics: Bytes,
) -> Response {
    let limited = app.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(&agent_id, Instant::now());
    if let Err(wait) = limited {
        let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return resp;
    }
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return json_error(StatusCode::UNAUTHORIZED, "missing bearer token");
    }
    match app.db.check_token(&agent_id, token, clock::unix_now_ms()) {
        TokenCheck::Valid => {}
        refused => return json_error(StatusCode::UNAUTHORIZED, refused.reason()),
    }
    let commands = app.db.drain_commands(&agent_id, MAX_COMMANDS_PER_CHECKIN);
    axum::Json(CommandsResponse { commands, rapid_polling: None }).into_response()
}

async fn renew(State(app): State<App>, body: Bytes) -> Response {
    let req: RenewRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid renewal request: {e}")),
    };
    let mut resp = if app.modes.revoke_refresh() {
        json_error(StatusCode::UNAUTHORIZED, "refresh token revoked")
    } else {
        match app.db.renew(&req.agent_id, &req.refresh_token, clock::unix_now_ms()) {
            Some(token) => axum::Json(RenewResponse { token }).into_response(),
            None => json_error(StatusCode::UNAUTHORIZED, "invalid refresh token"),
        }
    };
    resp.extensions_mut().insert(AgentIdFromBody(req.agent_id.into()));
    resp
}

/// The agent id in `/api/v1/agents/{id}/commands`, if the path is one.
pub fn agent_id_from_path(path: &str) -> Option<&str> {
    let id = path.strip_prefix(AGENTS_PREFIX)?.strip_suffix("/commands")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn is_agent_route(path: &str) -> bool {
    path.starts_with(AGENTS_PREFIX)
}

/// Adds the `Date` header from [`clock::wall_clock`] (simulated time inside turmoil).
pub(crate) fn set_date_header(headers: &mut http::HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(clock::wall_clock())) {
        headers.insert(http::header::DATE, v);
    }
}

/// A status answered by a fault mode, with an optional Retry-After.
pub(crate) fn status_response(
    status: u16,
    retry_after_seconds: Option<u64>,
    body: String,
    content_type: &'static str,
) -> Response<Body> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| (100..600).contains(&s.as_u16()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(http::header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(s) = retry_after_seconds {
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// Answers one request: the chaos modes first, then the axum routes; then records it.
async fn answer(
    app: &App,
    routes: Router,
    trace: &TraceSink,
    host: &Arc<str>,
    req: http::Request<hyper::body::Incoming>,
) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if let Some(delay) = app.modes.slow() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = if is_agent_route(&path) && app.modes.setup_mode() {
        json_error(StatusCode::NOT_FOUND, "server is in setup mode")
    } else if let Some((status, retry_after)) = app.modes.http_status().filter(|_| is_agent_route(&path)) {
        status_response(status, retry_after, r#"{"error":"injected status"}"#.into(), "application/json")
    } else {
        match routes.oneshot(req.map(Body::new)).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    set_date_header(resp.headers_mut());
    let agent: Option<Arc<str>> = resp
        .extensions()
        .get::<AgentIdFromBody>()
        .map(|a| a.0.clone())
        .or_else(|| agent_id_from_path(&path).map(Arc::from));
    trace.record(
        host,
        agent.as_ref(),
        TraceEvent::Sim(SimEvent::ServerRequest { method, path, status: resp.status().as_u16() }),
    );
    resp
}

/// Serves the agent API on `listener` until the host dies. The database and modes are shared
/// with the caller; the rate limiter and the connections are this call's own, so they vanish
/// with it: dropping this future (aborting its task) is a `kill -9` of the server process with
/// its machine still up (the listener and every open connection close, so a proxy in front
/// answers 502), while `turmoil::Sim::crash` is the machine going away (nothing answers at all,
/// so a proxy answers 504 after its connect timeout). Must run inside a tokio `LocalSet`
/// (connections are `spawn_local` tasks, owned by this future).
pub async fn run_server<N: Net>(
    listener: N::Listener,
    db: ServerDb,
    modes: ServerModes,
    trace: TraceSink,
    host: Arc<str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let app = App { db, modes, limiter: Arc::new(Mutex::new(RateLimiter::default())) };
    let routes = router(app.clone());
    // Owned here, so that dropping this future aborts every connection with it.
    let mut connections = Connections::new("server");
    loop {
        let accepted = N::accept(&listener).await;
        let Some(stream) = connections.admit(accepted).await? else { continue };
        let (app, routes, trace, host) = (app.clone(), routes.clone(), trace.clone(), host.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (app, routes, trace, host) = (app.clone(), routes.clone(), trace.clone(), host.clone());
                async move { Ok::<_, Infallible>(answer(&app, routes, &trace, &host, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .auto_date_header(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "server: connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_in_paths() {
        assert_eq!(agent_id_from_path("/api/v1/agents/a-1/commands"), Some("a-1"));
        assert_eq!(agent_id_from_path("/api/v1/agents/renew"), None);
        assert_eq!(agent_id_from_path("/api/v1/agents//commands"), None);
        assert_eq!(agent_id_from_path("/health"), None);
    }

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
    fn rate_limiter_window() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT_CHECKINS_MAX {
            assert!(rl.admit("a", t0 + Duration::from_millis(i as u64)).is_ok());
        }
        let wait = rl.admit("a", t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, RATE_LIMIT_WINDOW - Duration::from_secs(1));
        assert!(rl.admit("b", t0 + Duration::from_secs(1)).is_ok(), "limits are per agent");
        assert!(rl.admit("a", t0 + RATE_LIMIT_WINDOW).is_ok(), "the oldest entry left the window");
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
