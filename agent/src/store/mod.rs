//! What the agent keeps on disk: the renewed token (written back into the config file by
//! `config_rewrite.rs`), its status (`state_dir/status.json`, read by `redflag-agent status`),
//! and its state files (`state_dir/journal.json` and `state_dir/outbox.json`, whose contents are
//! `journal.rs` and `outbox.rs`'s business: here they are named bytes).
//!
//! [`Store`] is the loop's view; [`FileStore`] is production, [`MemoryStore`] serves tests and
//! the simulation (where "disk" is a value that survives a simulated crash). Every write is
//! atomic (temporary file in the same directory, fsync, rename, fsync of the directory) so a
//! crash or a full disk never leaves a half-written config: the agent may lose a renewed
//! token, never the whole file.

pub mod atomic;
pub mod config_rewrite;

pub use atomic::{write_atomic, write_atomic_owned};

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::file_read;
use crate::server::secret::Secret;

/// The file under `state_dir` that `status` reads.
pub const STATUS_FILE_NAME: &str = "status.json";
const STATUS_FILE_MAX_BYTES: u64 = 64 * 1024;
/// A state file (journal, outbox) larger than this is not one of ours: it is treated as corrupt.
pub const STATE_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The agent's status, as persisted after every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    pub agent_id: String,
    /// RFC 3339 time of the last successful check-in.
    pub last_success: Option<String>,
    /// RFC 3339 time of the last attempt, successful or not.
    pub last_attempt: Option<String>,
    pub consecutive_failures: u32,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Error class of the last failed attempt since the last success (`http_502`, ...).
    pub last_error: Option<String>,
    pub agent_version: String,
    /// Log lines the agent could not write (its stderr was closed) since it started.
    #[serde(default)]
    pub log_lines_dropped: u64,
}

/// Where the loop persists what must outlive the process.
pub trait Store {
    /// Saves a renewed access token. On error the loop keeps using the token in memory.
    fn save_token(&mut self, token: &Secret) -> Result<(), String>;
    /// Saves the status after an attempt.
    fn save_status(&mut self, status: &Status) -> Result<(), String>;
    /// Reads the state file `name` (`journal.json`, `outbox.json`); `Ok(None)` if there is none.
    /// A file over [`STATE_FILE_MAX_BYTES`] is an error.
    fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String>;
    /// Replaces the state file `name` atomically and durably (temporary file, fsync, rename,
    /// fsync of the folder): after a crash or power loss it holds the old bytes or the new ones.
    fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String>;
    /// Moves the state file `name` aside as `{name}.corrupt` (replacing an older one) and
    /// returns where it went, so that a corrupt file is kept for a human and never read again.
    fn quarantine_state(&mut self, name: &str) -> Result<String, String>;
}

/// Production storage: the config file and `state_dir/status.json`.
#[derive(Debug, Clone)]
pub struct FileStore {
    config_path: PathBuf,
    status_path: PathBuf,
    state_dir: PathBuf,
}

impl FileStore {
    pub fn new(config_path: &Path, state_dir: &Path) -> Self {
        FileStore {
            config_path: config_path.to_path_buf(),
            status_path: state_dir.join(STATUS_FILE_NAME),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Creates `state_dir` if needed and proves it writable (a probe file, written and removed:
    /// permission bits do not tell root about a read-only file system). An error is reported,
    /// not fatal: the agent keeps checking in rather than stop; see [`STATE_DIR_UNUSABLE`].
    pub fn prepare(state_dir: &Path) -> Result<(), String> {
        fs::create_dir_all(state_dir).map_err(|e| format!("cannot create state_dir {}: {e}", state_dir.display()))?;
        let probe = state_dir.join(format!(".redflag-agent-probe-{}", std::process::id()));
        fs::write(&probe, b"").map_err(|e| format!("cannot write in state_dir {}: {e}", state_dir.display()))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }
}

impl FileStore {
    /// Writes a file in `state_dir`, recreating the folder first if it has gone (removed while
    /// the agent runs: an operator cleaning up, a tmpfs remounted), as start-up creates it. The
    /// journal and outbox are whole in memory and each write replaces the whole file, so nothing
    /// is lost; the next write of each file puts it back.
    fn write_in_state_dir(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
        match write_atomic(path, bytes, mode) {
            Err(e) if !self.state_dir.is_dir() => {
                FileStore::prepare(&self.state_dir).map_err(|again| format!("{e}; {again}"))?;
                tracing::warn!(
                    event = "state_dir_recreated",
                    "state_dir {} had gone; created it again (journal, outbox and status are written anew from memory)",
                    self.state_dir.display()
                );
                write_atomic(path, bytes, mode)
            }
            other => other,
        }
    }
}

/// What an unusable `state_dir` costs, said wherever one is reported (start-up, SIGHUP,
/// `check-config`): every command is journaled before it is acknowledged or run.
pub const STATE_DIR_UNUSABLE: &str = "no command can be journaled, so none is acknowledged or run (the server keeps \
     them and sends them again), no result can be kept for delivery, and `redflag-agent status` has nothing to show; \
     make state_dir a directory this user can write (the agent keeps checking in and takes commands again once it can)";

/// What `run` would find wrong with `state_dir`, checked without creating anything (for
/// `check-config`): not a directory, or not writable (nor creatable).
pub fn state_dir_problem(state_dir: &Path) -> Option<String> {
    let writable = |p: &Path| -> bool {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
        // SAFETY: access(2) with a valid NUL-terminated path.
        unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
    };
    match fs::metadata(state_dir) {
        Ok(m) if !m.is_dir() => Some(format!("state_dir {} is not a directory", state_dir.display())),
        Ok(_) if !writable(state_dir) => Some(format!("state_dir {} is not writable by this user", state_dir.display())),
        Ok(_) => None,
        Err(_) => {
            let parent = state_dir.ancestors().skip(1).find(|a| a.is_dir());
            match parent {
                Some(p) if writable(p) => None,
                _ => Some(format!("state_dir {} does not exist and cannot be created by this user", state_dir.display())),
            }
        }
    }
    .map(|p| format!("{p}: {STATE_DIR_UNUSABLE}"))
}

impl Store for FileStore {
    fn save_token(&mut self, token: &Secret) -> Result<(), String> {
        crate::store::config_rewrite::rewrite_token(&self.config_path, token)
    }

    fn save_status(&mut self, status: &Status) -> Result<(), String> {
        let mut bytes = serde_json::to_vec_pretty(status).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let path = self.status_path.clone();
        self.write_in_state_dir(&path, &bytes, 0o644)
    }

    fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.state_dir.join(name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if meta.len() > STATE_FILE_MAX_BYTES {
            return Err(format!("{} is {} bytes, more than the {STATE_FILE_MAX_BYTES} a state file may hold", path.display(), meta.len()));
        }
        fs::read(&path).map(Some).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.write_in_state_dir(&self.state_dir.join(name), bytes, 0o600)
    }

    fn quarantine_state(&mut self, name: &str) -> Result<String, String> {
        let from = self.state_dir.join(name);
        let to = self.state_dir.join(format!("{name}.corrupt"));
        fs::rename(&from, &to).map_err(|e| format!("cannot move {} aside to {}: {e}", from.display(), to.display()))?;
        Ok(to.display().to_string())
    }
}

/// Tests and the simulation: the latest token and status, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    pub token: Option<Secret>,
    pub status: Option<Status>,
    /// State files by name.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Store for MemoryStore {
    fn save_token(&mut self, token: &Secret) -> Result<(), String> {
        self.token = Some(token.clone());
        Ok(())
    }

    fn save_status(&mut self, status: &Status) -> Result<(), String> {
        self.status = Some(status.clone());
        Ok(())
    }

    fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.files.get(name).cloned())
    }

    fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.files.insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn quarantine_state(&mut self, name: &str) -> Result<String, String> {
        let bytes = self.files.remove(name).ok_or_else(|| format!("no state file {name}"))?;
        let to = format!("{name}.corrupt");
        self.files.insert(to.clone(), bytes);
        Ok(to)
    }
}

/// Reads `state_dir/status.json`. `Ok(None)` when the agent has not written one yet.
pub fn read_status(state_dir: &Path) -> Result<Option<Status>, String> {
    let path = state_dir.join(STATUS_FILE_NAME);
    let bytes = match file_read::read_regular_file(&path, STATUS_FILE_MAX_BYTES) {
        Ok(b) => b,
        Err(file_read::ReadError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is not a valid status file: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_saved_through_the_store_keeps_other_keys_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"server_url":"http://x","token":"old","zeta":1,"agent_id":"a"}"#).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        FileStore::new(&path, dir.path()).save_token(&Secret::new("new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"server_url":"http://x","token":"new","zeta":1,"agent_id":"a"}"#);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn token_rewrite_refuses_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "{ broken").unwrap();
        assert!(FileStore::new(&path, dir.path()).save_token(&Secret::new("new")).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "{ broken");
    }

    #[test]
    fn state_dir_problems_are_found_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(state_dir_problem(dir.path()), None);
        assert_eq!(state_dir_problem(&dir.path().join("new/deeper")), None);
        assert!(!dir.path().join("new").exists());
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(state_dir_problem(&file).unwrap().contains("is not a directory"));
    }

    #[test]
    fn a_state_dir_removed_while_running_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        FileStore::prepare(&state).unwrap();
        let mut store = FileStore::new(&dir.path().join("c.json"), &state);
        fs::remove_dir_all(&state).unwrap();
        store.save_state("journal.json", b"{}").unwrap();
        assert_eq!(fs::read(state.join("journal.json")).unwrap(), b"{}");
        fs::remove_dir_all(&state).unwrap();
        store.save_status(&Status::default()).unwrap();
        assert!(state.join(STATUS_FILE_NAME).is_file());
        // A state_dir that cannot be made is still an error, not a loop.
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let mut blocked = FileStore::new(&dir.path().join("c.json"), &file.join("state"));
        assert!(blocked.save_state("journal.json", b"{}").is_err());
    }

    #[test]
    fn status_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_status(dir.path()).unwrap(), None);
        let mut store = FileStore::new(&dir.path().join("c.json"), dir.path());
        let status = Status { agent_id: "a".into(), consecutive_failures: 3, breaker: "open".into(), ..Status::default() };
        store.save_status(&status).unwrap();
        assert_eq!(read_status(dir.path()).unwrap(), Some(status));
    }

    #[test]
    fn state_files_are_saved_read_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::new(&dir.path().join("c.json"), dir.path());
        assert_eq!(store.load_state("journal.json").unwrap(), None);
        store.save_state("journal.json", b"{}").unwrap();
        assert_eq!(store.load_state("journal.json").unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(fs::metadata(dir.path().join("journal.json")).unwrap().permissions().mode() & 0o777, 0o600);
        let moved = store.quarantine_state("journal.json").unwrap();
        assert!(moved.ends_with("journal.json.corrupt"), "{moved}");
        assert_eq!(store.load_state("journal.json").unwrap(), None);
        assert_eq!(fs::read(dir.path().join("journal.json.corrupt")).unwrap(), b"{}");
        // A file far too large to be ours is refused, not read.
        let big = fs::File::create(dir.path().join("outbox.json")).unwrap();
        big.set_len(STATE_FILE_MAX_BYTES + 1).unwrap();
        assert!(store.load_state("outbox.json").unwrap_err().contains("more than"));
    }
}
