//! The file watcher (placeholder doc, replaced below).

pub mod change;
pub mod clock;
pub mod disk;
pub mod plan;
pub mod rules;
pub mod settle;
pub mod sink;
