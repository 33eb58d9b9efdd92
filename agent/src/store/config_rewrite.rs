//! Writing a renewed access token back into the config file, changing nothing else.
//!
//! The config file is the operator's: it may be a symlink into a configuration repository, be
//! owned by another user or group, have a deliberate mode, be read-only on purpose, and hold
//! values a JSON round trip would spoil (`123456789012345678901234567890` would come back as
//! `1.2345678901234568e+29`, key order, spacing, a byte-order mark). So the rewrite:
//!
//! * follows the symlink and replaces its *target*, so the link stays a link;
//! * takes an advisory lock (`flock`) on the file for the read-modify-write, waiting at most
//!   [`LOCK_WAIT`], and checks the path still names the locked file (another writer may have
//!   replaced it meanwhile), so two agents or a cooperating editor do not lose each other's change;
//! * refuses a file without the owner's write bit (read-only on purpose): the token is then
//!   used for this run only, and the caller says so;
//! * changes only the bytes of the top-level `"token"` value in the original text (inserting
//!   the key if it is missing), every other byte as it was;
//! * writes atomically (temporary file beside the target, fsync, rename, fsync of the
//!   directory) with the original mode, owner and group; if the owner cannot be kept (not
//!   allowed to `chown`), it refuses rather than hand the file to another user.

use std::fs::{self, File};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::CONFIG_FILE_MAX_BYTES;
use crate::config::file_read;
use crate::server::secret::Secret;
use crate::store::atomic;

/// The longest the rewrite waits for another holder of the config file's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Times the lock is taken again when the file was replaced while we waited for it.
const LOCK_ATTEMPTS_MAX: u32 = 3;

/// Sets the top-level `"token"` of the JSON config file at `path` (through a symlink) to
/// `token`, changing nothing else. On error nothing was changed, and the message says why.
pub fn rewrite_token(path: &Path, token: &Secret) -> Result<(), String> {
    rewrite_token_waiting(path, token, LOCK_WAIT)
}

fn rewrite_token_waiting(path: &Path, token: &Secret, lock_wait: Duration) -> Result<(), String> {
    let target = fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let (mut file, meta) = lock(&target, lock_wait)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o200 == 0 {
        return Err(format!(
            "{} is read-only (mode {mode:04o}), so it is left as it is; make it writable by its owner to keep renewed tokens",
            target.display()
        ));
    }
    let bytes = file_read::read_bounded(&mut file, &target, CONFIG_FILE_MAX_BYTES).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text; not rewriting it", target.display()))?;
    let new_text = replace_token_value(&text, token.expose()).map_err(|why| format!("{}: {why}; not rewriting it", target.display()))?;
    if new_text == text {
        return Ok(());
    }
    atomic::write_atomic_owned(&target, new_text.as_bytes(), mode, Some((meta.uid(), meta.gid())))
    // `file`, and with it the lock, is released here, after the rename.
}

/// Opens `target` and takes an exclusive `flock` on it, waiting at most `wait`. Returns the
/// locked file and its metadata, after checking the path still names that same file.
fn lock(target: &Path, wait: Duration) -> Result<(File, fs::Metadata), String> {
    for _ in 0..LOCK_ATTEMPTS_MAX {
        let file = file_read::open_regular(target).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Some(libc::EWOULDBLOCK) => {
                    return Err(format!(
                        "{} is locked by another process (an editor, another agent) for more than {}s; not rewriting it now",
                        target.display(),
                        wait.as_secs_f64()
                    ));
                }
                Some(libc::EINTR) => {}
                // No locking here (a filesystem without flock, a seccomp filter): the rename
                // below is still atomic, so go on unlocked rather than not at all.
                _ => break,
            }
        }
        let meta = file.metadata().map_err(|e| format!("cannot stat {}: {e}", target.display()))?;
        let now = fs::metadata(target).map_err(|e| format!("cannot stat {}: {e}", target.display()))?;
        if (now.dev(), now.ino()) == (meta.dev(), meta.ino()) {
            return Ok((file, meta));
        }
        // Replaced while we waited: lock the new file instead.
    }
    Err(format!("{} keeps being replaced by another process; not rewriting it now", target.display()))
}

/// `text` (a JSON object) with the value of its top-level `"token"` key replaced by `token` as
/// a JSON string, or the key added after the last member if there is none. Every other byte
/// is kept. An error if `text` is not a JSON object.
pub fn replace_token_value(text: &str, token: &str) -> Result<String, String> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(_)) => {}
        Ok(_) => return Err("the file no longer holds a JSON object".into()),
        Err(e) => return Err(format!("the file is no longer valid JSON ({e})")),
    }
    let members = scan_object(text)?;
    let new_value = serde_json::to_string(token).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(text.len() + new_value.len());
    match members.members.iter().rev().find(|m| m.key == "token") {
        Some(m) => {
            out.push_str(&text[..m.value.start]);
            out.push_str(&new_value);
            out.push_str(&text[m.value.end..]);
        }
        None => match members.members.last() {
            Some(last) => {
                // Indent the new member like the first one.
                let indent = &text[members.open + 1..members.members[0].key_start];
                out.push_str(&text[..last.value.end]);
                out.push(',');
                out.push_str(if indent.is_empty() { " " } else { indent });
                out.push_str("\"token\": ");
                out.push_str(&new_value);
                out.push_str(&text[last.value.end..]);
            }
            None => {
                out.push_str(&text[..members.open + 1]);
                out.push_str("\"token\": ");
                out.push_str(&new_value);
                out.push_str(&text[members.open + 1..]);
            }
        },
    }
    Ok(out)
}

/// A top-level member: its decoded key, where its key starts and its value's bytes.
struct Member {
    key: String,
    key_start: usize,
    value: Range<usize>,
}

struct Members {
    /// Where the object's `{` is.
    open: usize,
    members: Vec<Member>,
}

/// The members of the top-level JSON object in `text` (already known to be valid JSON).
fn scan_object(text: &str) -> Result<Members, String> {
    let mut s = Scanner { b: text.as_bytes(), i: 0 };
    if text.starts_with('\u{feff}') {
        s.i = '\u{feff}'.len_utf8();
    }
    s.ws();
    let open = s.i;
    s.expect(b'{')?;
    let mut members = Vec::new();
    s.ws();
    if s.peek() == Some(b'}') {
        return Ok(Members { open, members });
    }
    loop {
        s.ws();
        let key_range = s.string()?;
        let key: String = serde_json::from_str(&text[key_range.clone()]).map_err(|e| e.to_string())?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        let value = s.value()?;
        members.push(Member { key, key_start: key_range.start, value });
        s.ws();
        match s.peek() {
            Some(b',') => s.i += 1,
            Some(b'}') => return Ok(Members { open, members }),
            _ => return Err("unexpected text in the JSON object".into()),
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() != Some(c) {
            return Err(format!("expected {:?} at byte {}", c as char, self.i));
        }
        self.i += 1;
        Ok(())
    }

    /// A string, quotes included.
    fn string(&mut self) -> Result<Range<usize>, String> {
        let start = self.i;
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    return Ok(start..self.i);
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// Any value: a string, an object or array (nesting and strings inside respected), or a
    /// number or literal.
    fn value(&mut self) -> Result<Range<usize>, String> {
        let start = self.i;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err("unterminated object or array".into()),
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                    }
                    self.i += 1;
                }
            }
            Some(_) => {
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.i += 1;
                }
            }
            None => return Err("a value is missing".into()),
        }
        Ok(start..self.i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_the_token_value_changes() {
        let text = "\u{feff}{ \"server_url\" : \"http://x\",\n\t\"token\":\"old\" ,  \"n\": 123456789012345678901234567890,\n  \"f\": 1.0e3, \"a\": {\"token\": \"nested\", \"s\": \"}\\\"{\"}, \"z\": [1, {\"token\": 2}]\n}\n";
        let out = replace_token_value(text, "NEW\"tok").unwrap();
        assert_eq!(out, text.replace("\"token\":\"old\"", "\"token\":\"NEW\\\"tok\""));
        assert!(out.contains("123456789012345678901234567890") && out.contains("1.0e3") && out.starts_with('\u{feff}'));
    }

    #[test]
    fn an_escaped_key_is_still_the_token_and_the_last_duplicate_wins() {
        let out = replace_token_value(r#"{"tok\u0065n":"a","x":1}"#, "b").unwrap();
        assert_eq!(out, r#"{"tok\u0065n":"b","x":1}"#);
        let out = replace_token_value(r#"{"token":"a","token":"a2"}"#, "b").unwrap();
        assert_eq!(out, r#"{"token":"a","token":"b"}"#);
    }

    #[test]
    fn a_missing_token_is_added_in_the_file_s_style() {
        let out = replace_token_value("{\n  \"agent_id\": \"a\",\n  \"refresh_token\": \"r\"\n}\n", "t").unwrap();
        assert_eq!(out, "{\n  \"agent_id\": \"a\",\n  \"refresh_token\": \"r\",\n  \"token\": \"t\"\n}\n");
        let out = replace_token_value("{}", "t").unwrap();
        assert_eq!(out, r#"{"token": "t"}"#);
        let v: Value = serde_json::from_str(&replace_token_value(r#"{"a":1}"#, "t").unwrap()).unwrap();
        assert_eq!(v["token"], "t");
    }

    #[test]
    fn what_is_not_a_json_object_is_refused() {
        for bad in ["{ broken", "[1,2]", "\"x\"", ""] {
            assert!(replace_token_value(bad, "t").is_err(), "{bad:?}");
        }
    }

    fn write(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn through_a_symlink_the_target_is_rewritten_and_the_link_stays() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("config.json");
        write(&real, r#"{"token": "old", "n": 123456789012345678901234567890}"#, 0o640);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        rewrite_token(&link, &Secret::new("new")).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced by a file");
        assert_eq!(fs::read_to_string(&real).unwrap(), r#"{"token": "new", "n": 123456789012345678901234567890}"#);
        assert_eq!(fs::metadata(&real).unwrap().permissions().mode() & 0o7777, 0o640, "the mode changed");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn a_read_only_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write(&path, r#"{"token": "old"}"#, 0o400);
        let e = rewrite_token(&path, &Secret::new("new")).unwrap_err();
        assert!(e.contains("read-only (mode 0400)"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"token": "old"}"#);
    }

    #[test]
    fn owner_and_group_are_kept() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write(&path, r#"{"token": "old"}"#, 0o600);
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        rewrite_token(&path, &Secret::new("new")).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "owner or group changed");
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"token": "new"}"#);
    }

    #[test]
    fn the_rewrite_waits_for_the_lock_and_gives_up_after_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write(&path, r#"{"token": "old"}"#, 0o600);
        let holder = File::open(&path).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        let e = rewrite_token_waiting(&path, &Secret::new("new"), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("locked by another process"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"token": "old"}"#);

        // Released while the rewrite waits: it goes ahead.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
        });
        rewrite_token_waiting(&path, &Secret::new("new"), Duration::from_secs(10)).unwrap();
        release.join().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"token": "new"}"#);
    }
}
