//! The RedFlag server model: the agent API in axum ([`run_server`], this file), its "database"
//! ([`ServerDb`], `db.rs`), its chaos switches ([`ServerModes`], `modes.rs`) and its per-agent
//! rate limiter (`rate_limit.rs`).
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
//! Routes (paths from `redflag_agent::server::protocol`, so both sides agree by construction):
//!
//! * `GET  /api/v1/agents/{id}/commands`, Bearer token: 401 for a missing, unknown or expired
//!   token; 429 with `Retry-After` past [`RATE_LIMIT_CHECKINS_MAX`] check-ins in
//!   [`RATE_LIMIT_WINDOW`]; otherwise 200 with up to the delivery's `commands_per_answer` queued
//!   commands, chosen by the database's delivery mode after applying the body's
//!   `acknowledged_commands`.
//! * `POST /api/v1/agents/{id}/logs`, Bearer token, RedFlag's `UpdateLogRequest`: 401 as for
//!   check-ins, 400 for a body that is not one (or lacks `action`/`result`, which RedFlag's
//!   binding requires), otherwise 200: the first result per command id is kept, later ones are
//!   answered 200 too.
//! * `POST /api/v1/agents/{id}/system-info`, Bearer token, the Go agent's `SystemInfoReport`
//!   (RedFlag's `ReportSystemInfo`): 401 as for check-ins, 400 for a body that is not a JSON
//!   object (or whose `timestamp` is not a string, which gin's binding into `time.Time` refuses),
//!   otherwise 200 `{"message":"system info updated successfully"}`. RedFlag stores the fields in
//!   the agent's metadata; the model keeps nothing (nothing here reads them). One unit of work,
//!   like a check-in: the real handler authenticates, reads the agent and writes it back. The
//!   real route is rate-limited with the other agent reports (30 a minute per agent); like
//!   `/logs`, the model does not limit it (an agent posts it hourly).
//! * `POST /api/v1/agents/renew` `{"agent_id","refresh_token"}`: 200 `{"token"}` with a fresh
//!   token (the old one stops working), 401 for a wrong refresh token, 400 for a bad body.
//! * `GET  /health`: 200 `{"status":"healthy"}`; in setup mode 200
//!   `{"status":"waiting for configuration"}`, as RedFlag 0.1.18's unconfigured welcome mode
//!   answers (the agent counts that as "not ready").
//!
//! Under a `broken_route` fault (`broken_health` for `/health`), one of `/health`, `/logs`,
//! `/renew` or `/system-info` answers another status, or nothing at all for
//! [`ROUTE_HANG_MAX`], while the rest of the API works.
//!
//! Every answered request is recorded in the trace as `server_request`; commands delivered and
//! acknowledged in a check-in, and results received, as `command_delivered`,
//! `command_acknowledged` and `command_result` (when the database changed, before any `slow`
//! delay: a slow server has done the work when the proxy gives up on it).
//!
//! Time: token expiry uses [`crate::clock::unix_now`] (simulated inside turmoil); the rate
//! limiter and the slow mode use `tokio::time` (also simulated). Nothing here reads the system
//! clock directly, and hyper's own `Date` header (which would) is replaced by ours.

mod capacity;
mod db;
mod modes;
mod rate_limit;

pub use capacity::{Admission, CapacityQueue};

pub use db::{CheckinCommands, RESULTS_KEPT_MAX, ResultOutcome, SENT_TIMEOUT, ServerDb, TokenCheck};
pub use modes::{Broken, ServerModes};
use rate_limit::RateLimiter;

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use redflag_agent::server::protocol::{
    AGENTS_PREFIX, CheckinBody, CommandsResponse, HEALTH_PATH, RENEW_PATH, RenewRequest,
    RenewResponse, UpdateLogRequest, WAITING_FOR_CONFIGURATION,
};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::clock;
use crate::net::{Connections, Net};
use crate::scenario::{ApiRoute, Capacity, cost_of};
use crate::trace::{SimEvent, TraceEvent, TraceSink, WorkOutcome};
use capacity::WorkTicket;

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
/// Commands queued per agent; further ones are dropped (and logged). Room for "a queue of
/// thousands" (the `big-queue` scenario queues 10,000 for one agent).
pub const COMMAND_QUEUE_MAX: usize = 16_384;
/// Agents the database holds.
pub const AGENTS_MAX: usize = 1_000_000;
/// The longest the slow mode holds a response.
pub const SLOW_DELAY_MAX: Duration = Duration::from_secs(60 * 60);
/// How long a connection may take to send a request's headers (also closes idle keep-alive
/// connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest database file `load` reads.
pub const DB_FILE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The longest a hanging route (a `broken_route` fault without a status) holds a request before
/// it answers 503: long past any client's timeout, and bounded.
pub const ROUTE_HANG_MAX: Duration = Duration::from_secs(10 * 60);
/// A Retry-After the http_status mode sends is capped at one day.
pub const RETRY_AFTER_MAX_SECONDS: u64 = 24 * 60 * 60;

// ---- the HTTP service -----------------------------------------------------------------------

#[derive(Clone)]
struct App {
    db: ServerDb,
    modes: ServerModes,
    limiter: Arc<Mutex<RateLimiter>>,
    /// For the command events the handlers record.
    trace: TraceSink,
    host: Arc<str>,
}

/// Set by the renew handler so the trace can name the agent (it is in the body, not the path).
#[derive(Clone)]
struct AgentIdFromBody(Arc<str>);

fn router(app: App) -> Router {
    Router::new()
        .route("/api/v1/agents/{agent_id}/commands", get(checkin))
        .route("/api/v1/agents/{agent_id}/logs", post(report_log))
        .route("/api/v1/agents/{agent_id}/system-info", post(system_info))
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
    metrics: Bytes,
) -> Response {
    let limited = app.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(&agent_id, Instant::now());
    if let Err(wait) = limited {
        let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return resp;
    }
    if let Err(refused) = authorize(&app, &agent_id, &headers) {
        return refused;
    }
    // Metrics are optional and a body RedFlag cannot parse is ignored, as RedFlag does.
    let acks = serde_json::from_slice::<CheckinBody>(&metrics).map(|b| b.acknowledged_commands).unwrap_or_default();
    let per_answer = app.db.delivery().commands_per_answer;
    let out = app.db.checkin_commands(&agent_id, &acks, clock::unix_now_ms(), per_answer);
    let agent: Arc<str> = Arc::from(agent_id.as_str());
    for id in out.acknowledged {
        app.trace.record(&app.host, Some(&agent), TraceEvent::Sim(SimEvent::CommandAcknowledged { id }));
    }
    for (c, delivery) in &out.delivered {
        app.trace.record(&app.host, Some(&agent), TraceEvent::Sim(SimEvent::CommandDelivered { id: c.id.clone(), delivery: *delivery }));
    }
    for id in out.timed_out {
        tracing::warn!(agent_id, id, "command timed out without a result");
    }
    let commands = out.delivered.into_iter().map(|(c, _)| c).collect();
    axum::Json(CommandsResponse { commands, rapid_polling: None }).into_response()
}

/// The Bearer token check of the agent routes: `Err` is the 401 answer.
fn authorize(app: &App, agent_id: &str, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(json_error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    }
    match app.db.check_token(agent_id, token, clock::unix_now_ms()) {
        TokenCheck::Valid => Ok(()),
        refused => Err(json_error(StatusCode::UNAUTHORIZED, refused.reason())),
    }
}

/// `POST /api/v1/agents/{id}/logs`: a command's result (RedFlag's `ReportLog`).
async fn report_log(State(app): State<App>, UrlPath(agent_id): UrlPath<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = authorize(&app, &agent_id, &headers) {
        return refused;
    }
    let req: UpdateLogRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid log request: {e}")),
    };
    if req.action.is_empty() || req.result.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "action and result are required");
    }
    let duplicate = match app.db.store_result(&agent_id, &req) {
        ResultOutcome::First => false,
        ResultOutcome::Duplicate => true,
        ResultOutcome::UnknownAgent => return json_error(StatusCode::UNAUTHORIZED, "unknown agent"),
    };
    if !req.command_id.is_empty() {
        let agent: Arc<str> = Arc::from(agent_id.as_str());
        let event = SimEvent::CommandResult { id: req.command_id.clone(), result: req.result.clone(), duplicate };
        app.trace.record(&app.host, Some(&agent), TraceEvent::Sim(event));
    }
    axum::Json(serde_json::json!({ "message": "log recorded" })).into_response()
}

/// `POST /api/v1/agents/{id}/system-info`: the detailed system information RedFlag 0.1.18's Go
/// agent posts at start and hourly (RedFlag's `ReportSystemInfo`).
async fn system_info(State(app): State<App>, UrlPath(agent_id): UrlPath<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = authorize(&app, &agent_id, &headers) {
        return refused;
    }
    let report: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid system info: {e}")),
    };
    let Some(fields) = report.as_object() else {
        return json_error(StatusCode::BAD_REQUEST, "invalid system info: expected a JSON object");
    };
    if fields.get("timestamp").is_some_and(|t| !t.is_string()) {
        return json_error(StatusCode::BAD_REQUEST, "invalid system info: timestamp must be an RFC 3339 string");
    }
    axum::Json(serde_json::json!({ "message": "system info updated successfully" })).into_response()
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

/// The agent id in `/api/v1/agents/{id}/commands`, `.../logs` or `.../system-info`, if the
/// path is one.
pub fn agent_id_from_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(AGENTS_PREFIX)?;
    let id = rest
        .strip_suffix("/commands")
        .or_else(|| rest.strip_suffix("/logs"))
        .or_else(|| rest.strip_suffix("/system-info"))?;
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
    let broken = ApiRoute::ALL.into_iter().find(|r| r.matches(&path)).and_then(|r| app.modes.broken(r).map(|b| (r, b)));
    let mut resp = if let Some((route, broken)) = broken {
        match broken.status {
            // A slow route: the work is done, the answer held (as `slow` does for all).
            None if !broken.hangs() => {
                let resp = match routes.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                tokio::time::sleep(broken.delay.unwrap_or_default()).await;
                resp
            }
            status => {
                tokio::time::sleep(if broken.hangs() { ROUTE_HANG_MAX } else { broken.delay.unwrap_or_default() }).await;
                let body = match route {
                    ApiRoute::Health => r#"{"status":"unhealthy"}"#,
                    _ => r#"{"error":"injected failure of this route"}"#,
                };
                status_response(status.unwrap_or(503), None, body.into(), "application/json")
            }
        }
    } else if is_agent_route(&path) && app.modes.setup_mode() {
        // RedFlag's welcome mode has no agent routes at all: gin's own plain-text 404.
        status_response(404, None, "404 page not found".into(), "text/plain")
    } else if path == HEALTH_PATH && app.modes.setup_mode() {
        axum::Json(serde_json::json!({ "status": WAITING_FOR_CONFIGURATION })).into_response()
    } else if let Some((status, retry_after)) = app.modes.http_status().filter(|_| is_agent_route(&path)) {
        status_response(status, retry_after, r#"{"error":"injected status"}"#.into(), "application/json")
    } else {
        match routes.oneshot(req.map(Body::new)).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    // A slow server holds its answer after doing the work, so a proxy that gives up on it
    // (504) leaves the work done: RedFlag has marked the commands sent by then.
    if let Some(delay) = app.modes.slow() {
        tokio::time::sleep(delay).await;
    }
    set_date_header(resp.headers_mut());
    let agent = agent_of(&resp, &path);
    trace.record(
        host,
        agent.as_ref(),
        TraceEvent::Sim(SimEvent::ServerRequest { method, path, status: resp.status().as_u16() }),
    );
    resp
}

/// The agent a request concerns: from the renewal's body, or the path.
fn agent_of(resp: &Response, path: &str) -> Option<Arc<str>> {
    resp.extensions().get::<AgentIdFromBody>().map(|a| a.0.clone()).or_else(|| agent_id_from_path(path).map(Arc::from))
}

/// [`answer`] behind the capacity queue: shed at once when it is full, otherwise wait for the
/// server to reach this request (the work is done even if the client leaves meanwhile).
async fn answer_limited(
    app: &App,
    routes: Router,
    trace: &TraceSink,
    host: &Arc<str>,
    queue: &RefCell<CapacityQueue>,
    req: http::Request<hyper::body::Incoming>,
) -> Response {
    let path = req.uri().path().to_string();
    let cost = cost_of(&path);
    let now = Instant::now();
    let admission = queue.borrow_mut().admit(now, cost);
    match admission {
        Admission::Shed { retry_after_seconds } => {
            let mut resp = status_response(503, retry_after_seconds, r#"{"error":"server overloaded"}"#.into(), "application/json");
            set_date_header(resp.headers_mut());
            let agent = agent_id_from_path(&path).map(Arc::from);
            let method = req.method().as_str().to_string();
            trace.record(host, agent.as_ref(), TraceEvent::Sim(SimEvent::ServerRequest { method, path, status: 503 }));
            capacity::record(trace, host, agent.as_ref(), WorkOutcome::Shed, cost, 0, None);
            resp
        }
        Admission::Queued { finish } => {
            let ticket = WorkTicket::new(trace, host, agent_id_from_path(&path).map(Arc::from), cost, now, finish);
            tokio::time::sleep_until(finish).await;
            let resp = answer(app, routes, trace, host, req).await;
            ticket.done();
            resp
        }
    }
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
    run_server_with::<N>(listener, db, modes, trace, host, None).await
}

/// [`run_server`] with a finite `capacity` (`None`: unlimited). The queue is this process's
/// memory: created here, at the process's start (the warm-up counts from now), and lost with it.
pub async fn run_server_with<N: Net>(
    listener: N::Listener,
    db: ServerDb,
    modes: ServerModes,
    trace: TraceSink,
    host: Arc<str>,
    capacity: Option<Capacity>,
) -> Result<(), Box<dyn std::error::Error>> {
    let queue = capacity.map(|c| Rc::new(RefCell::new(CapacityQueue::new(c, Instant::now()))));
    let app = App { db, modes, limiter: Arc::new(Mutex::new(RateLimiter::default())), trace: trace.clone(), host: host.clone() };
    let routes = router(app.clone());
    // Owned here, so that dropping this future aborts every connection with it.
    let mut connections = Connections::new("server");
    loop {
        let accepted = N::accept(&listener).await;
        let Some(stream) = connections.admit(accepted).await? else { continue };
        let (app, routes, trace, host, queue) = (app.clone(), routes.clone(), trace.clone(), host.clone(), queue.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (app, routes, trace, host, queue) =
                    (app.clone(), routes.clone(), trace.clone(), host.clone(), queue.clone());
                async move {
                    let resp = match &queue {
                        None => answer(&app, routes, &trace, &host, req).await,
                        Some(q) => answer_limited(&app, routes, &trace, &host, q, req).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
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
        assert_eq!(agent_id_from_path("/api/v1/agents/a-1/logs"), Some("a-1"));
        assert_eq!(agent_id_from_path("/api/v1/agents/a-1/system-info"), Some("a-1"));
        assert_eq!(agent_id_from_path("/api/v1/agents/renew"), None);
        assert_eq!(agent_id_from_path("/api/v1/agents//commands"), None);
        assert_eq!(agent_id_from_path("/health"), None);
    }
}
