//! `serve`: the HTTP API (see `producer/openapi.json`) with `/metrics`, `/healthz` and
//! `/readyz` on one port, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleet_shared::config::Config;

use crate::api;

/// `serve`: the HTTP API with the metrics endpoints on one port, until SIGTERM or SIGINT
/// (requests in progress finish).
pub async fn cmd_serve(
    config: &Arc<Config>,
    listen: SocketAddr,
    max_body_bytes: usize,
    console: bool,
) -> anyhow::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let metrics = fleet_shared::metrics::install(stop.clone())?;
    let health =
        fleet_shared::metrics::Health::new(Duration::from_secs(config.metrics.ready_window_secs));
    let sdk = fleet_shared::aws::sdk_config(&config.aws).await;
    let mut api = api::Api::new(
        super::connect_with(&sdk, config).await?,
        health.clone(),
        metrics,
        max_body_bytes,
    );
    api.console = console || config.api.console;
    api.access = api::Access {
        token: config.api.token.clone(),
        loopback_only: listen.ip().is_loopback(),
    };
    if api.access.token.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the API listens beyond loopback without api.token (FLEET_API_TOKEN): anyone who reaches it can submit and cancel requests");
    }
    let console_on = api.console;
    let api = Arc::new(api);
    // Probes often enough that an idle API stays ready within the window.
    let every = Duration::from_secs((config.metrics.ready_window_secs / 4).clamp(1, 30));
    tokio::spawn(api::keep_ready(
        api.clone(),
        fleet_shared::aws::sqs(&sdk),
        config.queue.jobs.clone(),
        every,
        stop.clone(),
    ));
    let signalled = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    if console_on {
        println!("console on http://{}/console/", listener.local_addr()?);
    }
    axum::serve(listener, api::router(api))
        .with_graceful_shutdown(async move {
            signalled.await;
            health.set_draining();
            tracing::info!("shutting down: finishing the requests in progress");
        })
        .await
        .context("the HTTP API stopped")?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed at once (so a signal that comes
/// before the server runs is not lost to the default action).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
