//! `GET /` and `GET /ui/<file>`: the Debug Integrations dashboard, a page of plain HTML, CSS and
//! JavaScript compiled into the binary (`web/`), so it works offline and needs no build step.
//!
//! The page only reads and calls the documented API routes; it holds no state of its own on the
//! server. Every answer here carries a Content-Security-Policy that allows scripts and styles from
//! this origin only (no inline code, no `eval`), forbids framing, and an `ETag`, so a reload costs a
//! 304. The page renders every value from events, sidecars and dumps as text (`textContent`), never
//! as HTML; the policy is the second line of defence.

use serde_json::json;

use crate::http::router::Route;
use crate::http::{Reply, Req};

/// The policy on every dashboard file. `connect-src 'self'` covers fetch, EventSource and the
/// WebSocket on the same host and port.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/`, media type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../../web/index.html"),
};

const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../../../web/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../../../web/app.css") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_str!("../../../web/favicon.svg") },
];

/// The files the page is made of, for tests and the size budget: (name, bytes).
pub fn files() -> Vec<(&'static str, &'static str)> {
    std::iter::once(&INDEX).chain(ASSETS).map(|a| (a.name, a.body)).collect()
}

pub fn routes() -> Vec<Route> {
    let html = json!({"type": "string", "contentMediaType": "text/html"});
    let mut routes = vec![Route::get("/", |_, req| Ok(serve(&INDEX, req)))
        .tag("dashboard")
        .summary("The Debug Integrations dashboard")
        .describe(
            "A web page over this API: providers, live hooks, crashes, assets and audit, telemetry \
                consent and webhooks. Everything it needs is compiled into the binary; nothing is loaded \
                from the network. See docs/dashboard.md.",
        )
        .response(200, "The page.", Some(("text/html", html)))
        .response(304, "Unchanged since the `If-None-Match` ETag.", None)];
    for a in ASSETS {
        let media = a.content_type.split(';').next().unwrap_or(a.content_type);
        routes.push(
            Route::get(&format!("/ui/{}", a.name), move |_, req| Ok(serve(a, req)))
                .tag("dashboard")
                .summary(&format!("The dashboard's {}", a.name))
                .response(200, "The file.", Some((media, json!({"type": "string"}))))
                .response(304, "Unchanged since the `If-None-Match` ETag.", None),
        );
    }
    routes
}

fn serve(asset: &Asset, req: &Req<'_>) -> Reply {
    let etag = format!("\"{}\"", &crate::digest::sha256_hex(asset.body.as_bytes())[..16]);
    let fresh = req.header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let reply =
        if fresh { Reply::empty(304) } else { Reply::bytes(asset.content_type, asset.body.as_bytes().to_vec()) };
    reply
        .with_header("ETag", &etag)
        // Revalidate every time: the binary may have been upgraded under a running browser.
        .with_header("Cache-Control", "no-cache")
        .with_header("Content-Security-Policy", CSP)
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Content-Type-Options", "nosniff")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_only_to_files_it_embeds_and_loads_nothing_from_elsewhere() {
        for (name, body) in files() {
            for bad in ["http://", "https://", "//cdn", "@import", "eval(", "new Function", "innerHTML", "outerHTML"] {
                // The page may name the API's own absolute URLs in prose, never load from them.
                assert!(!body.contains(bad) || name == "favicon.svg" && bad == "http://", "{name} contains {bad:?}");
            }
        }
        let index = INDEX.body;
        for a in ASSETS {
            assert!(index.contains(&format!("/ui/{}", a.name)), "index.html does not use {}", a.name);
        }
        assert!(!index.contains("<script>") && !index.contains("style="), "index.html has inline script or style");
    }

    #[test]
    fn the_page_stays_within_its_size_budget() {
        // Issue budget: under 100 KB compressed. Uncompressed under 100 KB is the stricter, simpler check.
        let total: usize = files().iter().map(|(_, b)| b.len()).sum();
        assert!(total < 100 * 1024, "the dashboard is {total} bytes");
    }
}
