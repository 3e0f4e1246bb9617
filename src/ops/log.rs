//! Logging through `tracing`, in twemproxy's line shape: `[YYYY-MM-DD HH:MM:SS.mmm] LEVEL msg`,
//! or one JSON object per line with `--log-format json`.
//!
//! `-v 0..11` maps twemproxy's levels onto tracing levels; the level can change at run time
//! ([`LogControl::raise`] / [`LogControl::lower`], driven by SIGTTIN / SIGTTOU) through
//! tracing-subscriber's reload layer. `-o FILE` appends to a file that [`LogTarget::reopen`]
//! can reopen (for logrotate).
//!
//! Lines logged with the target [`ALWAYS_TARGET`] (the [`loga!`](crate::loga) macro) are written
//! at every verbosity, like twemproxy's `loga`: startup, signals, level changes.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::cli::MAX_VERBOSITY;

/// The target of lines written at every verbosity (twemproxy's `loga`).
pub const ALWAYS_TARGET: &str = "walnut::always";

/// Logs an INFO line that is written whatever the verbosity (twemproxy's `loga`).
#[macro_export]
macro_rules! loga {
    ($($arg:tt)+) => {
        ::tracing::info!(target: $crate::ops::log::ALWAYS_TARGET, $($arg)+)
    };
}

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

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `[2026-11-21 10:00:00.123]  INFO message key=value`
    #[default]
    Text,
    /// `{"ts":"2026-11-21T10:00:00.123Z","level":"INFO","msg":"message","key":"value"}`
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
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

/// A field's value as recorded from an event.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// An event's message and its other fields, in order.
#[derive(Debug, Default)]
pub struct LogRecord {
    pub message: String,
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl LogRecord {
    fn push(&mut self, field: &Field, value: FieldValue) {
        if field.name() == "message" {
            match value {
                FieldValue::Str(s) => self.message = s,
                other => self.message = plain(&other),
            }
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for LogRecord {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, FieldValue::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, FieldValue::Str(value.to_string()));
    }
}

fn plain(value: &FieldValue) -> String {
    match value {
        FieldValue::Str(s) => s.clone(),
        FieldValue::I64(n) => n.to_string(),
        FieldValue::U64(n) => n.to_string(),
        FieldValue::F64(n) => n.to_string(),
        FieldValue::Bool(b) => b.to_string(),
    }
}

/// The text line (without its newline): `[2026-11-21 10:00:00.123]  INFO msg key=value`.
/// String field values are quoted, as tracing-subscriber's default format does.
pub fn text_line(secs: u64, millis: u32, level: Level, record: &LogRecord) -> String {
    let mut line = format!(
        "[{}] {:>5} {}",
        format_timestamp(secs, millis),
        level.as_str(),
        record.message
    );
    for (name, value) in &record.fields {
        match value {
            FieldValue::Str(s) => {
                let _ = write!(line, " {name}={s:?}");
            }
            other => {
                let _ = write!(line, " {name}={}", plain(other));
            }
        }
    }
    line
}

/// Appends `s` as a JSON string (quotes included), escaping `"`, `\` and control characters.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_json_value(out: &mut String, value: &FieldValue) {
    match value {
        FieldValue::Str(s) => push_json_string(out, s),
        FieldValue::I64(n) => {
            let _ = write!(out, "{n}");
        }
        FieldValue::U64(n) => {
            let _ = write!(out, "{n}");
        }
        // JSON has no NaN or infinity: those become strings.
        FieldValue::F64(n) if n.is_finite() => {
            let _ = write!(out, "{n}");
        }
        FieldValue::F64(n) => push_json_string(out, &n.to_string()),
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

/// The JSON line (without its newline):
/// `{"ts":"2026-11-21T10:00:00.123Z","level":"INFO","msg":"…","key":value}`.
/// A field named like one of the three fixed keys is written with a `field.` prefix so that
/// every key in the object is unique.
pub fn json_line(secs: u64, millis: u32, level: Level, record: &LogRecord) -> String {
    let mut out = String::with_capacity(96 + record.message.len());
    out.push_str("{\"ts\":\"");
    out.push_str(&format_timestamp(secs, millis).replacen(' ', "T", 1));
    out.push_str("Z\",\"level\":");
    push_json_string(&mut out, level.as_str());
    out.push_str(",\"msg\":");
    push_json_string(&mut out, &record.message);
    for (name, value) in &record.fields {
        out.push(',');
        if matches!(*name, "ts" | "level" | "msg") {
            push_json_string(&mut out, &format!("field.{name}"));
        } else {
            push_json_string(&mut out, name);
        }
        out.push(':');
        push_json_value(&mut out, value);
    }
    out.push('}');
    out
}

/// The event formatter for both formats.
struct LineFormat(LogFormat);

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut record = LogRecord::default();
        event.record(&mut record);
        let level = *event.metadata().level();
        let line = match self.0 {
            LogFormat::Text => text_line(now.as_secs(), now.subsec_millis(), level, &record),
            LogFormat::Json => json_line(now.as_secs(), now.subsec_millis(), level, &record),
        };
        writeln!(writer, "{line}")
    }
}

/// The global filter: events up to the verbosity's level, plus every [`ALWAYS_TARGET`] line.
#[derive(Clone, Copy, Debug)]
pub struct VerbosityFilter {
    level: LevelFilter,
}

impl VerbosityFilter {
    pub fn new(verbosity: u8) -> VerbosityFilter {
        VerbosityFilter {
            level: LevelFilter::from_level(level_for_verbosity(verbosity)),
        }
    }

    pub fn passes(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == ALWAYS_TARGET || *meta.level() <= self.level
    }
}

impl<S: Subscriber> Layer<S> for VerbosityFilter {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.passes(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.passes(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // ALWAYS_TARGET lines are INFO: never let the global hint shut them out.
        Some(self.level.max(LevelFilter::INFO))
    }
}

/// The run-time handle on the log level.
pub struct LogControl {
    verbosity: AtomicU8,
    handle: reload::Handle<VerbosityFilter, Registry>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("verbosity", &self.verbosity())
            .finish()
    }
}

impl LogControl {
    /// The current twemproxy-scale verbosity (0..=11).
    pub fn verbosity(&self) -> u8 {
        self.verbosity.load(Ordering::Acquire)
    }

    /// Sets the verbosity (clamped to 0..=11) and swaps the filter in place.
    pub fn set(&self, verbosity: u8) -> u8 {
        let verbosity = verbosity.min(MAX_VERBOSITY);
        self.verbosity.store(verbosity, Ordering::Release);
        // Fails only when the subscriber is gone (not installed); nothing to change then.
        let _ = self.handle.reload(VerbosityFilter::new(verbosity));
        verbosity
    }

    /// One level up (SIGTTIN); `None` when already at the maximum.
    pub fn raise(&self) -> Option<u8> {
        let now = self.verbosity();
        (now < MAX_VERBOSITY).then(|| self.set(now + 1))
    }

    /// One level down (SIGTTOU); `None` when already at 0.
    pub fn lower(&self) -> Option<u8> {
        let now = self.verbosity();
        (now > 0).then(|| self.set(now - 1))
    }
}

/// Installs the global subscriber and returns the handle that changes its level. Call once,
/// after daemonizing (a second call leaves the first subscriber in place).
pub fn init(verbosity: u8, target: LogTarget, format: LogFormat) -> LogControl {
    let verbosity = verbosity.min(MAX_VERBOSITY);
    let (filter, handle) = reload::Layer::new(VerbosityFilter::new(verbosity));
    let lines = tracing_subscriber::fmt::layer()
        .event_format(LineFormat(format))
        .with_ansi(false)
        .with_writer(target);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init();
    LogControl {
        verbosity: AtomicU8::new(verbosity),
        handle,
    }
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

    fn record(message: &str, fields: Vec<(&'static str, FieldValue)>) -> LogRecord {
        LogRecord {
            message: message.to_string(),
            fields,
        }
    }

    #[test]
    fn text_lines_keep_the_twemproxy_shape() {
        let r = record(
            "pool 'alpha' listening",
            vec![
                ("id", FieldValue::U64(7)),
                ("who", FieldValue::Str("a b".into())),
            ],
        );
        assert_eq!(
            text_line(1_795_300_421, 5, Level::INFO, &r),
            "[2026-11-21 22:33:41.005]  INFO pool 'alpha' listening id=7 who=\"a b\""
        );
        assert_eq!(
            text_line(0, 0, Level::ERROR, &record("x", vec![])),
            "[1970-01-01 00:00:00.000] ERROR x"
        );
    }

    #[test]
    fn json_lines_have_ts_level_msg_and_fields() {
        let r = record(
            "client 3 connected",
            vec![
                ("n", FieldValue::I64(-4)),
                ("ok", FieldValue::Bool(true)),
                ("ratio", FieldValue::F64(0.5)),
                ("bad", FieldValue::F64(f64::NAN)),
                ("msg", FieldValue::Str("dup".into())),
            ],
        );
        assert_eq!(
            json_line(1_795_300_421, 123, Level::DEBUG, &r),
            "{\"ts\":\"2026-11-21T22:33:41.123Z\",\"level\":\"DEBUG\",\"msg\":\"client 3 connected\",\
             \"n\":-4,\"ok\":true,\"ratio\":0.5,\"bad\":\"NaN\",\"field.msg\":\"dup\"}"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\re\tf\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀/");
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\b\\f\\u0001\\u001f\\u007fé€😀/\""
        );
        let mut empty = String::new();
        push_json_string(&mut empty, "");
        assert_eq!(empty, "\"\"");
    }

    #[test]
    fn formats_have_names() {
        assert_eq!(LogFormat::from_name("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::from_name("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::from_name("JSON"), None);
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn the_filter_lets_always_lines_through_at_every_level() {
        let quiet = VerbosityFilter::new(0);
        assert_eq!(quiet.level, LevelFilter::ERROR);
        assert_eq!(
            <VerbosityFilter as Layer<Registry>>::max_level_hint(&quiet),
            Some(LevelFilter::INFO)
        );
        let loud = VerbosityFilter::new(11);
        assert_eq!(
            <VerbosityFilter as Layer<Registry>>::max_level_hint(&loud),
            Some(LevelFilter::TRACE)
        );
    }
}
