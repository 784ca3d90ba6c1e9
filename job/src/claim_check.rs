//! The claim-check of large payloads. A payload over `claim_check.inline_max_bytes` is
//! written to S3 under `claim_check.prefix` as `<request_id>/<index 9 digits>.json`, and the
//! job carries a reference in its place:
//!
//! ```json
//! {"fleet_payload_ref": {"uri": "s3://bucket/prefix/req-1/000000007.json", "bytes": 2097152, "sha256": "…"}}
//! ```
//!
//! The ledger, the message and the event carry only the reference; the job runtime reads the
//! object back, checks its size and digest, and hands the job code the original payload. The
//! key is a function of the job, so a re-submission or a second writer puts the same bytes
//! under the same key. `fleet-producer cleanup` (or an S3 lifecycle rule on the prefix)
//! removes a finished request's objects.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::s3::S3Uri;

/// The one key of a payload that stands for a payload kept in S3.
pub const REF_KEY: &str = "fleet_payload_ref";
/// The one key of a recorded result that stands for a result kept in S3 (a result over
/// `limits.max_result_bytes`).
pub const RESULT_REF_KEY: &str = "fleet_result_ref";

/// Where a payload is kept, and how to know it is the right one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRef {
    pub uri: String,
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimCheckError {
    /// The reference itself is malformed (a permanent error).
    #[error("malformed {REF_KEY}: {0}")]
    Malformed(String),
    /// S3 did not give the object (may pass: retry).
    #[error("reading {uri}: {message}")]
    Unavailable { uri: String, message: String },
    /// The object is not what the reference describes (permanent).
    #[error("{uri}: {message}")]
    Corrupt { uri: String, message: String },
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The object that holds job `index` of `request_id` under `prefix`.
pub fn object_uri(prefix: &S3Uri, request_id: &str, index: u32) -> S3Uri {
    prefix.join(&format!("{request_id}/{index:09}.json"))
}

/// The object that holds the result of job `index`'s attempt with `fence`.
pub fn result_uri(prefix: &S3Uri, request_id: &str, index: u32, fence: u64) -> S3Uri {
    prefix.join(&format!("{request_id}/results/{index:09}-{fence}.json"))
}

/// The recorded result that stands for `body` stored at `uri`.
pub fn result_reference(uri: &S3Uri, body: &[u8]) -> Value {
    serde_json::json!({
        RESULT_REF_KEY: PayloadRef {
            uri: uri.to_string(),
            bytes: body.len() as u64,
            sha256: sha256_hex(body),
        }
    })
}

/// The prefix under which a request's payloads are kept.
pub fn request_prefix(prefix: &S3Uri, request_id: &str) -> S3Uri {
    prefix.join(&format!("{request_id}/"))
}

/// The payload that stands for `body` stored at `uri`.
pub fn reference(uri: &S3Uri, body: &[u8]) -> Value {
    serde_json::json!({
        REF_KEY: PayloadRef {
            uri: uri.to_string(),
            bytes: body.len() as u64,
            sha256: sha256_hex(body),
        }
    })
}

/// The reference a payload holds, if it is one (an object whose only key is [`REF_KEY`]).
pub fn reference_in(payload: &Value) -> Option<Result<PayloadRef, ClaimCheckError>> {
    reference_under(payload, REF_KEY)
}

/// The reference a recorded result holds, if it is one.
pub fn result_reference_in(result: &Value) -> Option<Result<PayloadRef, ClaimCheckError>> {
    reference_under(result, RESULT_REF_KEY)
}

fn reference_under(v: &Value, key: &str) -> Option<Result<PayloadRef, ClaimCheckError>> {
    let map = v.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let r = map.get(key)?;
    Some(
        serde_json::from_value::<PayloadRef>(r.clone())
            .map_err(|e| ClaimCheckError::Malformed(e.to_string())),
    )
}

/// Writes a payload's bytes.
pub async fn put(s3: &aws_sdk_s3::Client, uri: &S3Uri, body: Vec<u8>) -> Result<(), String> {
    s3.put_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("writing {uri}: {}", DisplayErrorContext(e)))
}

/// The payload itself: `payload` unchanged when it is not a reference, else the stored
/// payload, checked against the reference's size and digest.
pub async fn resolve(s3: &aws_sdk_s3::Client, payload: Value) -> Result<Value, ClaimCheckError> {
    let r = match reference_in(&payload) {
        None => return Ok(payload),
        Some(r) => r?,
    };
    let bytes = fetch(s3, &r).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClaimCheckError::Corrupt {
        uri: r.uri.clone(),
        message: format!("not JSON: {e}"),
    })
}

/// The bytes a reference names, checked against its size and digest.
pub async fn fetch(s3: &aws_sdk_s3::Client, r: &PayloadRef) -> Result<Vec<u8>, ClaimCheckError> {
    let uri = S3Uri::parse(&r.uri).map_err(ClaimCheckError::Malformed)?;
    let unavailable = |message: String| ClaimCheckError::Unavailable {
        uri: r.uri.clone(),
        message,
    };
    let out = s3
        .get_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .send()
        .await
        .map_err(|e| unavailable(DisplayErrorContext(e).to_string()))?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .into_bytes();
    let corrupt = |message: String| ClaimCheckError::Corrupt {
        uri: r.uri.clone(),
        message,
    };
    if bytes.len() as u64 != r.bytes {
        return Err(corrupt(format!(
            "{} bytes stored, the reference says {}",
            bytes.len(),
            r.bytes
        )));
    }
    if sha256_hex(&bytes) != r.sha256 {
        return Err(corrupt(
            "the stored bytes do not match the reference's sha256".into(),
        ));
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_recognised_only_in_their_own_shape() {
        let uri = S3Uri::parse("s3://bkt/p/").unwrap();
        let at = object_uri(&uri, "r1", 7);
        assert_eq!(at.to_string(), "s3://bkt/p/r1/000000007.json");
        let r = reference(&at, b"{}");
        let got = reference_in(&r).unwrap().unwrap();
        assert_eq!(got.bytes, 2);
        assert_eq!(got.sha256, sha256_hex(b"{}"));
        assert!(reference_in(&json!({"a": 1})).is_none());
        assert!(reference_in(&json!({REF_KEY: {"uri": "x"}, "b": 1})).is_none());
        assert!(matches!(
            reference_in(&json!({REF_KEY: {"uri": "s3://b/k"}})),
            Some(Err(ClaimCheckError::Malformed(_)))
        ));
    }
}
