//! The configuration's unit tests: loading, overrides, errors, and the README's table.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::env::ENV_OVERRIDES;
use super::*;

fn load(text: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_parts(text.map(|t| (Path::new("fleet.toml"), t)), |k| {
        env.get(k).cloned()
    })
}

#[test]
fn defaults_are_valid() {
    let c = load(None, &[]).unwrap();
    assert_eq!(c.queue.jobs, "fleet-jobs");
    assert_eq!(c.worker.heartbeat(), Duration::from_secs(20));
}

#[test]
fn file_then_environment() {
    let text = r#"
        [queue]
        jobs = "from-file"
        [worker]
        concurrency = 8
        [job_types.resize]
        function = "resize-fn"
        max_attempts = 2
    "#;
    let c = load(
        Some(text),
        &[
            ("FLEET_QUEUE", "https://sqs.example/1/q"),
            ("FLEET_LAMBDA_FUNCTION", "dflt"),
        ],
    )
    .unwrap();
    assert_eq!(c.queue.jobs, "https://sqs.example/1/q");
    assert_eq!(c.worker.concurrency, 8);
    assert_eq!(c.function_for("resize"), Some("resize-fn"));
    assert_eq!(c.function_for("other"), Some("dflt"));
    assert_eq!(c.max_attempts_for("resize", None), 2);
    assert_eq!(c.max_attempts_for("resize", Some(7)), 7);
    assert_eq!(c.max_attempts_for("other", None), 5);
}

#[test]
fn errors_name_the_key() {
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (Some("[worker]\nlease = 3"), &[], "unknown field `lease`"),
        (
            Some("[worker]\nconcurrency = \"many\""),
            &[],
            "concurrency = \"many\"",
        ),
        (
            None,
            &[("FLEET_LEASE_SECS", "soon")],
            "worker.lease_secs (env FLEET_LEASE_SECS): expected a whole number",
        ),
        (
            None,
            &[("FLEET_LEASE_SECS", "1")],
            "worker.lease_secs (env FLEET_LEASE_SECS): must be 2",
        ),
        (
            None,
            &[("FLEET_QUEUE", "bad name!")],
            "queue.jobs (env FLEET_QUEUE)",
        ),
        (
            None,
            &[("FLEET_TABLE", "t")],
            "ledger.table (env FLEET_TABLE)",
        ),
        (None, &[("FLEET_MAX_ATTEMPTS", "0")], "worker.max_attempts"),
        (
            None,
            &[("FLEET_WAIT_TIME_SECS", "21")],
            "worker.wait_time_secs",
        ),
        (
            None,
            &[("FLEET_LEASE_SECS", "6"), ("FLEET_HEARTBEAT_SECS", "6")],
            "worker.heartbeat_secs",
        ),
        (Some("[job_types.\"a b\"]"), &[], "job_types.a b"),
        (
            Some("[ecs]\nlaunch_type = \"SPOT\""),
            &[],
            "unknown variant `SPOT`, expected one of `FARGATE`, `EC2`, `EXTERNAL`",
        ),
        (
            Some("[queue]\nmax_receive_count = 3"),
            &[],
            "queue.max_receive_count",
        ),
        (
            None,
            &[("FLEET_LAMBDA_INVOKE_CALLS", "0")],
            "lambda.invoke_calls (env FLEET_LAMBDA_INVOKE_CALLS): must be 1 to 10000",
        ),
        (
            None,
            &[("FLEET_ECS_RUN_TASK_PER_SEC", "fast")],
            "ecs.run_task_per_sec (env FLEET_ECS_RUN_TASK_PER_SEC): expected a number, got \"fast\"",
        ),
        (
            None,
            &[("FLEET_METRICS_LISTEN", "here")],
            "metrics.listen (env FLEET_METRICS_LISTEN): expected an address like 127.0.0.1:9464, got \"here\"",
        ),
        (
            None,
            &[("FLEET_ECS_LAUNCHER", " k8s ")],
            "ecs.launcher (env FLEET_ECS_LAUNCHER): expected aws or process, got \"k8s\"",
        ),
        (
            None,
            &[("FLEET_LAMBDA_INVOCATION", "async")],
            "lambda.invocation (env FLEET_LAMBDA_INVOCATION): expected event or sync, got \"async\"",
        ),
        (
            None,
            &[("FLEET_LEDGER_TTL_DAYS", "-1")],
            "ledger.ttl_days (env FLEET_LEDGER_TTL_DAYS): expected a whole number, got \"-1\"",
        ),
    ];
    for (text, env, want) in cases {
        let err = load(*text, env).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn environment_values_are_parsed_for_their_key() {
    let c = load(
        None,
        &[
            ("FLEET_ECS_SUBNETS", " a, ,b "),
            ("FLEET_LEASE_SECS", " 90 "),
            ("FLEET_HISTORY_LOG", "/tmp/h.jsonl"),
            ("FLEET_ECS_LAUNCHER", "process"),
            ("FLEET_ECS_COMMAND", "fleet-job run"),
        ],
    )
    .unwrap();
    assert_eq!(c.ecs.subnets, vec!["a", "b"]);
    assert_eq!(c.worker.lease_secs, 90);
    assert_eq!(
        c.worker.history_log.as_deref(),
        Some(Path::new("/tmp/h.jsonl"))
    );
    assert_eq!(c.ecs.launcher, Launcher::Process);
    assert_eq!(c.ecs.command.as_deref(), Some("fleet-job run"));
}

#[test]
fn commands_split_like_a_shell() {
    assert_eq!(
        split_command("fleet-job run").unwrap(),
        vec!["fleet-job", "run"]
    );
    assert_eq!(
        split_command(r#"  /opt/my\ job "a b" 'c "d"' e\"f ''  "#).unwrap(),
        vec!["/opt/my job", "a b", "c \"d\"", "e\"f", ""]
    );
    assert!(split_command("'open").is_err());
    assert!(split_command("   ").is_err());
}

#[test]
fn every_override_names_a_real_key() {
    // Each override must change the configuration, or its key name is a lie. (The
    // process launcher needs a command, so both start from one.)
    let with = [("FLEET_ECS_COMMAND", "cmd")];
    let base = format!("{:?}", load(None, &with).unwrap());
    for (var, key, _) in ENV_OVERRIDES {
        let value = match *var {
            "FLEET_QUEUE" => "q-other",
            "FLEET_DLQ" => "dlq-other",
            "FLEET_TABLE" => "table-other",
            "FLEET_LAMBDA_FUNCTION" | "FLEET_REPLICA_ID" | "FLEET_HISTORY_LOG" => "other",
            "FLEET_HEARTBEAT_SECS" => "7",
            "FLEET_METRICS_LISTEN" => "127.0.0.1:9464",
            "FLEET_MAX_MESSAGE_BYTES" => "2048",
            "FLEET_RETRY_BASE_SECS" => "3",
            "FLEET_WAIT_TIME_SECS" | "FLEET_CLOCK_SKEW_SECS" => "1",
            "FLEET_MAX_ATTEMPTS" => "9",
            "FLEET_LAMBDA_READ_TIMEOUT_SECS" | "FLEET_LAMBDA_MAX_CONCURRENCY" => "13",
            "FLEET_ECS_LAUNCHER" => "process",
            "FLEET_LAMBDA_INVOCATION" => "sync",
            "FLEET_OUTCOMES_QUEUE" => "outcomes-other",
            "FLEET_LAMBDA_MAX_EVENT_AGE_SECS" => "120",
            "FLEET_ECS_COMMAND"
            | "FLEET_ECS_CLUSTER"
            | "FLEET_ECS_TASK_DEFINITION"
            | "FLEET_ECS_CONTAINER" => "x",
            "FLEET_ECS_SUBNETS" | "FLEET_ECS_SECURITY_GROUPS" => "a,b",
            "FLEET_ROUTING_LAMBDA_MAX_SECS" => "30",
            "FLEET_CLAIM_CHECK_PREFIX" => "s3://bucket/payloads/",
            "FLEET_CLAIM_CHECK_INLINE_MAX_BYTES" => "4096",
            "FLEET_ECS_TASK_CPU" => "2048",
            "FLEET_ECS_TASK_MEMORY_MB" => "4096",
            "FLEET_LAMBDA_MEMORY_MB" => "512",
            "FLEET_EVENTS_SNS_TOPIC" => "arn:aws:sns:us-east-1:123456789012:done",
            "FLEET_API_TOKEN" => "a-token-of-16-chars-or-more",
            "FLEET_API_CONSOLE" => "true",
            _ => "13",
        };
        let c = load(None, &[with[0], (var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_ne!(format!("{c:?}"), base, "{var} did not change {key}");
    }
}

/// The keys of the table `header` (`""` for the top level, `"[queue]\n"` for a section), as
/// serde names them when it refuses an unknown one.
fn keys_of(header: &str) -> Vec<String> {
    let probe = "__probe";
    let err = toml::from_str::<Config>(&format!("{header}{probe} = 1\n"))
        .unwrap_err()
        .to_string();
    let (_, expected) = err
        .split_once(&format!("unknown field `{probe}`, expected"))
        .unwrap_or_else(|| panic!("no list of fields in {err:?}"));
    expected
        .lines()
        .next()
        .unwrap_or_default()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The words in backticks of a table cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_readme_documents_every_key_and_variable() {
    // Every key serde accepts, from the code itself.
    let mut code_keys = BTreeSet::new();
    for section in keys_of("") {
        if section == "job_types" || section == "tenants" {
            if section == "job_types" {
                code_keys.insert("job_types.<name>".to_owned());
            }
            for key in keys_of(&format!("[{section}.t]\n")) {
                code_keys.insert(format!("{section}.<name>.{key}"));
            }
        } else {
            for key in keys_of(&format!("[{section}]\n")) {
                code_keys.insert(format!("{section}.{key}"));
            }
        }
    }
    assert!(code_keys.len() > 50, "too few keys found: {code_keys:?}");
    let code_vars: BTreeMap<String, String> = ENV_OVERRIDES
        .iter()
        .map(|(var, key, _)| ((*key).to_owned(), (*var).to_owned()))
        .collect();

    // The README's configuration table: `| key | environment | default | meaning |`, where
    // a row may name several keys with as many variables (or none).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let rows = readme
        .lines()
        .skip_while(|l| *l != "| key | environment | default | meaning |")
        .skip(2);
    let mut readme_keys = BTreeSet::new();
    let mut readme_vars = BTreeMap::new();
    for row in rows.take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').collect();
        let (keys, vars) = (quoted(cells[1]), quoted(cells[2]));
        assert!(
            vars.is_empty() || vars.len() == keys.len(),
            "README row {row:?}: as many variables as keys, or none"
        );
        for (i, key) in keys.iter().enumerate() {
            assert!(readme_keys.insert(key.to_string()), "README: {key} twice");
            if let Some(var) = vars.get(i) {
                readme_vars.insert(key.to_string(), var.to_string());
            }
        }
    }

    let undocumented: Vec<_> = code_keys.difference(&readme_keys).collect();
    assert!(
        undocumented.is_empty(),
        "the README's table lacks {undocumented:?}"
    );
    let unknown: Vec<_> = readme_keys.difference(&code_keys).collect();
    assert!(
        unknown.is_empty(),
        "the README's table names unknown keys {unknown:?}"
    );
    let keys: BTreeSet<&String> = readme_vars.keys().chain(code_vars.keys()).collect();
    let wrong: Vec<_> = keys
        .into_iter()
        .filter(|k| readme_vars.get(*k) != code_vars.get(*k))
        .map(|k| (k, readme_vars.get(k), code_vars.get(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "the README's variables differ from the code's (key, README, code): {wrong:?}"
    );
}

#[test]
fn the_api_token_is_checked_and_never_printed() {
    let e = load(None, &[("FLEET_API_TOKEN", "short-secret")]).expect_err("too short");
    let text = e.to_string();
    assert!(
        text.contains("api.token") && text.contains("FLEET_API_TOKEN"),
        "{text}"
    );
    assert!(
        !text.contains("short-secret"),
        "the refusal does not repeat the token: {text}"
    );
    let e = load(None, &[("FLEET_API_TOKEN", "sixteen chars with spaces")]).expect_err("spaces");
    assert!(e.to_string().contains("without spaces"), "{e}");
    let c = load(None, &[("FLEET_API_TOKEN", "a-long-enough-secret-token")]).expect("a token");
    assert_eq!(c.api.token.as_deref(), Some("a-long-enough-secret-token"));
    assert!(
        !format!("{c:?}").contains("a-long-enough-secret-token"),
        "Debug hides the token"
    );
    let e = load(None, &[("FLEET_API_CONSOLE", "yes")]).expect_err("not a bool");
    assert!(e.to_string().contains("FLEET_API_CONSOLE"), "{e}");
    assert!(
        load(None, &[("FLEET_API_CONSOLE", "true")])
            .expect("on")
            .api
            .console
    );
}
