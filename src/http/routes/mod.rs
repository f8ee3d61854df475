//! The route table: every route group contributes `pub fn routes() -> Vec<Route>`, registered here
//! once. The router and `/openapi.json` are both built from [`table`], so a route cannot be served
//! without being documented or documented without being served.
//!
//! Adding a group: write `src/http/routes/<group>.rs` with `pub fn routes() -> Vec<Route>` and add a
//! `pub mod <group>;` line and a `routes.extend(<group>::routes());` line below.

pub mod assets;
pub mod audit;
pub mod crashes;
pub mod dashboard;
pub mod health;
pub mod hooks;
pub mod providers;
pub mod telemetry;
pub mod webhooks;

use super::router::Route;
use super::ServeSettings;
use crate::hooks::Catalogue;

/// Every route the server answers, in registration order. The catalogue is the one the server
/// serves: routes that take an event name document its names.
pub fn table(settings: &ServeSettings, catalogue: &Catalogue) -> Vec<Route> {
    let mut routes = Vec::new();
    routes.extend(dashboard::routes());
    routes.extend(health::routes());
    routes.extend(hooks::routes(catalogue));
    routes.extend(webhooks::routes(catalogue));
    routes.extend(super::stream::routes(catalogue));
    routes.extend(audit::routes());
    routes.extend(telemetry::routes());
    routes.extend(crashes::routes());
    routes.extend(providers::routes());
    routes.extend(assets::routes());
    routes.extend(super::openapi::routes());
    if settings.test_panic_route {
        routes.push(test_panic_route());
    }
    routes
}

/// `GET /__test/panic`: a handler that panics, to exercise the 500 path (the envelope with
/// `details.error_id`, the panic hook, the server serving on). Registered only when the server was
/// started with `COMFYVN_TEST_PANIC_ROUTE=1`; a debug aid, never on by default.
fn test_panic_route() -> Route {
    Route::get("/__test/panic", |_, _| panic!("deliberate panic from the test panic route"))
        .tag("debug")
        .summary("Panic on purpose (only with COMFYVN_TEST_PANIC_ROUTE=1)")
        .error(500, "Always: the internal_error envelope with details.error_id.")
}
