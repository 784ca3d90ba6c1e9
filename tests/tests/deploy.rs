//! The CloudFormation template, deployed into the local endpoint's CloudFormation; the worker
//! role's policy against what the worker calls; the container health check.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_tests::{Stack, bin, free_port, http_get, jobs, repo_root, wait_for};
use serde_json::{Value, json};

const TEMPLATE: &str = "deploy/cloudformation/fleet.yaml";

/// The template as JSON, its short-form tags (`!Ref`, `!Sub`, ...) kept as `{"Ref": ...}`
/// objects, read with the virtualenv's PyYAML.
fn template_json(stack: &Stack) -> Value {
    let code = format!(
        r#"
import json, yaml
class Loader(yaml.SafeLoader): pass
def tag(loader, suffix, node):
    name = suffix if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode): value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode): value = loader.construct_sequence(node, deep=True)
    else: value = loader.construct_mapping(node, deep=True)
    return {{name: value}}
Loader.add_multi_constructor("!", tag)
print(json.dumps(yaml.load(open({path:?}), Loader=Loader)))
"#,
        path = repo_root().join(TEMPLATE).to_str().unwrap()
    );
    serde_json::from_str(&stack.python(&code)).unwrap()
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// What the worker calls, as IAM actions (batch calls and transactions are authorised by
/// their single actions): receive, delete and change visibility of jobs; re-send a lost
/// job's message and read the backlog (the sweeper); dead-letter; the ledger's reads,
/// conditional writes, the sweeper's index query and the layout check, the check of jobs
/// handed to Lambda; read invocation records; invoke the job and read its reserved
/// concurrency;
/// start, follow and stop job tasks and pass their roles; put an oversized event, result or
/// payload in S3.
const WORKER_ACTIONS: &[&str] = &[
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
    "sqs:GetQueueAttributes",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:DescribeTable",
    "lambda:InvokeFunction",
    "lambda:GetFunctionConcurrency",
    "ecs:RunTask",
    "ecs:DescribeTasks",
    "ecs:StopTask",
    "iam:PassRole",
    "s3:PutObject",
    "s3:GetObject",
    "sns:Publish",
    "events:PutEvents",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_role_allows_what_the_worker_calls_and_nothing_else() {
    let stack = Stack::start().await;
    let template = template_json(&stack);
    let role = &template["Resources"]["WorkerRole"]["Properties"];
    let mut actions = BTreeSet::new();
    for policy in role["Policies"].as_array().unwrap() {
        for st in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow");
            let these: Vec<String> = as_list(&st["Action"])
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            for r in as_list(&st["Resource"]) {
                assert_ne!(r, json!("*"), "{these:?} on every resource");
            }
            for a in &these {
                assert!(!a.contains('*'), "wildcard action {a}");
                match a.as_str() {
                    "iam:PassRole" => assert_eq!(
                        st["Condition"]["StringEquals"]["iam:PassedToService"],
                        "ecs-tasks.amazonaws.com"
                    ),
                    "ecs:RunTask" | "ecs:DescribeTasks" | "ecs:StopTask" => {
                        assert!(
                            st["Condition"]["ArnEquals"]["ecs:cluster"].is_object(),
                            "{a}"
                        )
                    }
                    _ => {}
                }
            }
            actions.extend(these);
        }
    }
    assert!(
        role.get("ManagedPolicyArns").is_none(),
        "no managed policies"
    );
    let want: BTreeSet<String> = WORKER_ACTIONS.iter().map(|a| a.to_string()).collect();
    let missing: Vec<_> = want.difference(&actions).collect();
    let extra: Vec<_> = actions.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "the worker calls these, not allowed: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "allowed, not called by the worker: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_template_deploys_locally_and_runs_fifty_jobs_from_its_outputs() {
    let stack = Stack::start().await;
    let template = repo_root().join(TEMPLATE);
    let deployed = stack.python(&format!(
        r##"
import io, json, time, zipfile, boto3
s3 = boto3.client("s3")
s3.create_bucket(Bucket="fleet-code")
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z: z.writestr("bootstrap", "#!/bin/sh\n")
s3.put_object(Bucket="fleet-code", Key="job.zip", Body=buf.getvalue())
ec2 = boto3.client("ec2")
subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
sg = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
cf = boto3.client("cloudformation")
params = {{"WorkerImage": "fleet-worker:test", "JobImage": "fleet-job:test",
          "JobCodeBucket": "fleet-code", "JobCodeKey": "job.zip", "Subnets": subnet,
          "SecurityGroups": sg, "DataBucket": "fleet-data", "MaxAttempts": "3"}}
cf.create_stack(StackName="fleet", TemplateBody=open({template:?}).read(),
                Parameters=[{{"ParameterKey": k, "ParameterValue": v}} for k, v in params.items()],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
deadline = time.time() + 120
while True:
    s = cf.describe_stacks(StackName="fleet")["Stacks"][0]
    if not s["StackStatus"].endswith("IN_PROGRESS") or time.time() > deadline: break
    time.sleep(0.5)
resources = cf.list_stack_resources(StackName="fleet")["StackResourceSummaries"]
print(json.dumps({{"status": s["StackStatus"], "reason": s.get("StackStatusReason"),
                  "outputs": {{o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])}},
                  "resources": {{r["LogicalResourceId"]: r["ResourceType"] for r in resources}}}}))
"##,
        template = template.to_str().unwrap()
    ));
    let deployed: Value = serde_json::from_str(deployed.trim()).unwrap();
    assert_eq!(deployed["status"], "CREATE_COMPLETE", "{deployed}");
    let outputs = &deployed["outputs"];
    let out = |k: &str| {
        outputs[k]
            .as_str()
            .unwrap_or_else(|| panic!("output {k}: {outputs}"))
    };

    // What the local endpoint did not create, said rather than hidden.
    let declared = template_json(&stack)["Resources"]
        .as_object()
        .unwrap()
        .clone();
    let created = deployed["resources"].as_object().unwrap();
    let skipped: Vec<String> = declared
        .iter()
        .filter(|(id, _)| !created.contains_key(*id))
        .map(|(id, r)| format!("{id} ({})", r["Type"].as_str().unwrap()))
        .collect();
    eprintln!("the local endpoint did not create: {skipped:?}");
    for needed in [
        "JobsQueue",
        "DeadLetterQueue",
        "OutcomesQueue",
        "Ledger",
        "PayloadBucket",
        "JobFunction",
    ] {
        assert!(created.contains_key(needed), "{needed} was not created");
    }

    // The queues and the table are what the worker needs.
    let sqs = stack.sqs();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(out("JobsQueueUrl"))
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    let redrive: Value =
        serde_json::from_str(&attrs[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy])
            .unwrap();
    assert_eq!(redrive["maxReceiveCount"], 100);
    assert_eq!(
        attrs[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout],
        "60"
    );
    let table = stack
        .dynamodb()
        .describe_table()
        .table_name(out("LedgerTable"))
        .send()
        .await
        .unwrap();
    let mut gsi: Vec<&str> = table
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    gsi.sort_unstable();
    assert_eq!(
        gsi,
        ["due", "failed", "requests"],
        "the ledger layout's indexes"
    );

    // The binaries, configured only from the outputs; the function's name is served by the
    // local Invoke API (moto would need Docker to run it).
    let job = stack.testjob(&["--function", out("JobFunctionName")]).await;
    let env = [
        ("FLEET_QUEUE", out("JobsQueueUrl")),
        ("FLEET_DLQ", out("DeadLetterQueueUrl")),
        ("FLEET_OUTCOMES_QUEUE", out("OutcomesQueueUrl")),
        ("FLEET_TABLE", out("LedgerTable")),
        ("FLEET_LEDGER_TTL_DAYS", out("LedgerTtlDays")),
        ("FLEET_CLAIM_CHECK_PREFIX", out("ClaimCheckPrefix")),
    ];
    let mut worker_env = env.to_vec();
    worker_env.push(("FLEET_LAMBDA_FUNCTION", out("JobFunctionName")));
    let _w = stack.worker("w1", &job, &worker_env);
    let path = stack.dir.path().join("fifty.json");
    std::fs::write(
        &path,
        json!({"request_id": "from-outputs", "job_type": "test",
               "jobs": jobs(50, |i| json!({"echo": i}))})
        .to_string(),
    )
    .unwrap();
    let submitted = stack.run(
        bin("fleet-producer"),
        &["submit", path.to_str().unwrap()],
        &env,
    );
    assert!(submitted.status.success(), "{}", submitted.stderr);
    let status = wait_for("50 jobs", Duration::from_secs(120), || async {
        let out = stack.run(
            bin("fleet-producer"),
            &["status", "from-outputs", "--json"],
            &env,
        );
        let s: Value = serde_json::from_str(&out.stdout).ok()?;
        (s["done"] == true).then_some(s)
    })
    .await;
    assert_eq!(status["states"]["SUCCEEDED"], 50, "{status}");
    assert_eq!(job.executions().len(), 50);
    // The table the template made was stamped with its layout by the first process to open
    // it (CloudFormation writes no items).
    let layout = stack
        .dynamodb()
        .get_item()
        .table_name(out("LedgerTable"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("FLEET".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("LAYOUT".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        layout
            .item()
            .and_then(|i| i.get("version"))
            .and_then(|v| v.as_n().ok())
            .cloned(),
        Some(fleet_shared::ledger::LAYOUT_VERSION.to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_check_command_follows_the_replica() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _w = stack.worker("w", &job, &[("FLEET_METRICS_LISTEN", listen.as_str())]);
    wait_for("the metrics server", Duration::from_secs(30), || async {
        http_get(&listen, "/healthz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    // As the image's HEALTHCHECK runs it, with the unspecified address it listens on.
    let any = listen.replace("127.0.0.1", "0.0.0.0");
    let ok = stack.run(
        bin("fleet-worker"),
        &["health"],
        &[("FLEET_METRICS_LISTEN", any.as_str())],
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    let nobody = format!("127.0.0.1:{}", free_port());
    let down = stack.run(
        bin("fleet-worker"),
        &["health"],
        &[("FLEET_METRICS_LISTEN", nobody.as_str())],
    );
    assert!(!down.status.success());
    assert!(down.stderr.contains(&nobody), "{}", down.stderr);
}
