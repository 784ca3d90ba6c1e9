//! The producer's HTTP API (`fleet-producer serve`): submit a request, read its status,
//! cancel it, list its failed jobs; beside `/metrics`, `/healthz` and `/readyz` as a worker
//! serves them. JSON in and out; every error has one shape,
//! `{"error": {"code", "message", "field"}}`. The routes are [`ROUTES`], which builds the
//! router and is checked against `producer/openapi.json`, the API's description.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleet_shared::metrics::Health;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use fleet_producer::{Producer, ProducerError, RequestError, RequestFile};

/// The default limit on a request body. A body is held whole and parsed into a JSON tree
/// (several times its size in memory) and every job's message is built before anything is
/// written, so the limit bounds what one submission costs the server. 8 MiB of inline jobs
/// is some 100,000 small payloads; larger requests are better generated on the server from
/// `source` (an S3 prefix) or `range`, whose bodies are a few hundred bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Every route: (method, path in OpenAPI syntax). The router is built from this list, and a
/// test checks it against `openapi.json`'s `paths`, so the two cannot drift.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/requests"),
    ("GET", "/v1/requests/{id}"),
    ("POST", "/v1/requests/{id}/cancel"),
    ("GET", "/v1/requests/{id}/failures"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The request header that supplies the request id when the body has none.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the handlers share.
pub struct Api {
    pub producer: Producer,
    /// Marked on every successful AWS call; `/readyz` reads it.
    pub health: Arc<Health>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
}

impl Api {
    pub fn new(
        producer: Producer,
        health: Arc<Health>,
        metrics: PrometheusHandle,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            producer,
            health,
            metrics,
            max_body_bytes,
        }
    }

    /// Marks the services a producer call reached: DynamoDB when the ledger answered (found
    /// or not, or a conflict: the request item is read first), SQS when messages were sent
    /// or sending failed after the ledger writes.
    fn mark_reached<T: Reached>(&self, r: &Result<T, ProducerError>) {
        match r {
            Ok(v) => {
                self.health.dynamodb_ok();
                if v.sent_messages() {
                    self.health.sqs_ok();
                }
            }
            Err(ProducerError::NotFound(_) | ProducerError::Conflict { .. }) => {
                self.health.dynamodb_ok()
            }
            Err(ProducerError::Queue(_)) => self.health.dynamodb_ok(),
            Err(_) => {}
        }
    }
}

/// Whether a successful call sent messages (so SQS answered).
trait Reached {
    fn sent_messages(&self) -> bool {
        false
    }
}

impl Reached for fleet_producer::SubmitReport {
    fn sent_messages(&self) -> bool {
        self.sent > 0
    }
}
impl Reached for fleet_producer::Status {}
impl Reached for fleet_producer::CancelReport {}
impl<T> Reached for fleet_shared::ledger::Page<T> {}

/// The API's router: [`ROUTES`], a JSON 404 for any other path and a JSON 405 for another
/// method on a known path.
pub fn router(api: Arc<Api>) -> Router {
    let mut r: Router<Arc<Api>> = Router::new();
    for &(method, path) in ROUTES {
        if method == "GET" && fleet_shared::metrics::PATHS.contains(&path) {
            continue; // served by the metrics router, merged below
        }
        let Some(handler) = handler(method, path) else {
            panic!("api::ROUTES lists {method} {path}, which has no handler");
        };
        r = r.route(path, handler);
    }
    r.merge(fleet_shared::metrics::router(
        api.metrics.clone(),
        api.health.clone(),
    ))
    .fallback(no_route)
    .method_not_allowed_fallback(no_method)
    .layer(DefaultBodyLimit::max(api.max_body_bytes))
    .with_state(api)
}

fn handler(method: &str, path: &str) -> Option<MethodRouter<Arc<Api>>> {
    Some(match (method, path) {
        ("POST", "/v1/requests") => post(submit),
        ("GET", "/v1/requests/{id}") => get(status),
        ("POST", "/v1/requests/{id}/cancel") => post(cancel),
        ("GET", "/v1/requests/{id}/failures") => get(failures),
        _ => return None,
    })
}

/// Keeps `/readyz` true while the services answer, even when no client calls: every `every`,
/// reads the jobs queue's depth (SQS) and a request that does not exist (DynamoDB).
pub async fn keep_ready(
    api: Arc<Api>,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        // A configured URL resolves without a call; reading the queue's depth asks SQS.
        let answered = match fleet_shared::queue::sqs::SqsQueue::resolve(sqs.clone(), &queue).await
        {
            Ok(q) => q.depth().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match answered {
            Ok(()) => api.health.sqs_ok(),
            Err(e) => tracing::warn!(error = %e, "readiness: SQS did not answer"),
        }
        match api.producer.status("fleet-readiness-probe").await {
            Ok(_) | Err(ProducerError::NotFound(_)) => api.health.dynamodb_ok(),
            Err(e) => tracing::warn!(error = %e, "readiness: DynamoDB did not answer"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// An error response: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault (a JSON path such as `options.max_attempts`), if any.
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(message: impl Into<String>, field: Option<String>) -> Self {
        Self {
            field,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ProducerError> for ApiError {
    fn from(e: ProducerError) -> Self {
        let message = e.to_string();
        match e {
            ProducerError::Invalid(RequestError::Field { field, .. }) => {
                Self::invalid(message, Some(field))
            }
            ProducerError::Invalid(RequestError::Syntax(_)) => Self::invalid(message, None),
            ProducerError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", message),
            ProducerError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ProducerError::NotDone { .. } => Self::new(StatusCode::CONFLICT, "not_done", message),
            // A ledger that refuses for good (its table of another layout, an invalid item)
            // will not answer otherwise on a retry.
            ProducerError::Ledger(ref l)
                if l.class() == fleet_shared::error::ErrorClass::Permanent =>
            {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
            ProducerError::Ledger(_)
            | ProducerError::Queue(_)
            | ProducerError::Ecs(_)
            | ProducerError::Storage(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ProducerError::NoDeadLetterQueue => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

/// Awaits a producer call and notes which services answered, for `/readyz`.
async fn call<T: Reached>(
    api: &Api,
    fut: impl std::future::Future<Output = Result<T, ProducerError>>,
) -> Result<T, ApiError> {
    let r = fut.await;
    api.mark_reached(&r);
    r.map_err(ApiError::from)
}

fn json_response(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Whether the content type is JSON (`application/json` or `application/*+json`, any
/// parameters).
fn is_json(headers: &HeaderMap) -> bool {
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
fn apply_idempotency_key(file: &mut RequestFile, headers: &HeaderMap) -> Result<(), ApiError> {
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

async fn submit(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body is over the limit of {} bytes (--max-body-bytes); generate large requests from source or range",
                    api.max_body_bytes
                ),
            )
        } else {
            ApiError::invalid(format!("cannot read the body: {}", e.body_text()), None)
        }
    })?;
    let mut file = parse_body(&body)?;
    apply_idempotency_key(&mut file, &headers)?;
    let report = call(&api, api.producer.submit_file(file)).await?;
    let mut response = if report.created {
        json_response(StatusCode::CREATED, &report)
    } else {
        json_response(StatusCode::OK, &report)
    };
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/requests/{}", report.request_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The `{id}` of a path; an id that cannot exist is not found.
fn request_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
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

async fn status(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let r = api.producer.status(&id).await;
    api.mark_reached(&r);
    Ok(json_response(StatusCode::OK, r?))
}

/// `stop_running=true|false`; any other parameter is refused.
fn stop_running(query: Option<&str>) -> Result<bool, ApiError> {
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

async fn cancel(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let stop = stop_running(uri.query())?;
    let report = call(&api, api.producer.cancel(&id, stop)).await?;
    Ok(json_response(StatusCode::OK, report))
}

/// Most failures one page returns.
pub const MAX_PAGE: usize = 1000;

/// `cursor=...&limit=N` (both optional); any other parameter is refused.
fn page_params(query: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
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

/// The failures document: a page of the request's FAILED jobs with their errors and
/// histories, and the cursor of the next page.
pub fn failures_json(
    request_id: &str,
    page: &fleet_shared::ledger::Page<fleet_producer::JobView>,
) -> Value {
    let failures: Vec<Value> = page
        .items
        .iter()
        .map(|j| {
            let error = j
                .history
                .iter()
                .rev()
                .find_map(|h| h.error.clone())
                .or_else(|| j.last_error.clone());
            json!({
                "job_id": j.job_id,
                "attempts": j.attempts,
                "error_class": j.error_class,
                "error": error,
                "history": j.history,
                "older_attempts": j.older_attempts,
            })
        })
        .collect();
    json!({"request_id": request_id, "failures": failures, "next": page.next})
}

async fn failures(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let (cursor, limit) = page_params(uri.query())?;
    let r = api
        .producer
        .jobs_page(
            &id,
            Some(fleet_shared::state::JobState::Failed),
            cursor.as_deref(),
            limit,
            true,
        )
        .await;
    api.mark_reached(&r);
    Ok(json_response(StatusCode::OK, failures_json(&id, &r?)))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {}", uri.path()),
    )
}

async fn no_method(method: Method, uri: Uri) -> ApiError {
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, p)| route_matches(p, uri.path()))
        .map(|(m, _)| *m)
        .collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; use {}",
            uri.path(),
            allowed.join(" or ")
        ),
    )
}

/// Whether a concrete path matches a route's template (`{x}` matches one segment).
fn route_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const OPENAPI: &str = include_str!("../openapi.json");

    #[test]
    fn routes_agree_with_the_openapi_document() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "OpenAPI 3.1"
        );
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| methods.contains(&k.as_str()))
                    .map(|m| (m.to_ascii_uppercase(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
        assert_eq!(routed, documented);
        // The merged metrics router serves exactly its paths, all listed here.
        for p in fleet_shared::metrics::PATHS {
            assert!(routed.contains(&("GET".to_owned(), p.to_owned())), "{p}");
        }
        // Every other route has a handler (the router would panic otherwise).
        for (m, p) in ROUTES {
            assert!(
                fleet_shared::metrics::PATHS.contains(p) || handler(m, p).is_some(),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn every_documented_response_is_described_and_errors_use_the_error_schema() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}");
                for (code, r) in responses {
                    let n: u16 = code.parse().expect("numeric status");
                    assert!(r["description"].is_string(), "{method} {path} {code}");
                    if n >= 400 && path.starts_with("/v1/") {
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/Error",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
    }

    fn field_of(body: &str) -> Option<String> {
        let e = parse_body(body.as_bytes()).expect_err(body);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        assert!(e.message.starts_with("not a valid request: "), "{e:?}");
        e.field
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!(field_of("{not json"), None);
        assert_eq!(field_of(""), None);
        assert_eq!(
            field_of(r#"{"job_type": "t", "jobs": [1], "priority": 1}"#).as_deref(),
            Some("priority")
        );
        assert_eq!(
            field_of(r#"{"job_type": "t", "jobs": [1], "options": {"retries": 1}}"#).as_deref(),
            Some("options.retries")
        );
        assert_eq!(field_of(r#"{"jobs": [1]}"#).as_deref(), Some("job_type"));
        assert_eq!(
            field_of(r#"{"job_type": "t", "range": {"start": 0, "end": 9}}"#).as_deref(),
            Some("range.chunk")
        );
        assert_eq!(
            field_of(r#"{"job_type": 5, "jobs": [1]}"#).as_deref(),
            Some("job_type")
        );
        assert_eq!(
            field_of(r#"{"job_type": "t", "jobs": [1], "options": {"target": "gpu"}}"#).as_deref(),
            Some("options.target")
        );
        assert_eq!(
            field_of(r#"{"job_type": "t", "jobs": [1], "options": {"max_attempts": "x"}}"#)
                .as_deref(),
            Some("options.max_attempts")
        );
        assert_eq!(field_of(r#"{"job_type": "t", "jobs": [1]} x"#), None);
        assert_eq!(
            field_of(r#"{"job_type": "t", "jobs": [1, {"a": }]}"#).as_deref(),
            Some("jobs[1].a")
        );
        let e = parse_body(b"[1]").expect_err("an array");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        assert!(parse_body(br#"{"job_type": "t", "jobs": [{"a": 1}]}"#).is_ok());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_idempotency_key_supplies_or_must_match_the_request_id() {
        let key = headers(&[("idempotency-key", "k-1")]);
        let mut f = parse_body(br#"{"job_type": "t", "jobs": [1]}"#).expect("valid");
        apply_idempotency_key(&mut f, &key).expect("applied");
        assert_eq!(f.request_id.as_deref(), Some("k-1"));
        apply_idempotency_key(&mut f, &key).expect("same id");
        let mut f =
            parse_body(br#"{"request_id": "other", "job_type": "t", "jobs": [1]}"#).expect("valid");
        let e = apply_idempotency_key(&mut f, &key).expect_err("differs");
        assert_eq!(e.field.as_deref(), Some("request_id"));
        let e = apply_idempotency_key(&mut f, &headers(&[("idempotency-key", "a:b")]))
            .expect_err("bad key");
        assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
        let mut f = parse_body(br#"{"job_type": "t", "jobs": [1]}"#).expect("valid");
        apply_idempotency_key(&mut f, &HeaderMap::new()).expect("no key");
        assert_eq!(f.request_id, None);
    }

    #[test]
    fn content_types() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn cancel_query() {
        assert_eq!(stop_running(None), Ok(false));
        assert_eq!(stop_running(Some("")), Ok(false));
        assert_eq!(stop_running(Some("stop_running=true")), Ok(true));
        assert_eq!(stop_running(Some("stop_running=false")), Ok(false));
        assert_eq!(
            stop_running(Some("stop_running=yes"))
                .expect_err("bad value")
                .field
                .as_deref(),
            Some("stop_running")
        );
        assert_eq!(
            stop_running(Some("force=1"))
                .expect_err("unknown")
                .field
                .as_deref(),
            Some("force")
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases: Vec<(ProducerError, StatusCode, &str, Option<&str>)> = vec![
            (
                ProducerError::Invalid(RequestError::Field {
                    field: "jobs".into(),
                    reason: "none".into(),
                }),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("jobs"),
            ),
            (
                ProducerError::Conflict {
                    request_id: "r".into(),
                },
                StatusCode::CONFLICT,
                "conflict",
                None,
            ),
            (
                ProducerError::NotFound("r".into()),
                StatusCode::NOT_FOUND,
                "not_found",
                None,
            ),
            (
                ProducerError::Ledger(fleet_shared::ledger::LedgerError::Aws {
                    op: "Query",
                    class: fleet_shared::error::ErrorClass::Transient,
                    message: "timeout".into(),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
            ),
            (
                ProducerError::Ledger(fleet_shared::ledger::LedgerError::Layout(
                    "another layout".into(),
                )),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
            ),
        ];
        for (e, status, code, field) in cases {
            let a = ApiError::from(e);
            assert_eq!(
                (a.status, a.code, a.field.as_deref()),
                (status, code, field)
            );
        }
    }

    #[test]
    fn templates_match_paths() {
        assert!(route_matches("/v1/requests/{id}", "/v1/requests/r1"));
        assert!(!route_matches("/v1/requests/{id}", "/v1/requests/"));
        assert!(!route_matches(
            "/v1/requests/{id}",
            "/v1/requests/r1/cancel"
        ));
        assert!(route_matches("/v1/requests", "/v1/requests"));
    }

    #[test]
    fn page_parameters_are_checked() {
        assert_eq!(page_params(None).unwrap(), (None, 100));
        assert_eq!(
            page_params(Some("cursor=3%2F000000007&limit=5")).unwrap(),
            (Some("3/000000007".into()), 5)
        );
        for bad in ["limit=0", "limit=1001", "limit=x", "page=2", "cursor=%zz"] {
            let e = page_params(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.field.is_some(), "{bad}");
        }
    }

    #[test]
    fn a_failure_carries_its_whole_error_and_the_next_cursor() {
        let entry = |fence, error: Option<&str>| fleet_shared::ledger::HistoryEntry {
            record: fleet_shared::ledger::AttemptRecord {
                attempt: fence as u32,
                fence,
                started_ms: 1,
                ended_ms: 2,
                target: "lambda".into(),
                outcome: "job_failure".into(),
                retry_at_ms: None,
                reason: "default".into(),
                exit_code: None,
                stopped_reason: None,
            },
            error: error.map(str::to_owned),
        };
        let page = fleet_shared::ledger::Page {
            items: vec![fleet_producer::JobView {
                job_id: "r:1".into(),
                state: fleet_shared::state::JobState::Failed,
                attempts: 2,
                target: Some("lambda".into()),
                reason: Some("default".into()),
                error_class: Some("job_failure".into()),
                last_error: Some("boo…".into()),
                task: None,
                history: vec![entry(1, Some("first")), entry(2, Some("boom, whole"))],
                older_attempts: 0,
            }],
            next: Some("0/1".into()),
        };
        let doc = failures_json("r", &page);
        assert_eq!(doc["failures"][0]["error"], "boom, whole");
        assert_eq!(doc["failures"][0]["history"].as_array().unwrap().len(), 2);
        assert_eq!(doc["next"], "0/1");
    }
}
