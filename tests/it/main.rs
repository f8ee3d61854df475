//! The integration test binary: runs the real `comfyvn-obs` executable in temp runtime roots.

mod support;

mod config;
mod hooks;
mod watch;
