//! Hostile output channels, run against the real binary.
//!
//! * A closed log pipe (`redflag-agent 2>&1 | head -c 50`, a `| logger` that died): the agent's
//!   stderr is a pipe whose reading end is already closed when it starts, so every log line
//!   fails with EPIPE. It must keep checking in (counted by the stand-in) and count the lost
//!   lines, which `status` then shows.
//! * `check-config` and `status` with their stdout closed (`| head -0`) end normally instead
//!   of panicking (exit 101).
//! * A server-controlled command id with a newline cannot forge a log line in the text format.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// A pipe's writing end whose reading end is closed: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn a_closed_log_pipe_does_not_stop_the_agent() {
    let h = Harness::new("closed-stderr");
    h.write_config();
    let mut child = Command::new(AGENT_BIN)
        .args(["--config", h.config_path.to_str().unwrap(), "--log-format", "text", "--log-level", "debug", "run"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .spawn()
        .expect("spawn redflag-agent");
    // Every check-in logs at debug level, and the config's 1 s interval logs a warning at
    // start: the writes fail from the first line on.
    let ok = wait_until(SOON, || h.server.successful_checkins() >= 4);
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert!(exited.is_none(), "the agent died with its log pipe closed: {exited:?}");
    assert!(ok, "the agent stopped checking in with its log pipe closed ({} check-ins)", h.server.successful_checkins());

    let out = h.cli(&["status"]);
    let line = out.stdout.lines().find(|l| l.starts_with("log lines dropped:"));
    let dropped: u64 = line
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`status` does not report the lost log lines:\n{}", out.stdout));
    assert!(dropped >= 4, "only {dropped} lost lines counted after 4 check-ins logged at debug level");
}

#[test]
fn check_config_and_status_with_a_closed_stdout_end_normally() {
    let h = Harness::new("closed-stdout");
    h.write_config();
    for cmd in ["check-config", "status"] {
        let out = Command::new(AGENT_BIN)
            .args(["--config", h.config_path.to_str().unwrap(), cmd])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run redflag-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{cmd} with a closed stdout: {:?}\n{stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{cmd} panicked:\n{stderr}");
    }
}

#[test]
fn a_newline_in_a_command_id_cannot_forge_a_log_line() {
    let h = Harness::new("forge");
    let forged = "2026-01-01T00:00:00.000000Z  INFO forged: the agent was re-registered";
    h.server.script_commands([Reply::json(
        200,
        json!({"commands": [{"id": format!("c1\n{forged}"), "type": format!("scan\r\n{forged}"), "params": {}}]}),
    )]);
    let agent = h.spawn(LogFormat::Text);
    assert!(
        wait_until(SOON, || agent.stderr().contains("received command")),
        "the command was never logged\n{}",
        agent.tail()
    );
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "no check-ins\n{}", agent.tail());
    let lines = agent.lines();
    assert!(
        lines.iter().all(|l| !l.text.starts_with(forged)),
        "a server-chosen command id started a log line of its own:\n{}",
        agent.tail()
    );
    let received = lines.iter().find(|l| l.text.contains("received command")).unwrap();
    assert!(received.text.contains("c1\\n2026-01-01"), "the newline is not shown escaped: {}", received.text);
}
