//! The completion event: the one message sent when a request finishes (every job terminal,
//! its jobs cancelled, or failed as a whole by its threshold), to an EventBridge bus (detail
//! type [`DETAIL_TYPE`], source `events.source`) and/or an SNS topic (the message, with the
//! `state` as a message attribute for filter policies). It follows
//! `schema/request-finished.v1.json` ([`REQUEST_FINISHED_SCHEMA_V1`]).
//!
//! ```json
//! {"version": "1", "type": "fleet.request.finished", "event_id": "req-1/finished",
//!  "request_id": "req-1", "job_type": "csv", "tenant": "req-1", "state": "FINISHED",
//!  "total": 200, "counts": {"SUCCEEDED": 198, "FAILED": 2, "CANCELLED": 0},
//!  "attempts": 205, "created_at_ms": 1764763200000, "finished_at_ms": 1764763260000,
//!  "duration_ms": 60000, "results": "s3://bucket/prefix/manifest.json"}
//! ```
//!
//! The replica that finds the request finished sends it; a sweeper sends it when that
//! replica stopped first. A replica stopping in the few milliseconds between the target's
//! answer and the ledger's record of it is the one case sent twice: `event_id` is the same
//! both times, for consumers to drop the second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{Counts, RequestRecord, is_done, request_state, window};

/// The JSON Schema of the completion event, version 1.
pub const REQUEST_FINISHED_SCHEMA_V1: &str = include_str!("../schema/request-finished.v1.json");

/// The EventBridge event's `detail-type`.
pub const DETAIL_TYPE: &str = "Fleet Request Finished";

/// The event's `type`.
pub const EVENT_TYPE: &str = "fleet.request.finished";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFinished {
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The same for every copy of one request's event: `<request_id>/finished`.
    pub event_id: String,
    pub request_id: String,
    pub job_type: String,
    /// Its `tenant`, else its request id.
    pub tenant: String,
    /// `FINISHED` (every job terminal), `CANCELLED` or `FAILED` (over its tolerated failures).
    pub state: String,
    pub total: u32,
    /// Jobs per final state (a cancelled request's jobs never released are CANCELLED).
    pub counts: BTreeMap<String, u64>,
    /// Attempts over all jobs.
    pub attempts: u64,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_ms: u64,
    /// Why it failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The request's estimated cost in US dollars, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// `s3://` of its results' manifest (`options.results.s3_prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<String>,
}

impl RequestFinished {
    /// The event of finished request `r` (its `completion.finished_at_ms` set) with counts
    /// `c`; `None` while it is not done.
    pub fn of(r: &RequestRecord, c: &Counts, manifest: Option<&str>) -> Option<Self> {
        if !is_done(r, c) {
            return None;
        }
        let finished_at_ms = r.completion.finished_at_ms?;
        let n = |v: i64| v.max(0) as u64;
        let counts = BTreeMap::from([
            ("SUCCEEDED".to_owned(), n(c.succeeded)),
            ("FAILED".to_owned(), n(c.failed)),
            (
                "CANCELLED".to_owned(),
                n(c.cancelled) + u64::from(window::never_released(r)),
            ),
        ]);
        Some(RequestFinished {
            version: "1".into(),
            kind: EVENT_TYPE.into(),
            event_id: format!("{}/finished", r.request_id),
            request_id: r.request_id.clone(),
            job_type: r.job_type.clone(),
            tenant: r.tenant.clone().unwrap_or_else(|| r.request_id.clone()),
            state: request_state(r.failed.is_some(), r.cancelled_at_ms.is_some(), true).into(),
            total: r.total,
            counts,
            attempts: n(c.attempts),
            created_at_ms: r.created_at_ms,
            finished_at_ms,
            duration_ms: finished_at_ms.saturating_sub(r.created_at_ms),
            failure: r.failed.as_ref().map(|f| f.reason.clone()),
            cost_usd: None,
            results: manifest.map(str::to_owned),
        })
    }
}
