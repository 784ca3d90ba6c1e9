//! The published JSON Schema and the Rust parser accept and refuse the same messages.
#![allow(clippy::unwrap_used)]

use fleet_shared::JOB_MESSAGE_SCHEMA_V1;
use fleet_shared::message::{DEFAULT_MAX_MESSAGE_BYTES, parse_message};
use serde_json::Value;

fn examples() -> Value {
    serde_json::from_str(include_str!("../schema/job-message.v1.examples.json")).unwrap()
}

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(JOB_MESSAGE_SCHEMA_V1).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn rust_accepts(doc: &Value) -> bool {
    parse_message(&doc.to_string(), DEFAULT_MAX_MESSAGE_BYTES).is_ok()
}

#[test]
fn both_accept_the_valid_examples() {
    let schema = schema();
    let valid = examples()["valid"].as_array().unwrap().clone();
    assert!(valid.len() >= 5);
    for doc in valid {
        assert!(schema.is_valid(&doc), "schema refused {doc}");
        assert!(
            rust_accepts(&doc),
            "parser refused {doc}: {:?}",
            parse_message(&doc.to_string(), DEFAULT_MAX_MESSAGE_BYTES)
        );
    }
}

#[test]
fn both_refuse_the_invalid_examples() {
    let schema = schema();
    let invalid = examples()["invalid"].as_array().unwrap().clone();
    assert!(invalid.len() >= 30);
    for doc in invalid {
        assert!(!schema.is_valid(&doc), "schema accepted {doc}");
        assert!(!rust_accepts(&doc), "parser accepted {doc}");
    }
}

#[test]
fn rules_beyond_the_schema_are_only_in_the_parser() {
    // These are documented in the schema's description: the schema cannot express them.
    let schema = schema();
    for doc in examples()["invalid_beyond_schema"].as_array().unwrap() {
        assert!(schema.is_valid(doc), "schema should accept {doc}");
        assert!(!rust_accepts(doc), "parser accepted {doc}");
    }
}

#[test]
fn the_schema_describes_every_field_of_the_rust_type() {
    let schema: Value = serde_json::from_str(JOB_MESSAGE_SCHEMA_V1).unwrap();
    let props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    // A message with every optional field set, serialised from the Rust type.
    let full = &examples()["valid"][3];
    let (msg, _) = parse_message(&full.to_string(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
    let serialised: Value = serde_json::from_str(&msg.to_body()).unwrap();
    let mut fields: Vec<&String> = serialised.as_object().unwrap().keys().collect();
    fields.sort();
    let mut props = props;
    props.sort();
    assert_eq!(fields, props);
}

/// The completion event the replicas send follows its published schema.
#[test]
fn the_completion_event_follows_its_schema() {
    use fleet_shared::completion::{REQUEST_FINISHED_SCHEMA_V1, RequestFinished};
    use fleet_shared::ledger::{Completion, Counts, RequestFailure, RequestRecord};
    let schema: Value = serde_json::from_str(REQUEST_FINISHED_SCHEMA_V1).unwrap();
    let schema = jsonschema::validator_for(&schema).unwrap();
    let mut r = RequestRecord {
        completion: Completion {
            finished_at_ms: Some(61_000),
            ..Default::default()
        },
        ..RequestRecord::new("req-1", "csv", 3, 1_000)
    };
    let counts = Counts {
        succeeded: 2,
        failed: 1,
        attempts: 4,
        ..Default::default()
    };
    let mut e = RequestFinished::of(&r, &counts, Some("s3://b/p/manifest.json")).unwrap();
    e.cost_usd = Some(0.25);
    let doc = serde_json::to_value(&e).unwrap();
    assert!(schema.is_valid(&doc), "{doc}");
    assert_eq!(doc["state"], "FINISHED");
    assert_eq!(doc["duration_ms"], 60_000);
    r.failed = Some(RequestFailure {
        at_ms: 50_000,
        reason: "too many".into(),
    });
    r.cancelled_at_ms = Some(50_000);
    let doc = serde_json::to_value(RequestFinished::of(&r, &counts, None).unwrap()).unwrap();
    assert!(schema.is_valid(&doc), "{doc}");
    assert_eq!(doc["state"], "FAILED");
    assert_eq!(doc["failure"], "too many");
    // Not finished: no event.
    let fewer = Counts {
        succeeded: 1,
        ..counts
    };
    assert!(RequestFinished::of(&r, &fewer, None).is_none());
    // The schema refuses what the event never holds.
    let mut extra = doc.clone();
    extra["surprise"] = Value::from(1);
    assert!(!schema.is_valid(&extra));
}
