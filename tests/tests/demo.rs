//! The README's main command, `deploy/local/demo.sh`, at a small size: CSV files in the local
//! S3 become Parquet through a request by prefix, big inputs in containers and the rest in
//! Lambda, and every output is checked.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use fleet_tests::{bin, repo_root};

#[test]
fn the_demo_converts_every_file_on_both_targets_and_checks_them() {
    let bin_dir = bin("fleet-worker").parent().unwrap().to_path_buf();
    let out = Command::new(repo_root().join("deploy/local/demo.sh"))
        .env("DEMO_FILES", "30")
        .env("DEMO_BIN", &bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    // Its interface: the last line on stdout is one JSON object.
    let last = stdout.lines().last().unwrap();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(summary["files"], 30, "{summary}");
    assert_eq!(summary["ok"], 30, "{summary}");
    assert!(summary["rows"].as_u64().unwrap() > 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    // Files 5 and 29 are over the 2 MiB routing limit: containers; the rest Lambda.
    assert_eq!(summary["per_target"]["ecs"], 2, "{summary}");
    assert!(
        summary["per_target"]["lambda"].as_u64().unwrap() >= 1,
        "{summary}"
    );
}
