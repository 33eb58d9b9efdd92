//! The command line, run as the real binary: `check-config` on broken files (a bad value, an
//! unknown key inside `resilience`, malformed JSON, a missing file) exits non-zero with an
//! error naming the field, line or path; on a good file it exits 0 and prints the effective
//! settings without tokens; `run` refuses a broken file the same way. `status` after a run
//! prints the last successful check-in, the consecutive failures and the breaker state. Text
//! logs written to a pipe (journald, a file) carry no terminal colour codes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Writes `text` as the config file and runs `check-config` on it.
fn check_config(h: &Harness, text: &str) -> CliOutput {
    write_file(&h.config_path, text);
    h.cli(&["check-config"])
}

fn assert_refused(out: &CliOutput, must_name: &[&str]) {
    assert!(matches!(out.code, Some(c) if c != 0), "exit code {:?} for a broken config\n{out:?}", out.code);
    for what in must_name {
        assert!(out.stderr.contains(what), "the error does not name {what:?}: {}", out.stderr);
    }
}

#[test]
fn check_config_accepts_a_good_file_and_prints_the_effective_settings_without_tokens() {
    let h = Harness::new("cfg-good");
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for line in [
        "server_url",
        &h.secrets.agent_id,
        "resilience.max_retries",
        "resilience.initial_delay_seconds",
        "0.2s",
        "resilience.max_delay_minutes",
        "3s",
        "resilience.circuit_breaker_threshold",
        "resilience.request_timeout_seconds",
        "resilience.jitter",
    ] {
        assert!(out.stdout.contains(line), "{line:?} missing from:\n{}", out.stdout);
    }
    // check_in_interval 1 is legal, with a warning.
    assert!(out.stdout.contains("warning") && out.stdout.contains("check_in_interval"), "{}", out.stdout);
    for secret in h.secrets.all() {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "a token was printed:\n{}", out.stdout);
    }
}

#[test]
fn check_config_names_the_field_with_a_bad_value() {
    let mut h = Harness::new("cfg-bad-value");
    h.config["resilience"]["backoff_factor"] = json!(0.5);
    let out = check_config(&h, &serde_json::to_string_pretty(&h.config).unwrap());
    assert_refused(&out, &["resilience.backoff_factor", "0.5", h.config_path.to_str().unwrap()]);

    let mut h = Harness::new("cfg-bad-interval");
    h.config["check_in_interval"] = json!(0.5);
    let out = check_config(&h, &serde_json::to_string_pretty(&h.config).unwrap());
    assert_refused(&out, &["check_in_interval", "0.5"]);

    let mut h = Harness::new("cfg-bad-type");
    h.config["resilience"]["max_retries"] = json!("five");
    let out = check_config(&h, &serde_json::to_string_pretty(&h.config).unwrap());
    assert_refused(&out, &["resilience.max_retries"]);
}

#[test]
fn check_config_names_an_unknown_key_inside_resilience() {
    let mut h = Harness::new("cfg-unknown");
    h.config["resilience"]["max_retriez"] = json!(3);
    let out = check_config(&h, &serde_json::to_string_pretty(&h.config).unwrap());
    assert_refused(&out, &["resilience.max_retriez unknown field", "expected one of"]);
    assert!(!out.stderr.contains("max_retriez.max_retriez"), "the field is named twice: {}", out.stderr);
}

#[test]
fn check_config_gives_the_line_of_malformed_json() {
    let h = Harness::new("cfg-syntax");
    let text = "{\n  \"server_url\": \"http://127.0.0.1:1\",\n  \"agent_id\": \"a\",\n  \"token\" \"t\"\n}\n";
    let out = check_config(&h, text);
    assert_refused(&out, &["line 4", "column", h.config_path.to_str().unwrap()]);
}

#[test]
fn check_config_names_a_missing_file() {
    let h = Harness::new("cfg-missing");
    let missing = h.dir.path().join("no-such-config.json");
    let out = run_cli(&["--config", missing.to_str().unwrap(), "check-config"]);
    assert_refused(&out, &[missing.to_str().unwrap()]);
}

#[test]
fn run_refuses_a_broken_config_and_names_the_field() {
    let mut h = Harness::new("run-bad");
    h.config["resilience"]["jitter"] = json!("fulll");
    h.write_config();
    let out = h.cli(&["run"]);
    assert_refused(&out, &["resilience.jitter", "fulll"]);
    assert_eq!(h.server.requests().len(), 0, "a refused config still reached the server");
}

#[test]
fn status_shows_last_check_in_consecutive_failures_and_breaker_state_after_a_run() {
    let h = Harness::new("status");
    h.write_config();
    let before = h.cli(&["status"]);
    assert_eq!(before.code, Some(0), "{before:?}");
    assert!(before.stdout.contains("no status recorded yet"), "{}", before.stdout);

    let mut agent = Agent::spawn(&h.config_path, LogFormat::Json, "debug");
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in\n{}", agent.tail());
    // Make it fail until the breaker opens, and wait for that to reach the status file.
    h.server.set_all(Reply::Status(502));
    let field = |out: &CliOutput, name: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", out.stdout))
    };
    assert!(
        wait_until(SOON, || {
            let out = h.cli(&["status"]);
            out.code == Some(0) && out.stdout.contains("circuit breaker:") && field(&out, "circuit breaker:") == "open"
        }),
        "the status never showed an open breaker\n{}",
        agent.tail()
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some(), "the agent did not stop");

    let out = h.cli(&["status"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(field(&out, "agent:"), h.secrets.agent_id);
    let last = field(&out, "last successful check-in:");
    assert_ne!(last, "never", "{}", out.stdout);
    assert!(humantime::parse_rfc3339_weak(last.split(' ').next().unwrap()).is_ok(), "not a time: {last:?}");
    let failures: u32 = field(&out, "consecutive failures:").parse().expect("a number of failures");
    assert!(failures >= 3, "{failures} consecutive failures with a breaker that opens after 3\n{}", out.stdout);
    assert_eq!(field(&out, "circuit breaker:"), "open", "{}", out.stdout);
    assert_eq!(field(&out, "last error:"), "http_502", "{}", out.stdout);
    for secret in h.secrets.all() {
        assert!(!out.stdout.contains(secret), "status printed a token");
    }
}

#[test]
fn text_logs_to_a_pipe_carry_no_terminal_escape_codes() {
    let h = Harness::new("text-log");
    let agent = h.spawn(LogFormat::Text);
    assert!(wait_until(SOON, || agent.stderr().contains("checked in")), "no check-in logged\n{}", agent.tail());
    let stderr = agent.stderr();
    assert!(!stderr.contains('\x1b'), "ANSI escape codes in a log that is not a terminal:\n{stderr:?}");
}

// ---- hardening: levels, start-up checks, hostile config paths, secrets, insecure http -------

#[test]
fn an_invalid_log_level_is_refused_with_the_valid_ones_and_warning_means_warn() {
    let h = Harness::new("levels");
    h.write_config();
    for args in [&["--log-level", "verbose", "run"][..], &["--log-level", "verbose", "check-config"][..]] {
        let out = h.cli(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("verbose") && out.stderr.contains("error, warn"), "{args:?}: {}", out.stderr);
    }
    let out = h.cli_env(&["run"], &[("RUST_LOG", "verbose")]);
    assert_eq!(out.code, Some(2), "RUST_LOG=verbose: {out:?}");
    assert!(out.stderr.contains("RUST_LOG") && out.stderr.contains("error, warn"), "{}", out.stderr);

    // `warning` is `warn`: the config warning (1 s interval) is shown.
    let agent = Agent::spawn(&h.config_path, LogFormat::Text, "warning");
    assert!(wait_until(SOON, || agent.stderr().contains("check_in_interval")), "--log-level warning showed nothing\n{}", agent.tail());
    drop(agent);
    let agent = Agent::spawn_with(&h.config_path, LogFormat::Text, "info", |c| {
        c.env("RUST_LOG", "warning");
    });
    assert!(wait_until(SOON, || agent.stderr().contains("check_in_interval")), "RUST_LOG=warning showed nothing\n{}", agent.tail());
}

#[test]
fn a_config_error_is_always_printed_whatever_the_level() {
    let mut h = Harness::new("silent-error");
    h.config["resilience"]["jitter"] = json!("fulll");
    h.write_config();
    for (level, rust_log) in [("off", None), ("error", Some("warning")), ("info", Some("off"))] {
        let env: Vec<(&str, &str)> = rust_log.map(|r| ("RUST_LOG", r)).into_iter().collect();
        let out = h.cli_env(&["--log-level", level, "run"], &env);
        assert_eq!(out.code, Some(78), "level {level} RUST_LOG {rust_log:?}: {out:?}");
        assert!(out.stderr.contains("resilience.jitter"), "level {level} RUST_LOG {rust_log:?}: nothing printed: {out:?}");
    }
    let out = h.cli(&["--log-format", "json", "run"]);
    let line: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("one JSON line");
    assert_eq!(line["event"], "config_error", "{line}");
}

#[test]
fn check_config_checks_the_ca_file_as_run_does() {
    let mut h = Harness::new("ca-file");
    let missing = h.dir.path().join("no-such-ca.pem");
    h.config["tls"] = json!({"ca_file": missing.to_str().unwrap()});
    h.write_config();
    for cmd in ["check-config", "run"] {
        let out = h.cli(&[cmd]);
        assert_refused(&out, &["tls.ca_file", missing.to_str().unwrap()]);
    }
    let not_pem = h.dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    h.config["tls"] = json!({"ca_file": not_pem.to_str().unwrap()});
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_refused(&out, &["tls.ca_file", not_pem.to_str().unwrap()]);
}

#[test]
fn a_config_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let h = Harness::new("fifo");
    let fifo = h.dir.path().join("config.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, kind) in [(fifo.to_str().unwrap(), "FIFO"), ("/dev/zero", "character device")] {
        for cmd in ["check-config", "run"] {
            // run_cli gives up (and fails the test) after 30 s: a blocked read would.
            let out = run_cli(&["--config", path, cmd]);
            assert_refused(&out, &[path, kind, "not a regular file"]);
        }
    }
}

#[test]
fn check_config_never_prints_a_password_or_a_token() {
    let mut h = Harness::new("cfg-secrets");
    let port = h.server.port();
    h.config["server_url"] = json!(format!("http://operator:PASSWORD-URL@127.0.0.1:{port}"));
    h.config["proxy"] = json!({"enabled": true, "http": "http://u:PASSWORD-PROXY@127.0.0.1:3128", "https": "http://u:PASSWORD-PROXY2@127.0.0.1:3128"});
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("PASSWORD") && !out.stderr.contains("PASSWORD"), "a password was printed:\n{}", out.stdout);
    // The URL's credentials are not used at all (never sent): stripped, with a warning.
    assert!(!out.stdout.contains("operator:") && out.stdout.contains(&format!("http://127.0.0.1:{port}")), "{}", out.stdout);
    assert!(out.stdout.contains("server_url carries a user name (\"operator\") and a password"), "{}", out.stdout);
    assert!(out.stdout.contains("u:[redacted]@127.0.0.1:3128"), "{}", out.stdout);

    h.config["token"] = json!(123456789987654321u64);
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_refused(&out, &["token must be a string"]);
    assert!(!out.stderr.contains("123456789987654321"), "a numeric token was echoed: {}", out.stderr);
}

/// Sends every request of the agent to the stand-in as its HTTP proxy, so that a `server_url`
/// off loopback is tried without a packet leaving this machine.
fn through_the_stand_in_as_proxy(h: &mut Harness) {
    h.config["proxy"] = json!({"enabled": true, "http": h.server.url()});
}

#[test]
fn plain_http_to_a_public_address_is_refused_unless_allowed_and_then_warned_about() {
    let mut h = Harness::new("insecure");
    h.config["server_url"] = json!("http://192.0.2.10:8080");
    through_the_stand_in_as_proxy(&mut h);
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_refused(&out, &["server_url", "https://", "allow_insecure_http", "private IP address"]);
    let out = h.cli(&["run"]);
    assert_eq!(out.code, Some(78), "{out:?}");
    for name in ["http://redflag.example.com:8080", "http://[2001:db8::10]:8080"] {
        h.config["server_url"] = json!(name);
        h.write_config();
        assert_refused(&h.cli(&["check-config"]), &["server_url", "allow_insecure_http"]);
    }

    h.config["server_url"] = json!("http://192.0.2.10:8080");
    h.config["allow_insecure_http"] = json!(true);
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("warning: INSECURE") && out.stdout.contains("use https://"), "{}", out.stdout);
    let agent = Agent::spawn(&h.config_path, LogFormat::Json, "info");
    assert!(
        wait_until(SOON, || agent.events_named("config_warning").iter().any(|e| e.str("message").contains("INSECURE"))),
        "no warning at start\n{}",
        agent.tail()
    );
}

/// RedFlag's documented deployment is `http://IP:8080` on a LAN: plain http to a private
/// (RFC 1918, fc00::/7) or link-local address starts without `allow_insecure_http`, with an
/// `INSECURE` warning in `check-config` and at every start. The agent's requests go to the
/// stand-in as its proxy, so nothing is sent to the private address itself.
#[test]
fn plain_http_to_a_private_or_link_local_address_runs_with_a_warning() {
    let mut h = Harness::new("private-http");
    for (url, scope) in [
        ("http://[fd00:10::5]:8080", "a private address"),
        ("http://169.254.10.10:8080", "a link-local address"),
        ("http://10.1.2.3:8080", "a private address"),
    ] {
        h.config["server_url"] = json!(url);
        h.write_config();
        let out = h.cli(&["check-config"]);
        assert_eq!(out.code, Some(0), "{url}: {out:?}");
        assert!(out.stdout.contains("warning: INSECURE") && out.stdout.contains(scope), "{url}: {}", out.stdout);
    }

    h.config["server_url"] = json!("http://192.168.77.10:8080");
    through_the_stand_in_as_proxy(&mut h);
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("warning: INSECURE: server_url is plain http:// to 192.168.77.10, a private address"), "{}", out.stdout);
    for start in 1..=2 {
        let since = std::time::Instant::now();
        let mut agent = Agent::spawn(&h.config_path, LogFormat::Json, "info");
        assert!(
            wait_until(SOON, || h.server.successful_checkins_since(Some(since)) >= 1),
            "start {start}: no check-in through the proxy\n{}",
            agent.tail()
        );
        let warned = agent.events_named("config_warning");
        assert!(
            warned.iter().any(|e| e.str("level") == "WARN" && e.str("message").contains("INSECURE") && e.str("message").contains("192.168.77.10")),
            "start {start}: no INSECURE warning: {warned:?}\n{}",
            agent.tail()
        );
        agent.signal(libc::SIGTERM);
        assert!(agent.wait_exit(SOON).is_some_and(|s| s.success()), "start {start}: {}", agent.tail());
    }
    let sent = h.server.requests();
    assert!(sent.iter().all(|r| r.target.starts_with("http://192.168.77.10:8080/")), "{:?}", sent.iter().map(|r| &r.target).collect::<Vec<_>>());
}

/// `/etc/aggregator/config.json` exactly as RedFlag 0.1.18's Go agent wrote it (its real file:
/// `fixtures/go-agent-config.json`: Go durations in nanoseconds in `network`, Go's zero time in
/// `rapid_polling_until`, `logging`, a used `registration_token`; and the variant with `tags`,
/// `display_name` and `organization`) is valid as it stands, and runs with only the server,
/// agent id and tokens of this test's stand-in put in and a `state_dir` of its own (the
/// default is `/var/lib/redflag-agent`).
#[test]
fn a_config_the_go_agent_wrote_runs_unchanged() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["go-agent-config.json", "go-agent-config-flags.json"] {
        let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
        let h = Harness::new("go-config");
        // As it stands: valid, with the Go agent's keys listed for what they are.
        let out = check_config(&h, &text);
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
        for shown in ["network.timeout (Go agent)", "30s, not used", "registration_token (Go agent)"] {
            assert!(out.stdout.contains(shown), "{name}: {shown:?} missing:\n{}", out.stdout);
        }
        let go: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(!out.stdout.contains(go["registration_token"].as_str().unwrap()), "{name}: the registration token was printed");

        // Running: the stand-in's address and credentials, everything else the Go agent's.
        let mut config = go.clone();
        config["server_url"] = json!(h.server.url());
        config["agent_id"] = json!(h.secrets.agent_id);
        config["token"] = json!(h.secrets.token);
        config["refresh_token"] = json!(h.secrets.refresh_token);
        config["state_dir"] = json!(h.state_dir);
        let written = serde_json::to_string_pretty(&config).unwrap();
        let out = check_config(&h, &written);
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
        assert!(!out.stdout.contains("warning:"), "{name}: warnings for a Go-written file:\n{}", out.stdout);
        let agent = Agent::spawn(&h.config_path, LogFormat::Json, "info");
        assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "{name}: no check-in\n{}", agent.tail());
        assert!(agent.events_named("config_warning").is_empty(), "{name}: {}", agent.tail());
        assert_eq!(std::fs::read_to_string(&h.config_path).unwrap(), written, "{name}: the file was changed");
    }
}

#[test]
fn delays_below_the_floors_are_refused_and_short_ones_warned_with_their_rate() {
    let mut h = Harness::new("floors");
    h.config["resilience"]["initial_delay_seconds"] = json!(0.001);
    h.write_config();
    assert_refused(&h.cli(&["check-config"]), &["resilience.initial_delay_seconds", "0.1"]);
    h.config["resilience"]["initial_delay_seconds"] = json!(0.2);
    for key in ["max_delay_minutes", "circuit_breaker_timeout_minutes"] {
        let mut h2 = Harness::new("floors2");
        h2.config = h.config.clone();
        h2.config["resilience"][key] = json!(0.001 / 60.0);
        h2.write_config();
        assert_refused(&h2.cli(&["check-config"]), &[key, "at least 1 s"]);
    }
    // The harness's own short settings (3 s) are valid, with the rate they imply.
    h.write_config();
    let out = h.cli(&["check-config"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("outage request rate") && out.stdout.contains("one attempt every 3s"), "{}", out.stdout);
    assert!(out.stdout.contains("warning: short waits"), "{}", out.stdout);
}

#[test]
fn a_config_starting_with_a_byte_order_mark_is_accepted() {
    let h = Harness::new("bom");
    let text = format!("\u{feff}{}", serde_json::to_string_pretty(&h.config).unwrap());
    let out = check_config(&h, &text);
    assert_eq!(out.code, Some(0), "{out:?}");
    let agent = Agent::spawn(&h.config_path, LogFormat::Json, "debug");
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "{}", agent.tail());
}

/// `--version` (and `-V`) names this build and the RedFlag agent API it speaks, needs no config
/// and exits 0: what an operator checks after installing the package.
#[test]
fn version_names_the_build_and_the_redflag_api() {
    for flag in ["--version", "-V"] {
        let out = run_cli(&["--config", "/nonexistent/config.json", flag]);
        assert_eq!(out.code, Some(0), "{flag}: {out:?}");
        let line = out.stdout.trim();
        assert!(line.starts_with(&format!("redflag-agent {}", env!("CARGO_PKG_VERSION"))), "{flag}: {line}");
        assert!(line.contains("RedFlag agent API 0.1.18"), "{flag}: {line}");
    }
}
