//! The hook bus: the catalogue of known events and the durable history every event goes through.
//!
//! Everything that emits (CLI, registry operations, watcher, HTTP) appends to the history file; every
//! consumer (tail, streams, webhooks, plugins) follows that file, so events from any process reach
//! every consumer. This module knows nothing of HTTP or the watcher.

pub mod catalogue;
pub mod delivery;
pub mod history;
pub mod plugins;
pub mod spill;
pub mod webhook;

use anyhow::{bail, Result};
use serde_json::Value;

pub use catalogue::{Catalogue, HookSpec};
pub use history::{Envelope, Filter, Follower, History};

use crate::config::Config;
use crate::paths::Paths;

/// Why an emit was refused (callers map these to exit code 2 / HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("unsupported event {0:?}: not in the hook catalogue (see `comfyvn-obs hooks list`)")]
    UnknownEvent(String),
    #[error("hook data must be a JSON object, found {0}")]
    NotAnObject(&'static str),
}

/// Catalogue + history.
#[derive(Debug, Clone)]
pub struct Bus {
    pub catalogue: Catalogue,
    pub history: History,
}

impl Bus {
    pub fn open(paths: &Paths, config: &Config) -> Result<Bus> {
        Ok(Bus {
            catalogue: Catalogue::with_declared(&config.obs.hooks.events)?,
            history: History::new(paths, &config.obs.hooks),
        })
    }

    /// Check an event before it is appended.
    pub fn validate(&self, event: &str, data: &Value) -> Result<(), EmitError> {
        if !self.catalogue.contains(event) {
            return Err(EmitError::UnknownEvent(event.to_string()));
        }
        if !data.is_object() {
            return Err(EmitError::NotAnObject(crate::config::kind(data)));
        }
        Ok(())
    }

    /// Validate and append one event.
    pub fn emit(&self, event: &str, data: Value) -> Result<Envelope> {
        self.validate(event, &data)?;
        self.history.append(event, data)
    }

    /// Validate and append several events in order (one lock hold).
    pub fn emit_batch(&self, items: Vec<(String, Value)>) -> Result<Vec<Envelope>> {
        for (event, data) in &items {
            if let Err(e) = self.validate(event, data) {
                bail!(e);
            }
        }
        self.history.append_batch(items)
    }
}
