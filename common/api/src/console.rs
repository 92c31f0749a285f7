//! `GET /console`: the operator console, a page for people (see
//! `docs/console.md`). One HTML page, one script and one style sheet,
//! committed as source beside this file and compiled in: no build step, no
//! hosted assets. The routes are public because they hold no data; the
//! page asks for a token and every call it makes (`/v1/...` and the
//! stream, which it authenticates with the `bearer.<hex>` subprotocol) is
//! checked like any other client's.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::ApiContext;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// What the page may load and connect to: itself only. No inline script or
/// style, no frames, no other origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /console` and its assets under `/console/`.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/console", get(|| async { asset(PAGE, "text/html; charset=utf-8") }))
        .route("/console/", get(|| async { Redirect::permanent("../console") }))
        .route("/console/console.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console/console.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(PAGE.contains("src=\"console/console.js\"") && PAGE.contains("href=\"console/console.css\""));
        for text in [PAGE, SCRIPT.replace("'http://www.w3.org/2000/svg'", "").as_str(), STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"), "no hosted assets");
        }
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style="), "no inline script or style (CSP)");
        assert!(SCRIPT.contains("bearer.") && SCRIPT.contains("shoal.stream"));
    }
}
