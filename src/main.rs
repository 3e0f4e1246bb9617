//! The `walnut` binary: parse flags → load config → daemonize (before any runtime) → run.

use std::process::ExitCode;

use std::time::Duration;

use anyhow::Context;
use tracing::{error, warn};

use walnut::cli::{self, Command, Options};
use walnut::config;
use walnut::loga;
use walnut::ops::{daemon, limits, log, notify, pidfile::PidFile};

/// twemproxy's `-D` text: each metric and its description.
const STATS_DESCRIPTION: &str = r##"pool stats:
  client_eof          "# eof on client connections"
  client_err          "# errors on client connections"
  client_connections  "# active client connections"
  server_ejects       "# times backend server was ejected"
  forward_error       "# times we encountered a forwarding error"
  fragments           "# fragments created from a multi-vector request"

server stats:
  server_eof          "# eof on server connections"
  server_err          "# errors on server connections"
  server_timedout     "# timeouts on server connections"
  server_connections  "# active server connections"
  server_ejected_at   "timestamp when server was ejected in usec since epoch"
  requests            "# requests"
  request_bytes       "total request bytes"
  responses           "# responses"
  response_bytes      "total response bytes"
  in_queue            "# requests in incoming queue"
  in_queue_bytes      "current request bytes in incoming queue"
  out_queue           "# requests in outgoing queue"
  out_queue_bytes     "current request bytes in outgoing queue"
"##;

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            eprint!("{}{}", cli::version_text(), cli::usage_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            eprint!("{}", cli::version_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(err) => {
            eprintln!("{err}");
            eprint!("{}", cli::usage_text());
            return ExitCode::FAILURE;
        }
    };
    if options.describe_stats {
        eprint!("{}{STATS_DESCRIPTION}", cli::version_text());
        return ExitCode::SUCCESS;
    }
    let conf_name = options.conf_file.display().to_string();
    let config = match config::load(&options.conf_file) {
        Ok(config) => config,
        Err(errors) => {
            let invalid = format!(
                "{}: configuration file '{conf_name}' syntax is invalid",
                cli::PROGRAM
            );
            for problem in &errors.0 {
                eprintln!("{problem}");
            }
            eprintln!("{invalid}");
            // A real start (not -t) also writes the problems to the -o log file, where an
            // operator of a daemon looks first.
            if !options.test_conf {
                log_config_errors(&options, &errors, &invalid);
            }
            return ExitCode::FAILURE;
        }
    };
    if options.test_conf {
        eprintln!(
            "{}: configuration file '{conf_name}' syntax is ok",
            cli::PROGRAM
        );
        return ExitCode::SUCCESS;
    }
    if options.daemonize && !daemon::is_daemon_child() {
        // The config is known good here, so the parent's exit status means something.
        return match daemon::spawn_detached_child() {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{}: daemonize failed: {err}", cli::PROGRAM);
                ExitCode::FAILURE
            }
        };
    }
    match run(options, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(target: log::ALWAYS_TARGET, "{err:#}");
            eprintln!("{}: {err:#}", cli::PROGRAM);
            ExitCode::FAILURE
        }
    }
}

/// Appends config problems to the `-o` log file as ordinary ERROR log lines.
fn log_config_errors(options: &Options, errors: &config::ConfigErrors, summary: &str) {
    let Some(path) = &options.log_file else {
        return;
    };
    let Ok(target) = log::LogTarget::file(path) else {
        return;
    };
    let _control = log::init(options.verbosity, target, options.log_format);
    for problem in &errors.0 {
        error!(target: log::ALWAYS_TARGET, "{problem}");
    }
    error!(target: log::ALWAYS_TARGET, "{summary}");
}

fn run(options: Options, config: config::Config) -> anyhow::Result<()> {
    if daemon::is_daemon_child() {
        daemon::become_daemon().context("daemonize")?;
    }
    let log_target = match &options.log_file {
        Some(path) => log::LogTarget::file(path)
            .with_context(|| format!("opening log file '{}' failed", path.display()))?,
        None => log::LogTarget::stderr(),
    };
    let log_control = log::init(options.verbosity, log_target.clone(), options.log_format);
    let _pidfile = match &options.pid_file {
        Some(path) => Some(
            PidFile::create(path)
                .with_context(|| format!("writing pid file '{}' failed", path.display()))?,
        ),
        None => None,
    };
    loga!(
        "{}-{} started on pid {}",
        cli::PROGRAM,
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    apply_client_limit(&config);
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    loga!("data-plane threads: {threads}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let drain_timeout = Duration::from_millis(options.drain_timeout_ms);
    runtime.block_on(async move {
        let mut proxy = walnut::proxy::start(config)?;
        // Every listener is bound: systemd may start what depends on walnut.
        send_notify("READY=1");
        wait_for_stop(&log_target, &log_control).await?;
        send_notify("STOPPING=1");
        loga!(
            "stopping: no new clients; draining requests in flight (up to {} ms)",
            drain_timeout.as_millis()
        );
        let left = proxy.drain(drain_timeout).await;
        if left > 0 {
            warn!("drain timeout: closing {left} clients with requests still in flight");
        }
        loga!("stopped");
        anyhow::Ok(())
    })
}

/// Raises the open-file limit and installs the client limit twemproxy derives from it.
fn apply_client_limit(config: &config::Config) {
    let nofile = match limits::raise_nofile() {
        Ok(limit) => {
            if limit.soft > limit.before {
                loga!(
                    "raised the open-file limit from {} to {}",
                    limit.before,
                    limit.soft
                );
            }
            limit.soft
        }
        Err((limit, err)) => {
            warn!(
                "cannot raise the open-file limit from {} to {}: {err}",
                limit.soft, limit.hard
            );
            limit.soft
        }
    };
    let pools = || {
        config
            .pools
            .iter()
            .map(|p| (p.server_connections, p.servers.len()))
    };
    let servers = limits::server_descriptors(pools());
    match limits::derive_max_clients(nofile, pools()) {
        Some(max) => {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            limits::set_max_clients(max);
            loga!(
                "open-file limit {nofile}: max client connections {max}, max server connections {servers} ({} reserved)",
                limits::RESERVED_FDS
            );
        }
        None => {
            limits::set_max_clients(0);
            warn!(
                "open-file limit {nofile} leaves no room for clients (server connections and listeners need {servers}, {} reserved); the client limit is not enforced",
                limits::RESERVED_FDS
            );
        }
    }
}

/// Tells systemd about a state change when it runs walnut as a `Type=notify` service.
fn send_notify(state: &str) {
    if let Err(err) = notify::notify(state) {
        warn!(
            "sd_notify {state} to ${} failed: {err}",
            notify::NOTIFY_SOCKET
        );
    }
}

/// Waits for SIGTERM or SIGINT. Meanwhile: SIGHUP reopens the log file, SIGTTIN / SIGTTOU
/// raise / lower the log level, SIGUSR1 / SIGUSR2 are logged and otherwise ignored.
async fn wait_for_stop(
    log_target: &log::LogTarget,
    log_control: &log::LogControl,
) -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    let kind = |s: Signal| SignalKind::from_raw(s as i32);
    let mut term = signal(kind(Signal::SIGTERM))?;
    let mut int = signal(kind(Signal::SIGINT))?;
    let mut hup = signal(kind(Signal::SIGHUP))?;
    let mut ttin = signal(kind(Signal::SIGTTIN))?;
    let mut ttou = signal(kind(Signal::SIGTTOU))?;
    let mut usr1 = signal(kind(Signal::SIGUSR1))?;
    let mut usr2 = signal(kind(Signal::SIGUSR2))?;
    let num = |s: Signal| s as i32;
    loop {
        tokio::select! {
            _ = term.recv() => {
                loga!("signal {} (SIGTERM) received, exiting", num(Signal::SIGTERM));
                return Ok(());
            }
            _ = int.recv() => {
                loga!("signal {} (SIGINT) received, exiting", num(Signal::SIGINT));
                return Ok(());
            }
            _ = hup.recv() => {
                loga!("signal {} (SIGHUP) received, reopening log file", num(Signal::SIGHUP));
                if let Err(err) = log_target.reopen() {
                    error!("reopening log file failed: {err}");
                }
            }
            _ = ttin.recv() => {
                loga!("signal {} (SIGTTIN) received, up logging level", num(Signal::SIGTTIN));
                if let Some(level) = log_control.raise() {
                    loga!("up log level to {level}");
                }
            }
            _ = ttou.recv() => {
                loga!("signal {} (SIGTTOU) received, down logging level", num(Signal::SIGTTOU));
                if let Some(level) = log_control.lower() {
                    loga!("down log level to {level}");
                }
            }
            _ = usr1.recv() => loga!("signal {} (SIGUSR1) received", num(Signal::SIGUSR1)),
            _ = usr2.recv() => loga!("signal {} (SIGUSR2) received", num(Signal::SIGUSR2)),
        }
    }
}
