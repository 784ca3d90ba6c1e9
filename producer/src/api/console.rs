//! The web console: three static files compiled into the binary (`producer/console/`),
//! served under `/console/` when `serve --console` (or `api.console`) enables it. The page
//! reads only the HTTP API beside it, with the token the user gives it, so it shows nothing
//! the API would not. No file is fetched from elsewhere: a strict Content-Security-Policy
//! lets the page load only its own script and style and talk only to this server.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::Api;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes(r: Router<Arc<Api>>) -> Router<Arc<Api>> {
    r.route(
        "/console",
        get(|| async { Redirect::permanent("/console/") }),
    )
    .route(
        "/console/",
        get(|| async { file("text/html; charset=utf-8", INDEX) }),
    )
    .route(
        "/console/app.js",
        get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
    )
    .route(
        "/console/app.css",
        get(|| async { file("text/css; charset=utf-8", STYLE) }),
    )
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
