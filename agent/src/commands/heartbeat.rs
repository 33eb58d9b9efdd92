//! Rapid polling ("heartbeat" in RedFlag's dashboard), as one concept: the windows in force
//! ([`RapidPolling`], a value the loop asks with `now`), the interval they set, what the agent
//! tells the server about them in every check-in ([`RapidPolling::report`]), and the state file
//! that keeps an operator's heartbeat across a restart ([`HEARTBEAT_FILE`]).
//!
//! Two windows, decided so (issue 16):
//!
//! * **The operator's heartbeat**: an `enable_heartbeat` command (from the dashboard, or the
//!   server's own, paired with a scan), for its `duration_minutes`. The agent polls every 5 s
//!   *and reports it*: every check-in carries `metadata.rapid_polling_enabled: true`,
//!   `rapid_polling_until` (RFC 3339) and `rapid_polling_duration_minutes` (whole minutes
//!   left), as the Go agent does; the dashboard's heartbeat status is built from them. It is
//!   kept in wall-clock time in `state_dir/heartbeat.json`, so a restart (an upgrade, a reboot,
//!   a reload) goes on with it until its end: the first check-in after the restart already
//!   reports it. (Without that the server logs "Stale heartbeat detected", turns the heartbeat
//!   off and records a `disable_heartbeat`; the Go agent loses it so.)
//! * **The answer's window**: RedFlag adds a 10-minute `rapid_polling` to every answer that
//!   carries commands. The agent keeps that *pace* (multi-step work such as scan, dry run,
//!   install goes faster) but does *not* report it: reporting it would make the dashboard show
//!   a heartbeat after every command, which no operator asked for. It is not persisted.
//!
//! A window only ever extends the one of its kind in force, so the shorter request never cuts
//! the longer one short. `disable_heartbeat` ends both, and the next check-in says so
//! (`rapid_polling_enabled: false` with `rapid_polling_until` now: the server stores the
//! heartbeat as off; the Go agent sends an empty `until` there, which the server cannot parse,
//! so only its "stale heartbeat" path turns it off). After an answer carrying
//! `enable_heartbeat` or `disable_heartbeat` the next check-in goes out at once (never twice in
//! a row), so the dashboard shows the new state within seconds.
//!
//! The server type-asserts these values (`.(bool)`, `.(string)`): a wrong JSON type is a panic
//! on its side, so the types here are fixed. With no heartbeat the agent sends none of the
//! keys, as the Go agent does. Pure: the caller passes both clocks.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::log::events::{Event, ms};
use crate::store::Store;

/// The interval while rapid polling is on.
pub const RAPID_POLLING_INTERVAL: Duration = Duration::from_secs(5);
/// The longest rapid-polling window honoured, whoever asks for it.
pub const RAPID_POLLING_MAX: Duration = Duration::from_secs(3600);

pub const ENABLED_KEY: &str = "rapid_polling_enabled";
pub const UNTIL_KEY: &str = "rapid_polling_until";
pub const DURATION_MINUTES_KEY: &str = "rapid_polling_duration_minutes";

/// The state file under `state_dir` that keeps the operator's heartbeat across a restart.
pub const HEARTBEAT_FILE: &str = "heartbeat.json";

/// The windows in force, and whether the last check-in was the immediate one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RapidPolling {
    /// Until when check-ins go every [`RAPID_POLLING_INTERVAL`] (either window).
    until: Option<Instant>,
    /// The operator's heartbeat: reported to the server until then (wall clock: it outlives
    /// the process).
    heartbeat_until: Option<SystemTime>,
    /// `disable_heartbeat` ran: the next check-in tells the server the heartbeat is off.
    report_off: bool,
    /// The last attempt was the immediate check-in after a heartbeat command; the next one
    /// may not be immediate again (so no answer can make the agent spin).
    checked_in_at_once: bool,
}

impl RapidPolling {
    /// The answer's window: polling every 5 s for `window` (clamped to [`RAPID_POLLING_MAX`])
    /// from `now`, not reported, unless the pace in force already lasts longer; the event to
    /// report it, if it changed anything.
    pub fn extend(&mut self, now: Instant, window: Duration) -> Option<Event> {
        let window = window.min(RAPID_POLLING_MAX);
        let until = now + window;
        if window.is_zero() || self.until.is_some_and(|current| current >= until) {
            return None;
        }
        self.until = Some(until);
        Some(Event::RapidPolling { for_ms: ms(window) })
    }

    /// `enable_heartbeat` for `window`, run at `now` (`wall` on the wall clock): the pace, and
    /// the heartbeat reported until `wall + window` (never shortening a longer one), kept in the
    /// heartbeat file through `store`. Returns the events (the pace, the file written or not).
    pub fn enable_heartbeat<S: Store + ?Sized>(&mut self, now: Instant, wall: SystemTime, window: Duration, store: &mut S) -> Vec<Event> {
        let window = window.min(RAPID_POLLING_MAX);
        let mut events: Vec<Event> = self.extend(now, window).into_iter().collect();
        if let Some(until) = wall.checked_add(window) {
            if self.heartbeat_until.is_none_or(|current| current < until) {
                self.heartbeat_until = Some(until);
            }
        }
        self.report_off = false;
        events.push(save(store, self.heartbeat_until));
        events
    }

    /// `disable_heartbeat`: back to the regular interval; the next check-in says the heartbeat
    /// is off; the heartbeat file says none. Returns the file's event.
    pub fn stop<S: Store + ?Sized>(&mut self, store: &mut S) -> Vec<Event> {
        self.until = None;
        self.heartbeat_until = None;
        self.report_off = true;
        vec![save(store, None)]
    }

    /// At start: the heartbeat file read through `store` at `now` (`wall` on the wall clock). A
    /// heartbeat still in force goes on (pace and report) until its end; a file that is not one
    /// of ours is moved aside (`state_corrupt`). Returns the events.
    pub fn restore<S: Store + ?Sized>(&mut self, now: Instant, wall: SystemTime, store: &mut S) -> Vec<Event> {
        let bytes = match store.load_state(HEARTBEAT_FILE) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Vec::new(),
            Err(error) => return vec![Event::StoreFailed { what: "heartbeat (read)".into(), error }],
        };
        match self.restore_from(now, wall, &bytes) {
            Ok(event) => event.into_iter().collect(),
            Err(error) => {
                let moved_to = store.quarantine_state(HEARTBEAT_FILE).unwrap_or_else(|e| format!("(not moved: {e})"));
                vec![Event::StateCorrupt { file: HEARTBEAT_FILE.into(), error, moved_to }]
            }
        }
    }

    /// [`RapidPolling::restore`] from the file's bytes: a heartbeat still in force goes on until
    /// its end, at most [`RAPID_POLLING_MAX`] from now; `Ok(None)` when there is none or it is
    /// over; `Err` when the bytes are not a heartbeat file.
    fn restore_from(&mut self, now: Instant, wall: SystemTime, bytes: &[u8]) -> Result<Option<Event>, String> {
        let Some(until) = read_heartbeat_file(bytes)? else { return Ok(None) };
        let Ok(left) = until.duration_since(wall) else { return Ok(None) };
        let left = left.min(RAPID_POLLING_MAX);
        if left.is_zero() {
            return Ok(None);
        }
        self.heartbeat_until = Some(wall.checked_add(left).unwrap_or(wall));
        Ok(self.extend(now, left))
    }

    /// The interval the windows set at `now` ([`RAPID_POLLING_INTERVAL`]), or `None`. A window
    /// that has ended is forgotten here.
    pub fn interval(&mut self, now: Instant) -> Option<Duration> {
        match self.until {
            Some(until) if now < until => Some(RAPID_POLLING_INTERVAL),
            Some(_) => {
                self.until = None;
                None
            }
            None => None,
        }
    }

    /// What the next check-in tells the server, at `wall`: the heartbeat while it lasts
    /// ([`metadata`]), `rapid_polling_enabled: false` once after `disable_heartbeat`, else
    /// nothing. Taking the "off" report clears it.
    pub fn report(&mut self, wall: SystemTime) -> Vec<(&'static str, Value)> {
        if std::mem::take(&mut self.report_off) {
            return off_metadata(wall);
        }
        match self.heartbeat_until {
            Some(until) if until > wall => metadata(until, wall),
            Some(_) => {
                self.heartbeat_until = None;
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Whether the next check-in goes out at once, given whether the answer just taken in
    /// carried a heartbeat command. Never twice in a row: this records the choice.
    pub fn choose_at_once(&mut self, heartbeat_in_answer: bool) -> bool {
        let at_once = heartbeat_in_answer && !self.checked_in_at_once;
        self.checked_in_at_once = at_once;
        at_once
    }
}

/// Writes the heartbeat file (a heartbeat until `until`, or none) through `store`: the event
/// that says it was saved, or that it could not be.
fn save<S: Store + ?Sized>(store: &mut S, until: Option<SystemTime>) -> Event {
    let bytes = heartbeat_file(until);
    match store.save_state(HEARTBEAT_FILE, &bytes) {
        Ok(()) => Event::StateSaved { file: HEARTBEAT_FILE.into(), entries: u32::from(until.is_some()), bytes: bytes.len() as u64 },
        Err(error) => Event::StoreFailed { what: "heartbeat".into(), error },
    }
}

/// The heartbeat file: `{"heartbeat_until": "RFC 3339"}`, or `null` for none.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatFileContents {
    heartbeat_until: Option<String>,
}

/// The heartbeat file's bytes for a heartbeat until `until` (or none).
pub fn heartbeat_file(until: Option<SystemTime>) -> Vec<u8> {
    let contents = HeartbeatFileContents { heartbeat_until: until.map(|u| humantime::format_rfc3339_seconds(u).to_string()) };
    let mut bytes = serde_json::to_vec(&contents).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The heartbeat's end from the file's bytes; `Err` when they are not a heartbeat file.
pub fn read_heartbeat_file(bytes: &[u8]) -> Result<Option<SystemTime>, String> {
    let contents: HeartbeatFileContents = serde_json::from_slice(bytes).map_err(|e| format!("not a heartbeat file: {e}"))?;
    match contents.heartbeat_until {
        None => Ok(None),
        Some(text) => humantime::parse_rfc3339(&text).map(Some).map_err(|e| format!("heartbeat_until is not an RFC 3339 time: {e}")),
    }
}

/// What the check-in after `disable_heartbeat` says at `wall`: off, ended now. The server stores
/// both (it needs a parseable `until` to store anything), so its status says "disabled".
pub fn off_metadata(wall: SystemTime) -> Vec<(&'static str, Value)> {
    vec![(ENABLED_KEY, Value::Bool(false)), (UNTIL_KEY, Value::String(humantime::format_rfc3339_seconds(wall).to_string()))]
}

/// The metadata entries for a rapid-polling window ending at `until` (wall clock), seen at
/// `now`. Empty when the window is over.
pub fn metadata(until: SystemTime, now: SystemTime) -> Vec<(&'static str, Value)> {
    let Ok(left) = until.duration_since(now) else { return Vec::new() };
    if left.is_zero() {
        return Vec::new();
    }
    // Whole seconds: Go's RFC3339 layout has none, and the server compares with its clock.
    let until_text = humantime::format_rfc3339_seconds(until).to_string();
    // Go: int(time.Until(until).Minutes()), truncated.
    let minutes_left = left.as_secs() / 60;
    vec![(ENABLED_KEY, Value::Bool(true)), (UNTIL_KEY, Value::String(until_text)), (DURATION_MINUTES_KEY, Value::from(minutes_left))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn file(store: &MemoryStore) -> Option<SystemTime> {
        read_heartbeat_file(&store.files[HEARTBEAT_FILE]).unwrap()
    }

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn keys(m: &[(&'static str, Value)]) -> Vec<&'static str> {
        m.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn a_window_only_extends_the_one_in_force() {
        let t0 = Instant::now();
        let mut rp = RapidPolling::default();
        assert_eq!(rp.extend(t0, Duration::from_secs(600)), Some(Event::RapidPolling { for_ms: 600_000 }));
        assert_eq!(rp.extend(t0, Duration::from_secs(60)), None, "a shorter window does not cut the longer one");
        assert_eq!(rp.extend(t0, Duration::ZERO), None);
        assert_eq!(rp.extend(t0, Duration::from_secs(86_400)), Some(Event::RapidPolling { for_ms: 3_600_000 }), "clamped");
        assert_eq!(rp.interval(t0 + Duration::from_secs(10)), Some(RAPID_POLLING_INTERVAL));
        assert_eq!(rp.interval(t0 + Duration::from_secs(3600)), None);
        rp.extend(t0, Duration::from_secs(60));
        rp.stop(&mut MemoryStore::default());
        assert_eq!(rp.interval(t0), None);
    }

    #[test]
    fn the_answers_window_keeps_the_pace_and_is_not_reported() {
        let (t0, wall) = (Instant::now(), at("2026-11-28T22:30:00Z"));
        let mut rp = RapidPolling::default();
        rp.extend(t0, Duration::from_secs(600));
        assert_eq!(rp.interval(t0), Some(RAPID_POLLING_INTERVAL));
        assert!(rp.report(wall).is_empty(), "the server's 10-minute window is no heartbeat");
    }

    #[test]
    fn the_operators_heartbeat_is_reported_and_kept_in_its_file() {
        let (t0, wall) = (Instant::now(), at("2026-11-28T22:30:00Z"));
        let mut rp = RapidPolling::default();
        let mut store = MemoryStore::default();
        let events = rp.enable_heartbeat(t0, wall, Duration::from_secs(30 * 60), &mut store);
        assert_eq!(events[0], Event::RapidPolling { for_ms: 1_800_000 });
        assert!(matches!(&events[1], Event::StateSaved { file, entries: 1, .. } if file == HEARTBEAT_FILE), "{events:?}");
        assert_eq!(file(&store), Some(at("2026-11-28T23:00:00Z")));
        assert_eq!(rp.report(wall), metadata(at("2026-11-28T23:00:00Z"), wall));
        // A shorter heartbeat does not cut it short; the answer's window does not touch it.
        rp.enable_heartbeat(t0, wall, Duration::from_secs(60), &mut store);
        assert_eq!(file(&store), Some(at("2026-11-28T23:00:00Z")));
        rp.extend(t0, Duration::from_secs(3600));
        assert_eq!(keys(&rp.report(wall)), [ENABLED_KEY, UNTIL_KEY, DURATION_MINUTES_KEY]);
        // Over at its end, whatever the pace.
        assert!(rp.report(at("2026-11-28T23:00:00Z")).is_empty());
    }

    #[test]
    fn a_restart_goes_on_with_the_heartbeat_until_its_end() {
        let (t0, wall) = (Instant::now(), at("2026-11-28T22:30:00Z"));
        let mut store = MemoryStore::default();
        RapidPolling::default().enable_heartbeat(t0, wall, Duration::from_secs(30 * 60), &mut store);
        let file = store.files[HEARTBEAT_FILE].clone();
        // Restarted ten minutes later.
        let later = at("2026-11-28T22:40:00Z");
        let mut after = RapidPolling::default();
        assert_eq!(after.restore(t0, later, &mut store), vec![Event::RapidPolling { for_ms: 1_200_000 }]);
        assert_eq!(after.interval(t0), Some(RAPID_POLLING_INTERVAL));
        assert_eq!(after.report(later), metadata(at("2026-11-28T23:00:00Z"), later));
        // After its end, or with no heartbeat in the file: nothing.
        assert_eq!(RapidPolling::default().restore_from(t0, at("2026-11-28T23:00:01Z"), &file), Ok(None));
        assert_eq!(RapidPolling::default().restore_from(t0, later, &heartbeat_file(None)), Ok(None));
        assert!(RapidPolling::default().restore(t0, later, &mut MemoryStore::default()).is_empty(), "no file, nothing");
        // A file that is not ours is an error, never a panic: moved aside, reported.
        for bad in [&b"{"[..], b"[]", br#"{"heartbeat_until":"soon"}"#, br#"{"until":"2026-11-28T23:00:00Z"}"#] {
            assert!(RapidPolling::default().restore_from(t0, later, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut store = MemoryStore::default();
        store.files.insert(HEARTBEAT_FILE.into(), b"garbage".to_vec());
        let events = RapidPolling::default().restore(t0, later, &mut store);
        assert!(matches!(&events[..], [Event::StateCorrupt { moved_to, .. }] if moved_to == "heartbeat.json.corrupt"), "{events:?}");
        assert!(!store.files.contains_key(HEARTBEAT_FILE));
        // A far-off end (a clock set back, a hand-edited file) is bounded.
        let far = heartbeat_file(Some(at("2030-01-01T00:00:00Z")));
        assert_eq!(RapidPolling::default().restore_from(t0, later, &far), Ok(Some(Event::RapidPolling { for_ms: 3_600_000 })));
    }

    #[test]
    fn disable_says_off_once_then_nothing() {
        let (t0, wall) = (Instant::now(), at("2026-11-28T22:30:00Z"));
        let mut rp = RapidPolling::default();
        let mut store = MemoryStore::default();
        rp.enable_heartbeat(t0, wall, Duration::from_secs(600), &mut store);
        rp.stop(&mut store);
        assert_eq!(file(&store), None);
        assert_eq!(rp.interval(t0), None);
        assert_eq!(
            rp.report(wall),
            vec![(ENABLED_KEY, Value::Bool(false)), (UNTIL_KEY, Value::String("2026-11-28T22:30:00Z".into()))]
        );
        assert!(rp.report(wall).is_empty(), "said once");
    }

    #[test]
    fn at_once_never_twice_in_a_row() {
        let mut rp = RapidPolling::default();
        assert!(rp.choose_at_once(true));
        assert!(!rp.choose_at_once(true));
        assert!(rp.choose_at_once(true));
        assert!(!rp.choose_at_once(false));
        assert!(rp.choose_at_once(true));
    }

    #[test]
    fn while_polling_rapidly() {
        let m = metadata(at("2026-11-28T22:40:23.900Z"), at("2026-11-28T22:30:00Z"));
        assert_eq!(
            m,
            vec![
                (ENABLED_KEY, Value::Bool(true)),
                (UNTIL_KEY, Value::String("2026-11-28T22:40:23Z".into())),
                (DURATION_MINUTES_KEY, Value::from(10u64)),
            ]
        );
    }

    #[test]
    fn nothing_once_the_window_is_over() {
        assert!(metadata(at("2026-11-28T22:30:00Z"), at("2026-11-28T22:30:00Z")).is_empty());
        assert!(metadata(at("2026-11-28T22:29:00Z"), at("2026-11-28T22:30:00Z")).is_empty());
    }
}
