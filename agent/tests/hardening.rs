//! Hardening, second round (issue 19), run as the release binary against the stand-in server on
//! loopback. Each test names the way a real queue, a slow route or a bad setting once stopped the
//! agent or lost a command, and shows it no longer does:
//!
//! * a password in `server_url` is neither printed nor sent: one `Authorization` header, the
//!   Bearer token, so the server that reads the first header accepts every request;
//! * `enable_heartbeat` with an unusable `duration_minutes` gets a `failed` result that says why,
//!   and changes nothing;
//! * a `state_dir` the agent cannot write is reported with what it costs (no command can be
//!   journaled, so none is run), and one removed while the agent runs is created again;

mod common;

use common::*;
use serde_json::{Value, json};

fn command(id: &str, kind: &str, params: Value) -> Value {
    json!({"id": id, "type": kind, "params": params})
}

#[test]
fn url_credentials_are_stripped_with_a_warning_never_sent_nor_printed() {
    let mut h = Harness::new("userinfo");
    h.config["server_url"] = json!(h.server.url().replace("http://", "http://bob:hunter2@"));
    h.write_config();
    let check = h.cli(&["check-config"]);
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(check.stdout.contains("server_url carries") || check.stderr.contains("server_url carries"), "no warning:\n{check:?}");
    assert!(!check.stdout.contains("hunter2") && !check.stderr.contains("hunter2"), "the password was printed:\n{check:?}");

    let agent = h.spawn(LogFormat::Text);
    assert!(
        wait_until(SOON, || h.server.successful_checkins() >= 2),
        "no successful check-in with credentials in server_url (a Basic header before the Bearer one?)\n{}",
        agent.tail()
    );
    let requests = h.server.requests();
    for r in &requests {
        assert_eq!(r.authorization_headers, usize::from(r.route != Route::Health && r.route != Route::Renew), "{r:?}");
        if let Some(a) = &r.authorization {
            assert!(a.starts_with("Bearer "), "a request carried {a:?}");
        }
    }
    assert!(agent.stderr().contains("server_url carries"), "no warning at start\n{}", agent.tail());
    assert!(!agent.stderr().contains("hunter2"), "the password was logged\n{}", agent.tail());
}

#[test]
fn an_unusable_heartbeat_duration_gets_a_failed_result_that_says_why() {
    let h = Harness::new("heartbeat-params");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in\n{}", agent.tail());
    h.server.queue_commands([
        command("hb-negative", "enable_heartbeat", json!({"duration_minutes": -5})),
        command("hb-zero", "enable_heartbeat", json!({"duration_minutes": 0})),
        command("hb-text", "enable_heartbeat", json!({"duration_minutes": "ten"})),
    ]);
    assert!(wait_until(SOON, || h.server.results().len() >= 3), "no results\n{}", agent.tail());
    for r in h.server.results() {
        assert_eq!(r["result"], "failed", "an invalid duration was reported as {r}");
        let stderr = r["stderr"].as_str().unwrap_or("");
        assert!(stderr.contains("duration_minutes"), "the result does not say why: {r}");
    }
    assert!(agent.events_named("rapid_polling").is_empty(), "rapid polling went on for an invalid duration\n{}", agent.tail());
}

#[test]
fn a_state_dir_that_cannot_be_written_is_reported_with_what_it_costs() {
    let mut h = Harness::new("state-dir-file");
    // A regular file where the folder should be: not writable, even for root.
    let blocker = h.dir.path().join("not-a-dir");
    write_file(&blocker, "x");
    h.config["state_dir"] = json!(blocker);
    let agent = h.spawn(LogFormat::Text);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in\n{}", agent.tail());
    assert!(
        wait_until(SOON, || agent.stderr().contains("no command can be journaled")),
        "the warning does not say that commands cannot run\n{}",
        agent.tail()
    );
    let check = h.cli(&["check-config"]);
    assert!(check.stdout.contains("no command can be journaled") || check.stderr.contains("no command can be journaled"), "{check:?}");
}

#[test]
fn a_state_dir_removed_while_running_is_created_again_and_commands_still_run() {
    let h = Harness::new("state-dir-removed");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.state_dir.join("status.json").is_file()), "no status file\n{}", agent.tail());
    std::fs::remove_dir_all(&h.state_dir).unwrap();
    h.server.queue_commands([command("after-rm", "scan_updates", json!({}))]);
    assert!(
        wait_until(SOON, || h.server.results().iter().any(|r| r["command_id"] == "after-rm")),
        "the command sent after state_dir was removed never ran\n{}",
        agent.tail()
    );
    assert!(h.state_dir.join("journal.json").is_file(), "journal.json was not written again");
    let acked = || {
        h.server.requests().iter().any(|r| {
            r.route == Route::Commands
                && serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["acknowledged_commands"] == json!(["after-rm"]))
        })
    };
    assert!(wait_until(SOON, acked), "the command was never acknowledged\n{}", agent.tail());
}
