//! The `walnut` binary: parse flags → load config → daemonize (before any runtime) → run.

use std::process::ExitCode;

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind};

use anyhow::Context;
use tracing::{error, warn};

use walnut::cli::{self, Command, Options};
use walnut::config;
use walnut::loga;
use walnut::ops::{daemon, fatal, limits, log, notify, pidfile::PidFile};

/// How often `--watch-config` looks at the config file.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    // Before any thread starts, so every thread inherits the mask (see ops::fatal).
    if let Err(err) = fatal::block() {
        eprintln!("{}: blocking fatal signals failed: {err}", cli::PROGRAM);
    }
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
        eprint!("{}{}", cli::version_text(), walnut::stats::describe_stats());
        return ExitCode::SUCCESS;
    }
    let conf_name = options.conf_file.display().to_string();
    // What `--watch-config` compares with: the file as it is before it is read.
    let conf_fingerprint = options
        .watch_config
        .then(|| walnut::reload::fingerprint(&options.conf_file))
        .flatten();
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
    match run(options, config, conf_fingerprint) {
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

fn run(
    options: Options,
    config: config::Config,
    conf_fingerprint: Option<walnut::reload::Fingerprint>,
) -> anyhow::Result<()> {
    if daemon::is_daemon_child() {
        daemon::become_daemon().context("daemonize")?;
    }
    let log_target = match &options.log_file {
        Some(path) => log::LogTarget::file(path)
            .with_context(|| format!("opening log file '{}' failed", path.display()))?,
        None => log::LogTarget::stderr(),
    };
    let log_control = log::init(options.verbosity, log_target.clone(), options.log_format);
    fatal::watch().context("starting the fatal-signal thread")?;
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
    // The flag wins over the file's `walnut: threads:`.
    let threads = options.threads.or(config.threads).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    loga!("data-plane threads: {threads}");
    // One event loop per thread, each a plain single-threaded runtime: this thread's is worker
    // 0 (it also serves signals, stats and accepting), `proxy::workers` starts the others.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let drain_timeout = Duration::from_millis(options.drain_timeout_ms);
    runtime.block_on(async move {
        // Handlers first: a signal that arrives once the listeners are open must not find its
        // default action (SIGHUP, SIGUSR1 and SIGTTIN would stop or kill the process).
        let signals = Signals::install()?;
        walnut::proxy::workers::start(threads).context("starting the worker threads")?;
        let stats = walnut::stats::Stats::new(
            walnut::stats::StatsOptions {
                identity: walnut::stats::Identity::parse(&options.stats_identity)
                    .unwrap_or_default(),
                source: walnut::stats::hostname(),
                interval: Duration::from_millis(options.stats_interval_ms.max(1)),
            },
            Vec::new(),
        );
        let mut proxy = walnut::proxy::start(config, stats.clone())?;
        start_stats_servers(&options, &stats).await?;
        // Every listener is bound: systemd may start what depends on walnut.
        send_notify("READY=1");
        let watcher = options.watch_config.then(|| {
            walnut::reload::watch(options.conf_file.clone(), WATCH_INTERVAL, conf_fingerprint)
        });
        let reload = Reload {
            proxy: &mut proxy,
            conf_file: &options.conf_file,
            watcher,
        };
        serve_until_stopped(signals, reload, &log_target, &log_control).await?;
        send_notify("STOPPING=1");
        loga!(
            "stopping: no new clients; answering what clients send until they are quiet (up to {} ms)",
            drain_timeout.as_millis()
        );
        let report = proxy.drain(drain_timeout).await;
        if report.cut_clients > 0 {
            warn!(
                "drain timeout: closed {} clients with {} requests they had sent unanswered",
                report.cut_clients, report.cut_requests
            );
        }
        if report.still_open > 0 {
            warn!("drain timeout: {} clients still open", report.still_open);
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

/// The stats port (`-a`:`-s`, twemproxy's JSON) and, with `--metrics`, the Prometheus endpoint.
async fn start_stats_servers(
    options: &Options,
    stats: &std::sync::Arc<walnut::stats::Stats>,
) -> anyhow::Result<()> {
    let stats_addr = tokio::net::lookup_host((options.stats_addr.as_str(), options.stats_port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("stats address '{}' does not resolve", options.stats_addr))?;
    let listener = walnut::stats::bind_stats(stats_addr)
        .with_context(|| format!("stats listener on {stats_addr} failed"))?;
    stats.spawn_aggregator();
    loga!("stats listening on {stats_addr}");
    tokio::spawn(walnut::stats::serve_stats(listener, stats.clone()));
    if let Some(addr) = options.metrics {
        let listener = walnut::stats::bind_metrics(addr)
            .with_context(|| format!("metrics listener on {addr} failed"))?;
        loga!("Prometheus metrics on http://{addr}/metrics");
        let registry = std::sync::Arc::new(walnut::stats::metrics_registry(stats));
        tokio::spawn(walnut::stats::serve_metrics(listener, registry));
    }
    Ok(())
}

/// The signals walnut handles, registered before any listener opens.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use nix::sys::signal::Signal as Sig;
        let on = |s: Sig| tokio::signal::unix::signal(SignalKind::from_raw(s as i32));
        Ok(Signals {
            term: on(Sig::SIGTERM)?,
            int: on(Sig::SIGINT)?,
            hup: on(Sig::SIGHUP)?,
            ttin: on(Sig::SIGTTIN)?,
            ttou: on(Sig::SIGTTOU)?,
            usr1: on(Sig::SIGUSR1)?,
            usr2: on(Sig::SIGUSR2)?,
        })
    }
}

/// What a reload needs: the running proxy, the config file, and the file watcher if any.
struct Reload<'a> {
    proxy: &'a mut walnut::proxy::Proxy,
    conf_file: &'a std::path::Path,
    watcher: Option<tokio::sync::mpsc::Receiver<()>>,
}

/// Serves until SIGTERM or SIGINT. Meanwhile: SIGHUP reopens the log file, SIGTTIN / SIGTTOU
/// raise / lower the log level, SIGUSR1 (or a change to the config file, with
/// `--watch-config`) reloads the config in place, SIGUSR2 is logged and otherwise ignored.
async fn serve_until_stopped(
    signals: Signals,
    mut reload: Reload<'_>,
    log_target: &log::LogTarget,
    log_control: &log::LogControl,
) -> anyhow::Result<()> {
    use nix::sys::signal::Signal;
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut ttin,
        mut ttou,
        mut usr1,
        mut usr2,
    } = signals;
    let num = |s: Signal| s as i32;
    loop {
        let file_changed = async {
            match reload.watcher.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
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
            _ = usr1.recv() => {
                loga!("signal {} (SIGUSR1) received, reloading '{}'", num(Signal::SIGUSR1), reload.conf_file.display());
                walnut::reload::reload_from_file(reload.proxy, reload.conf_file);
            }
            Some(()) = file_changed => {
                walnut::reload::reload_from_file(reload.proxy, reload.conf_file);
            }
            _ = usr2.recv() => loga!("signal {} (SIGUSR2) received", num(Signal::SIGUSR2)),
        }
    }
}
