//! A Fleet worker replica: receives jobs from SQS, claims them in the DynamoDB ledger,
//! dispatches them (Lambda), keeps their leases alive, records outcomes and acknowledges
//! messages. `main` only wires these parts; [`run`] is the whole replica.

pub mod acks;
pub mod classify;
pub mod decide;
pub mod dispatch;
pub mod engine;
pub mod history;
pub mod init;
pub mod learn;
pub mod limits;
pub mod notify;
pub mod retry;
pub mod routing;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use fleet_shared::config::Config;
use fleet_shared::config::Invocation;
use fleet_shared::ledger::dynamo::DynamoLedger;
use fleet_shared::metrics::Health;
use fleet_shared::queue::sqs::SqsQueue;
use tokio_util::sync::CancellationToken;

use fleet_shared::config::{Launcher, split_command};

use crate::dispatch::ecs::EcsLauncher;
use crate::dispatch::lambda::LambdaDispatcher;
use crate::dispatch::process::ProcessLauncher;
use crate::dispatch::{AnyLauncher, NoTasks};
use crate::engine::{Engine, Parts, Report};

/// This replica's owner name: the configured one, or host, process id and a random suffix
/// (so a restarted process never reuses a dead one's leases).
pub fn replica_id(config: &Config) -> String {
    if let Some(id) = &config.worker.replica_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 6..]
    )
}

/// The AWS clients a replica uses. [`Clients::new`] builds them from the default chain; a
/// caller may build its own (the benchmark counts every call with an interceptor).
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Built for synchronous Invoke (`fleet_shared::aws::lambda_for_invoke`).
    pub lambda: aws_sdk_lambda::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub s3: aws_sdk_s3::Client,
    /// The completion events' targets, when `[events]` names any.
    pub notifier: Option<notify::Notifier>,
}

impl Clients {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            sqs: fleet_shared::aws::sqs(sdk),
            dynamodb: fleet_shared::aws::dynamodb(sdk),
            lambda: fleet_shared::aws::lambda_for_invoke(sdk, config.lambda.read_timeout()),
            ecs: aws_sdk_ecs::Client::new(sdk),
            s3: fleet_shared::aws::s3(sdk),
            notifier: (config.events.eventbridge_bus.is_some()
                || config.events.sns_topic.is_some())
            .then(|| notify::Notifier::new(sdk, &config.events)),
        }
    }
}

/// The task launcher the configuration asks for.
pub fn launcher(sdk: &SdkConfig, config: &Arc<Config>) -> anyhow::Result<AnyLauncher> {
    launcher_with(&Clients::new(sdk, config), config)
}

/// [`launcher`] with given clients.
pub fn launcher_with(clients: &Clients, config: &Arc<Config>) -> anyhow::Result<AnyLauncher> {
    Ok(match config.ecs.launcher {
        Launcher::Process => match &config.ecs.command {
            Some(c) => AnyLauncher::Process(ProcessLauncher::new(
                split_command(c).map_err(|e| anyhow::anyhow!("ecs.command: {e}"))?,
                config.limits.max_result_bytes,
            )),
            None => AnyLauncher::None(NoTasks),
        },
        Launcher::Aws if config.ecs.cluster.is_some() => AnyLauncher::Ecs(
            EcsLauncher::new(clients.ecs.clone(), config.clone()).with_s3(clients.s3.clone()),
        ),
        Launcher::Aws => AnyLauncher::None(NoTasks),
    })
}

/// The configuration with the Lambda limit at most the function's reserved concurrency
/// (`lambda.function`'s, when it has one): a replica never hands the function more jobs
/// than it may run at once. Unchanged when none is reserved or it cannot be read.
pub async fn capped_by_reserved_concurrency(
    lambda: &aws_sdk_lambda::Client,
    config: Arc<Config>,
) -> Arc<Config> {
    let Some(function) = config.lambda.function.clone() else {
        return config;
    };
    let reserved = match lambda
        .get_function_concurrency()
        .function_name(&function)
        .send()
        .await
    {
        Ok(out) => out.reserved_concurrent_executions,
        Err(e) => {
            tracing::debug!(error = %aws_sdk_lambda::error::DisplayErrorContext(&e), "could not read the function's reserved concurrency");
            None
        }
    };
    let Some(reserved) = reserved.and_then(|r| usize::try_from(r).ok()) else {
        return config;
    };
    if reserved == 0 {
        tracing::warn!(%function, "the function's reserved concurrency is 0: Lambda runs none of its jobs");
    }
    let (min, max) = config.lambda_concurrency();
    if reserved >= max {
        return config;
    }
    tracing::info!(%function, reserved, limit = reserved.max(min), "Lambda limit capped at the function's reserved concurrency");
    let mut capped = (*config).clone();
    capped.lambda.max_concurrency = Some(reserved.max(min));
    Arc::new(capped)
}

/// Runs one replica against AWS until `shutdown`, then drains (see [`Engine::run`]).
pub async fn run(
    sdk: &SdkConfig,
    config: Arc<Config>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> anyhow::Result<Report> {
    run_with(Clients::new(sdk, &config), config, shutdown, hard_stop).await
}

/// [`run`] with given clients.
pub async fn run_with(
    clients: Clients,
    config: Arc<Config>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> anyhow::Result<Report> {
    let has_lambda =
        config.lambda.function.is_some() || config.job_types.values().any(|t| t.function.is_some());
    if !has_lambda && !config.ecs.enabled() {
        anyhow::bail!(
            "invalid configuration: lambda.function (env FLEET_LAMBDA_FUNCTION) must name the Lambda function that runs jobs, or ECS must be configured (ecs.cluster or ecs.launcher = \"process\" with ecs.command)"
        );
    }
    let health = Health::new(Duration::from_secs(config.metrics.ready_window_secs));
    let server = CancellationToken::new();
    let _stop_server = server.clone().drop_guard();
    if let Some(listen) = config.metrics.listen {
        fleet_shared::metrics::serve(listen, health.clone(), server).await?;
    }
    let queue = SqsQueue::resolve(clients.sqs.clone(), &config.queue.jobs).await?;
    let dlq = SqsQueue::resolve(clients.sqs.clone(), &config.queue.dead_letter).await?;
    health.sqs_ok();
    let ledger = DynamoLedger::open(
        clients.dynamodb.clone(),
        &config.ledger.table,
        config.ledger.index_shards,
    )
    .await?
    .with_ttl(config.ledger.ttl())
    .with_history_keep(config.ledger.history_keep);
    let lambda = clients.lambda.clone();
    let config = capped_by_reserved_concurrency(&lambda, config).await;
    let outcomes = match config.lambda.invocation {
        Invocation::Event => Some(Arc::new(
            SqsQueue::resolve(clients.sqs.clone(), &config.outcomes_queue()).await?,
        )),
        Invocation::Sync => None,
    };
    let engine = Engine::new(
        Parts {
            queue: Arc::new(queue),
            dead_letters: Arc::new(dlq),
            ledger: Arc::new(ledger),
            dispatcher: Arc::new(LambdaDispatcher::new(lambda, config.clone())),
            tasks: Arc::new(launcher_with(&clients, &config)?),
        },
        config.clone(),
        replica_id(&config),
    )
    .with_health(health)
    .with_s3(clients.s3.clone());
    let engine = match clients.notifier.clone() {
        Some(n) => engine.with_notifier(n),
        None => engine,
    };
    let engine = Arc::new(match outcomes {
        Some(q) => engine.with_outcomes(q),
        None => engine,
    });
    Ok(engine.run(shutdown, hard_stop).await)
}
