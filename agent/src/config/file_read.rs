//! Reading the small files an operator points the agent at (the config file, `tls.ca_file`, the
//! status file): regular files only, never blocking, never reading past a limit.
//!
//! `--config /dev/zero` must not read until memory runs out and `--config some.fifo` must not
//! block forever, so a path is opened with `O_NONBLOCK` (opening a FIFO for reading would
//! otherwise wait for a writer), checked with `fstat` on the open descriptor (a symlink to a
//! device is caught too, and there is no window between the check and the read), and read
//! through `take(limit + 1)`: the cap is on the bytes actually read, not on the size the file
//! reports (a character device reports 0). What the bytes mean is the caller's business.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be read. `Display` names the path and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    NotFound { path: PathBuf },
    /// Permission denied, I/O error, ...
    Unreadable { path: PathBuf, reason: String },
    /// A directory, FIFO, socket or device: `kind` says which.
    NotRegular { path: PathBuf, kind: &'static str },
    /// More than `max_bytes` (reading stopped there).
    TooLarge { path: PathBuf, max_bytes: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotFound { path } => write!(f, "{} not found", path.display()),
            ReadError::Unreadable { path, reason } => write!(f, "cannot read {}: {reason}", path.display()),
            ReadError::NotRegular { path, kind } => {
                write!(f, "{} is a {kind}, not a regular file; point the agent at a file", path.display())
            }
            ReadError::TooLarge { path, max_bytes } => {
                write!(f, "{} is larger than {max_bytes} bytes, so it cannot be what it should be", path.display())
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// What a file that is not a regular one is, in words.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO (named pipe)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Opens `path` for reading without blocking and makes sure it is a regular file (symlinks are
/// followed). `O_NONBLOCK` stays set on the descriptor; it has no effect on a regular file.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound { path: path.to_path_buf() },
        _ => ReadError::Unreadable { path: path.to_path_buf(), reason: e.to_string() },
    })?;
    let meta = file.metadata().map_err(|e| ReadError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind: file_kind(meta.file_type()) });
    }
    Ok(file)
}

/// Reads at most `max_bytes` from an open file; more is [`ReadError::TooLarge`].
pub fn read_bounded(file: &mut File, path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), max_bytes });
    }
    Ok(bytes)
}

/// The whole of a regular file of at most `max_bytes`.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let mut file = open_regular(path)?;
    read_bounded(&mut file, path, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular_file(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "character device", .. }), "{e}");
        assert!(e.to_string().contains("/dev/zero"), "{e}");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_regular_file(&fifo, 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "FIFO (named pipe)", .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "opening the FIFO blocked");

        let e = read_regular_file(dir.path(), 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "directory", .. }), "{e}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(read_regular_file(&link, 1024), Err(ReadError::NotRegular { .. })));
    }

    #[test]
    fn caps_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 11]).unwrap();
        assert_eq!(read_regular_file(&path, 11).unwrap().len(), 11);
        assert!(matches!(read_regular_file(&path, 10), Err(ReadError::TooLarge { max_bytes: 10, .. })));
        assert!(matches!(read_regular_file(&dir.path().join("none"), 10), Err(ReadError::NotFound { .. })));
    }
}
