//! The check-in answer, read command by command: `{"commands":[{"id","type","params"}, ...],
//! "rapid_polling": {...}}`.
//!
//! Two rules, each from a way a real queue once stopped every check-in:
//!
//! * **Each command stands alone.** The answer is taken apart with a structural scanner
//!   (`json_scan.rs`) and every entry is read on its own. An entry whose `params` cannot be read
//!   (a number out of range such as `1e400`, nesting deeper than serde_json's 128 levels) is a
//!   [`RefusedCommand`]: it gets a `failed` result saying why, and the commands beside it run.
//!   An entry without a usable `id` cannot be answered at all; it is reported by position
//!   ([`CheckinAnswer::invalid_commands`]). Only an answer that is not JSON, or not an object,
//!   or whose `commands` is not an array, is refused as a whole (a malformed answer, retried).
//! * **No queue size stops check-ins.** A transport reads at most
//!   [`RESPONSE_BODY_MAX_BYTES`](crate::server::protocol::RESPONSE_BODY_MAX_BYTES) of an answer
//!   and says when it stopped there ([`BodyEnd::CutAtLimit`]). Such a prefix is still an answer:
//!   the commands complete within it are taken ([`CheckinAnswer::cut_short`] says the rest was
//!   not read; a server that redelivers sends them again, and RedFlag 0.1.18 never sends more
//!   than 10 per answer). A first entry that alone passes the limit, with its `id` and `type`
//!   readable before the cut, is refused ("larger than this agent reads"), so it cannot block
//!   the queue behind it forever.
//!
//! Memory: the commands taken (at most the body, which is bounded) and the scanner's bracket
//! stack. Pure: bytes in, an answer out. What is not here: what the agent does with the
//! commands (journal, runner, outbox).

use std::time::SystemTime;

use serde_json::Value;

use crate::server::json_scan::{ScanError, Scanner, kind_of};
use crate::server::protocol::{Command, RESPONSE_BODY_MAX_BYTES};

/// How an answer's body arrived from the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The whole body.
    Complete,
    /// The first [`RESPONSE_BODY_MAX_BYTES`](crate::server::protocol::RESPONSE_BODY_MAX_BYTES)
    /// only: the body went on, and the rest was not read.
    CutAtLimit,
}

/// A command the answer carried that will not run: it gets a `failed` result with `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCommand {
    pub id: String,
    pub kind: String,
    pub reason: String,
}

/// A check-in answer as the agent understood it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckinAnswer {
    /// Commands to journal and run, in the answer's order.
    pub commands: Vec<Command>,
    /// Commands that will not run (unreadable `params`, larger than the agent reads): each gets
    /// a `failed` result saying why.
    pub refused: Vec<RefusedCommand>,
    /// Entries of `commands` that were not commands at all (no usable `id`), as short
    /// descriptions: they cannot be answered, only logged.
    pub invalid_commands: Vec<String>,
    /// The body was cut at the transport's limit: the entries after the last complete one were
    /// not read (and, with `rapid_polling` after them, neither was it).
    pub cut_short: bool,
    /// The end of a rapid-polling window the server asked for, if any.
    pub rapid_polling_until: Option<SystemTime>,
}

/// Why an answer is not an answer.
enum Unreadable {
    Scan(ScanError),
    Shape(String),
}

impl From<ScanError> for Unreadable {
    fn from(e: ScanError) -> Self {
        Unreadable::Scan(e)
    }
}

/// Reads a 2xx check-in body. `Err` means it is not a RedFlag answer at all (the loop retries
/// it as malformed); problems inside a valid answer are reported in the returned value.
pub fn read_checkin_answer(body: &[u8], end: BodyEnd) -> Result<CheckinAnswer, String> {
    let mut answer = CheckinAnswer::default();
    let mut s = Scanner::new(body);
    let read = read_object(&mut s, &mut answer).and_then(|()| match s.at_end() {
        true => Ok(()),
        false => Err(Unreadable::Scan(ScanError::Syntax { at: s.pos(), expected: "nothing after the answer" })),
    });
    match read {
        Ok(()) => Ok(answer),
        Err(Unreadable::Scan(ScanError::End)) if end == BodyEnd::CutAtLimit => {
            answer.cut_short = true;
            Ok(answer)
        }
        Err(Unreadable::Scan(ScanError::End)) => Err("not JSON: the answer ends in the middle".into()),
        Err(Unreadable::Scan(e)) => Err(format!("not JSON: {e}")),
        Err(Unreadable::Shape(why)) => Err(why),
    }
}

/// The whole answer object; `answer` keeps what was read when the text ends early.
fn read_object(s: &mut Scanner<'_>, answer: &mut CheckinAnswer) -> Result<(), Unreadable> {
    // Nothing at all (or only whitespace, even a whole cut MiB of it) is no answer.
    let first = s.peek().map_err(|_| Unreadable::Shape("the body holds no JSON value".into()))?;
    if first != b'{' {
        return Err(Unreadable::Shape(format!("expected a JSON object, got {}", kind_of(s.tail(s.pos())))));
    }
    s.expect(b'{', "an object")?;
    if s.peek()? == b'}' {
        return Ok(s.expect(b'}', "'}'")?);
    }
    let mut seen_commands = false;
    loop {
        let key = decode_key(s.key()?);
        match key.as_deref() {
            // A second "commands" is skipped: the first one is the answer.
            Some("commands") if !seen_commands => {
                seen_commands = true;
                read_commands(s, answer)?;
            }
            Some("rapid_polling") => answer.rapid_polling_until = rapid_polling_until(s.value()?),
            _ => {
                s.value()?;
            }
        }
        match s.peek()? {
            b',' => s.expect(b',', "','")?,
            _ => return Ok(s.expect(b'}', "',' or '}' in the answer")?),
        }
    }
}

/// The `commands` member's value: `null` or an array, read entry by entry.
fn read_commands(s: &mut Scanner<'_>, answer: &mut CheckinAnswer) -> Result<(), Unreadable> {
    if s.peek()? != b'[' {
        return match kind_of(s.value()?) {
            "null" => Ok(()),
            other => Err(Unreadable::Shape(format!("\"commands\" must be an array, got {other}"))),
        };
    }
    s.expect(b'[', "'['")?;
    if s.peek()? == b']' {
        return Ok(s.expect(b']', "']'")?);
    }
    for index in 0.. {
        let start = s.pos();
        let raw = match s.value() {
            Ok(raw) => raw,
            Err(ScanError::End) => {
                if index == 0 {
                    refuse_oversized(answer, entry_fields(s.tail(start)));
                }
                return Err(ScanError::End.into());
            }
            Err(e) => return Err(e.into()),
        };
        take_entry(answer, index, entry_fields(raw));
        match s.peek()? {
            b',' => s.expect(b',', "','")?,
            _ => return Ok(s.expect(b']', "',' or ']' in \"commands\"")?),
        }
    }
    Ok(())
}

/// The first entry of an answer cut at the limit, cut off itself: it alone passes what the agent
/// reads, so it would head every answer and block the queue forever. Refused (a `failed` result)
/// when its `id` and `type` were read before the cut; otherwise nothing can be done but log it.
fn refuse_oversized(answer: &mut CheckinAnswer, fields: Fields<'_>) {
    let id = fields.id.and_then(|raw| serde_json::from_slice::<String>(raw).ok());
    let kind = fields.kind.and_then(|raw| serde_json::from_slice::<String>(raw).ok());
    let (Some(id), Some(kind)) = (id, kind) else {
        answer.invalid_commands.push(format!(
            "commands[0]: larger than the {RESPONSE_BODY_MAX_BYTES} bytes this agent reads of an answer, and its id \
             and type are not within them"
        ));
        return;
    };
    let reason = format!("it is larger than the {RESPONSE_BODY_MAX_BYTES} bytes this agent reads of an answer; nothing was run");
    answer.refused.push(RefusedCommand { id, kind, reason });
}

/// The raw `id`, `type` and `params` of one entry, as far as its text goes (an entry cut off
/// at the limit keeps the members that were complete).
#[derive(Debug, Default)]
struct Fields<'a> {
    /// Set when the entry is not an object: its JSON kind.
    not_object: Option<&'static str>,
    id: Option<&'a [u8]>,
    kind: Option<&'a [u8]>,
    params: Option<&'a [u8]>,
}

fn entry_fields(raw: &[u8]) -> Fields<'_> {
    let mut fields = Fields::default();
    let mut s = Scanner::new(raw);
    // A complete entry was checked by the scan that found it; a cut one ends with `End`.
    let _ = (|| -> Result<(), ScanError> {
        if s.peek()? != b'{' {
            fields.not_object = Some(kind_of(raw));
            return Ok(());
        }
        s.expect(b'{', "'{'")?;
        if s.peek()? == b'}' {
            return Ok(());
        }
        loop {
            let key = decode_key(s.key()?);
            let value = s.value()?;
            match key.as_deref() {
                Some("id") if fields.id.is_none() => fields.id = Some(value),
                Some("type") if fields.kind.is_none() => fields.kind = Some(value),
                Some("params") if fields.params.is_none() => fields.params = Some(value),
                _ => {}
            }
            if s.peek()? != b',' {
                return Ok(());
            }
            s.expect(b',', "','")?;
        }
    })();
    fields
}

/// One complete entry, as a command, a refused command, or an invalid entry.
fn take_entry(answer: &mut CheckinAnswer, index: usize, fields: Fields<'_>) {
    match command_from(index, &fields) {
        Entry::Command(cmd) => answer.commands.push(cmd),
        Entry::Refused(r) => answer.refused.push(r),
        Entry::Invalid(why) => answer.invalid_commands.push(why),
    }
}

enum Entry {
    Command(Command),
    Refused(RefusedCommand),
    Invalid(String),
}

fn command_from(index: usize, f: &Fields<'_>) -> Entry {
    if let Some(kind) = f.not_object {
        return Entry::Invalid(format!("commands[{index}]: expected an object, got {kind}"));
    }
    let id = match f.id.map(|raw| serde_json::from_slice::<String>(raw).map_err(|_| kind_of(raw))) {
        Some(Ok(id)) => id,
        Some(Err(kind)) => return Entry::Invalid(format!("commands[{index}]: id must be a string, got {kind}")),
        None => return Entry::Invalid(format!("commands[{index}]: no id")),
    };
    let kind = match f.kind.map(|raw| serde_json::from_slice::<String>(raw).map_err(|_| kind_of(raw))) {
        Some(Ok(kind)) => kind,
        Some(Err(got)) => {
            let reason = format!("its type must be a string, got {got}; nothing was run");
            return Entry::Refused(RefusedCommand { id, kind: INVALID_TYPE.into(), reason });
        }
        None => {
            let reason = "it has no type; nothing was run".to_string();
            return Entry::Refused(RefusedCommand { id, kind: INVALID_TYPE.into(), reason });
        }
    };
    let params = match f.params.map(serde_json::from_slice::<Value>) {
        None => Value::Null,
        Some(Ok(params)) => params,
        Some(Err(e)) => {
            let reason = format!("its params cannot be read ({e}); nothing was run");
            return Entry::Refused(RefusedCommand { id, kind, reason });
        }
    };
    Entry::Command(Command { id, kind, params })
}

/// The `type` recorded (and sent as the result's `action`) for an entry without a string type.
pub const INVALID_TYPE: &str = "invalid_type";

/// A key's text, if it is one a reader could mean (keys are short; escapes decoded).
fn decode_key(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(raw).ok()
}

/// The end of the window a `rapid_polling` member asks for, if it is on and readable.
fn rapid_polling_until(raw: &[u8]) -> Option<SystemTime> {
    let Ok(Value::Object(rp)) = serde_json::from_slice::<Value>(raw) else { return None };
    if !rp.get("enabled").and_then(Value::as_bool).unwrap_or(false) {
        return None;
    }
    // Any RFC 3339 offset (a Go server writes its local time), or a bare UTC time.
    let until = rp.get("until").and_then(Value::as_str)?;
    crate::server::rfc3339::parse(until).or_else(|| humantime::parse_rfc3339_weak(until).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> CheckinAnswer {
        read_checkin_answer(body.as_bytes(), BodyEnd::Complete).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn ids(a: &CheckinAnswer) -> Vec<&str> {
        a.commands.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn a_redflag_answer() {
        let a = read(
            r#"{"commands":[{"id":"c1","type":"scan_updates","params":{"x":[1,2]}},{"id":"c2","type":"reboot"}],
               "rapid_polling":{"enabled":true,"until":"2030-01-01T00:00:00-05:00"}}"#,
        );
        assert_eq!(ids(&a), ["c1", "c2"]);
        assert_eq!(a.commands[0].params, serde_json::json!({"x": [1, 2]}));
        assert_eq!(a.commands[1].params, Value::Null);
        assert!(a.rapid_polling_until.is_some() && !a.cut_short && a.refused.is_empty());
        assert_eq!(read(r#"{"commands":null,"rapid_polling":null}"#), CheckinAnswer::default());
        assert_eq!(read(" {} "), CheckinAnswer::default());
    }

    #[test]
    fn rapid_polling_until_in_the_servers_local_time() {
        // What a Go server with TZ=Etc/GMT+5 writes: 17:40 at -05:00 is 22:40 UTC.
        let a = read(r#"{"commands":[],"rapid_polling":{"enabled":true,"until":"2026-11-28T17:40:23-05:00"}}"#);
        assert_eq!(a.rapid_polling_until, humantime::parse_rfc3339("2026-11-28T22:40:23Z").ok());
        let a = read(r#"{"rapid_polling":{"enabled":true,"until":"2026-11-29T04:10:23+05:30"}}"#);
        assert_eq!(a.rapid_polling_until, humantime::parse_rfc3339("2026-11-28T22:40:23Z").ok());
        let off = read(r#"{"rapid_polling":{"enabled":false,"until":"2026-11-29T04:10:23+05:30"}}"#);
        assert_eq!(off.rapid_polling_until, None);
    }

    #[test]
    fn a_poisoned_command_is_refused_and_the_rest_run() {
        let deep = format!("{}1{}", "[".repeat(129), "]".repeat(129));
        let body = format!(
            r#"{{"commands":[{{"id":"ok-1","type":"scan_updates","params":{{}}}},
                {{"id":"huge-number","type":"install_updates","params":{{"n":1e400}}}},
                {{"id":"deep","type":"scan_updates","params":{deep}}},
                {{"id":"ok-2","type":"enable_heartbeat","params":{{"duration_minutes":5}}}}],
               "rapid_polling":{{"enabled":true,"until":"2030-01-01T00:00:00Z"}}}}"#
        );
        let a = read(&body);
        assert_eq!(ids(&a), ["ok-1", "ok-2"]);
        let refused: Vec<(&str, &str)> = a.refused.iter().map(|r| (r.id.as_str(), r.kind.as_str())).collect();
        assert_eq!(refused, [("huge-number", "install_updates"), ("deep", "scan_updates")]);
        assert!(a.refused[0].reason.contains("out of range") && a.refused[0].reason.contains("params"), "{:?}", a.refused[0]);
        assert!(a.refused[1].reason.contains("recursion limit"), "{:?}", a.refused[1]);
        assert!(a.rapid_polling_until.is_some(), "what follows a poisoned command is read too");
        // The whole-answer parse this replaces refused all four.
        assert!(serde_json::from_str::<Value>(&body).is_err());
    }

    #[test]
    fn entries_that_are_not_commands() {
        let a = read(r#"{"commands":[7,{"type":"x"},{"id":5,"type":"x"},{"id":"no-type"},{"id":"bad-type","type":[]},{"id":"c","type":"x"}]}"#);
        assert_eq!(ids(&a), ["c"]);
        assert_eq!(a.invalid_commands.len(), 3, "{:?}", a.invalid_commands);
        assert!(a.invalid_commands[0].contains("commands[0]") && a.invalid_commands[0].contains("a number"));
        let refused: Vec<(&str, &str)> = a.refused.iter().map(|r| (r.id.as_str(), r.kind.as_str())).collect();
        assert_eq!(refused, [("no-type", INVALID_TYPE), ("bad-type", INVALID_TYPE)]);
    }

    #[test]
    fn what_is_not_an_answer() {
        for body in ["<html>502 Bad Gateway</html>", "[]", "\"x\"", r#"{"commands":"x"}"#, r#"{"commands":{}}"#, "", "{", r#"{"commands":[{"id":"a"}"#, "{} x"] {
            assert!(read_checkin_answer(body.as_bytes(), BodyEnd::Complete).is_err(), "{body:?}");
        }
        let e = read_checkin_answer(br#"{"commands":"x"}"#, BodyEnd::Complete).unwrap_err();
        assert!(e.contains("must be an array, got a string"), "{e}");
        // Garbage stays garbage when it was cut, too.
        for body in ["<html>", "[1,2", r#"{"commands":[1 2"#, "   "] {
            assert!(read_checkin_answer(body.as_bytes(), BodyEnd::CutAtLimit).is_err(), "{body:?}");
        }
    }

    #[test]
    fn a_cut_answer_gives_the_commands_complete_within_it() {
        let entry = |i: usize| format!(r#"{{"id":"00000000-0000-4000-8000-{i:012}","type":"scan_updates","params":{{"a":"b","c":1,"d":[true]}}}}"#);
        let all: Vec<String> = (0..1000).map(entry).collect();
        let body = format!(r#"{{"commands":[{}],"rapid_polling":{{"enabled":true,"until":"2030-01-01T00:00:00Z"}}}}"#, all.join(","));
        let mut last = 0;
        // Cuts after the first entry (one inside it means that entry alone passes the limit:
        // the next test).
        let first_end = body.find(&entry(0)).unwrap() + entry(0).len();
        for cut in (first_end..body.len()).step_by(997) {
            let a = read_checkin_answer(&body.as_bytes()[..cut], BodyEnd::CutAtLimit).unwrap();
            assert!(a.cut_short && a.rapid_polling_until.is_none());
            // Every command wholly inside the prefix, in order, and nothing else.
            let whole = (0..1000).take_while(|&i| body[..cut].contains(&entry(i))).count();
            assert_eq!(a.commands.len(), whole, "cut at {cut}");
            assert!(a.commands.len() >= last && a.refused.is_empty() && a.invalid_commands.is_empty());
            last = a.commands.len();
        }
        assert!(last > 900);
        let complete = read_checkin_answer(body.as_bytes(), BodyEnd::CutAtLimit).unwrap();
        assert_eq!((complete.commands.len(), complete.cut_short), (1000, false));
    }

    #[test]
    fn a_first_command_larger_than_the_limit_is_refused_not_left_to_block_the_queue() {
        let body = format!(r#"{{"commands":[{{"id":"big","type":"install_updates","params":{{"blob":"{}"#, "x".repeat(4096));
        let a = read_checkin_answer(body.as_bytes(), BodyEnd::CutAtLimit).unwrap();
        assert!(a.commands.is_empty() && a.cut_short);
        assert_eq!((a.refused[0].id.as_str(), a.refused[0].kind.as_str()), ("big", "install_updates"));
        assert!(a.refused[0].reason.contains("larger than"), "{:?}", a.refused);
        // Without its id before the cut it can only be reported.
        let body = format!(r#"{{"commands":[{{"params":{{"blob":"{}"#, "x".repeat(4096));
        let a = read_checkin_answer(body.as_bytes(), BodyEnd::CutAtLimit).unwrap();
        assert!(a.refused.is_empty() && a.invalid_commands[0].contains("larger than"), "{a:?}");
        // A later entry cut off is simply left for a later answer.
        let body = format!(r#"{{"commands":[{{"id":"a","type":"x"}},{{"id":"big","type":"y","params":"{}"#, "x".repeat(100));
        let a = read_checkin_answer(body.as_bytes(), BodyEnd::CutAtLimit).unwrap();
        assert_eq!((ids(&a), a.refused.len()), (vec!["a"], 0));
    }
}
