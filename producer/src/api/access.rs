//! Who may call the API, and from where: a bearer token when `api.token` is set, and the
//! checks that keep a web page on another site from acting through a user's browser.
//!
//! - **Token.** With `api.token` (env `FLEET_API_TOKEN`) set, every call but `/healthz`,
//!   `/readyz` and the console's static files needs `Authorization: Bearer <token>`, or is
//!   answered 401. The console's files hold no data: the page asks for the token and sends
//!   it with every API call it makes.
//! - **Cross-site requests.** Nothing changes state on a GET. A state-changing request
//!   (any method but GET, HEAD, OPTIONS) that a browser marks as coming from another site
//!   (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is not this server)
//!   is refused with 403, whatever it carries: a form on another site cannot cancel a
//!   request through a logged-in console. The API sends no CORS headers, so other sites
//!   cannot read its answers either. Clients that are not browsers send neither header.
//! - **DNS rebinding.** On a loopback address (the default), a request whose `Host` is not
//!   a loopback name is refused with 403: a page whose name resolves to 127.0.0.1 cannot
//!   reach the API through the user's browser.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError};

/// Paths answered without the token: the probes and the console's static files.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path == "/console" || path.starts_with("/console/")
}

/// The access checks, before every route.
pub(super) async fn check(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Err(e) = allowed(&api, req.method(), req.uri().path(), req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn allowed(api: &Api, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if api.access.loopback_only && !host_is_loopback(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the API listens on a loopback address and answers only requests addressed to localhost, 127.0.0.1 or [::1]",
        ));
    }
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && let Some(why) = cross_site(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!("refused a state-changing request from another site ({why})"),
        ));
    }
    if let Some(token) = &api.access.token
        && !open_path(path)
        && !bearer_matches(headers, token)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this API needs its token: send Authorization: Bearer <api.token>",
        ));
    }
    Ok(())
}

/// Why a request looks cross-site, if it does: what the browser said.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    if let Some(origin) = get("origin") {
        let host = get("host").unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if origin_host != Some(host) {
            return Some(format!("Origin {origin} is not this server ({host})"));
        }
    }
    None
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without Host: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    matches!(name, "localhost" | "::1")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access settings of a running API.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `api.token`: needed by every call but the open paths.
    pub token: Option<String>,
    /// The API listens on a loopback address: only loopback `Host`s are answered.
    pub loopback_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn browsers_cross_site_marks_are_refused_and_others_pass() {
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-origin")])).is_none());
        assert!(
            cross_site(&headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:8080")
            ]))
            .is_some()
        );
        assert!(
            cross_site(&headers(&[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080")
            ]))
            .is_none()
        );
        // curl, an SDK: neither header.
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080")])).is_none());
    }

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for ok in [
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "127.3.4.5",
            "localhost",
        ] {
            assert!(host_is_loopback(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:8080", "[2001:db8::1]:80"] {
            assert!(!host_is_loopback(&headers(&[("host", bad)])), "{bad}");
        }
    }

    #[test]
    fn the_token_must_match_exactly() {
        let h = |v: &str| headers(&[("authorization", v)]);
        assert!(bearer_matches(&h("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(&h("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&h("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(&h("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}
