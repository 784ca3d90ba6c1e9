//! The API's routes against its OpenAPI document, and its input and error handling.

use super::*;
use std::collections::BTreeSet;

use axum::http::{HeaderMap, HeaderValue};
use fleet_producer::RequestError;
use serde_json::Value;

use super::handlers::failures_json;
use super::input::{
    apply_idempotency_key, is_json, list_params, page_params, parse_body, since_param, stop_running,
};

const OPENAPI: &str = include_str!("../../openapi.json");

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
        field_of(r#"{"job_type": "t", "jobs": [1], "options": {"max_attempts": "x"}}"#).as_deref(),
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
    use fleet_shared::error::ErrorClass;
    use fleet_shared::message::{RouteReason, RouteRule, Target};
    use fleet_shared::state::AttemptOutcome;
    let entry = |fence, error: Option<&str>| fleet_shared::ledger::HistoryEntry {
        record: fleet_shared::ledger::AttemptRecord {
            attempt: fence as u32,
            fence,
            started_ms: 1,
            ended_ms: 2,
            target: Target::Lambda,
            outcome: AttemptOutcome::Failed(ErrorClass::JobFailure),
            retry_at_ms: None,
            reason: RouteReason::of(RouteRule::Default),
            exit_code: None,
            stopped_reason: None,
            usage: None,
        },
        error: error.map(str::to_owned),
    };
    let page = fleet_shared::ledger::Page {
        items: vec![fleet_producer::JobView {
            job_id: "r:1".into(),
            state: fleet_shared::state::JobState::Failed,
            attempts: 2,
            target: Some(Target::Lambda),
            reason: Some(RouteReason::of(RouteRule::Default)),
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

#[test]
fn the_list_and_throughput_queries_are_read_or_refused() {
    assert_eq!(list_params(None).unwrap(), (None, None, 100));
    assert_eq!(
        list_params(Some("state=running&limit=5&cursor=a%23b")).unwrap(),
        (Some("RUNNING".into()), Some("a#b".into()), 5)
    );
    assert_eq!(list_params(Some("state=")).unwrap(), (None, None, 100));
    let e = list_params(Some("order=asc")).unwrap_err();
    assert_eq!(
        (e.status, e.field.as_deref()),
        (StatusCode::BAD_REQUEST, Some("order"))
    );
    assert_eq!(since_param(None).unwrap(), 0);
    assert_eq!(since_param(Some("since_ms=1234")).unwrap(), 1234);
    let e = since_param(Some("since_ms=soon")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("since_ms"));
    let e = since_param(Some("limit=3")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("limit"));
}
