//! Token expiry, run against the real binary: a 401 makes the agent renew its token, use the new
//! one at once and write it back to the config file atomically (mode 0600, every other key
//! kept); a refused renewal leaves the agent running, saying plainly that it must be
//! re-registered, and checking in at the regular interval until renewal works again; and no
//! access or refresh token ever reaches the log, in text or JSON, across a renewal.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[test]
fn a_401_renews_the_token_uses_it_at_once_and_rewrites_the_config_atomically() {
    let mut h = Harness::new("renew");
    // A long interval: the renewed check-in can only arrive within the wait below if the
    // agent retries at once with the new token instead of at the next regular check-in.
    h.config["check_in_interval"] = json!(30);
    h.server.expire_token();
    h.write_config();
    let before = h.config_on_disk();
    let inode_before = std::fs::metadata(&h.config_path).unwrap().ino();

    let agent = Agent::spawn(&h.config_path, LogFormat::Json, "debug");
    assert!(
        wait_until(SOON, || h.server.successful_checkins() >= 1),
        "no check-in with a renewed token\n{}",
        agent.tail()
    );

    // From the server's side: the old token refused, one renewal, the new token on the very
    // next request (same attempt, no waiting for another interval).
    let s = &h.secrets;
    let log = h.server.requests();
    let seen: Vec<(Route, u16)> = log.iter().take(3).map(|r| (r.route, r.status)).collect();
    assert_eq!(seen, [(Route::Commands, 401), (Route::Renew, 200), (Route::Commands, 200)], "{log:#?}");
    assert_eq!(log[0].authorization.as_deref(), Some(format!("Bearer {}", s.token).as_str()));
    let renew: Value = serde_json::from_slice(&log[1].body).expect("renew body is JSON");
    assert_eq!(renew["agent_id"], s.agent_id.as_str());
    assert_eq!(renew["refresh_token"], s.refresh_token.as_str());
    assert_eq!(log[1].authorization, None, "the renewal request carries no bearer token");
    let bearer_new = format!("Bearer {}", s.renewed_token);
    assert!(
        log.iter()
            .skip(2)
            .filter(|r| r.route == Route::Commands)
            .all(|r| r.authorization.as_deref() == Some(&bearer_new)),
        "a check-in after the renewal did not use the new token"
    );
    assert_eq!(h.server.count(Route::Renew), 1, "renewed more than once");

    // The config file: new token, replaced by rename (new inode), mode 0600, all else kept.
    assert!(
        wait_until(SOON, || h.config_on_disk()["token"] == s.renewed_token.as_str()),
        "the config file never got the new token\n{}",
        agent.tail()
    );
    let meta = std::fs::metadata(&h.config_path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "config file mode after the rewrite");
    assert_ne!(meta.ino(), inode_before, "the config was rewritten in place, not replaced atomically");
    let after = h.config_on_disk();
    let mut expected = before.clone();
    expected["token"] = Value::String(s.renewed_token.clone());
    assert_eq!(after, expected, "keys other than token changed");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&after), keys(&before), "key order changed");
    let leftovers: Vec<String> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "config.json" && n != "state")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left next to the config: {leftovers:?}");

    let renewed = agent.events_named("token_renewed");
    assert_eq!(renewed.len(), 1, "{}", agent.tail());
    assert_eq!(renewed[0].v["saved"], true, "{}", renewed[0].v);
}

#[test]
fn a_refused_renewal_keeps_the_agent_running_at_the_regular_interval() {
    let h = Harness::new("refused");
    h.server.expire_token();
    h.server.set_renew_accepts(false);
    let mut agent = h.spawn(LogFormat::Json);

    assert!(
        wait_until(SOON, || !agent.events_named("renewal_rejected").is_empty()),
        "no renewal_rejected event\n{}",
        agent.tail()
    );
    let rejected = &agent.events_named("renewal_rejected")[0];
    assert_eq!(rejected.v["level"], "ERROR", "{}", rejected.v);
    assert!(rejected.str("message").contains("must be re-registered"), "{}", rejected.v);

    let from = Instant::now();
    hold_for(Duration::from_secs(6));
    let to = Instant::now();
    assert!(agent.is_running(), "the agent exited after a refused renewal\n{}", agent.tail());

    // The regular interval is 1 s (±10%): about 6 check-ins, each followed by one renewal try.
    let checkins = h.server.requests_between(Some(Route::Commands), from, to);
    assert!(
        checkins.len() >= 3,
        "only {} check-ins in 6 s after the renewal was refused\n{}",
        checkins.len(),
        agent.tail()
    );
    assert!(checkins.len() <= 12, "{} check-ins in 6 s: faster than the regular interval", checkins.len());
    for pair in checkins.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(800), "check-ins {gap:?} apart: below the regular 1 s interval");
    }
    let renewals = h.server.requests_between(Some(Route::Renew), from, to);
    assert!(renewals.len() <= checkins.len() + 1, "{} renewals for {} check-ins", renewals.len(), checkins.len());
    assert!(renewals.iter().all(|r| r.status == 401));

    // The server takes the refresh token again: the agent recovers on its own.
    h.server.set_renew_accepts(true);
    let accepted_from = Instant::now();
    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(accepted_from)) >= 1),
        "no check-in after renewal became possible again\n{}",
        agent.tail()
    );
    let stderr = agent.stderr();
    for secret in h.secrets.all() {
        assert!(!stderr.contains(secret), "a token appeared in the log");
    }
}

/// Renewal, a few check-ins, a short 502 window and its recovery, then SIGTERM: every code
/// path that logs. Not one token may appear anywhere in stderr.
fn no_token_in_the_log(format: LogFormat, level: &str) {
    let h = Harness::new(&format!("secrets-{format:?}-{level}").to_lowercase());
    h.server.expire_token();
    h.write_config();
    let mut agent = Agent::spawn(&h.config_path, format, level);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "no check-ins after renewal\n{}", agent.tail());
    h.server.set_all(Reply::Status(502));
    let from = Instant::now();
    assert!(
        wait_until(SOON, || h.server.requests_between(None, from, Instant::now()).len() >= 4),
        "too few attempts during the 502s\n{}",
        agent.tail()
    );
    h.server.set_all(Reply::Normal);
    let to = Instant::now();
    assert!(wait_until(SOON, || h.server.successful_checkins_since(Some(to)) >= 1), "no recovery\n{}", agent.tail());
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some(), "the agent did not exit on SIGTERM");

    // The renewal happened (so the new token was in the agent's hands), and was logged.
    assert_eq!(h.config_on_disk()["token"], h.secrets.renewed_token.as_str());
    let stderr = agent.stderr();
    assert!(
        stderr.contains("token_renewed") || stderr.contains("access token renewed"),
        "renewal not logged:\n{stderr}"
    );
    assert!(stderr.contains("http_502"), "the failures were not logged:\n{stderr}");
    for (name, secret) in [
        ("token", &h.secrets.token),
        ("refresh_token", &h.secrets.refresh_token),
        ("renewed token", &h.secrets.renewed_token),
    ] {
        assert!(!stderr.contains(secret.as_str()), "the {name} appeared in the {format:?} log");
        // Not even its distinctive middle part (a token cut or re-encoded in a log line).
        let middle = secret.split('-').nth(1).unwrap();
        assert!(!stderr.contains(middle), "part of the {name} appeared in the {format:?} log");
    }
}

#[test]
fn no_token_in_the_json_log_across_a_renewal() {
    no_token_in_the_log(LogFormat::Json, "debug");
}

#[test]
fn no_token_in_the_text_log_across_a_renewal() {
    no_token_in_the_log(LogFormat::Text, "debug");
}

#[test]
fn no_token_in_the_log_at_trace_level() {
    no_token_in_the_log(LogFormat::Json, "trace");
}

/// The config as an operator keeps it: a symlink into another folder, an odd layout, a number
/// no float can hold, mode 0640, and (when the test runs as root) another owner. The renewal
/// must change the token's value in the link's target and nothing else.
#[test]
fn the_renewed_token_goes_through_a_symlink_and_changes_nothing_else() {
    let h = Harness::new("renew-symlink");
    h.server.expire_token();
    let repo = h.dir.path().join("etc-repo");
    std::fs::create_dir(&repo).unwrap();
    let target = repo.join("config.json");
    let s = &h.secrets;
    let text = format!(
        "{{ \"server_url\": \"{}\",   \"agent_id\":\"{}\",\n\t\"token\" :  \"{}\", \"refresh_token\": \"{}\",\n  \"check_in_interval\": 30, \"state_dir\": \"{}\",\n  \"fleet_serial\": 123456789012345678901234567890, \"ratio\": 1.50e3,\n  \"note\": \"caf\\u00e9 {{not a brace}}\"\n}}\n",
        h.server.url(),
        s.agent_id,
        s.token,
        s.refresh_token,
        h.state_dir.display()
    );
    std::fs::write(&target, &text).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    }
    std::os::unix::fs::symlink(&target, &h.config_path).unwrap();

    let agent = Agent::spawn(&h.config_path, LogFormat::Json, "debug");
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in after renewal\n{}", agent.tail());
    assert!(wait_until(SOON, || !agent.events_named("token_renewed").is_empty()), "{}", agent.tail());
    assert_eq!(agent.events_named("token_renewed")[0].v["saved"], true, "{}", agent.tail());

    let link = std::fs::symlink_metadata(&h.config_path).unwrap();
    assert!(link.file_type().is_symlink(), "the symlink was replaced by a regular file");
    let after = std::fs::read_to_string(&target).unwrap();
    let expected = text.replace(&format!("\"{}\"", s.token), &format!("\"{}\"", s.renewed_token));
    assert_eq!(after, expected, "bytes other than the token's value changed");
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "the mode changed");
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "the owner or group changed");
    } else {
        eprintln!("owner check skipped: chown needs root");
    }
}

/// A config made read-only on purpose is not replaced: the renewed token is used for this run,
/// the agent says it was not saved, and the start-up warning said why beforehand.
#[test]
fn a_read_only_config_is_not_rewritten() {
    let h = Harness::new("renew-readonly");
    h.server.expire_token();
    h.write_config();
    std::fs::set_permissions(&h.config_path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let before = std::fs::read(&h.config_path).unwrap();
    let agent = Agent::spawn(&h.config_path, LogFormat::Json, "debug");
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "no check-ins with the renewed token\n{}", agent.tail());
    assert_eq!(std::fs::read(&h.config_path).unwrap(), before, "a read-only config was rewritten");
    let renewed = agent.events_named("token_renewed");
    assert_eq!(renewed[0].v["saved"], false, "{}", agent.tail());
    assert!(
        agent.events_named("config_warning").iter().any(|e| e.str("message").contains("read-only")),
        "no warning at start about the read-only config\n{}",
        agent.tail()
    );
    let store_failed = agent.events_named("store_failed");
    assert!(store_failed.iter().any(|e| e.str("error").contains("read-only")), "{}", agent.tail());
}
