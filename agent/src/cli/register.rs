//! `redflag-agent register`: turn a registration token into an agent identity and a config file.
//!
//! `POST {server}/api/v1/agents/register` with the registration token as Bearer and RedFlag's
//! `{hostname, os_type, os_version, os_architecture, agent_version, metadata}` (metadata is a
//! map of *strings*: the server binds `map[string]string`). The metadata carries what the Go
//! agent sends, which the server's agent card shows (`cpu_model`, `cpu_cores`, `memory_total`,
//! `processes`, `uptime`, `disk_mount`, `disk_total`, `disk_used`, `installation_time`: see
//! `host/system_info.rs`), and this agent's implementation and build. The answer's `agent_id`, `token` and
//! `refresh_token` go into the config file, written atomically with mode 0600.
//!
//! Rules, each for a reason:
//! * The `server_url` written is the URL the operator gave, not the answer's
//!   `config.server_url`, which is the request's `Host` header with no scheme.
//! * An existing config file's other keys (`resilience`, `tls`, `proxy`, `state_dir`,
//!   `check_in_interval`, ...) are kept, so an operator can prepare one, and the request itself
//!   honours its `tls` and `proxy`. The server's `check_in_interval` fills in only when the file
//!   has none.
//! * A file that already holds a registered agent (an `agent_id` or a token) is not overwritten
//!   without `--force`: registering again creates a second agent on the server.
//! * Everything that can be checked before the request is checked before it (the URL, the
//!   file, the directory being writable), because a successful registration uses up a seat of
//!   the token: failing after it wastes one.
//! * Errors quote the server's own `error` text (escaped, bounded) and say what to do; tokens
//!   are never printed.
//!
//! One attempt, no retries: this is an operator at a prompt (or an installer script), who is
//! better served by a clear error now than by a loop. What is not here: the check-in loop.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{CONFIG_FILE_MAX_BYTES, Config, limits};
use crate::host::system_info::{self, SystemInfo};
use crate::host::{self, Identity};
use crate::server::protocol::{
    AGENT_VERSION, BUILD_VERSION_KEY, HEALTH_PATH, IMPLEMENTATION, IMPLEMENTATION_KEY, PROTOCOL_VERSION, RESPONSE_BODY_MAX_BYTES,
    health_not_ready, json_kind,
};
use crate::server::secret::Secret;
use crate::store::write_atomic;
use crate::server::transport::{Method, ReqwestTransport, Request, Response, Transport, TransportError};

pub const REGISTER_PATH: &str = "/api/v1/agents/register";

/// Longest piece of a server's error text quoted in a message.
const SERVER_TEXT_MAX_CHARS: usize = 300;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// The server URL as the operator typed it; it is written to the config as is (trimmed).
    pub server: String,
    pub registration_token: Secret,
    pub config_path: PathBuf,
    /// Replace a config that already holds a registered agent.
    pub force: bool,
}

/// A registration that went through and was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub agent_id: String,
    pub server_url: String,
    pub config_path: PathBuf,
}

/// The registration request body, as RedFlag's `AgentRegistrationRequest` binds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterRequest {
    pub hostname: String,
    pub os_type: String,
    pub os_version: String,
    pub os_architecture: String,
    pub agent_version: String,
    pub metadata: BTreeMap<String, String>,
}

impl RegisterRequest {
    /// The request for this machine (`identity`, `system`), registering `now`.
    pub fn new(identity: &Identity, system: &SystemInfo, now: SystemTime) -> Self {
        let mut metadata = system.registration_metadata(now);
        metadata.insert(IMPLEMENTATION_KEY.to_string(), IMPLEMENTATION.to_string());
        metadata.insert(BUILD_VERSION_KEY.to_string(), AGENT_VERSION.to_string());
        RegisterRequest {
            hostname: identity.hostname.clone(),
            os_type: identity.os_type.clone(),
            os_version: identity.os_version.clone(),
            os_architecture: identity.os_architecture.clone(),
            agent_version: PROTOCOL_VERSION.to_string(),
            metadata,
        }
    }
}

/// What a successful answer gave us.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub agent_id: String,
    pub token: Secret,
    pub refresh_token: Secret,
    /// The server's suggested interval in seconds, as it wrote the number, when usable.
    pub check_in_interval: Option<serde_json::Number>,
}

#[derive(Deserialize)]
struct RawAnswer {
    agent_id: String,
    token: String,
    refresh_token: String,
    #[serde(default)]
    config: Map<String, Value>,
}

/// Registers, then writes the config. `Err` is the sentence to show the operator.
pub fn register(opts: &RegisterOptions) -> Result<Registered, String> {
    // A config path that is a symlink (into a configuration repository, say) keeps being one:
    // the file written is the link's target, as the token write-back does.
    let path = &resolve_symlinks(&opts.config_path)?;
    let server_url = opts.server.trim().to_string();
    refuse_url_credentials(&server_url)?;
    let registration_token = checked_registration_token(&opts.registration_token)?;

    // Everything checkable before a seat is used: the existing file, the URL and TLS/proxy
    // settings (validated as the config the agent will run with), the directory.
    let base = existing_config(path, opts.force)?;
    let mut candidate = base.clone();
    candidate.insert("server_url".into(), Value::String(server_url.clone()));
    candidate.insert("agent_id".into(), Value::String("not-registered-yet".into()));
    candidate.insert("token".into(), Value::String("not-registered-yet".into()));
    let origin = format!("{} with --server {server_url:?}", path.display());
    let config = Config::from_value(Value::Object(candidate), &origin).map_err(|e| format!("cannot register: {e}"))?;
    prepare_directory(path)?;
    let mut transport = config.transport_options().and_then(|o| ReqwestTransport::new(&o)).map_err(|e| format!("cannot register: {e}"))?;

    let request = RegisterRequest::new(&host::identity(), &system_info::collect(), SystemTime::now());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let timeout = config.resilience.request_timeout;
    let credentials = runtime.block_on(async {
        let answer = send(&mut transport, register_request(&request, &registration_token), timeout).await?;
        match interpret_answer(answer.status, &answer.body, answer.retry_after.as_deref()) {
            Ok(c) => Ok(c),
            // A 404 from an unconfigured server: say so rather than "wrong URL".
            Err(e) if answer.status == 404 => {
                let health = send(&mut transport, health_request(), timeout).await;
                match health {
                    Ok(h) if (200..300).contains(&h.status) && health_not_ready(&h.body) => Err(format!(
                        "{e}. The server answers \"waiting for configuration\": finish its setup first (its web \
                         interface, /setup), then register again"
                    )),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    })?;

    write_config(path, base, &server_url, &credentials, &origin)?;
    Ok(Registered { agent_id: credentials.agent_id, server_url, config_path: opts.config_path.clone() })
}

/// Writes the registered config to `path` (the link's target, already resolved): the operator's
/// keys in `base`, the URL given, and the answer's identity. Every error says a seat was used.
fn write_config(path: &Path, base: Map<String, Value>, server_url: &str, credentials: &Credentials, origin: &str) -> Result<(), String> {
    let mut out = base;
    out.insert("server_url".into(), Value::String(server_url.to_string()));
    out.insert("agent_id".into(), Value::String(credentials.agent_id.clone()));
    out.insert("token".into(), Value::String(credentials.token.expose().to_string()));
    out.insert("refresh_token".into(), Value::String(credentials.refresh_token.expose().to_string()));
    if !out.contains_key("check_in_interval") {
        if let Some(interval) = &credentials.check_in_interval {
            out.insert("check_in_interval".into(), Value::Number(interval.clone()));
        }
    }
    // The agent id is the server's text: escaped, as everything the server says is.
    let agent_id = escape(&credentials.agent_id);
    let seat_used = |what: String| {
        format!(
            "registered with {server_url} as agent \"{agent_id}\", but {what}. The registration used a seat of the token: \
             fix this, run register again (with --force if the file was written), and remove agent \"{agent_id}\" in the \
             RedFlag dashboard"
        )
    };
    let value = Value::Object(out);
    Config::from_value(value.clone(), origin).map_err(|e| seat_used(format!("the result is not a valid config ({e})")))?;
    let mut bytes = serde_json::to_vec_pretty(&value).map_err(|e| seat_used(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600).map_err(seat_used)
}

/// Symlinks followed at most, as Linux's own limit (ELOOP).
const SYMLINK_HOPS_MAX: usize = 40;

/// `path` with every symlink in its last component followed, even to a target that does not
/// exist yet (a dangling link is where the operator wants the file).
fn resolve_symlinks(path: &Path) -> Result<PathBuf, String> {
    let mut current = path.to_path_buf();
    for _ in 0..SYMLINK_HOPS_MAX {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)
                    .map_err(|e| format!("cannot read the symlink {}: {e}", current.display()))?;
                current = match target.is_absolute() {
                    true => target,
                    false => current.parent().unwrap_or(Path::new(".")).join(target),
                };
            }
            _ => return Ok(current),
        }
    }
    Err(format!(
        "{} is a chain of more than {SYMLINK_HOPS_MAX} symlinks (a loop?); point --config at the file itself",
        path.display()
    ))
}

/// A user name or password in `--server` is refused before anything is sent: RedFlag
/// authenticates agents by token, and the agent never sends URL credentials (they would be a
/// second `Authorization` header; see `config::strip_userinfo`). At the prompt, an error beats
/// a silently edited URL.
fn refuse_url_credentials(server_url: &str) -> Result<(), String> {
    let Ok(url) = reqwest::Url::parse(server_url) else { return Ok(()) }; // the config check says why
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let (stripped, _) = crate::config::strip_userinfo(url);
    Err(format!(
        "--server {} carries a user name or password; RedFlag authenticates agents by their token and this agent \
         never sends URL credentials: give the URL without them ({})",
        crate::server::secret::redact_userinfo(server_url),
        stripped.as_str().trim_end_matches('/')
    ))
}

/// The registration token, trimmed, or why it cannot be one: a token is one word, and a newline
/// or space inside it (a copy from a wrapped line, a file read with its line break) cannot go in
/// an HTTP header.
fn checked_registration_token(token: &Secret) -> Result<Secret, String> {
    let trimmed = token.expose().trim();
    if trimmed.is_empty() {
        return Err("the registration token is empty; copy it from the RedFlag dashboard".into());
    }
    if let Some((at, ch)) = trimmed.chars().enumerate().find(|(_, c)| c.is_control() || c.is_whitespace()) {
        let what = match ch {
            '\n' | '\r' => "a line break".to_string(),
            ' ' => "a space".to_string(),
            c => format!("the character {:?}", c),
        };
        return Err(format!(
            "the registration token contains {what} (at character {}); a token is one word: copy it again from the \
             RedFlag dashboard",
            at + 1
        ));
    }
    if trimmed.len() > limits::TOKEN_MAX_LEN {
        return Err(format!("the registration token is longer than {} bytes; copy it again from the RedFlag dashboard", limits::TOKEN_MAX_LEN));
    }
    Ok(Secret::new(trimmed))
}

/// The registration request, Bearer registration token.
pub fn register_request(body: &RegisterRequest, registration_token: &Secret) -> Request {
    Request {
        method: Method::Post,
        path: REGISTER_PATH.into(),
        bearer: Some(registration_token.clone()),
        json_body: Some(serde_json::to_vec(body).unwrap_or_default()),
    }
}

fn health_request() -> Request {
    Request { method: Method::Get, path: HEALTH_PATH.into(), bearer: None, json_body: None }
}

async fn send<T: Transport>(transport: &mut T, request: Request, timeout: Duration) -> Result<Response, String> {
    let target = request.path.clone();
    match tokio::time::timeout(timeout, transport.send(&request)).await.map(|r| r.and_then(Response::whole)) {
        Ok(Ok(resp)) => Ok(resp),
        // The server answered, at length: not a network problem, and not RedFlag.
        Ok(Err(TransportError::BodyTooLarge)) => Err(format!(
            "the server's answer to {target} is larger than {} KiB, which no RedFlag answer is; check that --server is \
             the RedFlag server's URL (for example http://HOST:8080)",
            RESPONSE_BODY_MAX_BYTES / 1024
        )),
        Ok(Err(e)) => Err(format!("cannot reach the server ({target}): {e}; check --server and that the server is running")),
        Err(_) => Err(format!("no answer from the server ({target}) within {}s; check --server", timeout.as_secs_f64())),
    }
}

/// Reads the config file that is there, if any, as the base to keep. Refuses a registered one
/// (unless `force`) and one that is not a JSON object (unless `force`, which replaces it).
pub fn existing_config(path: &Path, force: bool) -> Result<Map<String, Value>, String> {
    let text = match read_limited(path) {
        Ok(None) => return Ok(Map::new()),
        Ok(Some(text)) => text,
        Err(e) => return Err(e),
    };
    let parsed: Result<Value, _> = serde_json::from_str(text.trim_start_matches('\u{feff}'));
    let map = match parsed {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) if force => return Ok(Map::new()),
        Ok(other) => {
            return Err(format!(
                "{} exists but does not hold a JSON object (it holds {}); fix it, or pass --force to replace it",
                path.display(),
                json_kind(&other)
            ));
        }
        Err(e) => {
            return Err(format!(
                "{} exists but is not valid JSON ({e}); fix it, or pass --force to replace it",
                path.display()
            ));
        }
    };
    let filled = |key: &str| map.get(key).and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
    if !force && (filled("agent_id") || filled("token") || filled("refresh_token")) {
        let id = map.get("agent_id").and_then(Value::as_str).unwrap_or("?");
        let server = map.get("server_url").and_then(Value::as_str).unwrap_or("?");
        return Err(format!(
            "{} already holds a registered agent (agent_id {}, server {}); not overwriting it. Pass --force to \
             register this host again: the server then lists a second agent, so remove the old one in its dashboard",
            path.display(),
            escape(id),
            escape(server)
        ));
    }
    Ok(map)
}

fn read_limited(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} exists and is not a regular file; choose another --config", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > CONFIG_FILE_MAX_BYTES {
        return Err(format!(
            "{} is larger than {CONFIG_FILE_MAX_BYTES} bytes; it is not a config file: move it away first",
            path.display()
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| format!("{} is not UTF-8 text; fix it, or move it away", path.display()))
}

/// Creates the config's directory (mode 0755, as the Go agent does) and proves it writable, so
/// that a registration is not wasted on a file that cannot be written.
fn prepare_directory(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|e| format!("cannot create the config directory {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".redflag-agent-register-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {} ({e}); run as a user who can", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The server's answer to the registration request, as credentials or as the sentence to show.
pub fn interpret_answer(status: u16, body: &[u8], retry_after: Option<&str>) -> Result<Credentials, String> {
    let said = server_error_text(body);
    let quoted = said.as_deref().map(|s| format!(": \"{s}\"")).unwrap_or_default();
    const NEW_TOKEN: &str = "create a new registration token in the RedFlag dashboard and run register again";
    match status {
        200..=299 => parse_credentials(body),
        401 | 403 => Err(format!(
            "the server refused the registration token (HTTP {status}){quoted}. The token is mistyped, expired, \
             revoked, or all of its seats are used: {NEW_TOKEN}"
        )),
        400 if said.as_deref().is_some_and(|s| s.to_ascii_lowercase().contains("token")) => Err(format!(
            "the server could not use the registration token (HTTP 400){quoted}. It has expired, been revoked, or \
             all of its seats are used: {NEW_TOKEN}"
        )),
        400 | 422 => Err(format!(
            "the server rejected the registration request (HTTP {status}){quoted}; this agent and the server \
             disagree about the registration format: please report it"
        )),
        404 => Err(format!(
            "the server has no registration route at {REGISTER_PATH} (HTTP 404); check that --server is the RedFlag \
             server's URL (for example http://HOST:8080)"
        )),
        429 => {
            let wait = retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map_or("a minute".into(), |s| format!("{}s", s + 1));
            Err(format!("the server is limiting registrations from this address (HTTP 429){quoted}; try again in {wait}"))
        }
        500..=599 => Err(format!("the server failed to register the agent (HTTP {status}){quoted}; try again later")),
        _ => Err(format!("unexpected answer from the server (HTTP {status}){quoted}")),
    }
}

fn parse_credentials(body: &[u8]) -> Result<Credentials, String> {
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|e| {
        format!("the server answered 200 but not with a registration (agent_id, token, refresh_token): {e}")
    })?;
    let agent_id = raw.agent_id.trim().to_string();
    if agent_id.is_empty() || agent_id.len() > limits::AGENT_ID_MAX_LEN {
        return Err("the server's registration answer has an empty or overlong agent_id".into());
    }
    for (name, t) in [("token", &raw.token), ("refresh_token", &raw.refresh_token)] {
        let t = t.trim();
        if t.is_empty() || t.len() > limits::TOKEN_MAX_LEN || t.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("the server's registration answer has an empty or invalid {name}"));
        }
    }
    let check_in_interval = match raw.config.get("check_in_interval") {
        Some(Value::Number(n))
            if n.as_f64().is_some_and(|s| (limits::CHECK_IN_INTERVAL_MIN_SECONDS..=limits::CHECK_IN_INTERVAL_MAX_SECONDS).contains(&s)) =>
        {
            Some(n.clone())
        }
        _ => None,
    };
    Ok(Credentials {
        agent_id,
        token: Secret::new(raw.token.trim()),
        refresh_token: Secret::new(raw.refresh_token.trim()),
        check_in_interval,
    })
}

/// The `error` string of a JSON error body, or the start of a text body; escaped and bounded.
fn server_error_text(body: &[u8]) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map.get("error").and_then(Value::as_str).map(str::to_string)?,
        _ => String::from_utf8_lossy(body).trim().to_string(),
    };
    (!text.is_empty()).then(|| escape(&text))
}

/// Control characters escaped, at most [`SERVER_TEXT_MAX_CHARS`] characters.
fn escape(text: &str) -> String {
    let mut out: String = text.chars().take(SERVER_TEXT_MAX_CHARS).flat_map(|c| c.escape_debug()).collect();
    if text.chars().count() > SERVER_TEXT_MAX_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_answer() {
        // As RedFlag 0.1.18 answers (agent_id a UUID, config.server_url without a scheme).
        let body = br#"{"agent_id":"ff8e75fb-9d20-4fe1-b211-e9bfa975665a","token":"eyJ.a.b","refresh_token":"b208","config":{"check_in_interval":300,"server_url":"127.0.0.1:18180"}}"#;
        let c = interpret_answer(200, body, None).unwrap();
        assert_eq!(c.agent_id, "ff8e75fb-9d20-4fe1-b211-e9bfa975665a");
        assert_eq!((c.token.expose(), c.refresh_token.expose()), ("eyJ.a.b", "b208"));
        assert_eq!(c.check_in_interval, Some(300.into()));
        let no_config = br#"{"agent_id":"a","token":"t","refresh_token":"r","config":{"check_in_interval":0}}"#;
        assert_eq!(interpret_answer(200, no_config, None).unwrap().check_in_interval, None);
    }

    #[test]
    fn refused_tokens_say_what_the_server_said_and_what_to_do() {
        let e = interpret_answer(401, br#"{"error":"invalid or expired registration token"}"#, None).unwrap_err();
        assert!(e.contains("\"invalid or expired registration token\"") && e.contains("seats") && e.contains("new registration token"), "{e}");
        let used = br#"{"error":"registration token could not be consumed - token may be expired, revoked, or all seats may be used"}"#;
        let e = interpret_answer(400, used, None).unwrap_err();
        assert!(e.contains("could not be consumed") && e.contains("new registration token"), "{e}");
        let e = interpret_answer(400, br#"{"error":"Key: 'AgentRegistrationRequest.OSType' failed"}"#, None).unwrap_err();
        assert!(e.contains("report it") && !e.contains("new registration token"), "{e}");
        let e = interpret_answer(429, br#"{"error":"rate limit exceeded"}"#, Some("41")).unwrap_err();
        assert!(e.contains("try again in 42s"), "{e}");
        assert!(interpret_answer(404, b"404 page not found", None).unwrap_err().contains("--server"));
        assert!(interpret_answer(502, b"<html>bad gateway</html>", None).unwrap_err().contains("try again later"));
    }

    #[test]
    fn hostile_answers_are_refused_or_escaped() {
        for body in [&br#"{"agent_id":"","token":"t","refresh_token":"r"}"#[..], br#"{"agent_id":"a","token":"t t","refresh_token":"r"}"#, b"[]", b"<html>"] {
            assert!(interpret_answer(200, body, None).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let e = interpret_answer(401, "{\"error\":\"forged\\nERROR line\"}".as_bytes(), None).unwrap_err();
        assert!(!e.contains('\n') && e.contains("forged\\nERROR"), "{e}");
        let long = format!("{{\"error\":\"{}\"}}", "x".repeat(10_000));
        assert!(interpret_answer(500, long.as_bytes(), None).unwrap_err().len() < 1_000);
    }

    #[test]
    fn existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(existing_config(&path, false).unwrap(), Map::new());
        std::fs::write(&path, "\u{feff}{\"check_in_interval\": 30, \"resilience\": {\"max_retries\": 3}}").unwrap();
        let kept = existing_config(&path, false).unwrap();
        assert_eq!(kept["check_in_interval"], 30);
        std::fs::write(&path, r#"{"server_url":"http://x","agent_id":"a-1","token":"t"}"#).unwrap();
        let e = existing_config(&path, false).unwrap_err();
        assert!(e.contains("already holds a registered agent") && e.contains("a-1") && e.contains("--force"), "{e}");
        assert_eq!(existing_config(&path, true).unwrap()["agent_id"], "a-1");
        std::fs::write(&path, "{ broken").unwrap();
        assert!(existing_config(&path, false).unwrap_err().contains("not valid JSON"));
        assert_eq!(existing_config(&path, true).unwrap(), Map::new());
        assert!(existing_config(dir.path(), true).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn the_request_is_what_the_server_binds() {
        let id = Identity { hostname: "h".into(), os_type: "linux".into(), os_version: "Debian".into(), os_architecture: "amd64".into() };
        let system = SystemInfo {
            cpu_model: Some("AMD EPYC".into()),
            cpu_cores: Some(2),
            memory_total_bytes: Some(25_276_182_528),
            disk_total_bytes: Some(270_582_939_648),
            disk_used_bytes: Some(31_138_512_896),
            processes: Some(97),
            uptime: Some("up 41 minutes".into()),
            ..SystemInfo::default()
        };
        let req = RegisterRequest::new(&id, &system, SystemTime::UNIX_EPOCH);
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["agent_version"], PROTOCOL_VERSION);
        assert_eq!(v["metadata"][BUILD_VERSION_KEY], AGENT_VERSION);
        // The Go agent's keys, each a string (what the real Go agent sent, from the server's table).
        for (key, want) in [
            ("cpu_model", "AMD EPYC"),
            ("cpu_cores", "2"),
            ("memory_total", "25276182528"),
            ("processes", "97"),
            ("uptime", "up 41 minutes"),
            ("disk_mount", "/"),
            ("disk_total", "270582939648"),
            ("disk_used", "31138512896"),
            ("installation_time", "1970-01-01T00:00:00Z"),
        ] {
            assert_eq!(v["metadata"][key], want, "{key}: {v}");
        }
        assert!(v["metadata"].as_object().unwrap().values().all(Value::is_string), "metadata must be strings: {v}");
        let r = register_request(&req, &Secret::new("reg"));
        assert_eq!((r.method, r.path.as_str(), r.bearer.as_ref().map(Secret::expose)), (Method::Post, REGISTER_PATH, Some("reg")));
    }
}
