//! The integration test binary: runs the real `comfyvn-obs` executable in temp runtime roots.

mod support;

mod assets;
mod audit;
mod config;
mod hooks;
mod watch;
