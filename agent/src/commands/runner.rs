//! Running commands: the [`CommandRunner`] trait the check-in loop runs every command through,
//! and [`ProductionRunner`], the one this agent ships.
//!
//! The loop owns the bookkeeping (journal before, outbox after, never twice); a runner only
//! runs one command and says how it went. Every command gets a result: none is silently
//! skipped, because the server waits for one.
//!
//! * [`ProductionRunner`] runs the two command types that concern the check-in loop itself,
//!   `enable_heartbeat` and `disable_heartbeat` (rapid polling; see `kinds.rs`), and answers
//!   every other type (`scan_updates`, `install_updates`, `reboot`, ...) with a `failed` result
//!   saying this agent does not implement it.
//! * The simulation's runner (in `redflag-sim`) "executes" every type in simulated time.
//!
//! **Test hook.** The environment variable [`TEST_COMMAND_DELAY_ENV`]
//! (`REDFLAG_AGENT_TEST_COMMAND_DELAY_MS`, milliseconds, at most [`TEST_COMMAND_DELAY_MAX`])
//! makes the production runner wait that long before it runs each command, so that the live
//! chaos harness can kill a real agent in the middle of a command. It is for tests only; the
//! agent logs a warning at start-up when it is set.

use std::future::Future;
use std::time::Duration;

use crate::commands::kinds::{self, Action};
use crate::server::protocol::{Command, RESULT_FAILED, RESULT_SUCCESS};

/// The test-only execution delay, in milliseconds (see the module comment).
pub const TEST_COMMAND_DELAY_ENV: &str = "REDFLAG_AGENT_TEST_COMMAND_DELAY_MS";
/// The longest test delay accepted.
pub const TEST_COMMAND_DELAY_MAX: Duration = Duration::from_secs(600);

/// How one command went.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// `success` or `failed` (RedFlag's result values).
    pub result: &'static str,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i64,
    /// What the loop itself must change (rapid polling), if anything.
    pub effect: Option<Action>,
}

impl Execution {
    pub fn success(stdout: impl Into<String>, effect: Option<Action>) -> Self {
        Execution { result: RESULT_SUCCESS, stdout: stdout.into(), stderr: String::new(), exit_code: 0, effect }
    }

    pub fn failed(stderr: impl Into<String>) -> Self {
        Execution { result: RESULT_FAILED, stdout: String::new(), stderr: stderr.into(), exit_code: 1, effect: None }
    }
}

/// Runs one command. The loop calls it only after the command is journaled as `running`, and
/// may drop the future (shutdown): a command cut short that way is reported as interrupted at
/// the next start, never run again.
pub trait CommandRunner {
    fn run(&mut self, command: &Command) -> impl Future<Output = Execution>;
}

/// The production runner (see the module comment).
#[derive(Debug, Clone, Default)]
pub struct ProductionRunner {
    /// The test-only delay before each command.
    pub test_delay: Duration,
}

impl ProductionRunner {
    /// The production runner, with the test delay from [`TEST_COMMAND_DELAY_ENV`] if set. `Err`
    /// names the variable and says what it takes.
    pub fn from_env() -> Result<ProductionRunner, String> {
        match std::env::var(TEST_COMMAND_DELAY_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(ProductionRunner::default()),
            Err(e) => Err(format!("{TEST_COMMAND_DELAY_ENV}: {e}")),
            Ok(text) => Ok(ProductionRunner { test_delay: parse_test_delay(&text)? }),
        }
    }
}

/// Parses [`TEST_COMMAND_DELAY_ENV`]'s value.
pub fn parse_test_delay(text: &str) -> Result<Duration, String> {
    let max_ms = TEST_COMMAND_DELAY_MAX.as_millis();
    match text.trim().parse::<u64>() {
        Ok(ms) if u128::from(ms) <= max_ms => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{TEST_COMMAND_DELAY_ENV}={text:?}: expected whole milliseconds from 0 to {max_ms} (a test-only delay before each command)")),
    }
}

impl CommandRunner for ProductionRunner {
    async fn run(&mut self, command: &Command) -> Execution {
        if !self.test_delay.is_zero() {
            tokio::time::sleep(self.test_delay).await;
        }
        match kinds::decide(command) {
            Action::RapidPolling(window) => {
                Execution::success(format!("rapid polling on for {}s", window.as_secs()), Some(Action::RapidPolling(window)))
            }
            Action::StopRapidPolling => Execution::success("rapid polling off", Some(Action::StopRapidPolling)),
            Action::Skip { reason } => Execution::failed(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(kind: &str) -> Command {
        Command { id: "c".into(), kind: kind.into(), params: json!({"duration_minutes": 1}) }
    }

    #[tokio::test]
    async fn heartbeats_run_and_everything_else_fails_with_a_reason() {
        let mut r = ProductionRunner::default();
        let e = r.run(&cmd("enable_heartbeat")).await;
        assert_eq!((e.result, e.effect), (RESULT_SUCCESS, Some(Action::RapidPolling(Duration::from_secs(60)))));
        assert_eq!(r.run(&cmd("disable_heartbeat")).await.effect, Some(Action::StopRapidPolling));
        for kind in ["scan_updates", "install_updates", "reboot", "made_up"] {
            let e = r.run(&cmd(kind)).await;
            assert_eq!(e.result, RESULT_FAILED, "{kind}");
            assert!(e.stderr.contains("not implemented by this agent") && e.stderr.contains(kind), "{}", e.stderr);
            assert_eq!(e.effect, None);
        }
    }

    #[test]
    fn the_test_delay_is_bounded_and_explained() {
        assert_eq!(parse_test_delay("1500").unwrap(), Duration::from_millis(1500));
        for bad in ["-1", "1.5", "soon", "600001"] {
            let e = parse_test_delay(bad).unwrap_err();
            assert!(e.contains(TEST_COMMAND_DELAY_ENV) && e.contains("milliseconds"), "{e}");
        }
    }
}
