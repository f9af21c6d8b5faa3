//! Where the daemon's and the commands' log lines go, and how many of them.
//!
//! - Level: by default the command line's own lines at info (`mounted STORE on MNT`,
//!   `unmounted`) and everyone else's warnings and errors; `-v` everything at info, `-vv`
//!   debug, `-vvv` trace; `-q` warnings and errors only, `-qq` errors only. `RUST_LOG`, if set,
//!   decides instead (env_logger's syntax).
//! - Destination: stderr; a daemon (`mount --daemon`) writes to `STORE/logstorfs.log` instead
//!   ([`log_to_file`]), which is capped at [`LOG_FILE_CAP`] bytes and rotated to `.1` and `.2`.
//!   Under systemd (stderr is the journal's stream, `JOURNAL_STREAM`), each line carries its
//!   syslog priority as a `<N>` prefix, which the journal files as the line's priority, and no
//!   time stamp (the journal keeps its own).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Bytes a log file may reach before it is rotated.
pub const LOG_FILE_CAP: u64 = 4 << 20;
/// Rotated files kept besides the current one (`.1` the newer).
const ROTATED_KEPT: u32 = 2;

/// Sets up logging for the process; `verbosity`: the number of `-v` less the number of `-q`.
pub fn init(verbosity: i32) {
    let default = match verbosity {
        i32::MIN..=-2 => "error",
        -1 => "warn",
        0 => "warn,logstorfs::cli=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let journal = stderr_is_journal();
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.target(env_logger::Target::Pipe(Box::new(Sink)));
    if journal {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}",
                syslog_priority(record.level()),
                record.args()
            )
        });
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// Sends the log to the file `path` from now on (capped and rotated), and points stderr at it
/// too, so that a panic's message lands beside the log.
pub fn log_to_file(path: &Path) -> io::Result<()> {
    let file = RotatingFile::open(path.to_path_buf(), true)?;
    *DEST.lock() = Some(file);
    Ok(())
}

/// Wraps env_logger to drop the one line fuser logs at the end of every clean unmount.
struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }
    fn log(&self, record: &log::Record) {
        if self.inner.matches(record) && !is_clean_unmount_noise(record) {
            self.inner.log(record);
        }
    }
    fn flush(&self) {
        self.inner.flush();
    }
}

/// fuser 0.18 unmounts again when its session ends, even after the kernel already unmounted
/// (`fusermount3 -u`, `umount`): its `is_mounted` takes POLLERR on the device, which means the
/// connection is gone, for "still mounted". The second umount2 then fails with EINVAL ("not a
/// mount point") and fuser warns about it. Only that errno is dropped: a real failure to
/// unmount (EBUSY, EPERM, ...) is still logged.
fn is_clean_unmount_noise(record: &log::Record) -> bool {
    record.level() == log::Level::Warn
        && record.target().starts_with("fuser::")
        && is_unmount_einval(&record.args().to_string())
}

fn is_unmount_einval(message: &str) -> bool {
    message.starts_with("Failed to umount filesystem: ")
        && message.ends_with(&format!("(os error {})", libc::EINVAL))
}

/// Whether stderr is the journal's stream (systemd sets `JOURNAL_STREAM` to its device and
/// inode; a child whose stderr was redirected inherits the variable, so both are compared).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// sd-daemon(3) priorities.
fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

static DEST: Mutex<Option<RotatingFile>> = Mutex::new(None);

/// env_logger's target: the log file once [`log_to_file`] set one, else stderr.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match DEST.lock().as_mut() {
            Some(f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match DEST.lock().as_mut() {
            Some(f) => f.file.flush(),
            None => io::stderr().flush(),
        }
    }
}

/// An append-only log file that moves itself to `.1` (and `.1` to `.2`) once it passes
/// [`LOG_FILE_CAP`].
struct RotatingFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// Keep stderr pointing at the current file.
    own_stderr: bool,
}

impl RotatingFile {
    fn open(path: PathBuf, own_stderr: bool) -> io::Result<RotatingFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        if own_stderr {
            point_stderr_at(&file);
        }
        Ok(RotatingFile {
            path,
            file,
            len,
            own_stderr,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..ROTATED_KEPT).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        *self = RotatingFile::open(self.path.clone(), self.own_stderr)?;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > LOG_FILE_CAP {
            // Keep logging into the full file rather than lose the line.
            let _ = self.rotate();
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
}

fn point_stderr_at(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto fd 2 of a descriptor we own; no memory is involved.
    unsafe {
        libc::dup2(file.as_raw_fd(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_einval_of_the_final_unmount_is_dropped() {
        assert!(is_unmount_einval(
            "Failed to umount filesystem: Invalid argument (os error 22)"
        ));
        assert!(!is_unmount_einval(
            "Failed to umount filesystem: Device or resource busy (os error 16)"
        ));
        assert!(!is_unmount_einval(
            "Unmount failed: Invalid argument (os error 22)x"
        ));
    }

    #[test]
    fn the_log_file_is_capped_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logstorfs.log");
        let mut f = RotatingFile::open(path.clone(), false).unwrap();
        let line = [b'x'; 1000];
        for _ in 0..3 * LOG_FILE_CAP / 1000 + 10 {
            f.write(&line).unwrap();
        }
        drop(f);
        for p in [
            path.clone(),
            dir.path().join("logstorfs.log.1"),
            dir.path().join("logstorfs.log.2"),
        ] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= LOG_FILE_CAP && len > 0, "{}: {len}", p.display());
        }
        assert!(!dir.path().join("logstorfs.log.3").exists());
    }
}
