//! The boundary between the watcher and the asset registry: the watcher decides *what* happened
//! ([`Action`], a closed, data-only enum) and a [`Sink`] carries it out (sidecar writes, trash moves)
//! and says which hook events it caused. The watcher publishes those events (in one batch per burst)
//! and never writes a sidecar itself.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A hook event to publish: `(event name, data)`, the shape `Bus::emit_batch` takes.
pub type HookEvent = (String, Value);

/// What the registry knows about one asset (read from its sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub uid: String,
    /// SHA-256 hex of the content when the sidecar was last written.
    pub hash: String,
    pub bytes: u64,
}

/// What the watcher asks the registry to do. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A file without a sidecar is complete: write its sidecar (a new uid).
    /// Hooks: `on_asset_sidecar_written`, `on_asset_saved`, `on_asset_registered`.
    Register { path: PathBuf, hash: String, bytes: u64 },
    /// A registered file's content changed (also an editor's save-by-rename): refresh the machine
    /// fields, keep `uid` and the human fields.
    /// Hooks: `on_asset_sidecar_written`, `on_asset_meta_updated` (with the previous hash).
    Refresh { path: PathBuf, hash: String, bytes: u64, previous_hash: String },
    /// A registered file moved from `from` to `to` (or reappeared at `to` with the content of a file
    /// removed from `from` moments ago): its sidecar moves with it (unless it already moved along
    /// with its folder) and its `path` is updated. Hooks: `on_asset_meta_updated` (with the previous path).
    Move { from: PathBuf, to: PathBuf },
    /// A file reappeared with the content of a recently removed asset whose sidecar is in the trash:
    /// that sidecar comes back beside it (same uid, human fields kept), machine fields refreshed.
    /// Hooks: `on_asset_meta_updated` (with the previous path).
    Restore { path: PathBuf, hash: String, bytes: u64, trashed: PathBuf, previous_path: PathBuf },
    /// A registered file is gone: its sidecar goes to the trash (when it still exists).
    /// Hooks: `on_asset_removed`.
    Remove {
        path: PathBuf,
        known: Known,
        /// It was moved out of the watched tree (its sidecar went along), not deleted.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        away: bool,
    },
    /// A sidecar changed and the watcher did not write it: validate it, never rewrite it.
    /// Hooks: `on_asset_meta_updated` when valid; `obs.sidecar_invalid` naming the field otherwise.
    SidecarEdited { sidecar: PathBuf, asset: PathBuf },
}

impl Action {
    /// The asset path the action is about (its target, for moves).
    pub fn path(&self) -> &Path {
        match self {
            Action::Register { path, .. }
            | Action::Refresh { path, .. }
            | Action::Restore { path, .. }
            | Action::Remove { path, .. } => path,
            Action::Move { to, .. } => to,
            Action::SidecarEdited { asset, .. } => asset,
        }
    }

    /// Register and Refresh touch only their own path, so a batch of them may run in parallel.
    pub fn is_independent(&self) -> bool {
        matches!(self, Action::Register { .. } | Action::Refresh { .. })
    }
}

/// What carrying out an action did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Hook events to publish, in order.
    pub events: Vec<HookEvent>,
    /// The asset's registered state afterwards (`None` after a removal or an invalid edit).
    pub known: Option<Known>,
    /// The sidecar the action wrote or moved into place: the watcher remembers its bytes so its own
    /// write is never mistaken for a person's edit.
    pub sidecar: Option<PathBuf>,
    /// Where a removed asset's sidecar went.
    pub trashed: Option<PathBuf>,
}

/// The registry, as the watcher sees it. Implementations must be callable from several threads at
/// once for different paths (Register/Refresh batches run in parallel).
pub trait Sink: Sync {
    /// What the sidecar of `asset` says; `Ok(None)` when it has none; an error when the sidecar
    /// exists but is unreadable or invalid (the watcher then leaves it alone).
    fn lookup(&self, asset: &Path) -> Result<Option<Known>>;

    /// Carry out one action.
    fn apply(&self, action: &Action) -> Result<Applied>;

    /// Carry out independent actions (registrations and refreshes of distinct files); results in
    /// the same order. The default runs [`Sink::apply`] on the rayon pool; a registry can override it
    /// to share one durability barrier across the batch.
    fn apply_batch(&self, actions: &[Action]) -> Vec<Result<Applied>> {
        use rayon::prelude::*;
        actions.par_iter().map(|a| self.apply(a)).collect()
    }

    /// The events `action` publishes, rebuilt from what is on disk: used after a crash between a
    /// sidecar write and the history append. Empty when the action's effect is not on disk (the
    /// reconcile that follows then redoes it).
    fn replay(&self, action: &Action) -> Result<Vec<HookEvent>>;
}
