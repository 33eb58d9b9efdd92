//! `[server]` in a scenario: the server model's finite capacity (work units per second, the
//! queue in front of the routes, what a shed request is told, the warm-up after a restart), as
//! validated data, and the capacity curve every part reads the same way ([`Capacity::rate_at`],
//! [`Capacity::work_between`], [`Capacity::finish_after`]).
//!
//! Here only the keys and the arithmetic of the curve live. The queue itself (process memory,
//! lost in a crash) is `models/server/capacity.rs`; the checks that judge a fleet against the
//! curve are in `judge/`. Without `capacity_per_second` the server is unlimited, as it always
//! was, and nothing here is used.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Limits on the keys, so a typo cannot ask for a queue of a billion requests.
pub mod limits {
    /// The most work units per second a scenario may give the server.
    pub const CAPACITY_PER_SECOND_MAX: f64 = 1_000_000.0;
    /// The longest queue a scenario may allow (requests).
    pub const QUEUE_MAX_LIMIT: u64 = 1_000_000;
    /// The longest `shed_retry_after`, and the cap on an `"auto"` one (seconds).
    pub const SHED_RETRY_AFTER_MAX_SECONDS: u64 = 3_600;
    /// The most a shed request may cost, as a share of the request's own work: refusing a
    /// request cannot cost more than doing it.
    pub const SHED_COST_MAX: f64 = 1.0;
}

/// Work units of one request: a check-in, a renewal or any other agent route costs
/// [`COST_REQUEST`], a `/health` probe [`COST_HEALTH`].
pub const COST_REQUEST: f64 = 1.0;
pub const COST_HEALTH: f64 = 0.1;
/// Capacity right after a (re)start, as a share of full strength; it ramps linearly to 1 over
/// the warm-up.
pub const WARMUP_START_SHARE: f64 = 0.1;
/// `queue_max` when the scenario gives none: this many seconds of work at full strength.
pub const QUEUE_MAX_DEFAULT_SECONDS: f64 = 2.0;
/// `shed_cost` when the scenario gives none: what answering 503 costs the server, as a share of
/// the work of the request it refuses. The same price as a `/health` probe ([`COST_HEALTH`]),
/// for the same reason: the process accepts the connection, reads and parses the request head
/// and writes a small answer, but does no authentication and no database work (RedFlag's
/// check-in validates a JWT and reads and writes PostgreSQL several times). TLS is terminated
/// in front of the server in this model; a server that pays a full TLS handshake per refused
/// connection should say more (`shed_cost = 0.3` or higher).
pub const SHED_COST_DEFAULT: f64 = 0.1;

/// The work units a request to `path` costs.
pub fn cost_of(path: &str) -> f64 {
    if path == redflag_agent::server::protocol::HEALTH_PATH { COST_HEALTH } else { COST_REQUEST }
}

/// What a shed 503 says in `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedRetryAfter {
    /// Always this many seconds.
    Seconds(u64),
    /// The time the queue needs to drain at the current rate, rounded up to whole seconds (at
    /// full strength: queue length ÷ capacity), at least 1, at most the limit above.
    Auto,
}

/// A server with finite capacity: a FIFO queue worked at `per_second` units per second (less
/// while warming up), holding at most `queue_max` waiting requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub per_second: f64,
    /// Requests waiting (not counting the one being worked on) beyond which a new one is shed.
    pub queue_max: u32,
    pub shed_retry_after: Option<ShedRetryAfter>,
    /// After every (re)start, capacity ramps from [`WARMUP_START_SHARE`] to full over this long.
    pub warmup: Duration,
    /// What refusing a request with 503 costs, as a share of the request's own work (0-1). It
    /// takes the server's time like any other work: it counts in utilization, amplification
    /// and load, and delays the requests queued behind it.
    pub shed_cost: f64,
}

impl Capacity {
    /// Units per second at `since_start` after the server process started.
    pub fn rate_at(&self, since_start: Duration) -> f64 {
        self.per_second * self.share_at(since_start.as_secs_f64())
    }

    fn share_at(&self, s: f64) -> f64 {
        let w = self.warmup.as_secs_f64();
        if w <= 0.0 || s >= w {
            return 1.0;
        }
        WARMUP_START_SHARE + (1.0 - WARMUP_START_SHARE) * (s.max(0.0) / w)
    }

    /// Work completed at full use from the start up to `s` seconds after it (the integral of
    /// the rate).
    fn cumulative(&self, s: f64) -> f64 {
        let s = s.max(0.0);
        let w = self.warmup.as_secs_f64();
        let c = self.per_second;
        if w <= 0.0 {
            return c * s;
        }
        let ramp = |x: f64| c * (WARMUP_START_SHARE * x + (1.0 - WARMUP_START_SHARE) * x * x / (2.0 * w));
        if s <= w { ramp(s) } else { ramp(w) + c * (s - w) }
    }

    /// Work the server can complete between two offsets after its start.
    pub fn work_between(&self, from: Duration, to: Duration) -> f64 {
        (self.cumulative(to.as_secs_f64()) - self.cumulative(from.as_secs_f64())).max(0.0)
    }

    /// The offset after the start at which `work` units, begun at offset `from`, are done.
    pub fn finish_after(&self, from: Duration, work: f64) -> Duration {
        let target = self.cumulative(from.as_secs_f64()) + work.max(0.0);
        let w = self.warmup.as_secs_f64();
        let c = self.per_second;
        let s = if w <= 0.0 {
            target / c
        } else if target <= self.cumulative(w) {
            // Solve c·(a·s + b·s²) = target with a = start share, b = (1 - a) / 2w.
            let a = WARMUP_START_SHARE;
            let b = (1.0 - a) / (2.0 * w);
            (-a + (a * a + 4.0 * b * target / c).sqrt()) / (2.0 * b)
        } else {
            w + (target - self.cumulative(w)) / c
        };
        // Never before `from`, whatever the rounding.
        Duration::from_secs_f64(s.max(from.as_secs_f64()))
    }
}

/// `[server]` as written: capacity keys (read here) and delivery keys (read by `commands.rs`).
/// Unknown keys are refused (with their line) by serde.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// How commands are delivered (read by `commands.rs`).
    pub(super) delivery: Option<Spanned<String>>,
    pub(super) redeliver_after: Option<Spanned<String>>,
    pub(super) commands_per_answer: Option<Spanned<i64>>,
    capacity_per_second: Option<Spanned<f64>>,
    queue_max: Option<Spanned<i64>>,
    shed_retry_after: Option<Spanned<toml::Value>>,
    warmup: Option<Spanned<String>>,
    shed_cost: Option<Spanned<f64>>,
}

/// The validated `[server]` table.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServerSettings {
    /// `None`: unlimited, today's server.
    pub capacity: Option<Capacity>,
}

impl super::Parser<'_> {
    pub(super) fn server(&self, raw: Option<&Spanned<RawServer>>, run: Duration) -> Result<ServerSettings, super::ScenarioError> {
        let Some(raw) = raw else { return Ok(ServerSettings::default()) };
        let s = raw.get_ref();
        let Some(cap) = &s.capacity_per_second else {
            // Every other key shapes a capacity; alone it would be silently ignored.
            let other = [
                ("queue_max", s.queue_max.as_ref().map(|v| v.span())),
                ("shed_retry_after", s.shed_retry_after.as_ref().map(|v| v.span())),
                ("warmup", s.warmup.as_ref().map(|v| v.span())),
                ("shed_cost", s.shed_cost.as_ref().map(|v| v.span())),
            ];
            if let Some((key, Some(span))) = other.into_iter().find(|(_, span)| span.is_some()) {
                return Err(self.at(span, format!("[server] {key} shapes a finite capacity; set capacity_per_second too (the server is unlimited without it)")));
            }
            return Ok(ServerSettings::default());
        };
        let per_second = *cap.get_ref();
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= limits::CAPACITY_PER_SECOND_MAX) {
            return Err(self.at(
                cap.span(),
                format!(
                    "[server] capacity_per_second must be a positive number of work units per second, at most {}, got {per_second}; leave it out for an unlimited server",
                    limits::CAPACITY_PER_SECOND_MAX
                ),
            ));
        }
        let queue_max = match &s.queue_max {
            None => (per_second * QUEUE_MAX_DEFAULT_SECONDS).ceil().max(1.0) as u32,
            Some(q) => match u64::try_from(*q.get_ref()) {
                Ok(n) if n <= limits::QUEUE_MAX_LIMIT => n as u32,
                _ => {
                    return Err(self.at(
                        q.span(),
                        format!("[server] queue_max must be between 0 and {} requests, got {}", limits::QUEUE_MAX_LIMIT, q.get_ref()),
                    ));
                }
            },
        };
        let shed_retry_after = match &s.shed_retry_after {
            None => None,
            Some(v) => Some(match v.get_ref() {
                toml::Value::String(t) if t.trim() == "auto" => ShedRetryAfter::Auto,
                toml::Value::Integer(n) if (0..=limits::SHED_RETRY_AFTER_MAX_SECONDS as i64).contains(n) => {
                    ShedRetryAfter::Seconds(*n as u64)
                }
                other => {
                    return Err(self.at(
                        v.span(),
                        format!(
                            "[server] shed_retry_after must be whole seconds between 0 and {} or \"auto\", got {other}",
                            limits::SHED_RETRY_AFTER_MAX_SECONDS
                        ),
                    ));
                }
            }),
        };
        let warmup = match &s.warmup {
            None => Duration::ZERO,
            Some(w) => {
                let d = self.duration(w, "[server] warmup")?;
                if d > run {
                    return Err(self.at(
                        w.span(),
                        format!(
                            "[server] warmup {:?} is longer than the run ({}); the server would never reach full strength",
                            w.get_ref(),
                            super::fmt_duration(run)
                        ),
                    ));
                }
                d
            }
        };
        let shed_cost = match &s.shed_cost {
            None => SHED_COST_DEFAULT,
            Some(c) => {
                let v = *c.get_ref();
                if !(v.is_finite() && (0.0..=limits::SHED_COST_MAX).contains(&v)) {
                    return Err(self.at(
                        c.span(),
                        format!(
                            "[server] shed_cost must be a share of one request's work between 0 and {} (0.1 is a tenth of a check-in), got {v}",
                            limits::SHED_COST_MAX
                        ),
                    ));
                }
                v
            }
        };
        Ok(ServerSettings { capacity: Some(Capacity { per_second, queue_max, shed_retry_after, warmup, shed_cost }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(per_second: f64, warmup_s: u64) -> Capacity {
        Capacity { per_second, queue_max: 10, shed_retry_after: None, warmup: Duration::from_secs(warmup_s), shed_cost: SHED_COST_DEFAULT }
    }

    #[test]
    fn the_curve_ramps_and_inverts() {
        let c = cap(100.0, 60);
        assert!((c.rate_at(Duration::ZERO) - 10.0).abs() < 1e-9);
        assert!((c.rate_at(Duration::from_secs(30)) - 55.0).abs() < 1e-9);
        assert!((c.rate_at(Duration::from_secs(90)) - 100.0).abs() < 1e-9);
        // 60 s of ramp: the mean of 10 and 100 per second.
        assert!((c.work_between(Duration::ZERO, Duration::from_secs(60)) - 3300.0).abs() < 1e-6);
        for (from, work) in [(0.0, 1.0), (5.0, 500.0), (59.0, 1000.0), (70.0, 3.0)] {
            let from = Duration::from_secs_f64(from);
            let done = c.finish_after(from, work);
            assert!((c.work_between(from, done) - work).abs() < 1e-6, "{from:?} {work}");
        }
        let flat = cap(100.0, 0);
        assert_eq!(flat.finish_after(Duration::from_secs(1), 50.0), Duration::from_millis(1500));
    }
}
