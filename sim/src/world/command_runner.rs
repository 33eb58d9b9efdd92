//! How a simulated agent host runs commands: [`SimRunner`], the simulation's
//! `redflag_agent::commands::runner::CommandRunner`.
//!
//! Every command type "executes" for the scenario's `[workload] execution_time` of simulated
//! time and succeeds; `enable_heartbeat` and `disable_heartbeat` also switch rapid polling, as
//! the production runner does. The agent's loop records each execution in the trace
//! (`command_started`, `command_finished`), so the checks judge executions from the trace alone,
//! in simulation and live alike. Process memory only: a crash of the host drops a command
//! mid-run, which is exactly what `agent-crash-mid-command` is about.

use std::time::Duration;

use redflag_agent::commands::kinds::{self, Action};
use redflag_agent::server::protocol::Command;
use redflag_agent::commands::runner::{CommandRunner, Execution};

/// Runs every command in simulated time.
#[derive(Debug, Clone, Copy)]
pub struct SimRunner {
    pub execution_time: Duration,
}

impl CommandRunner for SimRunner {
    async fn run(&mut self, command: &Command) -> Execution {
        tokio::time::sleep(self.execution_time).await;
        let effect = match kinds::decide(command) {
            Action::Skip { .. } => None,
            action => Some(action),
        };
        Execution::success(format!("simulated {} ({} ms)", command.kind, self.execution_time.as_millis()), effect)
    }
}
