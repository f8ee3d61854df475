//! The file watcher: files dropped, edited, renamed or deleted under the watched folders become
//! sidecar writes and hook events (DESIGN §6, §8; docs/watch.md).
//!
//! The pipeline, one module per stage: [`backend`] (notify behind notify-debouncer-full, native or
//! polling) → [`change`] (translation into the closed [`Change`] enum, filtered by [`rules`]) →
//! [`plan`] (settle tracker, removal grace, recently-removed memory, own-write suppression; decides
//! [`Action`]s) → [`sink`] (the registry carries actions out; [`registry_sink`] is the real one) →
//! [`engine`] (journals each chunk, publishes its events with `Bus::emit_batch`). [`reconcile`] plans
//! the start-up and after-overflow catch-up with the same actions.
//!
//! Owns: notify and notify-debouncer-full (no other module imports them), the watch journal and lock
//! under `<data>/watch/`. Must not: write sidecars itself (the registry does), follow symbolic links,
//! modify asset bytes, print (the command does).
//!
//! # Known problems (of the platform, and what the watcher does about them)
//!
//! - **inotify limits.** Each watched folder costs one inotify watch, counted per user against
//!   `fs.inotify.max_user_watches` (often 8192 on older systems); each watcher costs an instance
//!   (`fs.inotify.max_user_instances`, often 128). When either runs out, at start or later while new
//!   folders appear, the watcher says so with the `sysctl` that raises it and falls back to polling
//!   (`obs.watch_started` reports `mode: "polling"` and the reason), then reconciles.
//! - **Editors save by rename.** vim renames the original to `name~` and writes a new file; most
//!   image editors write a hidden temp file and rename it over the original. Both arrive as a remove
//!   (or a rename away) plus a create (or a rename in). A registered file that disappears is only
//!   removed after a grace period (the settle window), so either pattern is one modification that
//!   keeps `uid` and human fields.
//! - **Writers that keep files open.** inotify's close-write says a writer is done; writers that
//!   never close (or platforms without that signal, or polling) are handled by the settle window:
//!   size and mtime unchanged for `settle_ms`. A writer that pauses longer than the window gets its
//!   file registered early and refreshed when it writes again. A file is never hashed while its
//!   size or mtime change during the hash.
//! - **Network mounts** (NFS, SMB, sshfs, WSL's Windows drives) deliver no events for changes made
//!   by other machines: use `--poll` / `obs.watch.poll`. Polling compares mtimes at one-second
//!   resolution (notify's poller), so two writes within the same second may show up as one, and a
//!   rename shows as delete + create (joined back into a move by content hash).
//! - **Event queue overflow.** Under very large bursts inotify drops events and says so; the watcher
//!   then reconciles the tree with the disk (`obs.watch_rescanned`, reason given).
//! - **Folders appearing with content** (`cp -r`, `mv` of a folder, `unzip`): files written before
//!   the new folder's watch existed produce no events; a created or moved-in folder is scanned.

pub mod backend;
pub mod change;
pub mod clock;
pub mod disk;
pub mod engine;
pub mod journal;
pub mod plan;
pub mod reconcile;
pub mod registry_sink;

pub mod rules;
pub mod settle;
pub mod sink;

pub use backend::{Fallback, Mode};
pub use change::Change;
pub use engine::{spawn, spawn_with_clock, Options, Summary, Watcher};
pub use registry_sink::RegistrySink;

pub use rules::{Rules, Verdict};
pub use sink::{Action, Applied, Known, Sink};
