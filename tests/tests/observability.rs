//! Observability: the metrics a replica serves agree with the ledger, in-flight returns to
//! zero, `/readyz` turns false while a replica drains; the alert rules pass promtool with a
//! firing and a quiet case each; the dashboard, the rules and the README name only metrics
//! of the catalog, and the README lists all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleet_shared::metrics::{CATALOG, lookup};
use fleet_tests::{Stack, bin, free_port, http_get, jobs, repo_root, wait_for};
use nix::sys::signal::Signal;
use serde_json::json;

/// Samples of the Prometheus text format: (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The sum of a metric's samples whose labels include `with`.
fn sum(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_agree_with_the_ledger_and_readiness_follows_draining() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = stack.worker(
        "w1",
        &job,
        &[
            ("FLEET_METRICS_LISTEN", &addr),
            ("FLEET_MAX_ATTEMPTS", "3"),
            ("FLEET_RETRY_BASE_SECS", "1"),
            ("FLEET_RETRY_MAX_SECS", "1"),
            ("FLEET_DRAIN_SECS", "120"),
            ("FLEET_LOG_FORMAT", "json"),
        ],
    );
    wait_for("/readyz to answer 200", Duration::from_secs(60), || async {
        matches!(http_get(&addr, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;

    // 30 jobs: 20 succeed at once, 6 fail once then succeed, 4 always fail (3 attempts,
    // then the dead-letter queue).
    let payloads = jobs(30, |i| match i % 10 {
        0..=5 => json!({"sleep_ms": 50}),
        6 | 7 => json!({"fail_times": 1}),
        8 if i < 20 => json!({"fail": true}),
        9 if i < 20 => json!({"fail": true}),
        _ => json!({}),
    });
    let request = json!({"request_id": "observed", "job_type": "test", "jobs": payloads});
    assert!(stack.submit(&request).status.success());
    // Followed without a terminal: plain progress lines until the request is done.
    let watch = stack.run(
        bin("fleet-producer"),
        &["status", "observed", "--watch", "--interval", "0.5"],
        &[],
    );
    assert!(watch.status.success(), "{}", watch.stderr);
    let progress: Vec<&str> = watch.stdout.lines().collect();
    assert!(progress.len() >= 2, "{}", watch.stdout);
    assert!(
        progress
            .iter()
            .all(|l| l.contains("/30 finished") && l.contains("jobs/s")),
        "{}",
        watch.stdout
    );
    assert!(
        progress
            .last()
            .is_some_and(|l| l.starts_with("30/30 finished")),
        "{}",
        watch.stdout
    );
    let status = stack.wait_done("observed", Duration::from_secs(180)).await;
    let (succeeded, failed) = (status.count("SUCCEEDED"), status.count("FAILED"));
    assert_eq!((succeeded, failed), (26, 4), "{status:?}");

    // The ledger's own count of retried attempts: history entries with a retry time.
    let mut retried_in_ledger = 0;
    for item in stack.ledger_items().await {
        if !item["sk"].as_s().unwrap().ends_with("#H") {
            continue;
        }
        retried_in_ledger += item
            .iter()
            .filter(|(k, v)| k.starts_with('h') && v.as_m().is_ok_and(|m| m.contains_key("r")))
            .count();
    }
    assert_eq!(retried_in_ledger, 6 + 4 * 2);

    // Counters are updated after the ledger write they count, and the dead-letter send
    // comes after the FAILED write: poll until they settle.
    let text = wait_for(
        "the counters to match the ledger",
        Duration::from_secs(30),
        || {
            let addr = addr.clone();
            async move {
                let (_, text) = http_get(&addr, "/metrics").await?;
                // A permit of a job handed to Lambda is given back right after its outcome
                // is written.
                (sum(&text, "fleet_dead_lettered_total", &[]) == failed as f64
                    && sum(&text, "fleet_jobs_completed_total", &[]) == (succeeded + failed) as f64
                    && sum(&text, "fleet_in_flight", &[("target", "lambda")]) == 0.0)
                    .then_some(text)
            }
        },
    )
    .await;
    let completed = |outcome| sum(&text, "fleet_jobs_completed_total", &[("outcome", outcome)]);
    assert_eq!(completed("succeeded"), succeeded as f64, "{text}");
    assert_eq!(completed("failed"), failed as f64, "{text}");
    assert_eq!(
        sum(&text, "fleet_retries_total", &[]),
        retried_in_ledger as f64,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "fleet_retries_total",
            &[("error_class", "job_failure")]
        ),
        retried_in_ledger as f64
    );
    assert_eq!(
        sum(
            &text,
            "fleet_dead_lettered_total",
            &[("error_class", "job_failure")]
        ),
        failed as f64
    );
    // Every attempt was dispatched to Lambda and timed.
    let attempts = (succeeded + failed) as f64 + retried_in_ledger as f64;
    assert_eq!(
        sum(
            &text,
            "fleet_jobs_dispatched_total",
            &[("target", "lambda")]
        ),
        attempts
    );
    assert_eq!(
        sum(
            &text,
            "fleet_job_duration_seconds_count",
            &[("target", "lambda"), ("job_type", "test")]
        ),
        attempts
    );
    assert_eq!(sum(&text, "fleet_jobs_claimed_total", &[]), attempts);
    assert_eq!(sum(&text, "fleet_queue_wait_seconds_count", &[]), 30.0);
    assert_eq!(
        sum(
            &text,
            "fleet_job_duration_seconds_bucket",
            &[("le", "43200")]
        ),
        attempts,
        "the duration histogram has its 12-hour bucket"
    );
    assert_eq!(
        sum(&text, "fleet_in_flight", &[("target", "lambda")]),
        0.0,
        "{text}"
    );
    assert!(sum(&text, "fleet_concurrency_limit", &[("target", "lambda")]) >= 1.0);
    assert_eq!(sum(&text, "fleet_routing_decisions_total", &[]), attempts);
    // Labels stay low-cardinality: no request or job ids anywhere.
    for (name, labels, _) in samples(&text) {
        assert!(
            !labels.contains_key("job_id") && !labels.contains_key("request_id"),
            "{name} {labels:?}"
        );
        if name.starts_with("fleet_") {
            assert!(lookup(&name).is_some(), "{name} is not in the catalog");
        }
    }
    assert!(matches!(http_get(&addr, "/healthz").await, Some((200, _))));

    // JSON logs: every line an object; lines about a job carry its request and job ids.
    let log = worker.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["span"]["request_id"] == "observed"
            && l["span"]["job_id"] == "observed:6"
            && l["fields"]["message"] == "attempt failed; will retry"),
        "{log}"
    );

    // Draining: a long job runs, SIGTERM; /readyz says no while /healthz still says yes.
    let long =
        json!({"request_id": "draining", "job_type": "test", "jobs": [{"sleep_ms": 20_000}]});
    assert!(stack.submit(&long).status.success());
    wait_for("the long job to run", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move {
            let (_, text) = http_get(&addr, "/metrics").await?;
            (sum(&text, "fleet_in_flight", &[("target", "lambda")]) == 1.0).then_some(())
        }
    })
    .await;
    worker.signal(Signal::SIGTERM);
    let body = wait_for("/readyz to answer 503", Duration::from_secs(30), || async {
        match http_get(&addr, "/readyz").await {
            Some((503, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    assert!(body.contains("draining"), "{body}");
    assert!(matches!(http_get(&addr, "/healthz").await, Some((200, _))));
    let (_, text) = http_get(&addr, "/metrics")
        .await
        .expect("metrics while draining");
    assert_eq!(sum(&text, "fleet_draining", &[]), 1.0);
    let exit = worker.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.is_some_and(|s| s.success()), "{}", worker.log_text());
    // The job was handed to Lambda: it ran on, and the next replica records its outcome.
    let _next = stack.worker("next", &job, &[]);
    let done = stack.wait_done("draining", Duration::from_secs(60)).await;
    assert_eq!(done.count("SUCCEEDED"), 1, "{done:?}");
    assert_eq!(done.attempts, 1, "{done:?}");
}

/// The metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("fleet_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_catalog_metrics() {
    let path = repo_root().join("deploy/grafana/fleet.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("json");
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            used.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    let unknown: Vec<_> = used.iter().filter(|n| lookup(n).is_none()).collect();
    assert!(unknown.is_empty(), "not in the catalog: {unknown:?}");
    // The panels the issue asks for: throughput, in-flight, limits, errors by class,
    // durations, backlog.
    for needed in [
        "fleet_jobs_completed_total",
        "fleet_in_flight",
        "fleet_concurrency_limit",
        "fleet_retries_total",
        "fleet_dead_lettered_total",
        "fleet_job_duration_seconds_bucket",
        "fleet_queue_backlog",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

#[test]
fn the_alert_rules_use_catalog_metrics_and_the_readme_lists_the_catalog() {
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/fleet.rules.yml"))
        .expect("rules");
    let unknown: Vec<_> = metric_names(&rules)
        .into_iter()
        .filter(|n| lookup(n).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules use unknown metrics: {unknown:?}"
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    for m in CATALOG {
        let row = format!("| `{}` | {} |", m.name, m.kind.as_str());
        assert!(
            readme.contains(&row),
            "the README's catalog has no row {row}"
        );
    }
    // Crate names (`fleet_shared`) and the bare prefix are not metrics.
    let missing: Vec<_> = metric_names(&readme)
        .into_iter()
        .filter(|n| {
            lookup(n).is_none()
                && n != "fleet_"
                && n != "fleet_payload_ref"
                && !["job", "shared", "tests", "worker", "producer"]
                    .iter()
                    .any(|c| n == &format!("fleet_{c}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the README names unknown metrics: {missing:?}"
    );
}

#[test]
fn every_alert_rule_passes_promtool_with_a_firing_and_a_quiet_case() {
    let dir = repo_root().join("deploy/prometheus");
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool not found ({e}): install Debian's prometheus package (deploy/local/test.sh does)")
            });
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "rules", "fleet.rules.yml"]);
    promtool(&["test", "rules", "fleet.test.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);

    let rules = std::fs::read_to_string(dir.join("fleet.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("fleet.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut cases: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("alertname: ") {
            let entry = cases.entry(name).or_default();
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => entry.1 += 1,
                Some(&"exp_alerts:") => entry.0 += 1,
                other => panic!("unexpected line after alertname {name}: {other:?}"),
            }
        }
    }
    for alert in alerts {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{alert}: {firing} firing and {quiet} quiet cases"
        );
    }
}
