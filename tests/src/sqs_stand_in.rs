//! A stand-in for SQS in its own process, for benchmarks that need more messages than the
//! local endpoint moves in reasonable time: SQS's JSON protocol for the operations the
//! replica and the local Invoke API use (SendMessage, SendMessageBatch, ReceiveMessage with
//! long polling and visibility timeouts, DeleteMessage, DeleteMessageBatch,
//! ChangeMessageVisibility, GetQueueAttributes), each queue an in-memory queue named by its
//! URL's path and created at its first use. Any other operation is refused. It enforces none
//! of SQS's limits; tests use the local endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_shared::queue::JobQueue;
use fleet_shared::queue::memory::MemoryQueue;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

#[derive(Default)]
struct Queues {
    by_path: Mutex<HashMap<String, Arc<MemoryQueue>>>,
}

impl Queues {
    fn get(&self, url: &str) -> Arc<MemoryQueue> {
        let path = url
            .find("://")
            .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
            .unwrap_or(url)
            .to_owned();
        self.by_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path)
            .or_default()
            .clone()
    }
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    let queues = Arc::new(Queues::default());
    crate::serve_http1(listener, move |req: hyper::Request<_>| {
        let queues = queues.clone();
        async move {
            let op = req
                .headers()
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.strip_prefix("AmazonSQS."))
                .unwrap_or_default()
                .to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, answer) = match answer(&queues, &op, &input).await {
                Ok(v) => (200, v),
                Err(message) => (
                    400,
                    json!({"__type": "com.amazonaws.sqs#InvalidParameterValue", "message": message}),
                ),
            };
            let mut r = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            Ok::<_, hyper::Error>(r)
        }
    })
    .await;
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v[key].as_str().ok_or_else(|| format!("{key} is missing"))
}

fn secs(v: &Value, key: &str, default: u64) -> Duration {
    Duration::from_secs(v[key].as_u64().unwrap_or(default))
}

async fn answer(queues: &Queues, op: &str, input: &Value) -> Result<Value, String> {
    let queue = queues.get(str_of(input, "QueueUrl")?);
    let q = queue.as_ref();
    let failed = |e: fleet_shared::queue::QueueError| e.to_string();
    match op {
        "SendMessage" => {
            q.push_delayed(
                str_of(input, "MessageBody")?,
                secs(input, "DelaySeconds", 0),
            );
            Ok(json!({"MessageId": "m"}))
        }
        "SendMessageBatch" => {
            let entries = input["Entries"].as_array().cloned().unwrap_or_default();
            let mut ok = Vec::new();
            for e in &entries {
                q.push_delayed(str_of(e, "MessageBody")?, secs(e, "DelaySeconds", 0));
                ok.push(json!({"Id": e["Id"], "MessageId": "m"}));
            }
            Ok(json!({"Successful": ok, "Failed": []}))
        }
        "ReceiveMessage" => {
            let max = input["MaxNumberOfMessages"].as_u64().unwrap_or(1) as usize;
            let got = q
                .receive(
                    max,
                    secs(input, "WaitTimeSeconds", 0),
                    secs(input, "VisibilityTimeout", 30),
                )
                .await
                .map_err(failed)?;
            let messages: Vec<Value> = got
                .into_iter()
                .map(|m| {
                    json!({
                        "MessageId": m.message_id,
                        "ReceiptHandle": m.receipt,
                        "Body": m.body,
                        "Attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                    })
                })
                .collect();
            Ok(json!({"Messages": messages}))
        }
        "DeleteMessage" => {
            q.delete_batch(&[str_of(input, "ReceiptHandle")?.to_owned()])
                .await
                .map_err(failed)?;
            Ok(json!({}))
        }
        "DeleteMessageBatch" => {
            let entries = input["Entries"].as_array().cloned().unwrap_or_default();
            let receipts = entries
                .iter()
                .map(|e| str_of(e, "ReceiptHandle").map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            let refused = q.delete_batch(&receipts).await.map_err(failed)?;
            let (bad, good): (Vec<_>, Vec<_>) = entries
                .iter()
                .zip(&receipts)
                .partition(|(_, r)| refused.contains(r));
            Ok(json!({
                "Successful": good.iter().map(|(e, _)| json!({"Id": e["Id"]})).collect::<Vec<_>>(),
                "Failed": bad.iter().map(|(e, _)| json!({
                    "Id": e["Id"], "SenderFault": true, "Code": "ReceiptHandleIsInvalid"
                })).collect::<Vec<_>>(),
            }))
        }
        "ChangeMessageVisibility" => {
            q.set_visibility(
                str_of(input, "ReceiptHandle")?,
                secs(input, "VisibilityTimeout", 0),
            )
            .await
            .map_err(failed)?;
            Ok(json!({}))
        }
        "GetQueueAttributes" => {
            let in_flight = q.in_flight();
            Ok(json!({"Attributes": {
                "ApproximateNumberOfMessages": q.len().saturating_sub(in_flight).to_string(),
                "ApproximateNumberOfMessagesNotVisible": in_flight.to_string(),
                "ApproximateNumberOfMessagesDelayed": "0",
            }}))
        }
        other => Err(format!("{other:?} is not served by this stand-in")),
    }
}

/// Starts `fleet-bench --sqs-stand-in` as a child process; it and the endpoint's URL.
pub async fn start() -> anyhow::Result<(tokio::process::Child, String)> {
    let mut command = tokio::process::Command::new(crate::bin("fleet-bench"));
    command.arg("--sqs-stand-in");
    let (child, addr) = crate::spawn_listening(command).await?;
    Ok((child, format!("http://{addr}")))
}
