//! `comfyvn-obs serve`: resolve the server settings (flags over `obs.server`, the token and debug
//! switches from the environment), start the HTTP API and the background services, wait for
//! SIGINT/SIGTERM, then stop the services and the server in that order.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    let services = Services::start(ctx, !args.no_watch)?;

    while !stop.load(Ordering::Relaxed) && server.failure().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("shutting down");
    services.stop();
    server.shutdown()?;
    Ok(ExitCode::Success)
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
/// The webhook delivery worker, the dev plugin host (with `COMFYVN_DEV_MODE=1`) and the file watcher
/// (unless `--no-watch`): each runs on its own thread, polls `stop`, and is joined by
/// [`Services::stop`] before the server shuts down. All of them follow the hook history file, so they
/// see events from every process, not only this one.
struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    watcher: Option<crate::watch::Watcher>,
}

impl Services {
    fn start(ctx: &Ctx, watch: bool) -> Result<Services> {
        let mut services = Services { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new(), watcher: None };
        if watch {
            services.watcher = Some(start_watcher(ctx, Arc::clone(&services.stop))?);
        }
        let worker =
            crate::hooks::delivery::spawn_worker(ctx.paths.clone(), ctx.config.clone(), Arc::clone(&services.stop))?;
        services.threads.push(("webhooks", worker));
        // A plugin host already running for this root (e.g. `hooks plugins --run`) is not a reason to
        // refuse to serve: say so and go on without a second one.
        match crate::hooks::plugins::PluginHost::new(&ctx.paths, &ctx.config).start(Arc::clone(&services.stop)) {
            Ok(Some(handle)) => services.threads.push(("plugins", handle)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "plugin host not started"),
        }
        tracing::debug!(watch, count = services.threads.len(), "background services started");
        Ok(services)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher {
            match w.join() {
                Ok(summary) => tracing::info!(actions = summary.actions, events = summary.events, "watcher stopped"),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "watcher failed"),
            }
        }
        for (name, handle) in self.threads {
            if handle.join().is_err() {
                tracing::error!(service = name, "background service panicked");
            }
        }
    }
}

/// The same watcher engine as `comfyvn-obs watch`, on the configured roots.
fn start_watcher(ctx: &Ctx, stop: Arc<AtomicBool>) -> Result<crate::watch::Watcher> {
    crate::fs::ensure_dir(&ctx.paths.assets_root)?;
    let options = crate::watch::Options::resolve(&ctx.paths, &ctx.config, &[], None, false)?;
    let sink = crate::watch::RegistrySink::open(&ctx.paths, &ctx.config)?;
    let bus = crate::hooks::Bus::open(&ctx.paths, &ctx.config)?;
    let watcher = crate::watch::spawn(options, sink, bus, stop)?;
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
