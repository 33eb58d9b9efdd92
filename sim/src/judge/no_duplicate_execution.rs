//! `no_duplicate_execution`: no agent started the same command id twice (`command_started`, the
//! event the agent's loop records after journaling a command as running). Judged from the
//! trace alone, across the agent's restarts.

use std::collections::BTreeMap;

use super::{at, summarize};
use crate::trace::Record;
use redflag_agent::log::events::Event;

pub(super) fn no_duplicate_execution(records: &[Record]) -> Result<String, String> {
    let mut runs: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    let mut recognised = 0u64;
    let mut interrupted = 0u64;
    for r in records {
        let Some(agent) = r.agent.as_deref() else { continue };
        match r.agent_event() {
            Some(Event::CommandStarted { id, .. }) => runs.entry((agent, id.as_str())).or_default().push(r.t_ms),
            Some(Event::CommandDuplicate { .. }) => recognised += 1,
            Some(Event::CommandInterrupted { .. }) => interrupted += 1,
            _ => {}
        }
    }
    let twice: Vec<String> = runs
        .iter()
        .filter(|(_, times)| times.len() > 1)
        .map(|((agent, id), times)| {
            let when: Vec<String> = times.iter().map(|t| at(*t)).collect();
            format!("{agent} ran {id} {} times ({})", times.len(), when.join(", "))
        })
        .collect();
    if !twice.is_empty() {
        return Err(summarize(twice));
    }
    Ok(format!(
        "{} command execution(s), none twice; {recognised} redelivered command(s) recognised by the journal, {interrupted} interrupted run(s) reported failed",
        runs.len()
    ))
}
