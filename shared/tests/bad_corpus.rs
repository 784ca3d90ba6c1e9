//! The bad-message corpus (`tests/corpus/bad-messages.json`): every entry is refused by the
//! parser, except the well-formed ones whose job type a worker must not know.
#![allow(clippy::unwrap_used)]

use fleet_shared::message::{DEFAULT_MAX_MESSAGE_BYTES, parse_message};
use serde_json::Value;

#[test]
fn every_bad_message_is_refused_with_a_reason() {
    let corpus: Vec<Value> =
        serde_json::from_str(include_str!("../../tests/corpus/bad-messages.json")).unwrap();
    assert!(corpus.len() >= 200, "{} entries", corpus.len());
    for entry in &corpus {
        let body = entry["body"].as_str().unwrap();
        let why = entry["why"].as_str().unwrap();
        let parsed = parse_message(body, DEFAULT_MAX_MESSAGE_BYTES);
        if entry["unknown_type"] == Value::Bool(true) {
            assert!(
                parsed.is_ok(),
                "{why}: well formed, refused for its job type only"
            );
        } else {
            let err = parsed
                .err()
                .unwrap_or_else(|| panic!("{why}: accepted {body:?}"));
            assert!(!err.to_string().is_empty());
        }
    }
}
