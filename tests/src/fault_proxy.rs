//! A fault-injecting HTTP proxy for tests: it sits between the workers and an endpoint (the
//! job's local Lambda Invoke API) and answers a configured share of calls with Lambda's 429
//! throttle or a 5xx, holds some past the client's read timeout before forwarding them, and
//! drops the connection on some after reading the request. Everything else is forwarded
//! unchanged. Each fault is recorded with the job id of the call (read from the Invoke
//! payload), so tests can check what a job went through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Shares of calls that get each fault (the rest are forwarded untouched).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// 429 TooManyRequestsException, the call never reaches the function.
    pub throttle: f64,
    /// 500 ServiceException, the call never reaches the function.
    pub server_error: f64,
    /// Forwarded only after `delay_by` (longer than the client waits): the function runs but
    /// the client times out.
    pub delay: f64,
    pub delay_by: Duration,
    /// The connection is closed after the request was read, with no answer.
    pub reset: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Throttle,
    ServerError,
    Delay,
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub job_id: Option<String>,
    pub kind: FaultKind,
}

struct Shared {
    faults: Faults,
    rng: Mutex<StdRng>,
    log: Mutex<Vec<Fault>>,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct FaultProxy {
    /// Point the client here, e.g. `AWS_ENDPOINT_URL_LAMBDA`.
    pub endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr: SocketAddr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            faults,
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            log: Mutex::new(Vec::new()),
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let s = shared.clone();
        let task = tokio::spawn(crate::serve_http1(listener, move |req| {
            handle(s.clone(), req)
        }));
        FaultProxy {
            endpoint: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Every fault injected so far.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn count(&self, kind: FaultKind) -> usize {
        self.faults().iter().filter(|f| f.kind == kind).count()
    }

    /// Faults of one kind injected on calls for `job_id`.
    pub fn count_for(&self, job_id: &str, kind: FaultKind) -> usize {
        self.faults()
            .iter()
            .filter(|f| f.kind == kind && f.job_id.as_deref() == Some(job_id))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

fn lambda_error(status: u16, error_type: &str, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("x-amzn-errortype", error_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let job_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).map(str::to_owned));
    let kind = {
        let f = &s.faults;
        let roll: f64 = s.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        let mut edge = 0.0;
        [
            (f.throttle, FaultKind::Throttle),
            (f.server_error, FaultKind::ServerError),
            (f.delay, FaultKind::Delay),
            (f.reset, FaultKind::Reset),
        ]
        .into_iter()
        .find(|(share, _)| {
            edge += share;
            roll < edge
        })
        .map(|(_, k)| k)
    };
    if let Some(kind) = kind {
        s.log.lock().unwrap_or_else(|p| p.into_inner()).push(Fault {
            job_id: job_id.clone(),
            kind,
        });
    }
    match kind {
        Some(FaultKind::Throttle) => {
            return Ok(lambda_error(
                429,
                "TooManyRequestsException",
                r#"{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#,
            ));
        }
        Some(FaultKind::ServerError) => {
            return Ok(lambda_error(
                500,
                "ServiceException",
                r#"{"Type":"Service","message":"injected failure"}"#,
            ));
        }
        Some(FaultKind::Reset) => return Err(Dropped),
        Some(FaultKind::Delay) => tokio::time::sleep(s.faults.delay_by).await,
        None => {}
    }
    let uri = format!(
        "{}{}",
        s.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k != "host") {
        forward = forward.header(k, v);
    }
    let forward = forward.body(Full::new(body)).map_err(|_| Dropped)?;
    let resp = s.client.request(forward).await.map_err(|_| Dropped)?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
