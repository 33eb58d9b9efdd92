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
    /// `default` with every random spread removed (each draw at the middle of its range).
    NoJitter,
    /// The AWS SDKs' standard retry mode, as before November 2026.
    AwsStandard,
    /// The AWS SDKs' standard retry mode as updated in 2026 (`AWS_NEW_RETRIES_2026`).
    AwsStandard2026,
    /// A gRPC channel: connection backoff for connection failures, no retry policy.
    Grpc,
    /// A gRPC channel with gRFC A6's retry policy and retry throttling.
    GrpcRetry,
}

impl StrategyName {
    /// Every strategy, `default` first: the order of `compare --strategies all`.
    pub const ALL: [StrategyName; 8] = [
        StrategyName::Default,
        StrategyName::Redflag0118,
        StrategyName::SeedP4001,
        StrategyName::NoJitter,
        StrategyName::AwsStandard,
        StrategyName::AwsStandard2026,
        StrategyName::Grpc,
        StrategyName::GrpcRetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Default => "default",
            StrategyName::Redflag0118 => "redflag-0.1.18",
            StrategyName::SeedP4001 => "seed-p4-001",
            StrategyName::NoJitter => "no-jitter",
            StrategyName::AwsStandard => "aws-standard",
            StrategyName::AwsStandard2026 => "aws-standard-2026",
            StrategyName::Grpc => "grpc",
            StrategyName::GrpcRetry => "grpc-retry",
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

impl serde::Serialize for StrategyName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
