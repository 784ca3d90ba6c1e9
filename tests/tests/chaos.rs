//! Crash safety, proved by the chaos command: 1,000 jobs over 3 replicas, a SIGKILL every
//! 20 s, one scale-in, one zombie paused past its lease (synchronous Invoke), 1% of
//! messages deleted and 1% sent twice; once with each way of invoking Lambda. Nothing lost, nothing recorded twice, no stale write accepted, the fence really
//! exercised, re-executions within the bound, every job terminal within 5 minutes of the
//! last fault.
#![allow(clippy::unwrap_used)]

use fleet_tests::bin;
use serde_json::Value;

/// One chaos run; its figures, after the invariants every run keeps.
fn chaos(args: &[&str]) -> Value {
    let out = std::process::Command::new(bin("fleet-chaos"))
        .args(["--jobs", "1000", "--replicas", "3", "--kill-every", "20"])
        .args(args)
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
    assert!(n("reexecutions") <= n("reexecution_bound"), "{figures}");
    assert_eq!(n("over_limit"), 0, "{figures}");
    assert!(
        n("sigkills") >= 1 && n("scale_ins") == 1,
        "every kind of fault happened: {figures}"
    );
    assert_eq!(n("deleted"), 10);
    assert_eq!(n("duplicated"), 10);
    assert!(
        figures["recovery_secs"].as_f64().unwrap() <= 300.0,
        "{figures}"
    );
    assert!(out.status.success(), "{stdout}");
    eprintln!("{figures}");
    figures
}

/// Synchronous Invoke: a replica paused past its lease meets the new fence on waking.
#[test]
fn the_chaos_run_keeps_every_invariant() {
    let figures = chaos(&["--invocation", "sync"]);
    assert_eq!(figures["pauses"], 1, "{figures}");
    assert!(
        figures["stale_rejected"].as_u64().unwrap() > 0,
        "the zombie's stale writes were refused: {figures}"
    );
}

/// Asynchronous Invoke: a Lambda job outlives the replica that handed it off, and its lease
/// is extended before the Invoke, so a SIGKILL, a scale-in or a pause re-runs nothing: the
/// only re-executions are those of the messages sent twice or deleted behind its back.
#[test]
fn the_chaos_run_in_event_mode_keeps_every_invariant_and_reruns_nothing_for_faults() {
    let figures = chaos(&["--invocation", "event"]);
    assert_eq!(figures["pauses"], 1, "{figures}");
    let injected = figures["duplicated"].as_u64().unwrap() + figures["deleted"].as_u64().unwrap();
    assert!(
        figures["reexecutions"].as_u64().unwrap() <= injected,
        "re-executions only from the injected duplicates and deletions: {figures}"
    );
}
