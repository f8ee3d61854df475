//! The file watcher (placeholder doc, replaced below).

pub mod backend;
pub mod change;
pub mod clock;
pub mod disk;
pub mod engine;
pub mod journal;
pub mod plan;
pub mod reconcile;
pub mod rules;
pub mod settle;
pub mod sink;
