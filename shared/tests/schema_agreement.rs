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
