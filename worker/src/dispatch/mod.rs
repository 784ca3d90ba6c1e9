//! Dispatchers run one attempt of a job somewhere and report how it ended. The engine is
//! generic over [`Dispatcher`], so it runs against Lambda in production and against an
//! in-memory dispatcher in unit tests and benchmarks.

pub mod lambda;

use std::future::Future;

use fleet_shared::message::JobEvent;

use crate::classify::ErrorClass;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded; its result as the job returned it (JSON text).
    Succeeded { result: Vec<u8> },
    /// The attempt failed.
    Failed { class: ErrorClass, message: String },
}

pub trait Dispatcher: Send + Sync + 'static {
    /// Where this dispatcher runs jobs (`lambda`, `ecs`), as the ledger records it.
    fn target(&self) -> &'static str;

    /// Runs the attempt described by `event` and waits for its end.
    fn dispatch(&self, event: &JobEvent) -> impl Future<Output = Outcome> + Send;
}
