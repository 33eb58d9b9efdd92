//! What the log says about failures, run against the real binary.
//!
//! * Network errors keep their class (`network_error`) for the trace, and the first failure of
//!   an outage carries the cause beneath it, so an operator can tell a TLS mistake from a
//!   garbage answer or a DNS failure; the cause is not repeated while it stays the same, and a
//!   password in the server URL never appears in it.
//! * A failed token renewal is named as such, not as a failed check-in.
//! * Every `--log-format json` line carries `event`: config warnings, the signal that stopped
//!   the agent, and library lines (`"event":"log"`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A TCP server on loopback that answers every connection with `answer` (after reading the
/// request head) and closes it. Runs until the test process ends.
fn raw_server(answer: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(&answer);
        }
    });
    port
}

/// Runs an agent against `server_url` until it has failed three attempts; their events.
fn three_failures(name: &str, server_url: &str) -> (Harness, Agent, Vec<Event>) {
    let mut h = Harness::new(name);
    h.config["server_url"] = json!(server_url);
    h.config["allow_insecure_http"] = json!(true);
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || agent.events_named("attempt_failed").len() >= 3), "{}", agent.tail());
    let failed = agent.events_named("attempt_failed");
    (h, agent, failed)
}

/// The first failure names the cause (containing `expect`), the next ones do not repeat it.
fn cause_logged_once(failed: &[Event], class: &str, expect: &str) {
    assert_eq!(failed[0].str("class"), class, "{}", failed[0].v);
    let cause = failed[0].str("cause");
    assert!(cause.to_lowercase().contains(&expect.to_lowercase()), "cause {cause:?} does not say {expect:?}: {}", failed[0].v);
    assert!(failed[0].str("message").contains(cause), "the message does not give the cause: {}", failed[0].v);
    for e in &failed[1..3] {
        assert_eq!(e.str("class"), class, "{}", e.v);
        assert!(e.v.get("cause").is_none(), "an unchanged cause was repeated: {}", e.v);
    }
}

#[test]
fn https_to_a_plain_http_port_says_so_without_the_password() {
    let server = StandIn::start("x", "t", "r", "n");
    let url = format!("https://operator:PASSW0RD@127.0.0.1:{}", server.port());
    let (_h, agent, failed) = three_failures("tls-to-http", &url);
    // rustls: "received corrupt message of type InvalidContentType" (the server's HTTP answer
    // is not a TLS record).
    cause_logged_once(&failed, "network_error", "corrupt message");
    assert!(!agent.stderr().contains("PASSW0RD"), "the URL's password reached the log\n{}", agent.tail());
}

#[test]
fn a_garbage_status_line_is_named() {
    let port = raw_server(b"HTTP/1.1 abc\r\n\r\n".to_vec());
    let (_h, _agent, failed) = three_failures("garbage-status", &format!("http://127.0.0.1:{port}"));
    cause_logged_once(&failed, "network_error", "invalid HTTP status");
}

#[test]
fn oversized_headers_are_named() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    answer.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    answer.extend_from_slice(b"\r\n\r\n");
    let port = raw_server(answer);
    let (_h, _agent, failed) = three_failures("big-headers", &format!("http://127.0.0.1:{port}"));
    cause_logged_once(&failed, "network_error", "too large");
}

#[test]
fn a_dns_failure_is_named() {
    let (_h, agent, failed) = three_failures("dns", "http://redflag.nonexistent.invalid:8080");
    if failed[0].str("class") == "timeout" {
        eprintln!("skipped: this machine's resolver did not answer within the request timeout\n{}", agent.tail());
        return;
    }
    cause_logged_once(&failed, "network_error", "dns error");
}

#[test]
fn a_failed_renewal_is_named_as_such() {
    let h = Harness::new("renew-503");
    h.server.expire_token();
    // The check-in is refused (401), the renewal answers 503.
    h.server.set_all(Reply::Status(503));
    h.server.set_commands(Reply::Normal);
    h.server.set_health(Reply::Normal);
    let agent = h.spawn(LogFormat::Json);
    let renew_failed = || agent.events_named("attempt_failed").into_iter().find(|e| e.str("request") == "renew");
    assert!(wait_until(SOON, || renew_failed().is_some()), "no failed renewal logged as one\n{}", agent.tail());
    let e = renew_failed().unwrap();
    assert_eq!(e.str("class"), "http_503", "{}", e.v);
    assert!(e.str("message").starts_with("token renewal failed"), "{}", e.v);
    assert!(
        agent.events_named("attempt_failed").iter().all(|e| !e.str("message").starts_with("check-in failed")),
        "a failed renewal was called a failed check-in\n{}",
        agent.tail()
    );
}

#[test]
fn every_json_line_carries_an_event() {
    let h = Harness::new("json-events");
    h.write_config();
    // RUST_LOG=debug lets library lines through too; the 1 s interval makes a config warning.
    let mut agent = Agent::spawn_with(&h.config_path, LogFormat::Json, "debug", |cmd| {
        cmd.env("RUST_LOG", "debug");
    });
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "{}", agent.tail());
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0), "{}", agent.tail());
    assert!(wait_until(Duration::from_secs(5), || !agent.events_named("stopped").is_empty()), "{}", agent.tail());

    let lines = agent.lines();
    for l in &lines {
        let v: Value = serde_json::from_str(&l.text).unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", l.text));
        assert!(v["event"].is_string(), "a JSON log line without `event`: {}", l.text);
    }
    let names: Vec<String> = agent.events().iter().map(|e| e.name().to_string()).collect();
    for want in ["config_warning", "agent_started", "signal", "log"] {
        assert!(names.iter().any(|n| n == want), "no {want:?} line among {names:?}");
    }
    let signal = &agent.events_named("signal")[0];
    assert_eq!(signal.str("signal"), "SIGTERM", "{}", signal.v);
}
