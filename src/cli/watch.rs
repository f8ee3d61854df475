//! `comfyvn-obs watch …`

use std::path::PathBuf;

use clap::Args;

/// Watch asset folders: files dropped, edited, renamed or deleted there become sidecars and hook
/// events. Runs until SIGINT/SIGTERM (a second signal exits at once).
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folder to watch, inside the assets root (repeatable). Default: `obs.watch.roots`, else the
    /// whole assets root. (`--root` is the global runtime-root flag, hence `--dir`.)
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// A file whose writer never reports closing it is ready once its size and mtime have not changed
    /// for this many milliseconds (default: `obs.watch.settle_ms`).
    #[arg(long, value_name = "N")]
    pub settle_ms: Option<u64>,
    /// Poll the folders instead of using native file events (network mounts; `obs.watch.poll`).
    #[arg(long)]
    pub poll: bool,
    /// Do not watch: say whether PATH is watched and which rule decides (exit 0 watched, 1 not).
    #[arg(long, value_name = "PATH")]
    pub explain: Option<PathBuf>,
    /// With --explain: print the verdict as JSON.
    #[arg(long, requires = "explain")]
    pub json: bool,
}
