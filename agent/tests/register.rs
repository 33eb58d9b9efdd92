//! `redflag-agent register`, run as the real binary against a stand-in registration route on
//! loopback that answers as RedFlag 0.1.18 does (its answers were captured from the real server):
//!
//! * a registration writes a config the agent accepts, mode 0600, with the URL the operator
//!   gave, the answer's agent id and tokens, and the keys of a config prepared beforehand;
//!   the request is RedFlag's (Bearer registration token, the fields its binding requires,
//!   metadata as strings with the Go agent's machine keys (`cpu_cores`, `disk_total`, ...),
//!   version 0.1.18);
//! * a config that already holds a registered agent is not overwritten without `--force`, and
//!   then not even a request is sent;
//! * a used-up or expired token, and an unreachable server, give an error that quotes the
//!   server and says what to do, and leave no file behind;
//! * tokens never appear in what the command prints.

mod common;

use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use common::{AGENT_BIN, CliOutput, run_cli, write_file};

const REG_TOKEN: &str = "REGTOKEN-5f1c0ffee-registration";
const AGENT_ID: &str = "ff8e75fb-9d20-4fe1-b211-e9bfa975665a";
const ACCESS: &str = "eyJhbGciOiJIUzI1NiJ9.ACCESS-token-from-registration.sig";
const REFRESH: &str = "b2085e27e487bbdb45c7763f406d08be-REFRESH";

/// One request the stand-in saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Shared {
    answer: Arc<Mutex<(u16, String)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A registration route on 127.0.0.1 answering one fixed (status, body); stopped on drop.
struct RegistrationServer {
    url: String,
    shared: Shared,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RegistrationServer {
    fn answering(status: u16, body: Value) -> Self {
        let shared = Shared { answer: Arc::new(Mutex::new((status, body.to_string()))), seen: Arc::default() };
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                let _ = stopped.await;
            });
        });
        RegistrationServer { url, shared, _stop: stop }
    }

    /// The real server's 200.
    fn ok() -> Self {
        Self::answering(
            200,
            json!({"agent_id": AGENT_ID, "token": ACCESS, "refresh_token": REFRESH,
                   "config": {"check_in_interval": 300, "server_url": "127.0.0.1:18180"}}),
        )
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handle(State(s): State<Shared>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    s.seen.lock().unwrap().push(Seen { method, path: path.clone(), authorization, body });
    let (status, body) = if path == "/api/v1/agents/register" {
        s.answer.lock().unwrap().clone()
    } else {
        (404, "404 page not found".into())
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap()
}

fn register(config: &Path, server: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec!["--config", config.to_str().unwrap(), "register", "--server", server, "--registration-token", REG_TOKEN];
    args.extend_from_slice(extra);
    run_cli(&args)
}

fn assert_no_secret_printed(out: &CliOutput) {
    for secret in [REG_TOKEN, ACCESS, REFRESH] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "a token was printed:\n{out:?}");
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn registration_writes_a_config_the_agent_runs_with() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    // An operator's prepared config: its keys must survive registration.
    let state_dir = dir.path().join("state");
    write_file(
        &config,
        &json!({"check_in_interval": 7, "state_dir": state_dir, "resilience": {"max_retries": 3}, "tags": ["lab"]}).to_string(),
    );
    let out = register(&config, &server.url, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(AGENT_ID) && out.stdout.contains(config.to_str().unwrap()), "{out:?}");
    assert_no_secret_printed(&out);

    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let req = &seen[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/api/v1/agents/register"));
    assert_eq!(req.authorization.as_deref(), Some(format!("Bearer {REG_TOKEN}").as_str()));
    for field in ["hostname", "os_type", "os_version", "os_architecture"] {
        assert!(req.body[field].as_str().is_some_and(|s| !s.is_empty()), "{field} missing: {}", req.body);
    }
    assert_eq!(req.body["os_type"], std::env::consts::OS);
    assert_eq!(req.body["agent_version"], "0.1.18");
    let metadata = req.body["metadata"].as_object().expect("metadata object");
    assert!(metadata.values().all(Value::is_string), "RedFlag binds metadata as map[string]string: {metadata:?}");
    assert_eq!(metadata["agent_build_version"], env!("CARGO_PKG_VERSION"));
    // What RedFlag 0.1.18's Go agent sends and the server's agent card reads (else "Unknown"),
    // as strings of the Go agent's form: a count, bytes, "up ..." text, RFC 3339.
    let number = |key: &str| metadata.get(key).and_then(Value::as_str).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    for key in ["cpu_cores", "memory_total", "processes", "disk_total", "disk_used"] {
        assert!(number(key) > 0, "{key} missing or not a whole number as text: {metadata:?}");
    }
    assert!(number("disk_used") <= number("disk_total"), "{metadata:?}");
    assert_eq!(metadata["disk_mount"], "/");
    assert!(metadata["uptime"].as_str().is_some_and(|u| u.starts_with("up ")), "{metadata:?}");
    assert!(metadata["installation_time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()).is_some(), "{metadata:?}");
    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|t| t.contains("model name")) {
        assert!(metadata["cpu_model"].as_str().is_some_and(|m| !m.is_empty()), "{metadata:?}");
    }

    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config mode {mode:o}");
    let written = read_json(&config);
    assert_eq!(written["server_url"], server.url.as_str(), "the URL the operator gave, not the answer's config.server_url");
    assert_eq!((written["agent_id"].as_str(), written["token"].as_str(), written["refresh_token"].as_str()), (Some(AGENT_ID), Some(ACCESS), Some(REFRESH)));
    assert_eq!(written["check_in_interval"], 7, "the prepared interval wins over the server's 300");
    assert_eq!(written["resilience"], json!({"max_retries": 3}));
    assert_eq!(written["tags"], json!(["lab"]));

    let check = run_cli(&["--config", config.to_str().unwrap(), "check-config"]);
    assert_eq!(check.code, Some(0), "the agent refuses the config register wrote: {check:?}");
}

#[test]
fn without_a_config_the_file_and_its_directory_are_created_with_the_servers_interval() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc").join("aggregator").join("config.json");
    let out = register(&config, &format!("{}/", server.url), &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let written = read_json(&config);
    assert_eq!(written["check_in_interval"], 300);
    assert_eq!(written["server_url"], format!("{}/", server.url));
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_registered_config_is_not_overwritten_without_force() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let before = json!({"server_url": "http://old:8080", "agent_id": "old-agent", "token": "OLD-ACCESS", "refresh_token": "OLD-REFRESH",
                        "state_dir": dir.path().join("state")})
    .to_string();
    write_file(&config, &before);

    let out = register(&config, &server.url, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("already holds a registered agent") && out.stderr.contains("old-agent") && out.stderr.contains("--force"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before, "the registered config was changed");
    assert!(server.seen().is_empty(), "a registration was sent (and a seat used) although nothing could be written");

    let out = register(&config, &server.url, &["--force"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let written = read_json(&config);
    assert_eq!((written["agent_id"].as_str(), written["server_url"].as_str()), (Some(AGENT_ID), Some(server.url.as_str())));
    assert_eq!(written["state_dir"], json!(dir.path().join("state")), "other keys kept under --force");
}

#[test]
fn a_used_up_or_expired_token_is_a_clear_error_and_writes_nothing() {
    for (status, error) in [
        (401, "invalid or expired registration token"),
        (400, "registration token could not be consumed - token may be expired, revoked, or all seats may be used"),
    ] {
        let server = RegistrationServer::answering(status, json!({"error": error}));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let out = register(&config, &server.url, &[]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(error), "the server's reason is not quoted: {}", out.stderr);
        assert!(out.stderr.contains("new registration token"), "no advice: {}", out.stderr);
        assert!(!config.exists(), "a config was written after a refused registration");
        assert_no_secret_printed(&out);
    }
}

#[test]
fn an_unreachable_server_and_a_bad_url_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    // A port nothing listens on: bind, note, close.
    let port = StdTcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = register(&config, &format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot reach the server") && out.stderr.contains("connection_refused"), "{}", out.stderr);
    let out = register(&config, "redflag.example:8080", &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("server_url"), "{}", out.stderr);
    assert!(!config.exists());
}

#[test]
fn the_token_can_come_from_the_environment() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let out = Command::new(AGENT_BIN)
        .args(["--config", config.to_str().unwrap(), "register", "--server", &server.url])
        .env("REDFLAG_REGISTRATION_TOKEN", REG_TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.seen()[0].authorization.as_deref(), Some(format!("Bearer {REG_TOKEN}").as_str()));
    // `--help` never shows its value.
    let help = Command::new(AGENT_BIN).args(["register", "--help"]).env("REDFLAG_REGISTRATION_TOKEN", REG_TOKEN).output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(REG_TOKEN));
}

// ---- hardening (issue 19): URL credentials, symlinks, hostile answers, odd tokens -----------

#[test]
fn a_password_in_server_is_refused_before_anything_is_sent_and_never_printed() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let with_password = server.url.replace("http://", "http://bob:hunter2@");
    let out = register(&config, &with_password, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"), "the password was printed:\n{out:?}");
    assert!(out.stderr.contains("user name or password") && out.stderr.contains(&server.url), "{}", out.stderr);
    assert!(server.seen().is_empty(), "a registration was sent with URL credentials: {:#?}", server.seen());
    assert!(!config.exists());
    let user_only = register(&config, &server.url.replace("http://", "http://bob@"), &[]);
    assert_eq!(user_only.code, Some(1), "{user_only:?}");
    assert!(server.seen().is_empty());
}

#[test]
fn a_config_path_that_is_a_symlink_stays_a_symlink() {
    let server = RegistrationServer::ok();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    // A prepared file behind a relative link, and a dangling link to a file not yet there.
    let real = repo.join("agent.json");
    write_file(&real, &json!({"check_in_interval": 9}).to_string());
    let link = dir.path().join("config.json");
    std::os::unix::fs::symlink("repo/agent.json", &link).unwrap();
    let out = register(&link, &server.url, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced by a file");
    let written = read_json(&real);
    assert_eq!((written["agent_id"].as_str(), written["check_in_interval"].as_u64()), (Some(AGENT_ID), Some(9)));
    assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);

    let dangling = dir.path().join("new.json");
    let target = repo.join("new-agent.json");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let out = register(&dangling, &server.url, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink(), "the dangling link was replaced");
    assert_eq!(read_json(&target)["agent_id"], AGENT_ID);
    assert_eq!(read_json(&dangling)["agent_id"], AGENT_ID, "the link does not lead to the config");

    let looped = dir.path().join("loop.json");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let out = register(&looped, &server.url, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("symlinks"), "{}", out.stderr);
}

#[test]
fn an_agent_id_with_terminal_escapes_is_printed_escaped() {
    let evil = "evil\u{1b}[2J\u{1b}]0;owned\u{7}\nERROR forged line\u{202e}";
    let server = RegistrationServer::answering(
        200,
        json!({"agent_id": evil, "token": ACCESS, "refresh_token": REFRESH, "config": {"check_in_interval": 300}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let out = register(&config, &server.url, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'), "raw control text: {text:?}");
    }
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "the server's newline reached the terminal: {:?}", out.stderr);
    assert!(out.stderr.contains("evil\\u{1b}[2J") && out.stderr.contains("\\nERROR forged line"), "{}", out.stderr);
    assert!(out.stderr.contains("seat"), "the used seat is not mentioned: {}", out.stderr);
    assert_no_secret_printed(&out);
}

#[test]
fn a_huge_answer_and_a_token_with_a_line_break_are_named_not_blamed_on_the_network() {
    let huge = format!("{{\"agent_id\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let server = RegistrationServer::answering(200, Value::Null);
    *server.shared.answer.lock().unwrap() = (200, huge);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let out = register(&config, &server.url, &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(!out.stderr.contains("cannot reach"), "a 10 MB answer blamed on the network: {}", out.stderr);
    assert!(out.stderr.contains("larger than") && out.stderr.contains("--server"), "{}", out.stderr);
    assert!(!config.exists());

    let server = RegistrationServer::ok();
    for (token, what) in [("REGTOKEN-first\nsecond", "line break"), ("REG TOKEN", "space"), ("REG\u{7}TOKEN", "character")] {
        let out = run_cli(&["--config", config.to_str().unwrap(), "register", "--server", &server.url, "--registration-token", token]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("registration token contains") && out.stderr.contains(what), "{token:?}: {}", out.stderr);
        assert!(!out.stderr.contains("builder error") && !out.stderr.contains("cannot reach"), "{}", out.stderr);
        assert!(!out.stderr.contains("REGTOKEN-first") && !out.stderr.contains("TOKEN"), "the token was printed: {}", out.stderr);
    }
    assert!(server.seen().is_empty(), "a request went out with a broken token");
    // Surrounding whitespace (a token read from a file with its line break) is not part of it.
    let out = run_cli(&["--config", config.to_str().unwrap(), "register", "--server", &server.url, "--registration-token", &format!("{REG_TOKEN}\n")]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(server.seen()[0].authorization.as_deref(), Some(format!("Bearer {REG_TOKEN}").as_str()));
}
