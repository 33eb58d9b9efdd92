//! `breaker_opens`: every agent's breaker opened at least once.

use super::index::TraceIndex;
use super::{at, summarize};

pub(super) fn breaker_opens(idx: &TraceIndex) -> Result<String, String> {
    let never: Vec<String> = idx.agents.iter().filter(|(_, v)| v.breaker_opened.is_empty()).map(|(n, _)| n.to_string()).collect();
    if never.is_empty() {
        let first = idx.agents.values().filter_map(|v| v.breaker_opened.first()).min().copied().unwrap_or(0);
        Ok(format!("every agent's breaker opened at least once (first at {})", at(first)))
    } else {
        Err(summarize(never.into_iter().map(|n| format!("{n}'s breaker never opened")).collect()))
    }
}
