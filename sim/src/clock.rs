//! Time for the harness's own models (server, proxy, trace), in both worlds.
//!
//! Inside a turmoil simulation these read turmoil's virtual clock (the run's fixed epoch plus
//! simulated time), so traces and token expiries are identical for the same seed. Outside a
//! simulation (the live chaos mode, where the same models run on real sockets) they read the
//! system clock. Scheduling always uses `tokio::time`, which turmoil virtualises by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fixed wall-clock epoch every simulation starts at (2026-01-01T00:00:00Z), so that
/// HTTP dates and RFC 3339 times in a run do not depend on when it ran.
pub const SIM_EPOCH_UNIX_SECONDS: u64 = 1_767_225_600;

pub fn sim_epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_UNIX_SECONDS)
}

/// Time since the Unix epoch: virtual inside a simulation host, real outside.
pub fn unix_now() -> Duration {
    match turmoil::since_epoch() {
        Some(d) => d,
        None => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
    }
}

/// [`unix_now`] in whole milliseconds.
pub fn unix_now_ms() -> u64 {
    u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock time as a `SystemTime` (what an agent's `Host::wall_clock` answers in a host).
pub fn wall_clock() -> SystemTime {
    UNIX_EPOCH + unix_now()
}
