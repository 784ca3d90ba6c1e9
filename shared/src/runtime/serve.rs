//! A local server for Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`),
//! answering as Lambda does so that the worker's unchanged SDK client can call a job on one
//! machine: 200 with the result; 200 with `X-Amz-Function-Error: Unhandled` and
//! `{"errorType", "errorMessage"}` on a function error, a panic or a timeout (the emulated
//! function timeout, `--timeout`); 404 `ResourceNotFoundException` for a function it does not
//! serve (with `--function`); 413 `RequestTooLargeException` over Lambda's 6 MB payload limit.
//! Invocations run concurrently, each in its own task.

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

use super::{JobEvent, JobHandler, run_event};

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
}

struct App<H> {
    handler: Arc<H>,
    timeout: Duration,
    function: Option<String>,
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve<H: JobHandler>(handler: Arc<H>, opts: ServeOptions) -> std::io::Result<()> {
    if !(opts.timeout.is_finite() && opts.timeout > 0.0) {
        return Err(std::io::Error::other(
            "--timeout must be a positive number of seconds",
        ));
    }
    let app = Arc::new(App {
        handler,
        timeout: Duration::from_secs_f64(opts.timeout),
        function: opts.function,
    });
    let router = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<H>),
        )
        .layer(DefaultBodyLimit::max(MAX_INVOKE_BYTES))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
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

async fn invoke<H: JobHandler>(
    State(app): State<Arc<App<H>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    if !serves(&app.function, &name) {
        return service_error(
            &request_id,
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {name}"),
        );
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
    let handler = app.handler.clone();
    let task = tokio::spawn(async move { run_event(handler.as_ref(), event).await });
    match invocation_type {
        "Event" => return lambda_response(&request_id, StatusCode::ACCEPTED, false, Value::Null),
        "DryRun" => {
            task.abort();
            return lambda_response(&request_id, StatusCode::NO_CONTENT, false, Value::Null);
        }
        _ => {}
    }
    let abort = task.abort_handle();
    match tokio::time::timeout(app.timeout, task).await {
        Ok(Ok(Ok(result))) => lambda_response(&request_id, StatusCode::OK, false, result),
        Ok(Ok(Err(e))) => lambda_response(&request_id, StatusCode::OK, true, e.to_lambda_body()),
        Ok(Err(join)) => {
            let message = match join.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into()),
                Err(e) => e.to_string(),
            };
            lambda_response(
                &request_id,
                StatusCode::OK,
                true,
                json!({"errorType": "Runtime.ExitError", "errorMessage": format!("the handler panicked: {message}")}),
            )
        }
        Err(_) => {
            abort.abort();
            lambda_response(
                &request_id,
                StatusCode::OK,
                true,
                json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", app.timeout.as_secs_f64()),
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::serves;

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
