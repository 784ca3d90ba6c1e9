//! The handlers of the API's routes: each reads its input, makes one producer call (noting
//! which services answered, for `/readyz`) and answers JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use fleet_producer::{ProducerError, request};

use super::input::{
    apply_idempotency_key, list_params, page_params, parse_body, request_id, require_json,
    results_params, since_param, stop_running,
};
use super::{Api, ApiError, call, json_response};

pub(super) async fn submit(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
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
    let req = request::check(file).map_err(ProducerError::from)?;
    let submitted = async {
        api.producer
            .submit_request(req)
            .await
            .map_err(ProducerError::from)
    };
    let report = call(&api, submitted).await?;
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

pub(super) async fn status(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let r = api.producer.status(&id).await;
    api.mark_reached(&r);
    Ok(json_response(StatusCode::OK, r?))
}

pub(super) async fn cancel(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let stop = stop_running(uri.query())?;
    let report = call(&api, api.producer.cancel(&id, stop)).await?;
    Ok(json_response(StatusCode::OK, report))
}

/// `{"max_concurrency": N}`: the request's limit from now.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    max_concurrency: u32,
}

pub(super) async fn limit(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    require_json(&headers)?;
    let body = body
        .map_err(|e| ApiError::invalid(format!("cannot read the body: {}", e.body_text()), None))?;
    let limit: LimitBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            format!("not a valid limit ({{\"max_concurrency\": N}}): {e}"),
            Some("max_concurrency".into()),
        )
    })?;
    let report = call(&api, api.producer.limit(&id, limit.max_concurrency)).await?;
    Ok(json_response(StatusCode::OK, report))
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
            // Where its last attempt ran.
            let last_target = j.history.last().map(|h| h.record.target).or(j.target);
            json!({
                "job_id": j.job_id,
                "attempts": j.attempts,
                "last_target": last_target,
                "error_class": j.error_class,
                "error": error,
                "history": j.history,
                "older_attempts": j.older_attempts,
            })
        })
        .collect();
    json!({"request_id": request_id, "failures": failures, "next": page.next})
}

pub(super) async fn failures(
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

/// A page of the request's results: every finished job's line (see
/// [`fleet_producer::ResultLine`]), and the cursor of the next page.
pub(super) async fn results(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let (cursor, limit, state) = results_params(uri.query())?;
    let r = api
        .producer
        .results_page(&id, state, cursor.as_deref(), limit)
        .await;
    api.mark_reached(&r);
    let page = r?;
    Ok(json_response(
        StatusCode::OK,
        json!({"request_id": id, "results": page.items, "next": page.next}),
    ))
}

/// A page of requests, newest first, each with its status (`?state=&cursor=&limit=`).
pub(super) async fn list(State(api): State<Arc<Api>>, uri: Uri) -> Result<Response, ApiError> {
    let (state, cursor, limit) = list_params(uri.query())?;
    let r = api
        .producer
        .requests(state.as_deref(), cursor.as_deref(), limit)
        .await;
    api.mark_reached(&r);
    let page = r?;
    Ok(json_response(
        StatusCode::OK,
        json!({"requests": page.items, "next": page.next}),
    ))
}

/// The request's jobs finished per bucket (`?since_ms=`): the console's chart.
pub(super) async fn throughput(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let since = since_param(uri.query())?;
    let r = api.producer.throughput(&id, since).await;
    api.mark_reached(&r);
    Ok(json_response(
        StatusCode::OK,
        json!({
            "request_id": id,
            "bucket_ms": fleet_shared::ledger::series::BUCKET_MS,
            "points": r?,
        }),
    ))
}

/// `{"max_attempts": N, "target": "lambda"|"ecs"}`, both optional: a redrive's settings.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    max_attempts: Option<u32>,
    target: Option<fleet_shared::message::Target>,
}

/// Redrives the request's failed jobs: each gets more attempts and a new message.
pub(super) async fn redrive(
    State(api): State<Arc<Api>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = request_id(path)?;
    let body = body
        .map_err(|e| ApiError::invalid(format!("cannot read the body: {}", e.body_text()), None))?;
    let settings: RedriveBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveBody::default()
    } else {
        require_json(&headers)?;
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                format!("not a valid redrive ({{\"max_attempts\": N, \"target\": \"lambda\"|\"ecs\"}}): {e}"),
                None,
            )
        })?
    };
    if settings.max_attempts == Some(0) {
        return Err(ApiError::invalid(
            "max_attempts: must be at least 1",
            Some("max_attempts".into()),
        ));
    }
    let report = call(
        &api,
        api.producer
            .dlq_redrive(&id, settings.max_attempts, settings.target),
    )
    .await?;
    Ok(json_response(StatusCode::OK, report))
}
