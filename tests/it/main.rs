//! The integration test binary: runs the real `comfyvn-obs` executable in temp runtime roots.

mod support;

mod assets;
mod audit;
mod audit_ci;
mod config;
mod crash;
mod crash_upload;
mod dashboard;
mod doctor;
mod export;
mod full_disk;
mod hooks;
mod http;
mod http_assets;
mod http_fuzz;
mod http_golden;
mod http_reliability;
mod http_routes;
mod http_security;
mod http_stream;
mod logging;
mod plugins;
mod providers;
mod serve_services;
mod telemetry;
mod tidy;
mod watch;
mod webhooks;
