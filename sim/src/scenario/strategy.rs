//! `[agent] strategy`: which decision-maker a scenario's agents run. `default` is the production
//! agent's own policy; the others are baselines, models of other systems' retry behaviour, built
//! in `models/baselines/`. Only the names live here, so the scenario can be validated and the
//! command line can list them without knowing how each one behaves.

use std::fmt;

/// A retry strategy by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum StrategyName {
    /// The production `Policy` with the scenario's `[agent]` config.
    #[default]
    Default,
    /// RedFlag 0.1.18's agent: a 0-29 s sleep before every check-in, one interval after any error.
    Redflag0118,
    /// The seed document's Go snippets, as written.
    SeedP4001,
    /// `default` with `jitter = "none"`.
    NoJitter,
    /// The AWS SDKs' standard retry mode.
    AwsStandard,
    /// gRPC's connection backoff.
    Grpc,
}

impl StrategyName {
    /// Every strategy, `default` first: the order of `compare --strategies all`.
    pub const ALL: [StrategyName; 6] = [
        StrategyName::Default,
        StrategyName::Redflag0118,
        StrategyName::SeedP4001,
        StrategyName::NoJitter,
        StrategyName::AwsStandard,
        StrategyName::Grpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Default => "default",
            StrategyName::Redflag0118 => "redflag-0.1.18",
            StrategyName::SeedP4001 => "seed-p4-001",
            StrategyName::NoJitter => "no-jitter",
            StrategyName::AwsStandard => "aws-standard",
            StrategyName::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Option<StrategyName> {
        StrategyName::ALL.into_iter().find(|n| n.as_str() == s.trim())
    }

    /// `default, redflag-0.1.18, ...`, for error messages.
    pub fn list() -> String {
        StrategyName::ALL.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
