//! A small server for the Lambda Runtime API (the interface Lambda gives a function's
//! runtime): `GET /2018-06-01/runtime/invocation/next` hands out queued events one at a time
//! with the headers Lambda sends, and `POST .../invocation/{id}/response`, `.../error` and
//! `/2018-06-01/runtime/init/error` record what the runtime answered. A job binary started
//! with `AWS_LAMBDA_RUNTIME_API` pointing here runs its Lambda entrypoint as on AWS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

/// What the runtime answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub request_id: String,
    /// `response` or `error`.
    pub kind: String,
    /// The `Lambda-Runtime-Function-Error-Type` header of an error.
    pub error_type: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<(String, Value)>>,
    answers: Mutex<Vec<Answer>>,
    queued: Notify,
    answered: Notify,
}

pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts the server on a free loopback port.
    pub async fn start() -> RuntimeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let addr: SocketAddr = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(crate::serve_http1(listener, move |req| {
            handle(s.clone(), req)
        }));
        RuntimeApi {
            address: addr.to_string(),
            shared,
            task,
        }
    }

    /// Queues an invocation of `event` under `request_id`.
    pub fn invoke(&self, request_id: &str, event: Value) {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((request_id.to_owned(), event));
        self.shared.queued.notify_waiters();
    }

    /// Waits until `n` invocations have been answered; their answers in order.
    pub async fn answers(&self, n: usize, timeout: std::time::Duration) -> Vec<Answer> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answered = self.shared.answered.notified();
            let got = self
                .shared
                .answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                panic!("{} of {n} invocations answered: {got:?}", got.len());
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn handle(
    s: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if path == "/2018-06-01/runtime/invocation/next" {
        // Long-polls until an event is queued, as Lambda does.
        loop {
            let queued = s.queued.notified();
            let next = s
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some((id, event)) = next {
                let deadline = fleet_shared::time::now_ms() + 60_000;
                let mut r = reply(StatusCode::OK, event.to_string());
                let h = r.headers_mut();
                h.insert("lambda-runtime-aws-request-id", id.parse().expect("header"));
                h.insert(
                    "lambda-runtime-deadline-ms",
                    deadline.to_string().parse().expect("header"),
                );
                h.insert(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:job"
                        .parse()
                        .expect("header"),
                );
                h.insert(
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000"
                        .parse()
                        .expect("header"),
                );
                h.insert("content-type", "application/json".parse().expect("header"));
                return Ok(r);
            }
            queued.await;
        }
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = match parts.as_slice() {
        [
            "2018-06-01",
            "runtime",
            "invocation",
            id,
            kind @ ("response" | "error"),
        ] => Answer {
            request_id: (*id).to_owned(),
            kind: (*kind).to_owned(),
            error_type,
            body,
        },
        ["2018-06-01", "runtime", "init", "error"] => Answer {
            request_id: String::new(),
            kind: "init_error".into(),
            error_type,
            body,
        },
        _ => return Ok(reply(StatusCode::NOT_FOUND, "unknown path")),
    };
    s.answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(answer);
    s.answered.notify_waiters();
    Ok(reply(StatusCode::ACCEPTED, "{\"status\":\"OK\"}"))
}
