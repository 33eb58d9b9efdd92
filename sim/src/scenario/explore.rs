//! The `[explore]` table: a *space* of fault schedules instead of (or besides) fixed
//! `[[faults]]`, for `redflag-sim explore` to draw from.
//!
//! ```toml
//! [explore]
//! faults = "1..5"                  # faults per schedule (inclusive)
//! actions = ["crash", "partition", "loss", "latency", "http_status", "slow"]
//! targets = ["server", "proxy", "agents"]   # optional; default: every target each action allows
//! duration = "5s..10m"             # each fault's duration
//! ```
//!
//! This file only reads and checks the table into an [`ExploreSpace`]; drawing schedules from it
//! and shrinking them is `explore/`. Errors name the file, the line and the key, like the rest
//! of the schema: an empty or reversed range, an unknown action or target, an action none of
//! the listed targets allows, a fault duration that leaves no time to recover before the run
//! ends.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ACTIONS, Check, Expectation, Fleet, Parser, ScenarioError, Target, fmt_duration};
use redflag_agent::config::Config;

/// Most faults one explored schedule may hold.
pub const EXPLORE_FAULTS_MAX: u32 = 50;

/// The targets an action can hit, as `redflag-sim explore` uses it (network faults take the
/// proxy as their peer, or the server when the proxy is the target).
pub fn targets_allowed(action: &str, fleet: &Fleet) -> Vec<Target> {
    let mut every = vec![Target::Server, Target::Proxy, Target::Agents];
    if fleet.hosts > 1 {
        every.extend((0..fleet.hosts).map(Target::AgentHost));
    }
    match action {
        "crash" | "restart" | "partition" | "latency" | "loss" => every,
        "http_status" => vec![Target::Server, Target::Proxy],
        _ => vec![Target::Server],
    }
}

/// One action the explorer may draw, with the targets it may hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ExploreAction {
    pub name: &'static str,
    pub targets: Vec<Target>,
}

/// The validated `[explore]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExploreSpace {
    /// The line of `[explore]`.
    pub line: usize,
    /// Faults per schedule, inclusive.
    pub faults: RangeInclusive<u32>,
    pub actions: Vec<ExploreAction>,
    /// Each fault's duration, inclusive (instant actions have none).
    pub duration_min: Duration,
    pub duration_max: Duration,
    /// Time left after each fault for the agents to recover before the run ends.
    pub settle: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExplore {
    faults: Spanned<String>,
    actions: Spanned<Vec<Spanned<String>>>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    duration: Spanned<String>,
}

/// How long an explored schedule leaves after each fault before the run ends: the longest
/// recovery the agents' config allows (the attempt in flight, the longest wait, a health probe
/// and a check-in), or the scenario's own `recovers_within` if longer.
pub fn settle_time(config: &Config, expect: &[Expectation]) -> Duration {
    let own = config.policy().max_wait() + config.resilience.request_timeout * 3;
    expect
        .iter()
        .filter_map(|e| match e.check {
            Check::RecoversWithin { within } => Some(within),
            _ => None,
        })
        .fold(own, Duration::max)
}

impl Parser<'_> {
    /// `"A..B"`, inclusive, with `parse` reading each end. `what` names the key in messages.
    fn explore_range<T: PartialOrd + Copy>(
        &self,
        raw: &Spanned<String>,
        what: &str,
        example: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<(T, T), ScenarioError> {
        let text = raw.get_ref().trim();
        let bad = || self.at(raw.span(), format!("[explore] {what} {text:?} is not a range; write it like {example} (both ends included)"));
        let (a, b) = text.split_once("..").ok_or_else(bad)?;
        let b = b.strip_prefix('=').unwrap_or(b);
        let (lo, hi) = (parse(a.trim()).ok_or_else(bad)?, parse(b.trim()).ok_or_else(bad)?);
        if lo > hi {
            return Err(self.at(raw.span(), format!("[explore] {what} {text:?} is reversed: its start is above its end, so it is empty; write it like {example}")));
        }
        Ok((lo, hi))
    }

    pub(super) fn explore(
        &self,
        raw: &Spanned<RawExplore>,
        fleet: &Fleet,
        run: Duration,
        settle: Duration,
    ) -> Result<ExploreSpace, ScenarioError> {
        let e = raw.get_ref();
        let line = self.line_of(raw.span().start);
        let (fmin, fmax) = self.explore_range(&e.faults, "faults", "\"1..5\"", |s| s.parse::<u32>().ok())?;
        if fmax > EXPLORE_FAULTS_MAX {
            return Err(self.at(e.faults.span(), format!("[explore] faults allows at most {EXPLORE_FAULTS_MAX} faults per schedule, got {fmax}")));
        }
        if fmax == 0 {
            return Err(self.at(e.faults.span(), "[explore] faults \"0..0\" draws no fault at all; ask for at least one, like \"1..5\""));
        }
        let (dmin, dmax) =
            self.explore_range(&e.duration, "duration", "\"5s..10m\"", |s| humantime::parse_duration(s).ok())?;
        if dmin.is_zero() {
            return Err(self.at(e.duration.span(), "[explore] duration must start above zero, like \"5s..10m\""));
        }
        if dmin + settle >= run {
            return Err(self.at(
                e.duration.span(),
                format!(
                    "[explore] duration: the shortest fault ({}) plus the {} the agents need to recover leaves no room in a {} run; lengthen the run or shorten the faults",
                    fmt_duration(dmin),
                    fmt_duration(settle),
                    fmt_duration(run)
                ),
            ));
        }

        let listed: Option<Vec<(Target, &Spanned<String>)>> = match &e.targets {
            None => None,
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.at(list.span(), "[explore] targets is empty; leave it out to let every action hit every target it allows"));
                }
                Some(list.get_ref().iter().map(|t| Ok((self.target(t, fleet, "[explore] target")?, t))).collect::<Result<_, ScenarioError>>()?)
            }
        };
        if e.actions.get_ref().is_empty() {
            return Err(self.at(e.actions.span(), "[explore] actions is empty; list the actions to draw, like [\"crash\", \"partition\"]"));
        }
        let mut actions: Vec<ExploreAction> = Vec::new();
        for a in e.actions.get_ref() {
            let name = a.get_ref().trim();
            let Some(&known) = ACTIONS.iter().find(|k| **k == name) else {
                return Err(self.at(a.span(), format!("[explore] unknown action {name:?}; expected one of: {}", ACTIONS.join(", "))));
            };
            if actions.iter().any(|x| x.name == known) {
                return Err(self.at(a.span(), format!("[explore] action {name:?} is listed twice")));
            }
            let allowed = targets_allowed(known, fleet);
            let targets: Vec<Target> = match &listed {
                None => allowed.clone(),
                Some(list) => list.iter().map(|(t, _)| *t).filter(|t| allowed.contains(t)).collect(),
            };
            if targets.is_empty() {
                let span = e.targets.as_ref().map_or(a.span(), |t| t.span());
                let allowed: Vec<String> = allowed.iter().map(|t| format!("{:?}", t.to_string())).collect();
                return Err(self.at(
                    span,
                    format!("[explore] action {name:?} does not allow any of the listed targets: it takes only {}", allowed.join(", ")),
                ));
            }
            actions.push(ExploreAction { name: known, targets });
        }
        // A listed target no action can hit is a mistake too.
        if let Some(list) = &listed {
            for (t, span) in list {
                if !actions.iter().any(|a| a.targets.contains(t)) {
                    return Err(self.at(span.span(), format!("[explore] target \"{t}\" is allowed by none of the listed actions")));
                }
            }
        }
        Ok(ExploreSpace { line, faults: fmin..=fmax, actions, duration_min: dmin, duration_max: dmax, settle })
    }
}
