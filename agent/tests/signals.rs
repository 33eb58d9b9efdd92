//! Signals, run against the real binary.
//!
//! * SIGHUP does not kill the agent. It reloads the config: an unchanged file is logged as
//!   such, a changed valid one restarts the check-in loop with it, an invalid one is logged and
//!   the agent keeps running on the config it has. Check-ins go on throughout.
//! * A SIGTERM that arrives before the agent could install its handlers still ends it with
//!   exit code 0. To make "before" certain rather than a race, the agent is started with
//!   SIGTERM blocked (a signal mask it inherits) and signalled at once: the signal is pending
//!   from the first instruction, and the agent must unblock it once its handler is in place.

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn sighup_reloads_the_config_and_never_kills_the_agent() {
    let mut h = Harness::new("hup");
    let mut agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in\n{}", agent.tail());

    // Unchanged file.
    agent.signal(libc::SIGHUP);
    assert!(
        wait_until(SOON, || agent.events_named("config_reloaded").iter().any(|e| e.v["changed"] == false)),
        "SIGHUP with an unchanged config was not logged\n{}",
        agent.tail()
    );
    assert!(agent.is_running(), "SIGHUP killed the agent\n{}", agent.tail());

    // A changed, valid file: the loop restarts with it.
    h.config["check_in_interval"] = json!(2);
    h.write_config();
    agent.signal(libc::SIGHUP);
    assert!(
        wait_until(SOON, || agent.events_named("config_reloaded").iter().any(|e| e.v["changed"] == true)),
        "the changed config was not reloaded\n{}",
        agent.tail()
    );
    assert!(
        wait_until(SOON, || agent.events_named("agent_started").len() == 2),
        "the loop did not restart with the new config\n{}",
        agent.tail()
    );

    // An invalid file: logged, ignored, check-ins go on.
    h.config["resilience"]["jitter"] = json!("fulll");
    h.write_config();
    agent.signal(libc::SIGHUP);
    assert!(
        wait_until(SOON, || !agent.events_named("config_reload_failed").is_empty()),
        "an invalid config on SIGHUP was not reported\n{}",
        agent.tail()
    );
    let failed = &agent.events_named("config_reload_failed")[0];
    assert!(failed.str("message").contains("resilience.jitter"), "{}", failed.v);
    let after = Instant::now();
    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(after)) >= 2),
        "no check-ins after a SIGHUP with an invalid config\n{}",
        agent.tail()
    );
    assert!(agent.is_running(), "{}", agent.tail());
    assert_eq!(agent.events_named("agent_started").len(), 2, "an invalid config restarted the loop\n{}", agent.tail());

    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10)).expect("the agent did not stop on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.tail());
}

#[test]
fn a_sigterm_pending_from_the_start_exits_0() {
    let mut h = Harness::new("early-term");
    h.config["resilience"]["request_timeout_seconds"] = json!(30);
    h.server.set_commands(Reply::Hang);
    h.write_config();
    let mut agent = Agent::spawn_with(&h.config_path, LogFormat::Json, "debug", |cmd| {
        // SAFETY: only async-signal-safe calls (sigemptyset, sigaddset, sigprocmask) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
    });
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("a SIGTERM sent at start was never acted on\n{}", agent.tail()));
    assert_eq!(status.code(), Some(0), "exit status {status:?}\n{}", agent.tail());
    assert!(h.server.count(Route::Commands) <= 1, "the agent went on checking in after SIGTERM");
}
