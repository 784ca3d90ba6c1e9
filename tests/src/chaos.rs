//! The chaos run: K worker processes over N jobs of varied duration on the local stack,
//! while replicas are SIGKILLed and restarted, one is scaled in with SIGTERM, one is paused
//! past its lease with SIGSTOP and resumed (a zombie that must be fenced off), some messages
//! are deleted behind the system's back and some are sent twice. Then the checker counts
//! what must never happen. `fleet-chaos` is the command; the CI test calls [`run`].

use std::time::Duration;

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::checker::{self, Figures};
use crate::{Proc, Stack, TestJob, bin};

#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: usize,
    pub replicas: usize,
    /// A SIGKILL (and restart) of a random replica this often.
    pub kill_every: Duration,
    /// Replicas stopped with SIGTERM (scale-in with drain), each replaced.
    pub scale_ins: usize,
    /// Replicas paused with SIGSTOP past their lease, then resumed.
    pub pauses: usize,
    /// Share of the jobs whose message is deleted behind the system's back.
    pub delete_share: f64,
    /// Share of the jobs whose message is sent twice.
    pub duplicate_share: f64,
    /// How long every job may take to become terminal after the last fault.
    pub recovery_bound: Duration,
    pub lease_secs: u64,
    /// Per-replica in-flight limit.
    pub concurrency: usize,
    pub seed: u64,
    /// Copy the run's files (history, execution log, replica and endpoint logs) here.
    pub keep: Option<std::path::PathBuf>,
    /// `lambda.invocation` of the replicas: `event` or `sync`.
    pub invocation: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            jobs: 1000,
            replicas: 3,
            kill_every: Duration::from_secs(20),
            scale_ins: 1,
            pauses: 1,
            delete_share: 0.01,
            duplicate_share: 0.01,
            recovery_bound: Duration::from_secs(300),
            lease_secs: 15,
            concurrency: 16,
            seed: 1,
            keep: None,
            invocation: "event".into(),
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub jobs: usize,
    pub replicas: usize,
    pub lost: usize,
    pub double_terminal: usize,
    pub stale_accepted: usize,
    pub stale_rejected: usize,
    pub reexecutions: usize,
    /// The stated bound: faults that can interrupt work (SIGKILL, SIGTERM, SIGSTOP) times
    /// the per-replica in-flight limit, plus duplicated and deleted messages.
    pub reexecution_bound: usize,
    pub over_limit: usize,
    /// Attempts given up because a heartbeat did not land before the lease expired (not a
    /// fault the run injected; a sign of an overloaded endpoint).
    pub leases_expired: usize,
    /// SIGKILLs, SIGTERMs and SIGSTOPs.
    pub kills: usize,
    pub sigkills: usize,
    pub scale_ins: usize,
    pub pauses: usize,
    pub deleted: usize,
    pub duplicated: usize,
    /// From the last fault to every job terminal.
    pub recovery_secs: f64,
    pub elapsed_secs: f64,
    pub executions: usize,
    /// Broken invariants, in words; empty when the run passed.
    pub violations: Vec<String>,
}

struct Fleet<'a> {
    stack: &'a Stack,
    job: &'a TestJob,
    env: Vec<(String, String)>,
    replicas: Vec<Proc>,
    next: usize,
}

impl Fleet<'_> {
    fn spawn(&mut self) {
        let name = format!("w{}", self.next);
        self.next += 1;
        let history = self
            .stack
            .dir
            .path()
            .join("history")
            .join(format!("{name}.jsonl"));
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let history = history.to_string_lossy().into_owned();
        env.push(("FLEET_HISTORY_LOG", &history));
        let p = self.stack.worker(&name, self.job, &env);
        self.replicas.push(p);
    }

    fn pick(&mut self, rng: &mut StdRng) -> usize {
        rng.random_range(0..self.replicas.len())
    }
}

/// Runs the chaos scenario and checks the invariants.
pub async fn run(opts: &Options) -> Outcome {
    let started = Instant::now();
    // Lambda jobs are handed off (asynchronous invocation): a replica holds no heartbeated
    // lease while one runs, so a pause makes no zombie of it.
    let handing_off = opts.invocation != "sync";
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let stack = Stack::with_init().await;
    std::fs::create_dir_all(stack.dir.path().join("history")).expect("history dir");
    let job = stack.testjob(&[]).await;
    let env: Vec<(String, String)> = [
        ("FLEET_LEASE_SECS", opts.lease_secs.to_string()),
        (
            "FLEET_HEARTBEAT_SECS",
            (opts.lease_secs / 3).max(1).to_string(),
        ),
        ("FLEET_SWEEP_SECS", "2".into()),
        ("FLEET_RECOVER_SECS", "8".into()),
        ("FLEET_DRAIN_SECS", "3".into()),
        ("FLEET_CONCURRENCY", opts.concurrency.to_string()),
        ("FLEET_LAMBDA_INVOCATION", opts.invocation.clone()),
        // A job handed off is leased for the event's age plus the function timeout: short
        // here (the longest job runs 75 s), so that one whose record never comes, or whose
        // replica was killed between the extension and the Invoke, is retried within the
        // recovery bound.
        ("FLEET_LAMBDA_MAX_EVENT_AGE_SECS", "60".into()),
        ("FLEET_LAMBDA_TIMEOUT_SECS", "80".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut fleet = Fleet {
        stack: &stack,
        job: &job,
        env,
        replicas: Vec::new(),
        next: 0,
    };
    for _ in 0..opts.replicas {
        fleet.spawn();
    }

    // Varied durations: most short, some of seconds, and every 50th (from the second) long
    // enough to outlast a pause, early in the queue so a pause can meet one.
    let payloads: Vec<serde_json::Value> = (0..opts.jobs)
        .map(|i| {
            let roll: f64 = rng.random();
            let ms = if i % 50 == 1 {
                rng.random_range(60_000..75_000)
            } else if roll < 0.92 {
                rng.random_range(100..1500)
            } else {
                rng.random_range(2000..5000)
            };
            json!({"sleep_ms": ms})
        })
        .collect();
    let request = json!({"request_id": "chaos", "job_type": "test", "jobs": payloads.clone()});
    let say = |what: String| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    say(format!(
        "{} replicas started; submitting {} jobs",
        opts.replicas, opts.jobs
    ));
    // The submission runs beside the faults: on a loaded endpoint it takes a while, and the
    // replicas start on the first messages long before it ends.
    let request_file = stack.dir.path().join("request.json");
    std::fs::write(&request_file, request.to_string()).expect("write the request");
    let mut producer = Some(stack.spawn(
        "producer",
        bin("fleet-producer"),
        &["submit", request_file.to_str().expect("utf-8 path")],
        &[],
    ));
    let submitted: Vec<String> = (0..opts.jobs).map(|i| format!("chaos:{i}")).collect();
    let mut lost_feed = None;

    // Faults while the request runs: a pause first (so it meets running jobs), a scale-in,
    // and a SIGKILL every `kill_every`; they stop once 90% of the jobs are finished. Lost
    // feed and duplicate delivery come as soon as the submission is done.
    let (mut sigkills, mut scale_ins, mut pauses) = (0, 0, 0);
    let mut last_fault = Instant::now();
    let mut next_kill = Instant::now() + opts.kill_every;
    let next_pause = Instant::now() + Duration::from_secs(6);
    let mut next_scale_in = Instant::now() + opts.kill_every.mul_f64(1.5);
    loop {
        if let Some(p) = producer.as_mut() {
            if let Some(status) = p.try_status() {
                assert!(status.success(), "submit failed: {}", p.log_text());
                producer = None;
                say("submitted; deleting and duplicating messages".into());
                // Beside the other faults: on a loaded endpoint these calls take a while.
                let url = stack.queue_url(&stack.names.queue).await;
                let n = (opts.duplicate_share * opts.jobs as f64).ceil() as usize;
                let copies: Vec<String> = (0..n)
                    .map(|_| {
                        let i = rng.random_range(0..opts.jobs);
                        json!({
                            "version": 1, "request_id": "chaos", "job_id": format!("chaos:{i}"),
                            "job_type": "test", "attempt": 1, "payload": payloads[i],
                            "enqueued_at_ms": fleet_shared::time::now_ms(),
                        })
                        .to_string()
                    })
                    .collect();
                let n = (opts.delete_share * opts.jobs as f64).ceil() as usize;
                lost_feed = Some(tokio::spawn(lose_and_duplicate(
                    stack.sqs(),
                    url,
                    n,
                    copies,
                )));
            }
        } else {
            let s = stack.status("chaos");
            let finished =
                (s.count("SUCCEEDED") + s.count("FAILED") + s.count("CANCELLED")) as usize;
            if s.done || finished * 10 >= opts.jobs * 9 {
                break;
            }
        }
        let now = Instant::now();
        let pause_for = Duration::from_secs(opts.lease_secs + 4);
        let zombie = if pauses < opts.pauses && now >= next_pause {
            // A replica with a job that will still run when it wakes: its heartbeat then
            // meets the higher fence of the replica that took the job over. The pause lasts
            // past the lease and until the takeover (the message comes back when the lease
            // ends, the claim waits out the skew): leave half a minute for that.
            busy_owner(&stack, &payloads, pause_for + Duration::from_secs(30))
                .await
                .and_then(|(owner, job)| {
                    Some((
                        fleet.replicas.iter().position(|p| p.name == owner)?,
                        owner,
                        job,
                    ))
                })
        } else {
            None
        };
        if let Some((i, owner, job)) = zombie {
            if handing_off {
                // The job runs in Lambda under the lease of its hand-off: nothing of it is
                // the paused replica's to lose, and its record is any replica's to record.
                say(format!(
                    "pausing {owner} (SIGSTOP) with {job} handed to Lambda"
                ));
                fleet.replicas[i].signal(Signal::SIGSTOP);
                tokio::time::sleep(pause_for).await;
                fleet.replicas[i].signal(Signal::SIGCONT);
                say(format!("resumed {owner} (paused past its lease)"));
            } else {
                // Paused past its lease, and until another replica has taken the job over
                // (the message comes back when the lease ends): a zombie with a stale fence.
                // Half a heartbeat period after one of its heartbeats for the job has landed:
                // paused in the middle of a heartbeat (or of the visibility extension after
                // it), a replica would finish the call on waking, see that its lease ran out
                // and give the job up without a write; paused while it waits for the next
                // heartbeat, it sends that one on waking, and it meets the new fence.
                let seen = job_lease(&stack, &job).await;
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until && job_lease(&stack, &job).await == seen {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_secs((opts.lease_secs / 3).max(1)).mul_f64(0.5))
                    .await;
                say(format!("pausing {owner} (SIGSTOP) with {job} running"));
                fleet.replicas[i].signal(Signal::SIGSTOP);
                tokio::time::sleep(pause_for).await;
                let until = Instant::now() + Duration::from_secs(120);
                while Instant::now() < until
                    && owner_of(&stack, &job).await.as_deref() == Some(owner.as_str())
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                fleet.replicas[i].signal(Signal::SIGCONT);
                say(format!(
                    "resumed {owner} (paused with {job} running; taken over)"
                ));
            }
            pauses += 1;
            last_fault = Instant::now();
        } else if scale_ins < opts.scale_ins && now >= next_scale_in {
            let i = fleet.pick(&mut rng);
            let mut p = fleet.replicas.remove(i);
            p.signal(Signal::SIGTERM);
            let _ = p.wait_exit(Duration::from_secs(30)).await;
            fleet.spawn();
            scale_ins += 1;
            say("scaled one replica in (SIGTERM, drained) and started a new one".into());
            next_scale_in = now + Duration::from_secs(3600);
            last_fault = Instant::now();
        } else if now >= next_kill {
            let i = fleet.pick(&mut rng);
            let mut p = fleet.replicas.remove(i);
            p.signal(Signal::SIGKILL);
            let _ = p.wait_exit(Duration::from_secs(10)).await;
            fleet.spawn();
            sigkills += 1;
            say("SIGKILLed a replica and started a new one".into());
            next_kill = now + opts.kill_every;
            last_fault = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (deleted, duplicated) = match lost_feed {
        Some(task) => task.await.expect("deleting and duplicating messages"),
        None => (0, 0),
    };
    if deleted + duplicated > 0 {
        last_fault = last_fault.max(Instant::now());
    }
    say(format!(
        "faults over ({sigkills} SIGKILL, {scale_ins} scale-in, {pauses} pause); waiting for every job to finish"
    ));
    // Recovery: every job terminal within the bound after the last fault.
    let deadline = last_fault + opts.recovery_bound;
    let mut done_at = None;
    while Instant::now() < deadline {
        if stack.status("chaos").done {
            done_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovery_secs = done_at.map_or(opts.recovery_bound.as_secs_f64(), |d| {
        d.duration_since(last_fault).as_secs_f64()
    });
    for p in &fleet.replicas {
        p.signal(Signal::SIGTERM);
    }
    for p in &mut fleet.replicas {
        let _ = p.wait_exit(Duration::from_secs(30)).await;
    }

    if let Some(keep) = &opts.keep {
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(stack.dir.path())
            .arg(keep)
            .status();
        if !copied.is_ok_and(|s| s.success()) {
            eprintln!("could not copy the run's files to {}", keep.display());
        }
    }
    let history = checker::read_history(&stack.dir.path().join("history"));
    let (_, finals) = checker::ledger_finals(&stack.ledger(), "chaos")
        .await
        .expect("read the ledger");
    let f: Figures = checker::check(&submitted, &history, &job.executions(), &finals, 5);
    let kills = sigkills + scale_ins + pauses;
    let bound = kills * opts.concurrency + duplicated + deleted;
    let mut violations = Vec::new();
    if f.lost > 0 {
        violations.push(format!(
            "{} jobs lost (not terminal {:.0} s after the last fault)",
            f.lost,
            opts.recovery_bound.as_secs_f64()
        ));
    }
    if f.double_terminal > 0 {
        violations.push(format!(
            "{} jobs recorded as finished twice",
            f.double_terminal
        ));
    }
    if f.stale_accepted > 0 {
        violations.push(format!("{} stale-fence writes accepted", f.stale_accepted));
    }
    if f.over_limit > 0 {
        violations.push(format!("{} jobs over their attempt limit", f.over_limit));
    }
    if f.reexecutions > bound {
        violations.push(format!(
            "{} re-executions, over the bound of {bound}",
            f.reexecutions
        ));
    }
    if pauses > 0 && !handing_off && f.stale_rejected == 0 {
        violations
            .push("a replica was paused past its lease, yet no stale write was rejected".into());
    }
    Outcome {
        jobs: opts.jobs,
        replicas: opts.replicas,
        lost: f.lost,
        double_terminal: f.double_terminal,
        stale_accepted: f.stale_accepted,
        stale_rejected: f.stale_rejected,
        reexecutions: f.reexecutions,
        reexecution_bound: bound,
        over_limit: f.over_limit,
        leases_expired: f.leases_expired,
        kills,
        sigkills,
        scale_ins,
        pauses,
        deleted,
        duplicated,
        recovery_secs,
        elapsed_secs: started.elapsed().as_secs_f64(),
        executions: f.executions,
        violations,
    }
}

/// The owner of a job, as the ledger has it now.
/// The job's owner and lease expiry, as the ledger has them now.
async fn job_lease(stack: &Stack, job: &str) -> Option<(String, String)> {
    let item = job_item(stack, job).await?;
    Some((
        item.get("ow")?.as_s().ok()?.clone(),
        item.get("lu")?.as_n().ok()?.clone(),
    ))
}

async fn owner_of(stack: &Stack, job: &str) -> Option<String> {
    job_item(stack, job).await?.get("ow")?.as_s().ok().cloned()
}

async fn job_item(
    stack: &Stack,
    job: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use fleet_shared::ledger::RequestLedger;
    let id = fleet_shared::ids::JobId::parse(job).ok()?;
    let shards = stack
        .ledger()
        .get_request(id.request_id())
        .await
        .ok()?
        .map_or(fleet_shared::ledger::memory::DIRECT_JOB_SHARDS, |r| {
            r.job_shards
        });
    let key = fleet_shared::ledger::item::job_key(&id, shards);
    stack
        .dynamodb()
        .get_item()
        .table_name(&stack.names.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(key.pk))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(key.sk))
        .consistent_read(true)
        .send()
        .await
        .ok()?
        .item
}

/// The owner of a RUNNING job that will run for at least `left` more, and the job.
async fn busy_owner(
    stack: &Stack,
    payloads: &[serde_json::Value],
    left: Duration,
) -> Option<(String, String)> {
    let now = fleet_shared::time::now_ms();
    stack.table_items().await.into_iter().find_map(|i| {
        if i.get("st")?.as_s().ok()? != "RUNNING" {
            return None;
        }
        let n = |k: &str| {
            i.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        let key = fleet_shared::ledger::ItemKey::new(
            i.get("pk")?.as_s().ok()?.clone(),
            i.get("sk")?.as_s().ok()?.clone(),
        );
        let job = fleet_shared::ledger::item::job_of(&key).ok()?;
        let ends = n("sa")? + payloads.get(job.index() as usize)?["sleep_ms"].as_u64()?;
        if ends <= now + left.as_millis() as u64 {
            return None;
        }
        Some((i.get("ow")?.as_s().ok()?.clone(), job.to_string()))
    })
}

/// Deletes up to `n` messages from the jobs queue behind the replicas' back (the others it
/// receives are made visible again), then sends `copies` (second copies of jobs'
/// messages). Returns how many were deleted and sent.
async fn lose_and_duplicate(
    sqs: aws_sdk_sqs::Client,
    url: String,
    n: usize,
    copies: Vec<String>,
) -> (usize, usize) {
    let mut deleted = 0;
    for _ in 0..20 {
        if deleted >= n {
            break;
        }
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .await
            .map(|o| o.messages.unwrap_or_default())
            .unwrap_or_default();
        for m in got {
            let receipt = m.receipt_handle().unwrap_or_default();
            if deleted < n {
                if sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .is_ok()
                {
                    deleted += 1;
                }
            } else {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
    }
    let mut sent = 0;
    for body in copies {
        if sqs
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    (deleted, sent)
}
