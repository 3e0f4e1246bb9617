//! The `walnut` binary: parse flags → load config → daemonize (before any runtime) → run.

use std::process::ExitCode;

use anyhow::Context;
use tracing::{error, info, warn};

use walnut::cli::{self, Command, Options};
use walnut::config;
use walnut::ops::{daemon, log, pidfile::PidFile};

/// How often `--watch-config` looks at the config file.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a stopping walnut waits for clients to finish the requests they have in flight.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
            for problem in &errors.0 {
                eprintln!("{problem}");
            }
            eprintln!(
                "{}: configuration file '{conf_name}' syntax is invalid",
                cli::PROGRAM
            );
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
            error!("{err:#}");
            eprintln!("{}: {err:#}", cli::PROGRAM);
            ExitCode::FAILURE
        }
    }
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
    log::init(options.verbosity, log_target.clone());
    let _pidfile = match &options.pid_file {
        Some(path) => Some(
            PidFile::create(path)
                .with_context(|| format!("writing pid file '{}' failed", path.display()))?,
        ),
        None => None,
    };
    info!(
        "{}-{} started on pid {}",
        cli::PROGRAM,
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One thread: a plain event loop, without the work-stealing scheduler's bookkeeping.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder.enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives once the listeners are open must not find its
        // default action (SIGHUP and SIGUSR1 would kill the process).
        let signals = Signals::install()?;
        let mut proxy = walnut::proxy::start(config)?;
        let watcher = options
            .watch_config
            .then(|| walnut::reload::watch(options.conf_file.clone(), WATCH_INTERVAL));
        serve_until_stopped(
            signals,
            &mut proxy,
            &options.conf_file,
            &log_target,
            watcher,
        )
        .await?;
        info!(
            "stopping: no new clients; draining requests in flight (up to {} ms)",
            DRAIN_TIMEOUT.as_millis()
        );
        let left = proxy.drain(DRAIN_TIMEOUT).await;
        if left > 0 {
            warn!("drain timeout: closing {left} clients with requests still in flight");
        }
        info!("stopped");
        anyhow::Ok(())
    })
}

/// The signals walnut handles, registered before any listener opens.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }
}

/// Serves until SIGTERM or SIGINT. Meanwhile SIGHUP reopens the log file, and SIGUSR1 (or a
/// change to the config file, with `--watch-config`) reloads the config in place.
async fn serve_until_stopped(
    signals: Signals,
    proxy: &mut walnut::proxy::Proxy,
    conf_file: &std::path::Path,
    log_target: &log::LogTarget,
    mut watcher: Option<tokio::sync::mpsc::Receiver<()>>,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
    } = signals;
    loop {
        let file_changed = async {
            match watcher.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => { info!("signal 15 (SIGTERM) received, exiting"); return Ok(()) }
            _ = int.recv() => { info!("signal 2 (SIGINT) received, exiting"); return Ok(()) }
            _ = hup.recv() => {
                info!("signal 1 (SIGHUP) received, reopening log file");
                if let Err(err) = log_target.reopen() {
                    error!("reopening log file failed: {err}");
                }
            }
            _ = usr1.recv() => {
                info!("signal 10 (SIGUSR1) received, reloading '{}'", conf_file.display());
                walnut::reload::reload_from_file(proxy, conf_file);
            }
            Some(()) = file_changed => {
                walnut::reload::reload_from_file(proxy, conf_file);
            }
        }
    }
}
