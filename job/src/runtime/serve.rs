//! A local server for Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`),
//! answering as Lambda does so that the worker's unchanged SDK client can call a job on one
//! machine: 200 with the result; 200 with `X-Amz-Function-Error: Unhandled` and
//! `{"errorType", "errorMessage"}` on a function error, a panic or a timeout (the emulated
//! function timeout, `--timeout`); 404 `ResourceNotFoundException` for a function it does not
//! serve (with `--function`); 413 `RequestTooLargeException` over Lambda's 6 MB payload limit.
//! Invocations run concurrently, each in its own task.
//!
//! `X-Amz-Invocation-Type: Event` is answered 202 at once; the job then runs, and its
//! invocation record (Lambda's documented format, [`crate::invocation_record`]) goes to the
//! outcomes queue on the configured endpoint: `--outcomes-queue` (env `FLEET_OUTCOMES_QUEUE`),
//! by default the jobs queue's name (`FLEET_QUEUE`, else `fleet-jobs`) with `-outcomes`
//! appended, as the worker reads it. It plays the part of the function's event-invoke
//! configuration on AWS: no retries, both destinations the outcomes queue. That delivery needs
//! SQS, so it is built only with the feature `local-async`; without it an asynchronous
//! invocation is refused (`InvalidParameterValueException`, HTTP 400) and nothing runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[cfg(feature = "local-async")]
use super::records;
use super::{JobHandler, run_event};
use crate::event::JobEvent;

/// Lambda's limit on a synchronous Invoke payload.
pub const MAX_INVOKE_BYTES: usize = 6 * 1024 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on
    /// stdout as `listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// The emulated function timeout, in seconds.
    #[arg(long, default_value_t = 900.0)]
    pub timeout: f64,
    /// Serve only this function name; others get ResourceNotFoundException.
    #[arg(long)]
    pub function: Option<String>,
    /// The reserved concurrency GetFunctionConcurrency reports (none when unset).
    #[arg(long)]
    pub reserved_concurrency: Option<u32>,
    /// The queue that receives asynchronous invocations' records (default: the jobs queue,
    /// `FLEET_QUEUE` or `fleet-jobs`, with `-outcomes` appended).
    #[arg(long, env = "FLEET_OUTCOMES_QUEUE")]
    pub outcomes_queue: Option<String>,
}

impl ServeOptions {
    /// The outcomes queue's name.
    pub fn outcomes_queue(&self) -> String {
        self.outcomes_queue.clone().unwrap_or_else(|| {
            let jobs = std::env::var("FLEET_QUEUE").unwrap_or_else(|_| "fleet-jobs".into());
            format!("{jobs}-outcomes")
        })
    }
}

struct App<H> {
    handler: Arc<H>,
    timeout: Duration,
    function: Option<String>,
    reserved_concurrency: Option<u32>,
    #[cfg(feature = "local-async")]
    records: records::Delivery,
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve<H: JobHandler>(handler: Arc<H>, opts: ServeOptions) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    serve_on(listener, handler, opts, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes.
async fn serve_on<H: JobHandler>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if !(opts.timeout.is_finite() && opts.timeout > 0.0) {
        return Err(std::io::Error::other(
            "--timeout must be a positive number of seconds",
        ));
    }
    #[cfg(feature = "local-async")]
    let outcomes_queue = opts.outcomes_queue();
    let app = Arc::new(App {
        handler,
        timeout: Duration::from_secs_f64(opts.timeout),
        function: opts.function,
        reserved_concurrency: opts.reserved_concurrency,
        #[cfg(feature = "local-async")]
        records: records::Delivery::new(outcomes_queue),
    });
    let router = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<H>),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            axum::routing::get(concurrency::<H>),
        )
        .layer(DefaultBodyLimit::max(MAX_INVOKE_BYTES))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn serves(function: &Option<String>, name: &str) -> bool {
    match function {
        None => true,
        Some(f) => {
            let bare = name
                .rsplit_once(":function:")
                .map_or(name, |(_, rest)| rest);
            let bare = bare.split_once(':').map_or(bare, |(n, _qualifier)| n);
            bare == f
        }
    }
}

/// The log tail Lambda returns with `LogType=Tail` (base64): the invocation's START, END
/// and REPORT lines, the billed duration rounded up to the millisecond, the memory size from
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (as Lambda sets it; 1024 when unset).
fn log_tail(request_id: &str, took: std::time::Duration) -> String {
    use base64::Engine;
    let memory: u32 = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1024);
    let ms = took.as_secs_f64() * 1000.0;
    let billed = took.as_micros().div_ceil(1000).max(1);
    let log = format!(
        "START RequestId: {request_id} Version: $LATEST\nEND RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory} MB\tMax Memory Used: {memory} MB\t\n"
    );
    base64::engine::general_purpose::STANDARD.encode(log)
}

fn lambda_response(
    request_id: &str,
    status: StatusCode,
    function_error: bool,
    body: Value,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    if function_error {
        headers.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    (status, headers, body.to_string()).into_response()
}

fn service_error(
    request_id: &str,
    status: StatusCode,
    error_type: &'static str,
    message: String,
) -> Response {
    let mut resp = lambda_response(
        request_id,
        status,
        false,
        json!({"Type": "User", "message": message}),
    );
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    resp
}

/// `ResourceNotFoundException` for a function this server does not serve.
fn not_served(function: &Option<String>, name: &str, request_id: &str) -> Option<Response> {
    (!serves(function, name)).then(|| {
        service_error(
            request_id,
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {name}"),
        )
    })
}

/// GetFunctionConcurrency: the reserved concurrency `--reserved-concurrency` gives.
async fn concurrency<H: JobHandler>(
    State(app): State<Arc<App<H>>>,
    Path(name): Path<String>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    if let Some(refused) = not_served(&app.function, &name, &request_id) {
        return refused;
    }
    let body = match app.reserved_concurrency {
        Some(n) => json!({"ReservedConcurrentExecutions": n}),
        None => json!({}),
    };
    lambda_response(&request_id, StatusCode::OK, false, body)
}

async fn invoke<H: JobHandler>(
    State(app): State<Arc<App<H>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    if let Some(refused) = not_served(&app.function, &name, &request_id) {
        return refused;
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return service_error(
                &request_id,
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                format!(
                    "Request must be smaller than {MAX_INVOKE_BYTES} bytes for the InvokeFunction operation: {e}"
                ),
            );
        }
    };
    let event: JobEvent = match serde_json::from_slice(&body) {
        Ok(ev) => ev,
        Err(e) => {
            return lambda_response(
                &request_id,
                StatusCode::OK,
                true,
                json!({"errorType": "Runtime.UnmarshalError", "errorMessage": format!("the event is not a job event: {e}")}),
            );
        }
    };
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match invocation_type {
        "DryRun" => lambda_response(&request_id, StatusCode::NO_CONTENT, false, Value::Null),
        #[cfg(feature = "local-async")]
        "Event" => {
            // Lambda's part: accept, run, then deliver the invocation record to the
            // destination (the outcomes queue), as the event-invoke configuration would.
            let request_payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (app, id) = (app.clone(), request_id.clone());
            tokio::spawn(async move {
                let result = app.run(event, &id).await;
                app.records.deliver(&id, &name, request_payload, result).await;
            });
            lambda_response(&request_id, StatusCode::ACCEPTED, false, Value::Null)
        }
        #[cfg(not(feature = "local-async"))]
        "Event" => service_error(
            &request_id,
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "this job's local Invoke API was built without the feature local-async: it cannot deliver an asynchronous invocation's record".into(),
        ),
        _ => {
            let started = std::time::Instant::now();
            let ran = app.run(event, &request_id).await;
            let took = started.elapsed();
            let mut response = match ran {
                Ok(result) => lambda_response(&request_id, StatusCode::OK, false, result),
                Err(error) => lambda_response(&request_id, StatusCode::OK, true, error),
            };
            let tail = headers
                .get("x-amz-log-type")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Tail"));
            if tail && let Ok(v) = HeaderValue::from_str(&log_tail(&request_id, took)) {
                response.headers_mut().insert("x-amz-log-result", v);
            }
            response
        }
    }
}

impl<H: JobHandler> App<H> {
    /// Runs one invocation under the emulated function timeout: the result, or the error
    /// document Lambda would return (a job error, a panic, a timeout).
    async fn run(&self, event: JobEvent, request_id: &str) -> Result<Value, Value> {
        let handler = self.handler.clone();
        let task = tokio::spawn(async move { run_event(handler.as_ref(), event).await });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(e))) => Err(e.to_lambda_body()),
            Ok(Err(join)) => {
                let message = match join.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into()),
                    Err(e) => e.to_string(),
                };
                Err(
                    json!({"errorType": "Runtime.ExitError", "errorMessage": format!("the handler panicked: {message}")}),
                )
            }
            Err(_) => {
                abort.abort();
                Err(json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", self.timeout.as_secs_f64()),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{ServeOptions, serve_on, serves};
    use crate::{JobContext, JobError, JobHandler};

    /// Counts its runs.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl JobHandler for Counting {
        async fn handle(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"ok": true}))
        }
    }

    /// One Invoke call over HTTP/1.1: the status, the head (lowercase) and the body.
    async fn invoke(addr: std::net::SocketAddr, invocation_type: &str) -> (u16, String, Value) {
        let event = json!({
            "request_id": "r", "job_id": "r:0", "job_type": "t",
            "attempt": 1, "fence": 1, "payload": {},
        })
        .to_string();
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST /2015-03-31/functions/job/invocations HTTP/1.1\r\nHost: {addr}\r\n\
             X-Amz-Invocation-Type: {invocation_type}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{event}",
            event.len()
        );
        s.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        (
            status,
            head.to_lowercase(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// A synchronous invocation runs the handler in either build; an asynchronous one is
    /// accepted only by a build that can deliver its record (feature `local-async`), and
    /// refused before anything runs by one that cannot (`cargo test -p fleet-job
    /// --no-default-features`, which CI runs).
    #[tokio::test]
    async fn an_asynchronous_invocation_needs_record_delivery() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler = Arc::new(Counting::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = ServeOptions {
            listen: addr,
            timeout: 10.0,
            function: None,
            reserved_concurrency: None,
            outcomes_queue: None,
        };
        let server = tokio::spawn(serve_on(listener, handler.clone(), opts, async {
            stopped.await.ok();
        }));
        let (status, _, body) = invoke(addr, "RequestResponse").await;
        assert_eq!((status, body), (200, json!({"ok": true})));
        assert_eq!(handler.0.load(Ordering::SeqCst), 1);

        // With the feature, the record's delivery is what the black-box tests of the local
        // stack check (it needs a queue).
        if !cfg!(feature = "local-async") {
            let (status, head, body) = invoke(addr, "Event").await;
            assert_eq!(status, 400, "{body}");
            assert!(
                head.contains("x-amzn-errortype: invalidparametervalueexception"),
                "{head}"
            );
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("local-async")),
                "the refusal says why: {body}"
            );
            assert_eq!(handler.0.load(Ordering::SeqCst), 1, "nothing ran");
        }
        stop.send(()).ok();
        server.await.expect("join").expect("serve");
    }

    #[test]
    fn function_names_and_arns() {
        let f = Some("job".to_string());
        assert!(serves(&None, "anything"));
        assert!(serves(&f, "job"));
        assert!(serves(&f, "job:$LATEST"));
        assert!(serves(
            &f,
            "arn:aws:lambda:us-east-1:123456789012:function:job"
        ));
        assert!(serves(
            &f,
            "arn:aws:lambda:us-east-1:123456789012:function:job:prod"
        ));
        assert!(!serves(&f, "other"));
        assert!(!serves(
            &f,
            "arn:aws:lambda:us-east-1:123456789012:function:jobs"
        ));
    }
}
