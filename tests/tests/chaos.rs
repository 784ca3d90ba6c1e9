//! Crash safety, proved by the chaos command: 1,000 jobs over 3 replicas, a SIGKILL every
//! 20 s, one scale-in, one zombie paused past its lease, 1% of messages deleted and 1% sent
//! twice. Nothing lost, nothing recorded twice, no stale write accepted, the fence really
//! exercised, re-executions within the bound, every job terminal within 5 minutes of the
//! last fault.
#![allow(clippy::unwrap_used)]

use fleet_tests::bin;
use serde_json::Value;

#[test]
fn the_chaos_run_keeps_every_invariant() {
    let out = std::process::Command::new(bin("fleet-chaos"))
        .args(["--jobs", "1000", "--replicas", "3", "--kill-every", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let figures: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let n = |k: &str| {
        figures[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {figures}"))
    };
    assert_eq!(n("lost"), 0, "{figures}");
    assert_eq!(n("double_terminal"), 0, "{figures}");
    assert_eq!(n("stale_accepted"), 0, "{figures}");
    assert!(
        n("stale_rejected") > 0,
        "the zombie's stale writes were refused: {figures}"
    );
    assert!(n("reexecutions") <= n("reexecution_bound"), "{figures}");
    assert_eq!(n("over_limit"), 0, "{figures}");
    assert!(
        n("sigkills") >= 1 && n("scale_ins") == 1 && n("pauses") == 1,
        "every kind of fault happened: {figures}"
    );
    assert_eq!(n("deleted"), 10);
    assert_eq!(n("duplicated"), 10);
    assert!(
        figures["recovery_secs"].as_f64().unwrap() <= 300.0,
        "{figures}"
    );
    assert!(out.status.success(), "{stdout}");
}
