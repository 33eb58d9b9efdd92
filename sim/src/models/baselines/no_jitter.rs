//! `no-jitter`: the production policy with `jitter = "none"`: the same backoff, breaker, bursts
//! and Retry-After, but every agent that failed at the same moment retries at the same moment.
//! It isolates what jitter buys a fleet (compare it with `default` on `thundering-herd`).

use redflag_agent::resilience::{BackoffConfig, Jitter, Policy, PolicyConfig};

pub(super) fn build(config: &PolicyConfig) -> Policy {
    Policy::new(PolicyConfig { backoff: BackoffConfig { jitter: Jitter::None, ..config.backoff }, ..*config })
}
