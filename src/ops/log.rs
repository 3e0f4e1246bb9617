//! Logging through `tracing`, in twemproxy's line shape: `[YYYY-MM-DD HH:MM:SS.mmm] LEVEL msg`.
//!
//! `-v 0..11` maps twemproxy's levels onto tracing levels; `-o FILE` appends to a file that
//! [`LogTarget::reopen`] can reopen (for logrotate).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

/// twemproxy's level number (0 EMERG … 5 NOTICE … 11 PVERB) as a tracing level.
pub fn level_for_verbosity(verbosity: u8) -> Level {
    match verbosity {
        0..=3 => Level::ERROR,
        4 => Level::WARN,
        5 | 6 => Level::INFO,
        7 | 8 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// Where log lines go: stderr, or a file that can be reopened.
#[derive(Clone, Debug)]
pub struct LogTarget {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

impl LogTarget {
    pub fn stderr() -> LogTarget {
        LogTarget { file: None }
    }

    pub fn file(path: &Path) -> io::Result<LogTarget> {
        let file = open_append(path)?;
        Ok(LogTarget {
            file: Some((path.to_path_buf(), Arc::new(Mutex::new(file)))),
        })
    }

    /// Reopens the log file by name (after logrotate renamed it); stderr needs nothing.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some((path, file)) = &self.file {
            let fresh = open_append(path)?;
            if let Ok(mut guard) = file.lock() {
                *guard = fresh;
            }
        }
        Ok(())
    }
}

/// One log line's writer.
pub enum LineWriter {
    Stderr(io::Stderr),
    File(Arc<Mutex<File>>),
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LineWriter::Stderr(s) => s.write(buf),
            LineWriter::File(f) => match f.lock() {
                Ok(mut file) => file.write(buf),
                Err(_) => Ok(buf.len()),
            },
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LineWriter::Stderr(s) => s.flush(),
            LineWriter::File(_) => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        match &self.file {
            None => LineWriter::Stderr(io::stderr()),
            Some((_, file)) => LineWriter::File(file.clone()),
        }
    }
}

/// Formats the time as twemproxy does, `[2026-11-21 10:00:00.123]` (UTC).
struct TwemproxyTime;

impl FormatTime for TwemproxyTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        write!(
            w,
            "[{}]",
            format_timestamp(now.as_secs(), now.subsec_millis())
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` for a Unix time in seconds (UTC), without a date crate.
pub fn format_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for every u64-second date we can meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Installs the global subscriber. Call once, after daemonizing.
pub fn init(verbosity: u8, target: LogTarget) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level_for_verbosity(verbosity))
        .with_timer(TwemproxyTime)
        .with_target(false)
        .with_ansi(false)
        .with_writer(target)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01 00:00:00.000");
        assert_eq!(format_timestamp(951_782_400, 7), "2000-02-29 00:00:00.007");
        assert_eq!(
            format_timestamp(1_795_300_421, 999),
            "2026-11-21 22:33:41.999"
        );
    }

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for_verbosity(0), Level::ERROR);
        assert_eq!(level_for_verbosity(4), Level::WARN);
        assert_eq!(level_for_verbosity(5), Level::INFO);
        assert_eq!(level_for_verbosity(7), Level::DEBUG);
        assert_eq!(level_for_verbosity(11), Level::TRACE);
    }
}
