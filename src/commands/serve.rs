//! `comfyvn-obs serve`: resolve the server settings (flags over `obs.server`, the token and debug
//! switches from the environment), start the HTTP API and the background services, wait for
//! SIGINT/SIGTERM, then stop the services and the server in that order.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Ctx;
use crate::cli::serve::ServeArgs;
use crate::exit_code::{hinted, ExitCode};
use crate::http::{AppState, ServeSettings, Server};

pub fn run(ctx: &Ctx, args: ServeArgs) -> Result<ExitCode> {
    crate::memory::limit_arenas(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut settings = ServeSettings::from_config(&ctx.config.obs.server)?;
    if let Some(bind) = &args.bind {
        settings.bind = parse_bind(bind)?;
    }
    if let Some(n) = args.workers {
        settings.workers = usize::from(n);
    }
    settings.token = env_var("COMFYVN_API_TOKEN");
    settings.test_panic_route = env_var("COMFYVN_TEST_PANIC_ROUTE").as_deref() == Some("1");

    let stop = crate::signals::install_stop_flag()?;
    super::sweep_litter(&ctx.paths, &[]);
    let state = AppState::new(ctx.paths.clone(), ctx.config.clone())?;
    let server = Server::start(state, settings)?;
    eprintln!("listening on http://{}", server.local_addr());
    let mut services = Services::start(ctx, !args.no_watch)?;

    let mut failed = None;
    while !stop.load(Ordering::Relaxed) && server.failure().is_none() {
        if let Err(e) = services.check() {
            failed = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("shutting down");
    services.stop();
    server.shutdown()?;
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::Success),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `127.0.0.1:8001`, `[::1]:0`, or a name such as `localhost:8001` (first address it resolves to).
fn parse_bind(s: &str) -> Result<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(hinted(format!("--bind: cannot use {s:?} as an address"), "give host:port, e.g. 127.0.0.1:8001")),
    }
}

/// The background services that run beside the API in this process and stop with it.
///
/// The webhook delivery worker, the crash uploader, the dev plugin host (with `COMFYVN_DEV_MODE=1`) and the file watcher
/// (unless `--no-watch`): each runs on its own thread, polls `stop`, and is joined by
/// [`Services::stop`] before the server shuts down. All of them follow the hook history file, so they
/// see events from every process, not only this one.
///
/// They are supervised: one that stops on its own (an error it cannot retry, a panic) is logged and
/// started again after each delay of `obs.server.restart_backoff_ms`; a run of a minute resets the
/// count. One that keeps stopping ends `serve` ([`Services::check`]) rather than leaving it half alive.
struct Services {
    stop: Arc<AtomicBool>,
    backoff: Vec<Duration>,
    running: Vec<Supervised>,
}

/// A service has to be running for this long before its restart count starts again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a service runs as.
enum Running {
    Watcher(crate::watch::Watcher),
    Thread(JoinHandle<()>),
}

impl Running {
    fn is_finished(&self) -> bool {
        match self {
            Running::Watcher(w) => w.is_finished(),
            Running::Thread(t) => t.is_finished(),
        }
    }

    /// Wait for it; why it stopped, if it was not asked to.
    fn join(self) -> Option<String> {
        match self {
            Running::Watcher(w) => match w.join() {
                Ok(summary) => {
                    tracing::info!(actions = summary.actions, events = summary.events, "watcher stopped");
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            },
            Running::Thread(t) => t.join().err().map(|_| "it panicked".to_string()),
        }
    }
}

type Starter = Box<dyn FnMut(Arc<AtomicBool>) -> Result<Option<Running>>>;

struct Supervised {
    name: &'static str,
    start: Starter,
    running: Option<Running>,
    started_at: Instant,
    /// Restarts since the last healthy run.
    restarts: usize,
    /// When to start it again, after it stopped.
    retry_at: Option<Instant>,
}

impl Supervised {
    /// Start it again after the next delay of `backoff` (`log` says so); once the delays are used up,
    /// the error that ends `serve`: "the <name> <gave_up>: <why>".
    fn retry_later(&mut self, backoff: &[Duration], why: &str, gave_up: &str, log: &str) -> Result<()> {
        let Some(&delay) = backoff.get(self.restarts) else {
            anyhow::bail!(hinted(
                format!("the {} {gave_up}: {why}", self.name),
                "fix the cause above and start `serve` again",
            ));
        };
        tracing::error!(service = self.name, error = %why, "{log} in {delay:?}");
        self.restarts += 1;
        self.retry_at = Some(Instant::now() + delay);
        Ok(())
    }
}

impl Services {
    fn start(ctx: &Ctx, watch: bool) -> Result<Services> {
        let backoff = ctx.config.obs.server.restart_backoff_ms.iter().map(|&ms| Duration::from_millis(ms)).collect();
        let mut services = Services { stop: Arc::new(AtomicBool::new(false)), backoff, running: Vec::new() };
        if watch {
            let (paths, config) = (ctx.paths.clone(), ctx.config.clone());
            let mut first = true;
            services.add("watcher", move |stop| {
                let w = start_watcher(&paths, &config, stop, first)?;
                first = false;
                Ok(Some(Running::Watcher(w)))
            })?;
        }
        let (paths, config) = (ctx.paths.clone(), ctx.config.clone());
        services.add("webhook worker", move |stop| {
            crate::hooks::delivery::spawn_worker(paths.clone(), config.clone(), stop).map(|t| Some(Running::Thread(t)))
        })?;
        // The crash uploader reads consent again on every pass, so it runs whatever the gate says now.
        let paths = ctx.paths.clone();
        services.add("crash uploader", move |stop| {
            crate::crash_upload::spawn_service(paths.clone(), stop).map(|t| Some(Running::Thread(t)))
        })?;
        // The OTLP exporter, when an endpoint is set.
        let (paths, config) = (ctx.paths.clone(), ctx.config.clone());
        services.add("otlp exporter", move |stop| {
            crate::otlp::spawn_service(paths.clone(), config.clone(), stop).map(|t| t.map(Running::Thread))
        })?;
        // A plugin host already running for this root (e.g. `hooks plugins --run`) is not a reason to
        // refuse to serve: say so and go on without a second one.
        let (paths, config) = (ctx.paths.clone(), ctx.config.clone());
        services.add("plugin host", move |stop| {
            match crate::hooks::plugins::PluginHost::new(&paths, &config).start(stop) {
                Ok(handle) => Ok(handle.map(Running::Thread)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "plugin host not started");
                    Ok(None)
                }
            }
        })?;
        tracing::debug!(watch, count = services.running.len(), "background services started");
        Ok(services)
    }

    /// Start a service now; an error here (bad folders, another watcher) fails `serve` at once.
    fn add(
        &mut self,
        name: &'static str,
        start: impl FnMut(Arc<AtomicBool>) -> Result<Option<Running>> + 'static,
    ) -> Result<()> {
        let mut start: Starter = Box::new(start);
        if let Some(n) = injected_failures(name) {
            // Tests: the first `n` runs of this service die at once, as a panic would end them.
            let mut left = n;
            let mut real = start;
            start = Box::new(move |stop| {
                if left == 0 {
                    return real(stop);
                }
                left -= 1;
                // `resume_unwind` ends the thread as a panic does, without the crash-dump hook.
                let t = std::thread::Builder::new()
                    .name("injected-failure".into())
                    .spawn(|| std::panic::resume_unwind(Box::new("injected failure")))?;
                Ok(Some(Running::Thread(t)))
            });
        }
        let running = start(Arc::clone(&self.stop))?;
        if running.is_some() {
            self.running.push(Supervised {
                name,
                start,
                running,
                started_at: Instant::now(),
                restarts: 0,
                retry_at: None,
            });
        }
        Ok(())
    }

    /// Restart services that stopped on their own; an error when one keeps stopping.
    fn check(&mut self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        for s in &mut self.running {
            if s.running.as_ref().is_some_and(Running::is_finished) {
                let why = s.running.take().and_then(Running::join).unwrap_or_else(|| "it stopped".into());
                if s.started_at.elapsed() >= HEALTHY_RUN {
                    s.restarts = 0;
                }
                s.retry_later(
                    &self.backoff,
                    &why,
                    "stopped and could not be kept running",
                    "background service stopped; restarting",
                )?;
            }
            if s.retry_at.is_some_and(|t| Instant::now() >= t) {
                s.retry_at = None;
                s.started_at = Instant::now();
                match (s.start)(Arc::clone(&self.stop)) {
                    Ok(Some(r)) => {
                        tracing::info!(service = s.name, "background service started again");
                        s.running = Some(r);
                    }
                    Ok(None) => {}
                    // Counts as stopping at once: the next delay, or the end.
                    Err(e) => s.retry_later(
                        &self.backoff,
                        &format!("{e:#}"),
                        "could not be started again",
                        "cannot start the background service; retrying",
                    )?,
                }
            }
        }
        Ok(())
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.running {
            if let Some(why) = s.running.and_then(Running::join) {
                tracing::error!(service = s.name, error = %why, "background service failed");
            }
        }
    }
}

/// `COMFYVN_TEST_FAIL_SERVICE=<name>:<n>` (tests only): the first `n` runs of service `name` (`watcher`,
/// `webhook worker`, `plugin host`) fail.
fn injected_failures(name: &str) -> Option<usize> {
    let v = env_var("COMFYVN_TEST_FAIL_SERVICE")?;
    let (which, n) = v.rsplit_once(':')?;
    (which == name).then(|| n.parse().ok()).flatten()
}

/// The same watcher engine as `comfyvn-obs watch`, on the configured roots (`announce`: say so on
/// standard error, at the first start).
fn start_watcher(
    paths: &crate::paths::Paths,
    config: &crate::config::Config,
    stop: Arc<AtomicBool>,
    announce: bool,
) -> Result<crate::watch::Watcher> {
    crate::fs::ensure_dir(&paths.assets_root)?;
    let options = crate::watch::Options::resolve(paths, config, &[], None, false)?;
    let sink = crate::watch::RegistrySink::open(paths, config)?;
    let bus = crate::hooks::Bus::open(paths, config)?;
    let watcher = crate::watch::spawn(options, sink, bus, stop)?;
    if !announce {
        return Ok(watcher);
    }
    if let Some(fb) = watcher.fallback() {
        eprintln!("error: {}", fb.message);
        eprintln!("hint: {}", fb.hint);
    }
    let roots: Vec<String> = watcher.roots().iter().map(|r| r.display().to_string()).collect();
    eprintln!("watching {} ({} mode)", roots.join(", "), watcher.mode().as_str());
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_bind("[::1]:8001").unwrap().ip().is_loopback());
        assert!(parse_bind("localhost:8001").unwrap().ip().is_loopback());
        assert!(parse_bind("nonsense").is_err());
    }
}
