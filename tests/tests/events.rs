//! Completion events: when a request finishes, exactly one event reaches each configured
//! target (an EventBridge bus and an SNS topic on the local endpoint, each read back from a
//! queue subscribed to it), following its JSON Schema, with the manifest of the results the
//! replica exported on finishing; and still exactly one when the replica that finished the
//! last job was killed before it could send it (a sweeper of another replica sends it).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fleet_tests::{Stack, wait_for_every};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const JOBS: usize = 200;

fn fails(i: usize) -> bool {
    i % 50 == 7
}

/// A queue subscribed to the SNS topic and one to the EventBridge bus (a rule on the
/// events' source); the topic's ARN and the bus's name.
struct Targets {
    sns_queue: String,
    bus_queue: String,
    topic: String,
    bus: String,
}

async fn queue_with_arn(stack: &Stack, name: &str) -> (String, String) {
    let sqs = stack.sqs();
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    (url, arn)
}

async fn targets(stack: &Stack) -> Targets {
    let (sns_queue, sns_arn) = queue_with_arn(stack, &format!("{}-sns", stack.names.queue)).await;
    let (bus_queue, bus_arn) = queue_with_arn(stack, &format!("{}-bus", stack.names.queue)).await;
    let sns = aws_sdk_sns::Client::new(&stack.sdk);
    let topic = sns
        .create_topic()
        .name(format!("{}-finished", stack.names.queue))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&sns_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let eb = aws_sdk_eventbridge::Client::new(&stack.sdk);
    let bus = format!("{}-bus", stack.names.queue);
    eb.create_event_bus().name(&bus).send().await.unwrap();
    eb.put_rule()
        .name("fleet-finished")
        .event_bus_name(&bus)
        .event_pattern(
            json!({"source": ["fleet"], "detail-type": ["Fleet Request Finished"]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule("fleet-finished")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&bus_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    Targets {
        sns_queue,
        bus_queue,
        topic,
        bus,
    }
}

/// The events in `queue` now (each message deleted), as the event documents: the SNS
/// message itself, the EventBridge event's `detail`.
async fn drain(stack: &Stack, queue: &str, wait_secs: i32) -> Vec<Value> {
    let sqs = stack.sqs();
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .send()
            .await
            .unwrap();
        let messages = got.messages();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            let body: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            out.push(match body.get("detail") {
                Some(d) if body.get("detail-type").is_some() => {
                    assert_eq!(body["source"], "fleet", "{body}");
                    assert_eq!(body["detail-type"], "Fleet Request Finished", "{body}");
                    d.clone()
                }
                _ => body,
            });
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

/// Waits for the first event on `queue`, then takes whatever else is there.
async fn events(stack: &Stack, queue: &str, what: &str) -> Vec<Value> {
    wait_for_every(what, Duration::from_secs(300), Duration::ZERO, || async {
        let got = drain(stack, queue, 2).await;
        (!got.is_empty()).then_some(got)
    })
    .await
}

fn request(id: &str, results: Option<&str>) -> Value {
    let jobs = fleet_tests::echo_or_fail(JOBS, fails);
    let mut r = json!({"request_id": id, "job_type": "test", "jobs": jobs});
    if let Some(prefix) = results {
        r["options"] = json!({"results": {"s3_prefix": prefix}});
    }
    r
}

fn check_event(event: &Value, request_id: &str) {
    let schema: Value =
        serde_json::from_str(fleet_shared::completion::REQUEST_FINISHED_SCHEMA_V1).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}: {event}");
    let failing = (0..JOBS).filter(|&i| fails(i)).count() as u64;
    assert_eq!(event["request_id"], request_id);
    assert_eq!(event["event_id"], format!("{request_id}/finished"));
    assert_eq!(event["state"], "FINISHED");
    assert_eq!(event["total"], JOBS as u64);
    assert_eq!(
        event["counts"],
        json!({"SUCCEEDED": JOBS as u64 - failing, "FAILED": failing, "CANCELLED": 0})
    );
    assert!(
        event["attempts"].as_u64().unwrap() >= JOBS as u64,
        "{event}"
    );
    assert_eq!(
        event["duration_ms"].as_u64().unwrap(),
        event["finished_at_ms"].as_u64().unwrap() - event["created_at_ms"].as_u64().unwrap()
    );
}

/// Accepts connections and answers nothing: an endpoint that takes a request and never
/// replies. The receiver hears of the first request that arrives.
async fn black_hole() -> (String, tokio::sync::mpsc::Receiver<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            if matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                let _ = tx.try_send(());
            }
            held.push(conn);
        }
    });
    (format!("http://{addr}"), rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_request_sends_one_event_to_each_target_also_when_its_replica_was_killed() {
    let stack = Stack::with_init().await;
    stack.create_bucket("exports").await;
    let t = targets(&stack).await;
    let job = stack.testjob(&[]).await;
    let env: Vec<(&str, &str)> = vec![
        ("FLEET_EVENTS_SNS_TOPIC", &t.topic),
        ("FLEET_EVENTS_EVENTBRIDGE_BUS", &t.bus),
        ("FLEET_SWEEP_SECS", "1"),
        ("FLEET_RECOVER_SECS", "10"),
    ];

    // 1. Two replicas; the request asks for its results in S3.
    {
        let _a = stack.worker("w0", &job, &env);
        let _b = stack.worker("w1", &job, &env);
        let out = stack.submit(&request("ev1", Some("s3://exports/ev1")));
        assert!(out.status.success(), "{}", out.stderr);
        let on_sns = events(&stack, &t.sns_queue, "ev1's event on SNS").await;
        let on_bus = events(&stack, &t.bus_queue, "ev1's event on EventBridge").await;
        assert_eq!(on_sns.len(), 1, "one event on SNS: {on_sns:?}");
        assert_eq!(on_bus.len(), 1, "one event on EventBridge: {on_bus:?}");
        assert_eq!(on_sns[0], on_bus[0], "the same event on both");
        check_event(&on_sns[0], "ev1");
        // Its results were exported before it was sent, and it says where.
        assert_eq!(on_sns[0]["results"], "s3://exports/ev1/manifest.json");
        let manifest = stack
            .s3()
            .get_object()
            .bucket("exports")
            .key("ev1/manifest.json")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec();
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["counts"], {
            let mut c = on_sns[0]["counts"].clone();
            c.as_object_mut().unwrap().remove("CANCELLED");
            c
        });
        let status = stack.status("ev1");
        assert_eq!(
            status.results.as_deref(),
            Some("s3://exports/ev1/manifest.json")
        );
        assert!(status.notified_at_ms.is_some(), "{status:?}");
        // The sweepers that run on go on sending nothing: the event is recorded as sent.
        assert!(drain(&stack, &t.sns_queue, 3).await.is_empty());
        assert!(drain(&stack, &t.bus_queue, 0).await.is_empty());
    }

    // 2. The only replica finds the request finished, takes the turn to send its event
    // (its endpoints for both targets take the call and never answer), and is killed.
    let (hole, mut called) = black_hole().await;
    let mut quiet = env.clone();
    quiet.push(("AWS_ENDPOINT_URL_SNS", &hole));
    quiet.push(("AWS_ENDPOINT_URL_EVENTBRIDGE", &hole));
    let w2 = stack.worker("w2", &job, &quiet);
    let out = stack.submit(&request("ev2", None));
    assert!(out.status.success(), "{}", out.stderr);
    tokio::time::timeout(Duration::from_secs(300), called.recv())
        .await
        .expect("the replica tries to send ev2's event")
        .unwrap();
    w2.signal(Signal::SIGKILL);
    let status = stack.status("ev2");
    assert!(status.done, "{status:?}");
    assert!(status.notified_at_ms.is_none(), "not sent yet: {status:?}");

    // 3. Another replica's sweeper sends it once the killed one's turn is over.
    let _w3 = stack.worker("w3", &job, &env);
    let on_sns = events(&stack, &t.sns_queue, "ev2's event on SNS").await;
    let on_bus = events(&stack, &t.bus_queue, "ev2's event on EventBridge").await;
    assert_eq!(on_sns.len(), 1, "{on_sns:?}");
    assert_eq!(on_bus.len(), 1, "{on_bus:?}");
    check_event(&on_sns[0], "ev2");
    assert!(on_sns[0].get("results").is_none());
    let status = stack.status("ev2");
    assert!(status.notified_at_ms.is_some(), "{status:?}");
    assert!(drain(&stack, &t.sns_queue, 3).await.is_empty());
    assert!(drain(&stack, &t.bus_queue, 0).await.is_empty());
}
