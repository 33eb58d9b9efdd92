//! The server's fault switches ([`ServerModes`]): slow answers, setup mode, refused refresh
//! tokens, an injected status, one broken route. They belong to whoever injects faults (the world in simulation,
//! the control API in live mode), not to the server process, so a crash does not reset them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{RETRY_AFTER_MAX_SECONDS, SLOW_DELAY_MAX};
use crate::scenario::ApiRoute;

/// How a broken route answers (the rest of the API works).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken {
    /// Answer this status instead of doing the work; `None`: do the work and answer as usual.
    pub status: Option<u16>,
    /// Hold the answer this long (capped at [`SLOW_DELAY_MAX`]). With neither a status nor a
    /// delay the route hangs: no answer for [`super::ROUTE_HANG_MAX`].
    pub delay: Option<Duration>,
}

impl Broken {
    pub const HANG: Broken = Broken { status: None, delay: None };

    /// A route that answers `status` at once.
    pub fn status(status: u16) -> Broken {
        Broken { status: Some(status), delay: None }
    }

    pub fn hangs(&self) -> bool {
        self.status.is_none() && self.delay.is_none()
    }
}

/// The server's fault switches. Cheap to clone (shared); default: all off.
#[derive(Clone, Default)]
pub struct ServerModes(Arc<Mutex<ModesState>>);

#[derive(Debug, Clone, Default, PartialEq)]
struct ModesState {
    slow: Option<Duration>,
    setup_mode: bool,
    revoke_refresh: bool,
    http_status: Option<(u16, Option<u64>)>,
    broken: BTreeMap<ApiRoute, Broken>,
}

impl ServerModes {
    fn lock(&self) -> MutexGuard<'_, ModesState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold every response this long (capped at [`SLOW_DELAY_MAX`]); `None` ends it.
    pub fn set_slow(&self, delay: Option<Duration>) {
        self.lock().slow = delay.map(|d| d.min(SLOW_DELAY_MAX));
    }

    /// The server "restarted unconfigured": 404 on agent routes, `/health` still 200.
    pub fn set_setup_mode(&self, on: bool) {
        self.lock().setup_mode = on;
    }

    /// Renewal answers 401 while on.
    pub fn set_revoke_refresh(&self, on: bool) {
        self.lock().revoke_refresh = on;
    }

    /// Answer this status (with `Retry-After: seconds` when given, capped at
    /// [`RETRY_AFTER_MAX_SECONDS`]) to every agent route; `/health` is unaffected. A status
    /// outside 100..=599 is answered as 500.
    pub fn set_http_status(&self, status: Option<(u16, Option<u64>)>) {
        self.lock().http_status = status.map(|(code, ra)| (code, ra.map(|s| s.min(RETRY_AFTER_MAX_SECONDS))));
    }

    /// Break `route` alone; `None` mends it.
    pub fn set_broken(&self, route: ApiRoute, broken: Option<Broken>) {
        let broken = broken.map(|b| Broken { delay: b.delay.map(|d| d.min(SLOW_DELAY_MAX)), ..b });
        match broken {
            Some(b) => self.lock().broken.insert(route, b),
            None => self.lock().broken.remove(&route),
        };
    }

    /// How `route` is broken, if it is.
    pub fn broken(&self, route: ApiRoute) -> Option<Broken> {
        self.lock().broken.get(&route).copied()
    }

    /// Every broken route, in route order.
    pub fn broken_routes(&self) -> BTreeMap<ApiRoute, Broken> {
        self.lock().broken.clone()
    }

    pub fn slow(&self) -> Option<Duration> {
        self.lock().slow
    }

    pub fn setup_mode(&self) -> bool {
        self.lock().setup_mode
    }

    pub fn revoke_refresh(&self) -> bool {
        self.lock().revoke_refresh
    }

    pub fn http_status(&self) -> Option<(u16, Option<u64>)> {
        self.lock().http_status
    }
}

