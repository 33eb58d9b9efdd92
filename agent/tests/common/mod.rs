//! Shared helpers for the agent's integration tests, which run the real `redflag-agent` binary
//! against a stand-in RedFlag server on loopback.
//!
//! * [`StandIn`]: an axum server on `127.0.0.1`, on its own thread and current-thread runtime,
//!   whose answers can be switched per route while the agent runs ([`Reply`]), which logs every
//!   request it sees with its arrival time ([`Record`]), and which can be stopped (listener and
//!   every connection closed, so connects are refused) and restarted on the same port.
//! * [`Harness`]: one test's world: unique tokens, a temp dir with the config file (mode 0600)
//!   and the state dir, the stand-in server, and ways to run the binary.
//! * [`Agent`]: a running `redflag-agent` whose stderr is captured line by line with arrival
//!   times, parsed as JSON events when `--log-format json`; it is always killed on drop.
//! * [`wait_until`]: poll a condition with a deadline, so that no test can hang.
//!
//! What is *not* here: assertions. Each test file says what it proves and asserts it itself.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The binary under test.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_redflag-agent");

/// How long a test waits for something that should take about a second. Generous on purpose:
/// the machine may be busy compiling while tests run.
pub const SOON: Duration = Duration::from_secs(20);

pub const MIB: usize = 1024 * 1024;

// ---- waiting -------------------------------------------------------------------------------

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Keeps a failure condition in place for `d`. This is the *length of a scenario* (how long
/// the server stays down), not synchronisation; everything that waits for the agent to do
/// something uses [`wait_until`].
pub fn hold_for(d: Duration) {
    std::thread::sleep(d);
}

// ---- the stand-in RedFlag server -----------------------------------------------------------

/// Which API route a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/v1/agents/{id}/commands`: the check-in.
    Commands,
    /// `POST /api/v1/agents/renew`.
    Renew,
    /// `GET /health`.
    Health,
    /// `POST /api/v1/agents/{id}/system-info`.
    SystemInfo,
    /// `POST /api/v1/agents/{id}/logs`: a command's result.
    Logs,
    /// Anything else (answered 404 by [`Reply::Normal`]).
    Other,
}

/// How the stand-in answers a route.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The real API: check-ins need the currently valid token (else 401), renewal needs the
    /// right agent id and refresh token and renewal switched on (else 401), health is 200.
    Normal,
    /// This status with a short text body, as a proxy would send it.
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfterSeconds { status: u16, seconds: u64 },
    /// This status with `Retry-After: <HTTP-date>` `seconds` after the `Date` header sent with
    /// it (both whole seconds, the `Date` header being the current second).
    RetryAfterDate { status: u16, seconds: u64 },
    /// Read the request, never answer.
    Hang,
    /// 200 with this (non-JSON) body.
    Text(&'static str),
    /// 200 with a body of `bytes` bytes (at most 64 MiB), with a `Content-Length` or chunked (no length
    /// announced, so the agent can only find out by reading).
    Huge { bytes: usize, chunked: bool },
    /// Any status with this body and content type (an empty body for 204).
    Custom { status: u16, content_type: &'static str, body: String },
    /// [`Reply::Normal`], after holding the answer this long (a healthy but slow server).
    Slow(Duration),
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, v: Value) -> Reply {
        Reply::Custom { status, content_type: "application/json", body: v.to_string() }
    }
}

/// One request the stand-in saw.
#[derive(Debug, Clone)]
pub struct Record {
    pub route: Route,
    pub method: String,
    pub path: String,
    /// The request target as sent: the path, or `http://host:port/path` when the agent sent
    /// the request to the stand-in as its HTTP proxy.
    pub target: String,
    /// When the request (head and body) had arrived.
    pub at: Instant,
    pub authorization: Option<String>,
    /// How many `Authorization` headers the request carried.
    pub authorization_headers: usize,
    pub body: Vec<u8>,
    /// The status answered; 0 when the stand-in never answered ([`Reply::Hang`]).
    pub status: u16,
    /// With a Retry-After answer: the moment the server asked not to be called before.
    pub not_before: Option<Instant>,
    /// Whether the answer was the real API's ([`Reply::Normal`]) rather than an injected one.
    pub normal: bool,
}

struct ServerState {
    agent_id: String,
    /// The access token check-ins must carry; `None`: every token is refused (expired).
    accepted_token: Option<String>,
    refresh_token: String,
    /// What a successful renewal hands out (and accepts from then on).
    renewed_token: String,
    renew_accepts: bool,
    commands: Reply,
    health: Reply,
    renew: Reply,
    system_info: Reply,
    logs: Reply,
    /// Commands the real API's check-in answers carry, as JSON text (see
    /// [`StandIn::queue_commands`]).
    queued: Vec<String>,
    /// Replies used once each, before the route's standing reply.
    commands_script: VecDeque<Reply>,
    log: Vec<Record>,
}

type Shared = Arc<Mutex<ServerState>>;

/// A stand-in RedFlag server on `127.0.0.1`. Dropping it stops it.
pub struct StandIn {
    state: Shared,
    port: u16,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl StandIn {
    /// Starts on a fresh port. `token` is the access token it accepts at first.
    pub fn start(agent_id: &str, token: &str, refresh_token: &str, renewed_token: &str) -> StandIn {
        let state = Arc::new(Mutex::new(ServerState {
            agent_id: agent_id.to_string(),
            accepted_token: Some(token.to_string()),
            refresh_token: refresh_token.to_string(),
            renewed_token: renewed_token.to_string(),
            renew_accepts: true,
            commands: Reply::Normal,
            health: Reply::Normal,
            renew: Reply::Normal,
            system_info: Reply::Normal,
            logs: Reply::Normal,
            queued: Vec::new(),
            commands_script: VecDeque::new(),
            log: Vec::new(),
        }));
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let mut server = StandIn { state, port, running: None };
        server.serve(listener);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes the listener and every open connection: from now on connects are refused.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            r.thread.join().expect("stand-in server thread panicked");
        }
    }

    /// Listens again on the same port (retrying the bind for a while, in case the port is
    /// briefly held).
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "restart() of a running stand-in");
        let mut listener = None;
        let ok = wait_until(Duration::from_secs(10), || {
            listener = StdTcpListener::bind(("127.0.0.1", self.port)).ok();
            listener.is_some()
        });
        assert!(ok, "could not bind 127.0.0.1:{} again", self.port);
        self.serve(listener.unwrap());
    }

    fn serve(&mut self, listener: StdTcpListener) {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(self.state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                let _ = stopped.await;
            });
            // Dropping the runtime drops the server task and every connection task: the
            // listening socket and all connections are closed before `stop()` returns.
            drop(rt);
        });
        self.running = Some(Running { stop, thread });
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The standing reply for check-ins.
    pub fn set_commands(&self, reply: Reply) {
        self.lock().commands = reply;
    }

    /// The standing reply for every route, as a proxy in front of a dead server would answer.
    pub fn set_all(&self, reply: Reply) {
        let mut s = self.lock();
        s.commands = reply.clone();
        s.health = reply.clone();
        s.system_info = reply.clone();
        s.logs = reply.clone();
        s.renew = reply;
    }

    /// The standing reply for `GET /health`.
    pub fn set_health(&self, reply: Reply) {
        self.lock().health = reply;
    }

    /// The standing reply for `POST /system-info`.
    pub fn set_system_info(&self, reply: Reply) {
        self.lock().system_info = reply;
    }

    /// The standing reply for `POST /logs` (results).
    pub fn set_logs(&self, reply: Reply) {
        self.lock().logs = reply;
    }

    /// Commands (`{"id","type","params"}` objects) for the real API's check-in answers, as
    /// RedFlag 0.1.18 sends them: once each, in the next successful check-in's answer.
    pub fn queue_commands(&self, commands: impl IntoIterator<Item = Value>) {
        self.lock().queued.extend(commands.into_iter().map(|c| c.to_string()));
    }

    /// [`StandIn::queue_commands`] with each command as JSON text, for what `Value` cannot hold
    /// (`1e400`, nesting deeper than serde_json reads).
    pub fn queue_raw_commands<S: Into<String>>(&self, commands: impl IntoIterator<Item = S>) {
        self.lock().queued.extend(commands.into_iter().map(Into::into));
    }

    /// Results (`POST /logs` bodies answered 2xx), in arrival order.
    pub fn results(&self) -> Vec<Value> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.route == Route::Logs && (200..300).contains(&r.status))
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Replies for the next check-ins, one each, before the standing reply applies again.
    pub fn script_commands(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().commands_script.extend(replies);
    }

    /// The current access token is refused from now on, as if it had expired.
    pub fn expire_token(&self) {
        self.lock().accepted_token = None;
    }

    /// Whether renewal with the right refresh token succeeds (it does by default).
    pub fn set_renew_accepts(&self, accepts: bool) {
        self.lock().renew_accepts = accepts;
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Record> {
        self.lock().log.clone()
    }

    /// Requests for `route` that arrived in `[from, to)`.
    pub fn requests_between(&self, route: Option<Route>, from: Instant, to: Instant) -> Vec<Record> {
        self.lock()
            .log
            .iter()
            .filter(|r| route.is_none_or(|want| r.route == want) && r.at >= from && r.at < to)
            .cloned()
            .collect()
    }

    pub fn count(&self, route: Route) -> usize {
        self.lock().log.iter().filter(|r| r.route == route).count()
    }

    /// Check-ins answered 200 with a valid answer.
    pub fn successful_checkins(&self) -> usize {
        self.successful_checkins_since(None)
    }

    pub fn successful_checkins_since(&self, since: Option<Instant>) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.route == Route::Commands && r.normal && r.status == 200 && since.is_none_or(|s| r.at >= s))
            .count()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One 64 MiB buffer, made on first use and shared by every [`Reply::Huge`] answer (cloning
/// `Bytes` is cheap), so a huge answer costs the stand-in nothing per request.
fn huge_buffer() -> Bytes {
    static BUFFER: OnceLock<Bytes> = OnceLock::new();
    BUFFER.get_or_init(|| Bytes::from(vec![b'x'; 64 * MIB])).clone()
}

/// Every request lands here: it is routed by hand so that nothing, not even a wrong path,
/// escapes the log.
async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req.uri().to_string();
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization_headers = req.headers().get_all(header::AUTHORIZATION).iter().count();
    let body = axum::body::to_bytes(req.into_body(), MIB).await.map(|b| b.to_vec()).unwrap_or_default();
    let at = Instant::now();
    let mut delay = None;

    let (response, hang) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let route = if path == "/health" {
            Route::Health
        } else if path == "/api/v1/agents/renew" && method == "POST" {
            Route::Renew
        } else if path == format!("/api/v1/agents/{}/commands", s.agent_id) && method == "GET" {
            Route::Commands
        } else if path == format!("/api/v1/agents/{}/system-info", s.agent_id) && method == "POST" {
            Route::SystemInfo
        } else if path == format!("/api/v1/agents/{}/logs", s.agent_id) && method == "POST" {
            Route::Logs
        } else {
            Route::Other
        };
        let reply = match route {
            Route::Commands => s.commands_script.pop_front().unwrap_or_else(|| s.commands.clone()),
            Route::Health => s.health.clone(),
            Route::Renew => s.renew.clone(),
            Route::SystemInfo => s.system_info.clone(),
            Route::Logs => s.logs.clone(),
            Route::Other => Reply::Normal,
        };
        let reply = match reply {
            Reply::Slow(d) => {
                delay = Some(d);
                Reply::Normal
            }
            other => other,
        };
        let normal_reply = matches!(reply, Reply::Normal);
        let mut record = Record {
            route,
            method,
            path,
            target,
            at,
            authorization,
            authorization_headers,
            body,
            status: 0,
            not_before: None,
            normal: normal_reply,
        };
        let mut hang = false;
        let response = match reply {
            Reply::Normal | Reply::Slow(_) => normal(&mut s, &record),
            Reply::Status(code) => text(code, "stand-in failure"),
            Reply::RetryAfterSeconds { status, seconds } => {
                record.not_before = Some(at + Duration::from_secs(seconds));
                let mut r = text(status, "slow down");
                r.headers_mut().insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
                r
            }
            Reply::RetryAfterDate { status, seconds } => {
                let now = SystemTime::now();
                let this_second = UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap().as_secs());
                let until = this_second + Duration::from_secs(seconds);
                record.not_before = Some(at + until.duration_since(now).unwrap_or_default());
                let mut r = text(status, "slow down");
                r.headers_mut().insert(header::DATE, httpdate::fmt_http_date(this_second).parse().unwrap());
                r.headers_mut().insert(header::RETRY_AFTER, httpdate::fmt_http_date(until).parse().unwrap());
                r
            }
            Reply::Hang => {
                hang = true;
                text(500, "unreachable")
            }
            Reply::Text(body) => text(200, body),
            Reply::Custom { status, content_type, body } => Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
            Reply::Huge { bytes, chunked } => {
                let huge = huge_buffer();
                assert!(bytes <= huge.len(), "Reply::Huge is at most {} bytes", huge.len());
                let body = match chunked {
                    false => Body::from(huge.slice(..bytes)),
                    true => Body::new(ChunkedBody { remaining: bytes, chunk: huge.slice(..MIB) }),
                };
                Response::builder().status(200).header(header::CONTENT_TYPE, "application/json").body(body).unwrap()
            }
        };
        record.status = if hang { 0 } else { response.status().as_u16() };
        s.log.push(record);
        (response, hang)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

/// The real API's answers.
fn normal(s: &mut ServerState, r: &Record) -> Response {
    match r.route {
        Route::Health => json_response(200, json!({"status": "healthy"})),
        Route::Commands => {
            let ok =
                s.accepted_token.as_ref().is_some_and(|t| r.authorization.as_deref() == Some(&format!("Bearer {t}")));
            match ok {
                true => {
                    let commands = std::mem::take(&mut s.queued).join(",");
                    let body = format!(r#"{{"commands":[{commands}],"rapid_polling":null}}"#);
                    Response::builder()
                        .status(200)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body))
                        .unwrap()
                }
                false => json_response(401, json!({"error": "invalid or expired token"})),
            }
        }
        Route::Renew => {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let ok = s.renew_accepts
                && body["agent_id"] == Value::String(s.agent_id.clone())
                && body["refresh_token"] == Value::String(s.refresh_token.clone());
            if ok {
                s.accepted_token = Some(s.renewed_token.clone());
                json_response(200, json!({"token": s.renewed_token}))
            } else {
                json_response(401, json!({"error": "invalid refresh token"}))
            }
        }
        // RedFlag's handler: the agent's token, then a JSON body it can bind (a wrong type is a 400).
        Route::SystemInfo => {
            let ok =
                s.accepted_token.as_ref().is_some_and(|t| r.authorization.as_deref() == Some(&format!("Bearer {t}")));
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            match (ok, body.is_object()) {
                (false, _) => json_response(401, json!({"error": "invalid or expired token"})),
                (true, false) => json_response(400, json!({"error": "invalid JSON"})),
                (true, true) => json_response(200, json!({"message": "system info updated successfully"})),
            }
        }
        Route::Logs => {
            let ok =
                s.accepted_token.as_ref().is_some_and(|t| r.authorization.as_deref() == Some(&format!("Bearer {t}")));
            match ok {
                true => json_response(200, json!({"message": "log recorded"})),
                false => json_response(401, json!({"error": "invalid or expired token"})),
            }
        }
        Route::Other => text(404, "not found"),
    }
}

fn text(status: u16, body: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(body))
        .unwrap()
}

fn json_response(status: u16, v: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A body that announces no length (so it goes out chunked) and yields `remaining` bytes in
/// 1 MiB chunks that all share one buffer.
struct ChunkedBody {
    remaining: usize,
    chunk: Bytes,
}

impl hyper::body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len());
        self.remaining -= n;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.slice(..n)))))
    }
}

// ---- one test's world ----------------------------------------------------------------------

/// The tokens of one test, unique so that a leak is unambiguous.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub agent_id: String,
    pub token: String,
    pub refresh_token: String,
    pub renewed_token: String,
}

impl Secrets {
    fn new(name: &str) -> Secrets {
        // A distinct middle part per token, so a leak of part of one names that one.
        static N: AtomicU64 = AtomicU64::new(0);
        let tag = || {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
            format!("{:x}x{:x}x{:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos)
        };
        Secrets {
            agent_id: format!("agent-{name}"),
            token: format!("ACCESS-{}-oldtokenvalue", tag()),
            refresh_token: format!("REFRESH-{}-refreshvalue", tag()),
            renewed_token: format!("RENEWED-{}-newtokenvalue", tag()),
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.token, &self.refresh_token, &self.renewed_token]
    }
}

/// Log format of a spawned agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// One test's stand-in server, temp dir, config and tokens.
pub struct Harness {
    pub server: StandIn,
    pub secrets: Secrets,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// The config the next [`Harness::spawn`] writes; tests adjust it first.
    pub config: Value,
}

impl Harness {
    /// A running stand-in and the config of the issue's check (interval 1 s, short backoff,
    /// 3 s cap, breaker after 3 failures for 3 s, 2 s request timeout), plus other RedFlag
    /// keys the agent must keep when it rewrites the file.
    pub fn new(name: &str) -> Harness {
        let secrets = Secrets::new(name);
        let server = StandIn::start(&secrets.agent_id, &secrets.token, &secrets.refresh_token, &secrets.renewed_token);
        let dir = tempfile::Builder::new().prefix(&format!("redflag-{name}-")).tempdir().expect("tempdir");
        let config_path = dir.path().join("config.json");
        let state_dir = dir.path().join("state");
        let config = json!({
            "server_url": server.url(),
            "agent_id": secrets.agent_id,
            "token": secrets.token,
            "refresh_token": secrets.refresh_token,
            "check_in_interval": 1,
            "state_dir": state_dir.display().to_string(),
            "version": "0.1.20",
            "tags": ["integration-test"],
            "logging": {"level": "info"},
            "resilience": {
                "max_retries": 5,
                "initial_delay_seconds": 0.2,
                "max_delay_minutes": 0.05,
                "backoff_factor": 2.0,
                "circuit_breaker_threshold": 3,
                "circuit_breaker_timeout_minutes": 0.05,
                "request_timeout_seconds": 2
            }
        });
        Harness { server, secrets, dir, config_path, state_dir, config }
    }

    /// Writes `self.config` to the config file, mode 0600 as an installer would.
    pub fn write_config(&self) {
        write_file(&self.config_path, &serde_json::to_string_pretty(&self.config).unwrap());
    }

    /// Writes the config and starts `redflag-agent run` at debug level.
    pub fn spawn(&self, format: LogFormat) -> Agent {
        self.write_config();
        Agent::spawn(&self.config_path, format, "debug")
    }

    /// Runs the binary with `--config <this config> args...` to completion.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_env(args, &[])
    }

    /// [`Harness::cli`] with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let mut full = vec!["--config", self.config_path.to_str().unwrap()];
        full.extend_from_slice(args);
        run_cli_env(&full, env)
    }

    /// The config file as JSON, as it is on disk now.
    pub fn config_on_disk(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.config_path).expect("read config")).expect("config is JSON")
    }
}

/// Writes `text` to `path` with mode 0600.
pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

// ---- the binary ----------------------------------------------------------------------------

/// What a finished one-shot command (`check-config`, `status`) printed.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion; kills it and panics if it takes more than 30 s.
pub fn run_cli(args: &[&str]) -> CliOutput {
    run_cli_env(args, &[])
}

/// [`run_cli`] with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut child = Command::new(AGENT_BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redflag-agent");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut status = None;
    let done = wait_until(Duration::from_secs(30), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        panic!("redflag-agent {args:?} did not finish within 30 s");
    }
    CliOutput { code: status.unwrap().code(), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// One line of the agent's stderr, with the moment the test read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// One JSON log line of the agent.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub v: Value,
}

impl Event {
    pub fn name(&self) -> &str {
        self.v["event"].as_str().unwrap_or("")
    }

    pub fn str(&self, field: &str) -> &str {
        self.v[field].as_str().unwrap_or("")
    }

    pub fn u64(&self, field: &str) -> u64 {
        self.v[field].as_u64().unwrap_or_else(|| panic!("event {} has no integer {field}: {}", self.name(), self.v))
    }
}

/// A running `redflag-agent`. Killed (SIGKILL) on drop if it is still running.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Agent {
    pub fn spawn(config: &Path, format: LogFormat, level: &str) -> Agent {
        Agent::spawn_with(config, format, level, |_| {})
    }

    /// [`Agent::spawn`], with the command adjusted first (environment, signal mask, ...).
    pub fn spawn_with(config: &Path, format: LogFormat, level: &str, adjust: impl FnOnce(&mut Command)) -> Agent {
        let mut cmd = Command::new(AGENT_BIN);
        cmd.args(["--config", config.to_str().unwrap(), "--log-format", format.as_str(), "--log-level", level, "run"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn redflag-agent");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for text in BufReader::new(stderr).lines() {
                let Ok(text) = text else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(Line { at: Instant::now(), text });
            }
        });
        Agent { child, lines, reader: Some(reader), exit: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All of stderr so far, as text.
    pub fn stderr(&self) -> String {
        self.lines().into_iter().map(|l| l.text + "\n").collect()
    }

    /// The last lines of stderr, for failure messages.
    pub fn tail(&self) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(40);
        let tail: String = lines[start..].iter().map(|l| format!("  {}\n", l.text)).collect();
        format!("--- last {} agent log lines ---\n{tail}", lines.len() - start)
    }

    /// Every JSON log line so far.
    pub fn events(&self) -> Vec<Event> {
        self.lines()
            .into_iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l.text).ok().map(|v| Event { at: l.at, v }))
            .collect()
    }

    /// JSON log lines with this `event` name.
    pub fn events_named(&self, name: &str) -> Vec<Event> {
        self.events().into_iter().filter(|e| e.name() == name).collect()
    }

    /// Sends a signal (`libc::SIGTERM`, ...).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// The exit status if the process has ended within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        let mut status = self.exit;
        wait_until(timeout, || {
            if status.is_none() {
                status = child.try_wait().expect("try_wait");
            }
            status.is_some()
        });
        self.exit = status;
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Peak resident set size (`VmHWM` in `/proc/PID/status`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM value")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
