//! Shrinking a failing schedule to a minimal one that still fails the *same* check.
//!
//! Greedy and deterministic: from the current schedule, try every smaller candidate in a fixed
//! order, take the first one that still fails the same check, and start again from it; stop
//! when no candidate fails (a local minimum) or the run budget is spent. Candidates, in order:
//!
//! 1. one fault fewer (each fault in turn);
//! 2. fewer agents (half, then one fewer) and fewer hosts (half, then one fewer);
//! 3. a shorter fault (half its duration, then three quarters);
//! 4. a milder fault: half the loss rate, delay or Retry-After, no Retry-After, a one-way
//!    partition instead of a two-way one, a `/health` that answers 503 instead of hanging;
//! 5. a shorter run (ending `settle` after the last fault).
//!
//! Candidates are run `jobs` at a time; the first failing one *in order* is taken, so the
//! result does not depend on the number of threads.

use std::time::Duration;

use super::schedule::{DELAY_MIN, LOSS_RATE_MIN, Schedule};
use super::{Base, CheckId, Found};
use crate::scenario::{Action, Direction, Target, fmt_duration};

/// The shortest a fault is shrunk to.
const DURATION_MIN: Duration = Duration::from_secs(1);

/// What shrinking produced.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub schedule: Schedule,
    /// Each accepted step, in words.
    pub steps: Vec<String>,
    /// Simulations run while shrinking.
    pub runs: u32,
    /// The run budget ran out before a local minimum was reached.
    pub budget_spent: bool,
}

fn halve(d: Duration) -> Duration {
    if d >= Duration::from_secs(2) { Duration::from_secs(d.as_secs() / 2) } else { Duration::from_millis(d.as_millis() as u64 / 2) }
}

fn three_quarters(d: Duration) -> Duration {
    if d >= Duration::from_secs(4) { Duration::from_secs(d.as_secs() * 3 / 4) } else { Duration::from_millis(d.as_millis() as u64 * 3 / 4) }
}

/// Whether every fault's target still exists with `hosts` agent hosts.
fn targets_exist(s: &Schedule, hosts: u32) -> bool {
    s.faults.iter().all(|f| {
        let peer = match &f.action {
            Action::Partition { peer, .. } | Action::Latency { peer, .. } | Action::Loss { peer, .. } => Some(*peer),
            _ => None,
        };
        [Some(f.target), peer].into_iter().flatten().all(|t| !matches!(t, Target::AgentHost(h) if h >= hosts))
    })
}

/// Milder versions of one fault's action, with what changed.
fn milder(action: &Action) -> Vec<(Action, String)> {
    let mut out = Vec::new();
    match action {
        Action::Loss { peer, rate } if rate / 2.0 >= LOSS_RATE_MIN => {
            let r = (rate / 2.0 * 100.0).round() / 100.0;
            out.push((Action::Loss { peer: *peer, rate: r }, format!("loss rate {rate} -> {r}")));
        }
        Action::Latency { peer, delay } if halve(*delay) >= DELAY_MIN => {
            out.push((Action::Latency { peer: *peer, delay: halve(*delay) }, format!("latency {} -> {}", fmt_duration(*delay), fmt_duration(halve(*delay)))));
        }
        Action::Slow { delay } if halve(*delay) >= DELAY_MIN => {
            out.push((Action::Slow { delay: halve(*delay) }, format!("slow {} -> {}", fmt_duration(*delay), fmt_duration(halve(*delay)))));
        }
        Action::HttpStatus { status, retry_after_seconds: Some(s) } => {
            out.push((Action::HttpStatus { status: *status, retry_after_seconds: None }, format!("no Retry-After (was {s}s)")));
            if *s >= 2 {
                out.push((Action::HttpStatus { status: *status, retry_after_seconds: Some(s / 2) }, format!("Retry-After {s}s -> {}s", s / 2)));
            }
        }
        Action::Partition { peer, direction: Direction::Both } => {
            out.push((Action::Partition { peer: *peer, direction: Direction::To }, "partition both ways -> one way (to)".into()));
            out.push((Action::Partition { peer: *peer, direction: Direction::From }, "partition both ways -> one way (from)".into()));
        }
        Action::BrokenRoute { route, status: None, delay: None } => {
            let milder = Action::BrokenRoute { route: *route, status: Some(503), delay: None };
            out.push((milder, format!("{} hangs -> answers 503", route.name())));
        }
        Action::BrokenRoute { route, status, delay: Some(d) } if halve(*d) >= DELAY_MIN => {
            let milder = Action::BrokenRoute { route: *route, status: *status, delay: Some(halve(*d)) };
            out.push((milder, format!("{} delay {} -> {}", route.name(), fmt_duration(*d), fmt_duration(halve(*d)))));
        }
        _ => {}
    }
    out
}

/// Every smaller schedule to try, in order, with a description of the step.
pub fn candidates(s: &Schedule, settle: Duration) -> Vec<(Schedule, String)> {
    let mut out = Vec::new();
    for i in 0..s.faults.len() {
        let mut c = s.clone();
        let gone = c.faults.remove(i);
        out.push((c, format!("removed {}", gone.describe())));
    }
    let mut fleet = |agents: u32, hosts: u32, what: String| {
        let hosts = hosts.min(agents).max(1);
        if (agents, hosts) != (s.agents, s.hosts) && agents >= 1 && targets_exist(s, hosts) {
            out.push((Schedule { agents, hosts, ..s.clone() }, what));
        }
    };
    if s.agents > 1 {
        fleet(s.agents / 2, s.hosts, format!("agents {} -> {}", s.agents, s.agents / 2));
        fleet(s.agents - 1, s.hosts, format!("agents {} -> {}", s.agents, s.agents - 1));
    }
    if s.hosts > 1 {
        fleet(s.agents, s.hosts / 2, format!("hosts {} -> {}", s.hosts, s.hosts / 2));
        fleet(s.agents, s.hosts - 1, format!("hosts {} -> {}", s.hosts, s.hosts - 1));
    }
    for (i, f) in s.faults.iter().enumerate() {
        let Some(d) = f.duration else { continue };
        for shorter in [halve(d), three_quarters(d)] {
            if shorter >= DURATION_MIN && shorter < d {
                let mut c = s.clone();
                c.faults[i].duration = Some(shorter);
                out.push((c, format!("{}: duration {} -> {}", f.describe(), fmt_duration(d), fmt_duration(shorter))));
            }
        }
    }
    for (i, f) in s.faults.iter().enumerate() {
        for (action, what) in milder(&f.action) {
            let mut c = s.clone();
            c.faults[i].action = action;
            out.push((c, format!("{}: {what}", f.describe())));
        }
    }
    let last_end = s.faults.iter().map(|f| f.end()).max().unwrap_or_default();
    let shorter_run = Duration::from_secs((last_end + settle).as_secs() + 1);
    if shorter_run < s.run {
        out.push((Schedule { run: shorter_run, ..s.clone() }, format!("run {} -> {}", fmt_duration(s.run), fmt_duration(shorter_run))));
    }
    out
}

/// Shrinks `found` while it still fails `target`, running at most `runs_max` simulations.
/// `progress(runs, steps)` is called after each batch.
pub fn shrink(
    base: &Base,
    found: &Found,
    target: &CheckId,
    jobs: usize,
    runs_max: u32,
    progress: &(dyn Fn(u32, usize) + Sync),
) -> Result<Shrunk, String> {
    let mut current = found.schedule.clone();
    let mut steps = Vec::new();
    let mut runs = 0u32;
    let settle = base.space.settle;
    'outer: loop {
        let all = candidates(&current, settle);
        for batch in all.chunks(jobs.max(1)) {
            if runs >= runs_max {
                return Ok(Shrunk { schedule: current, steps, runs, budget_spent: true });
            }
            let batch = &batch[..batch.len().min((runs_max - runs) as usize)];
            let results: Vec<Result<bool, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|(c, _)| scope.spawn(move || base.run(c, found.run_seed).map(|r| target.failed_in(&r.verdicts))))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a shrinking run panicked".into()))).collect()
            });
            runs += batch.len() as u32;
            for ((candidate, what), failed) in batch.iter().zip(results) {
                if failed? {
                    current = candidate.clone();
                    steps.push(what.clone());
                    progress(runs, steps.len());
                    continue 'outer;
                }
            }
            progress(runs, steps.len());
        }
        return Ok(Shrunk { schedule: current, steps, runs, budget_spent: false });
    }
}
