//! `submit`: a request file (or stdin), checked before anything is connected, then submitted
//! through the same library call as the HTTP API's.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fleet_producer::{SubmitError, request};
use fleet_shared::config::Config;

/// Prints the request id, or with `json` the submission's report.
pub async fn cmd_submit(config: &Arc<Config>, file: &Path, json: bool) -> anyhow::Result<()> {
    let text = read_request(file)?;
    let invalid = || format!("invalid request file {}", file.display());
    // Everything that needs no AWS call is checked before any; a source prefix is listed;
    // nothing is written unless every job passed.
    let checked = request::parse(&text)
        .and_then(request::check)
        .with_context(invalid)?;
    let report = super::connect(config)
        .await?
        .submit_request(checked)
        .await
        .map_err(|e| match e {
            SubmitError::Refused(e) => anyhow::Error::new(e).context(invalid()),
            SubmitError::Write(e) => e.into(),
        })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.request_id);
    }
    Ok(())
}

/// The request file's text; `-` reads stdin.
fn read_request(file: &Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the request from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}
