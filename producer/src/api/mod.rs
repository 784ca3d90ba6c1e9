//! The producer's HTTP API (`fleet-producer serve`): submit a request, read its status,
//! cancel it, list its failed jobs; beside `/metrics`, `/healthz` and `/readyz` as a worker
//! serves them. JSON in and out; every error has one shape,
//! `{"error": {"code", "message", "field"}}`. The routes are [`ROUTES`], which builds the
//! router and is checked against `producer/openapi.json`, the API's description.
//!
//! `handlers` answers the routes, `input` reads what a request brings (body, path, query,
//! headers), `error` turns every failure into the one error shape, `access` checks the
//! token and refuses cross-site requests, and `console` serves the web console's files
//! under `/console/` when it is enabled.

mod access;
mod console;
mod error;
mod handlers;
mod input;

pub use access::Access;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use fleet_shared::metrics::Health;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use fleet_producer::{Producer, ProducerError};

use error::ApiError;

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
    ("GET", "/v1/requests"),
    ("GET", "/v1/requests/{id}"),
    ("POST", "/v1/requests/{id}/cancel"),
    ("POST", "/v1/requests/{id}/limit"),
    ("GET", "/v1/requests/{id}/failures"),
    ("GET", "/v1/requests/{id}/results"),
    ("GET", "/v1/requests/{id}/throughput"),
    ("POST", "/v1/requests/{id}/redrive"),
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
    /// The token and the cross-site checks (see `access`).
    pub access: Access,
    /// Serve the web console under `/console/`.
    pub console: bool,
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
            access: Access::default(),
            console: false,
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
impl Reached for fleet_producer::LimitReport {
    fn sent_messages(&self) -> bool {
        self.released > 0
    }
}
impl<T> Reached for fleet_shared::ledger::Page<T> {}
impl Reached for Vec<fleet_shared::ledger::ThroughputPoint> {}
impl Reached for fleet_producer::dlq::RedriveReport {
    fn sent_messages(&self) -> bool {
        self.redriven > 0
    }
}

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
    if api.console {
        r = console::routes(r);
    }
    r.merge(fleet_shared::metrics::router(
        api.metrics.clone(),
        api.health.clone(),
    ))
    .fallback(no_route)
    .method_not_allowed_fallback(no_method)
    .layer(axum::middleware::from_fn_with_state(
        api.clone(),
        access::check,
    ))
    .layer(DefaultBodyLimit::max(api.max_body_bytes))
    .with_state(api)
}

fn handler(method: &str, path: &str) -> Option<MethodRouter<Arc<Api>>> {
    Some(match (method, path) {
        ("POST", "/v1/requests") => post(handlers::submit),
        ("GET", "/v1/requests") => get(handlers::list),
        ("GET", "/v1/requests/{id}") => get(handlers::status),
        ("POST", "/v1/requests/{id}/cancel") => post(handlers::cancel),
        ("POST", "/v1/requests/{id}/limit") => post(handlers::limit),
        ("GET", "/v1/requests/{id}/failures") => get(handlers::failures),
        ("GET", "/v1/requests/{id}/results") => get(handlers::results),
        ("GET", "/v1/requests/{id}/throughput") => get(handlers::throughput),
        ("POST", "/v1/requests/{id}/redrive") => post(handlers::redrive),
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
mod tests;
