//! Command-line flags, compatible with nutcracker's (`-h -V -t -d -D -v -o -c -s -a -i -p -m`).
//!
//! Parsing is pure: it returns [`Command`] or a [`UsageError`] whose text matches nutcracker's
//! (`walnut: option -v requires a number`); `main` prints it with the usage and exits 1.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches};

use crate::ops::log::LogFormat;

/// The program name used in messages.
pub const PROGRAM: &str = "walnut";
/// Default configuration file, relative to the working directory (as upstream twemproxy).
pub const DEFAULT_CONF_FILE: &str = "conf/nutcracker.yml";
pub const DEFAULT_VERBOSITY: u8 = 5;
pub const MAX_VERBOSITY: u8 = 11;
pub const DEFAULT_STATS_PORT: u16 = 22222;
pub const DEFAULT_STATS_ADDR: &str = "0.0.0.0";
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_MBUF_SIZE: usize = 16384;
pub const MIN_MBUF_SIZE: usize = 512;
pub const MAX_MBUF_SIZE: usize = 16_777_216;
/// How long a stopping walnut waits for clients' requests in flight, by default.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Everything a run needs from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub test_conf: bool,
    pub daemonize: bool,
    pub describe_stats: bool,
    pub verbosity: u8,
    /// `None` logs to stderr.
    pub log_file: Option<PathBuf>,
    pub conf_file: PathBuf,
    pub stats_port: u16,
    pub stats_addr: String,
    pub stats_interval_ms: u64,
    pub pid_file: Option<PathBuf>,
    pub mbuf_size: usize,
    /// Data-plane threads; `None` means one per available core.
    pub threads: Option<usize>,
    /// Reload the config by itself when the file changes.
    pub watch_config: bool,
    /// `--log-format text|json`.
    pub log_format: LogFormat,
    /// `--metrics ADDR:PORT`: serve Prometheus metrics over HTTP at `/metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--stats-identity nutcracker|walnut`: the `service` and `version` of the stats JSON.
    pub stats_identity: String,
    /// `--drain-timeout MSEC`: how long SIGTERM/SIGINT wait for requests in flight.
    pub drain_timeout_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            test_conf: false,
            daemonize: false,
            describe_stats: false,
            verbosity: DEFAULT_VERBOSITY,
            log_file: None,
            conf_file: PathBuf::from(DEFAULT_CONF_FILE),
            stats_port: DEFAULT_STATS_PORT,
            stats_addr: DEFAULT_STATS_ADDR.to_string(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            pid_file: None,
            mbuf_size: DEFAULT_MBUF_SIZE,
            threads: None,
            watch_config: false,
            log_format: LogFormat::Text,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            metrics: None,
            stats_identity: "nutcracker".to_string(),
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Run(Options),
}

/// A bad command line; `Display` is the one-line message printed before the usage.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{PROGRAM}: {0}")]
pub struct UsageError(pub String);

/// The version block printed by `-V`, `-h` and `-D`.
pub fn version_text() -> String {
    format!(
        "This is {PROGRAM}-{} (nutcracker-0.5.0 compatible)\nasync event backend: tokio\n\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The usage text printed by `-h` and after every usage error.
pub fn usage_text() -> String {
    format!(
        "Usage: {PROGRAM} [-?hVdDt] [-v verbosity level] [-o output file]
              [-c conf file] [-s stats port] [-a stats addr]
              [-i stats interval] [-p pid file] [-m mbuf size]
              [--threads N] [--watch-config] [--log-format text|json]
              [--drain-timeout msec] [--metrics addr:port]
              [--stats-identity nutcracker|walnut]

Options:
  -h, --help             : this help
  -V, --version          : show version and exit
  -t, --test-conf        : test configuration for syntax errors and exit
  -d, --daemonize        : run as a daemon
  -D, --describe-stats   : print stats description and exit
  -v, --verbose=N        : set logging level (default: {DEFAULT_VERBOSITY}, min: 0, max: {MAX_VERBOSITY})
  -o, --output=S         : set logging file (default: stderr)
  -c, --conf-file=S      : set configuration file (default: {DEFAULT_CONF_FILE})
  -s, --stats-port=N     : set stats monitoring port (default: {DEFAULT_STATS_PORT})
  -a, --stats-addr=S     : set stats monitoring ip (default: {DEFAULT_STATS_ADDR})
  -i, --stats-interval=N : set stats aggregation interval in msec (default: {DEFAULT_STATS_INTERVAL_MS} msec)
  -p, --pid-file=S       : set pid file (default: off)
  -m, --mbuf-size=N      : set size of mbuf chunk in bytes (default: {DEFAULT_MBUF_SIZE} bytes)
      --threads=N        : set data-plane threads (default: one per core)
      --watch-config     : reload the configuration when the file changes (SIGUSR1 always does)
      --log-format=S     : set log line format, text or json (default: text)
      --drain-timeout=N  : set how long a stop waits for requests in flight in msec (default: {DEFAULT_DRAIN_TIMEOUT_MS} msec)
      --metrics=S        : serve Prometheus metrics at http://S/metrics (default: off)
      --stats-identity=S : stats JSON service/version: nutcracker or walnut (default: nutcracker)
"
    )
}

/// How a flag's value is described in "requires a …" messages, as nutcracker words it.
#[derive(Clone, Copy)]
enum ValueKind {
    Number,
    FileName,
    String,
}

impl ValueKind {
    fn noun(self) -> &'static str {
        match self {
            ValueKind::Number => "a number",
            ValueKind::FileName => "a file name",
            ValueKind::String => "a string",
        }
    }
}

/// (id, short, long, kind) for every flag that takes a value; walnut-only flags have no
/// short form (nutcracker's letters stay free).
const VALUE_FLAGS: [(&str, Option<char>, &str, ValueKind); 13] = [
    ("verbose", Some('v'), "verbose", ValueKind::Number),
    ("output", Some('o'), "output", ValueKind::FileName),
    ("conf-file", Some('c'), "conf-file", ValueKind::FileName),
    ("stats-port", Some('s'), "stats-port", ValueKind::Number),
    ("stats-addr", Some('a'), "stats-addr", ValueKind::String),
    (
        "stats-interval",
        Some('i'),
        "stats-interval",
        ValueKind::Number,
    ),
    ("pid-file", Some('p'), "pid-file", ValueKind::FileName),
    ("mbuf-size", Some('m'), "mbuf-size", ValueKind::Number),
    ("threads", None, "threads", ValueKind::Number),
    ("log-format", None, "log-format", ValueKind::String),
    ("drain-timeout", None, "drain-timeout", ValueKind::Number),
    ("metrics", None, "metrics", ValueKind::String),
    ("stats-identity", None, "stats-identity", ValueKind::String),
];

/// (id, short, long) for every switch.
const SWITCHES: [(&str, char, &str); 6] = [
    ("help", 'h', "help"),
    ("version", 'V', "version"),
    ("test-conf", 't', "test-conf"),
    ("daemonize", 'd', "daemonize"),
    ("describe-stats", 'D', "describe-stats"),
    ("watch-config", 'W', "watch-config"),
];

fn command_definition() -> clap::Command {
    let mut cmd = clap::Command::new(PROGRAM)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .no_binary_name(true)
        // As with getopt, a flag given twice takes its last value.
        .args_override_self(true)
        .allow_hyphen_values(false);
    for (id, short, long) in SWITCHES {
        cmd = cmd.arg(
            Arg::new(id)
                .short(short)
                .long(long)
                .action(ArgAction::SetTrue),
        );
    }
    for (id, short, long, _) in VALUE_FLAGS {
        let mut arg = Arg::new(id)
            .long(long)
            .num_args(1)
            .allow_hyphen_values(true)
            .action(ArgAction::Set);
        if let Some(short) = short {
            arg = arg.short(short);
        }
        cmd = cmd.arg(arg);
    }
    // getopt permutes and ignores positional arguments; accept and drop them.
    cmd.arg(
        Arg::new("positional")
            .num_args(0..)
            .action(ArgAction::Append)
            .hide(true),
    )
}

/// Parses the arguments after the program name.
pub fn parse<I, T>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command_definition()
        .try_get_matches_from(args)
        .map_err(clap_error_to_usage)?;
    if matches.get_flag("help") {
        return Ok(Command::Help);
    }
    if matches.get_flag("version") {
        return Ok(Command::Version);
    }
    options_from(&matches).map(Command::Run)
}

fn clap_error_to_usage(err: clap::Error) -> UsageError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let offending = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    if err.kind() == ErrorKind::InvalidValue || err.kind() == ErrorKind::NoEquals {
        // A flag at the end with no value.
        for (_, short, long, kind) in VALUE_FLAGS {
            let short_matches = short.is_some_and(|c| offending.contains(&format!("-{c}")));
            if offending.contains(&format!("--{long}")) || short_matches {
                return UsageError(format!(
                    "option -{} requires {}",
                    flag_letter(short, long),
                    kind.noun()
                ));
            }
        }
    }
    let shown = offending
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches('-');
    UsageError(format!("invalid option -- '{shown}'"))
}

/// How a flag is named after "option -": its letter, or `-long` for walnut-only flags.
fn flag_letter(short: Option<char>, long: &str) -> String {
    match short {
        Some(c) => c.to_string(),
        None => format!("-{long}"),
    }
}

fn value<'a>(m: &'a ArgMatches, id: &str) -> Option<&'a String> {
    m.get_one::<String>(id)
}

/// nutcracker's `nc_atoi`: decimal digits only.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn number(m: &ArgMatches, id: &str, letter: &str) -> Result<Option<u64>, UsageError> {
    match value(m, id) {
        None => Ok(None),
        Some(s) => parse_digits(s)
            .map(Some)
            .ok_or_else(|| UsageError(format!("option -{letter} requires a number"))),
    }
}

fn non_empty(
    m: &ArgMatches,
    id: &str,
    letter: char,
    kind: ValueKind,
) -> Result<Option<String>, UsageError> {
    match value(m, id) {
        None => Ok(None),
        Some(s) if s.is_empty() && !matches!(kind, ValueKind::FileName) => Err(UsageError(
            format!("option -{letter} requires {}", kind.noun()),
        )),
        Some(s) => Ok(Some(s.clone())),
    }
}

fn options_from(m: &ArgMatches) -> Result<Options, UsageError> {
    let mut opts = Options {
        test_conf: m.get_flag("test-conf"),
        daemonize: m.get_flag("daemonize"),
        describe_stats: m.get_flag("describe-stats"),
        watch_config: m.get_flag("watch-config"),
        ..Options::default()
    };
    if let Some(v) = number(m, "verbose", "v")? {
        opts.verbosity = v.min(u64::from(MAX_VERBOSITY)) as u8;
    }
    if let Some(path) = non_empty(m, "output", 'o', ValueKind::FileName)? {
        // An empty name means stderr, as in nutcracker.
        opts.log_file = (!path.is_empty()).then(|| PathBuf::from(path));
    }
    if let Some(path) = non_empty(m, "conf-file", 'c', ValueKind::FileName)? {
        if path.is_empty() {
            return Err(UsageError("option -c requires a file name".into()));
        }
        opts.conf_file = PathBuf::from(path);
    }
    if let Some(port) = number(m, "stats-port", "s")? {
        if !(1..=65535).contains(&port) {
            return Err(UsageError(format!(
                "option -s value {port} is not a valid port"
            )));
        }
        opts.stats_port = port as u16;
    }
    if let Some(addr) = non_empty(m, "stats-addr", 'a', ValueKind::String)? {
        opts.stats_addr = addr;
    }
    if let Some(ms) = number(m, "stats-interval", "i")? {
        opts.stats_interval_ms = ms;
    }
    if let Some(path) = non_empty(m, "pid-file", 'p', ValueKind::FileName)? {
        if path.is_empty() {
            return Err(UsageError("option -p requires a file name".into()));
        }
        opts.pid_file = Some(PathBuf::from(path));
    }
    if let Some(size) = number(m, "mbuf-size", "m")? {
        if size == 0 {
            return Err(UsageError("option -m requires a non-zero number".into()));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if !(MIN_MBUF_SIZE..=MAX_MBUF_SIZE).contains(&size) {
            return Err(UsageError(format!(
                "mbuf chunk size must be between {MIN_MBUF_SIZE} and {MAX_MBUF_SIZE} bytes"
            )));
        }
        opts.mbuf_size = size;
    }
    if let Some(threads) = number(m, "threads", "-threads")? {
        if threads == 0 || threads > 1024 {
            return Err(UsageError(
                "option --threads requires a number from 1 to 1024".into(),
            ));
        }
        opts.threads = Some(threads as usize);
    }
    if let Some(name) = value(m, "log-format") {
        opts.log_format = LogFormat::from_name(name)
            .ok_or_else(|| UsageError("option --log-format requires text or json".into()))?;
    }
    if let Some(ms) = number(m, "drain-timeout", "-drain-timeout")? {
        opts.drain_timeout_ms = ms;
    }
    if let Some(addr) = value(m, "metrics") {
        let addr = addr.parse().map_err(|_| {
            UsageError(format!(
                "option --metrics requires an ADDR:PORT, not '{addr}'"
            ))
        })?;
        opts.metrics = Some(addr);
    }
    if let Some(identity) = value(m, "stats-identity") {
        opts.stats_identity = match identity.as_str() {
            "nutcracker" | "walnut" => identity.clone(),
            _ => {
                return Err(UsageError(
                    "option --stats-identity requires nutcracker or walnut".into(),
                ))
            }
        };
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().copied())
    }

    fn opts(args: &[&str]) -> Options {
        match run(args) {
            Ok(Command::Run(o)) => o,
            other => panic!("expected options, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_nutcracker() {
        let o = opts(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.verbosity, 5);
        assert_eq!(o.stats_port, 22222);
        assert_eq!(o.stats_addr, "0.0.0.0");
        assert_eq!(o.stats_interval_ms, 30000);
        assert_eq!(o.mbuf_size, 16384);
        assert_eq!(o.conf_file, PathBuf::from("conf/nutcracker.yml"));
        assert_eq!(o.log_file, None);
        assert_eq!(o.pid_file, None);
    }

    #[test]
    fn short_and_long_forms_mean_the_same() {
        let short = opts(&[
            "-d",
            "-t",
            "-v",
            "7",
            "-o",
            "/tmp/l",
            "-c",
            "x.yml",
            "-s",
            "2000",
            "-a",
            "127.0.0.1",
            "-i",
            "500",
            "-p",
            "/tmp/p",
            "-m",
            "1024",
        ]);
        let long = opts(&[
            "--daemonize",
            "--test-conf",
            "--verbose=7",
            "--output=/tmp/l",
            "--conf-file=x.yml",
            "--stats-port=2000",
            "--stats-addr=127.0.0.1",
            "--stats-interval=500",
            "--pid-file=/tmp/p",
            "--mbuf-size=1024",
        ]);
        assert_eq!(short, long);
        assert!(short.daemonize && short.test_conf);
        assert_eq!(short.verbosity, 7);
        assert_eq!(short.stats_port, 2000);
        assert_eq!(short.mbuf_size, 1024);
    }

    #[test]
    fn attached_values_and_bundled_switches_work() {
        let o = opts(&["-dt", "-v9", "-cfoo.yml"]);
        assert!(o.daemonize && o.test_conf);
        assert_eq!(o.verbosity, 9);
        assert_eq!(o.conf_file, PathBuf::from("foo.yml"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["-h"]), Ok(Command::Help));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
    }

    #[test]
    fn walnut_only_flags_parse() {
        let o = opts(&["--log-format", "json", "--drain-timeout=2500"]);
        assert_eq!(o.log_format, LogFormat::Json);
        assert_eq!(o.drain_timeout_ms, 2500);
        assert_eq!(opts(&["--log-format=text"]).log_format, LogFormat::Text);
        assert_eq!(opts(&[]).drain_timeout_ms, 10_000);
        assert_eq!(opts(&["--drain-timeout", "0"]).drain_timeout_ms, 0);
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value_as_with_getopt() {
        let o = opts(&["-v", "5", "-v", "6", "-o", "a", "-o", "b", "-d", "-d"]);
        assert_eq!(o.verbosity, 6);
        assert_eq!(o.log_file, Some(PathBuf::from("b")));
        assert!(o.daemonize);
    }

    #[test]
    fn verbosity_is_clamped_to_eleven() {
        assert_eq!(opts(&["-v", "99"]).verbosity, 11);
    }

    #[test]
    fn positional_arguments_are_ignored() {
        assert_eq!(opts(&["stray", "-v", "3"]).verbosity, 3);
    }

    #[test]
    fn bad_values_give_nutcracker_messages() {
        let cases: &[(&[&str], &str)] = &[
            (&["-v", "abc"], "walnut: option -v requires a number"),
            (&["-v", "-1"], "walnut: option -v requires a number"),
            (
                &["-s", "0"],
                "walnut: option -s value 0 is not a valid port",
            ),
            (
                &["-s", "70000"],
                "walnut: option -s value 70000 is not a valid port",
            ),
            (&["-i", "-5"], "walnut: option -i requires a number"),
            (&["-m", "0"], "walnut: option -m requires a non-zero number"),
            (
                &["-m", "100"],
                "walnut: mbuf chunk size must be between 512 and 16777216 bytes",
            ),
            (&["-a", ""], "walnut: option -a requires a string"),
            (&["-x"], "walnut: invalid option -- 'x'"),
            (&["--bogus"], "walnut: invalid option -- 'bogus'"),
            (&["-v"], "walnut: option -v requires a number"),
            (&["-c"], "walnut: option -c requires a file name"),
            (
                &["--threads", "0"],
                "walnut: option --threads requires a number from 1 to 1024",
            ),
            (
                &["--log-format", "xml"],
                "walnut: option --log-format requires text or json",
            ),
            (
                &["--log-format"],
                "walnut: option --log-format requires a string",
            ),
            (
                &["--drain-timeout", "5s"],
                "walnut: option --drain-timeout requires a number",
            ),
            (
                &["--drain-timeout"],
                "walnut: option --drain-timeout requires a number",
            ),
        ];
        for (args, want) in cases {
            let got = run(args)
                .expect_err(&format!("{args:?} must fail"))
                .to_string();
            assert_eq!(&got, want, "args {args:?}");
        }
    }

    #[test]
    fn usage_lists_every_flag() {
        let usage = usage_text();
        for flag in [
            "--help",
            "--version",
            "--test-conf",
            "--daemonize",
            "--describe-stats",
            "--verbose=N",
            "--output=S",
            "--conf-file=S",
            "--stats-port=N",
            "--stats-addr=S",
            "--stats-interval=N",
            "--pid-file=S",
            "--mbuf-size=N",
            "--threads=N",
            "--log-format=S",
            "--drain-timeout=N",
        ] {
            assert!(usage.contains(flag), "usage is missing {flag}");
        }
    }
}
