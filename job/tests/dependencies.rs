//! What a job binary compiles: with its default features this crate pulls in neither Fleet's
//! ledger nor the DynamoDB and SQS SDKs; `local-async` adds SQS (and only SQS) for the local
//! Invoke API's record delivery.

use std::collections::BTreeSet;
use std::process::Command;

/// The packages `cargo tree` lists as normal dependencies of this crate.
fn normal_dependencies(features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "tree",
        "--offline",
        "--locked",
        "-p",
        "fleet-job",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn default_features_need_neither_the_ledger_nor_dynamodb_nor_sqs() {
    let deps = normal_dependencies(&[]);
    assert!(
        deps.contains("aws-sdk-s3"),
        "the claim-check reads S3: {deps:?}"
    );
    assert!(deps.contains("lambda_runtime"), "{deps:?}");
    for absent in [
        "aws-sdk-dynamodb",
        "aws-sdk-sqs",
        "aws-sdk-lambda",
        "aws-sdk-ecs",
        "fleet-shared",
    ] {
        assert!(!deps.contains(absent), "{absent} is a dependency: {deps:?}");
    }
}

#[test]
fn local_async_adds_sqs_and_nothing_of_the_ledger() {
    let deps = normal_dependencies(&["local-async"]);
    assert!(deps.contains("aws-sdk-sqs"), "{deps:?}");
    for absent in ["aws-sdk-dynamodb", "fleet-shared"] {
        assert!(!deps.contains(absent), "{absent} is a dependency: {deps:?}");
    }
}
