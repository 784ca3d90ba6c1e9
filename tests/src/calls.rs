//! Counting the AWS calls a component makes: an SDK interceptor that counts every request
//! sent (each attempt), by service and operation, and clients that carry it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Calls by (service, operation).
pub type Calls = BTreeMap<(String, String), u64>;

/// Counts every request the SDK sends (each attempt), by service and operation.
#[derive(Debug, Default)]
pub struct CallCounter {
    calls: Mutex<Calls>,
}

impl CallCounter {
    pub fn snapshot(&self) -> Calls {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The calls made since `before` (a snapshot), zero counts left out.
    pub fn since(&self, before: &Calls) -> Calls {
        self.snapshot()
            .into_iter()
            .map(|(k, v)| {
                let was = before.get(&k).copied().unwrap_or(0);
                (k, v - was)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// The interceptor: add it to a client's configuration.
#[derive(Debug, Clone)]
pub struct Counted(pub Arc<CallCounter>);

impl Intercept for Counted {
    fn name(&self) -> &'static str {
        "fleet call counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        *self
            .0
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((service, op))
            .or_default() += 1;
        Ok(())
    }
}

/// A DynamoDB client for `sdk` whose calls `counter` counts.
pub fn dynamodb(
    sdk: &aws_config::SdkConfig,
    counter: &Arc<CallCounter>,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(Counted(counter.clone()))
            .build(),
    )
}

/// An SQS client for `sdk` whose calls `counter` counts.
pub fn sqs(sdk: &aws_config::SdkConfig, counter: &Arc<CallCounter>) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .interceptor(Counted(counter.clone()))
            .build(),
    )
}

/// The calls of one service's operations, summed.
pub fn total(calls: &Calls, service: &str) -> u64 {
    calls
        .iter()
        .filter(|((s, _), _)| s == service)
        .map(|(_, v)| *v)
        .sum()
}
