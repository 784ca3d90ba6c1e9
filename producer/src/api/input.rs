//! What a call brings, read and checked: the JSON body (naming the field at fault), the
//! `Idempotency-Key` header, the path's request id and the query parameters.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, StatusCode, header};

use fleet_producer::RequestFile;

use super::{ApiError, IDEMPOTENCY_KEY};

/// Whether the content type is JSON (`application/json` or `application/*+json`, any
/// parameters).
/// A body must be sent as JSON: else 415 (a browser cannot send JSON across origins
/// without a CORS preflight, which the API never answers).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON, sent with Content-Type: application/json",
    ))
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses a request body, naming the field at fault: the JSON path where parsing stopped,
/// joined with the field an "unknown field" or "missing field" message names.
pub fn parse_body(body: &[u8]) -> Result<RequestFile, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let file: RequestFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The known part of the path: a key being read when the syntax broke shows as `?`.
        let mut path = String::new();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let inner = e.into_inner();
        let message = format!("not a valid request: {inner}");
        let text = inner.to_string();
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(name), "") => Some(name.to_owned()),
            // An unknown field's key is already on the path; a missing one is not.
            (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
                Some(path.to_owned())
            }
            (Some(name), path) => Some(format!("{path}.{name}")),
            (None, "") => None,
            (None, path) => Some(path.to_owned()),
        };
        ApiError::invalid(message, field)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("not a valid request: {e}"), None))?;
    Ok(file)
}

/// The request id: the body's, else the `Idempotency-Key` header's; both given must agree.
pub(super) fn apply_idempotency_key(
    file: &mut RequestFile,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(());
    };
    let key_field = || Some("Idempotency-Key".to_owned());
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key: must be ASCII", key_field()))?;
    fleet_shared::ids::validate_request_id(key)
        .map_err(|e| ApiError::invalid(format!("Idempotency-Key: {e}"), key_field()))?;
    match &file.request_id {
        None => file.request_id = Some(key.to_owned()),
        Some(id) if id == key => {}
        Some(id) => {
            return Err(ApiError::invalid(
                format!(
                    "request_id: {id:?} differs from the Idempotency-Key header {key:?}; give one, or the same in both"
                ),
                Some("request_id".to_owned()),
            ));
        }
    }
    Ok(())
}

/// The `{id}` of a path; an id that cannot exist is not found.
pub(super) fn request_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::invalid(e.body_text(), Some("id".to_owned())))?;
    fleet_shared::ids::validate_request_id(&id).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request {id:?}: not a valid request id ({e})"),
        )
    })?;
    Ok(id)
}

/// `stop_running=true|false`; any other parameter is refused.
pub(super) fn stop_running(query: Option<&str>) -> Result<bool, ApiError> {
    let mut stop = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "stop_running" {
            return Err(ApiError::invalid(
                format!("unknown query parameter {key:?} (only stop_running)"),
                Some(key.to_owned()),
            ));
        }
        stop = match value {
            "true" => true,
            "false" => false,
            other => {
                return Err(ApiError::invalid(
                    format!("stop_running: must be true or false, got {other:?}"),
                    Some("stop_running".to_owned()),
                ));
            }
        };
    }
    Ok(stop)
}

/// Most failures one page returns.
pub const MAX_PAGE: usize = 1000;

/// `cursor=...&limit=N` (both optional); any other parameter is refused.
pub(super) fn page_params(query: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
    let (mut cursor, mut limit) = (None, 100);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "cursor" => {
                cursor = Some(percent_decode(value).ok_or_else(|| {
                    ApiError::invalid(
                        "cursor: not a cursor this listing gave",
                        Some("cursor".into()),
                    )
                })?)
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("limit: must be 1 to {MAX_PAGE}, got {value:?}"),
                            Some("limit".into()),
                        )
                    })?
            }
            other => {
                return Err(ApiError::invalid(
                    format!("unknown query parameter {other:?} (cursor, limit)"),
                    Some(other.to_owned()),
                ));
            }
        }
    }
    Ok((cursor, limit))
}

/// The query of a results page: [`page_params`] and an optional `state`.
pub(super) fn results_params(
    query: Option<&str>,
) -> Result<(Option<String>, usize, Option<fleet_shared::state::JobState>), ApiError> {
    let mut state = None;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("state", v)) => {
                state =
                    Some(v.parse().map_err(|e| {
                        ApiError::invalid(format!("state: {e}"), Some("state".into()))
                    })?)
            }
            _ => rest.push(pair),
        }
    }
    let (cursor, limit) = page_params(Some(&rest.join("&")))?;
    Ok((cursor, limit, state))
}

/// The query of the requests list: [`page_params`] and an optional request `state`.
pub(super) fn list_params(
    query: Option<&str>,
) -> Result<(Option<String>, Option<String>, usize), ApiError> {
    let mut state = None;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("state", v)) if !v.is_empty() => state = Some(v.to_ascii_uppercase()),
            Some(("state", _)) => {}
            _ => rest.push(pair),
        }
    }
    let (cursor, limit) = page_params(Some(&rest.join("&")))?;
    Ok((state, cursor, limit))
}

/// `since_ms=N` (optional, default 0); any other parameter is refused.
pub(super) fn since_param(query: Option<&str>) -> Result<u64, ApiError> {
    let mut since = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since_ms", v)) => {
                since = v.parse().map_err(|_| {
                    ApiError::invalid(
                        format!("since_ms: must be a time in ms since the epoch, got {v:?}"),
                        Some("since_ms".into()),
                    )
                })?
            }
            _ => {
                let key = pair.split('=').next().unwrap_or(pair);
                return Err(ApiError::invalid(
                    format!("unknown query parameter {key:?} (only since_ms)"),
                    Some(key.to_owned()),
                ));
            }
        }
    }
    Ok(since)
}

/// `%XX` and `+` decoded; `None` when malformed.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
