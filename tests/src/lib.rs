//! Test support for the black-box tests: a local AWS stack (moto's server on a free loopback
//! port, one per test so tests never share state), the real binaries started as child
//! processes with the environment the README documents, and polling helpers.
//!
//! Every child is killed when its guard drops; when a test fails, the logs of everything it
//! started are printed so CI shows why.

pub mod bench;
pub mod bench_live;
pub mod bench_scale;
pub mod browser;
pub mod calls;
pub mod chaos;
pub mod checker;
pub mod fault_proxy;
pub mod ledger_contract;
pub mod netns;
pub mod runtime_api;
pub mod sqs_stand_in;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::time::Instant;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A workspace binary, built beside this executable (`target/<profile>/NAME`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // A test runs from target/<profile>/deps/, a binary (fleet-chaos) from target/<profile>/.
    let mut dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --all-targets` first (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// The virtualenv's Python that has moto (`FLEET_PYTHON`, default `.venv/bin/python`).
pub fn python() -> PathBuf {
    let path = std::env::var_os("FLEET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing; run `deploy/local/stack.sh install` (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// A loopback port that is free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// The exit status once the process has exited, else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Names of the AWS resources of one test.
#[derive(Debug, Clone)]
pub struct Names {
    pub queue: String,
    pub dlq: String,
    pub table: String,
}

/// Where a stack's processes run when it is spread over network namespaces
/// ([`netns::NatLab`]): the binaries a test runs (worker, producer) in `client`, the local
/// endpoint and the test job's Invoke API in `server`, reached at `server_addr`.
#[derive(Debug, Clone)]
pub struct Placement {
    pub client: String,
    pub server: String,
    pub server_addr: String,
}

/// One test's local AWS stack and working directory.
pub struct Stack {
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    pub names: Names,
    pub sdk: SdkConfig,
    logs: std::sync::Mutex<Vec<PathBuf>>,
    placement: Option<Placement>,
    _moto: Proc,
}

/// `program` run in network namespace `ns` (`ip netns exec`), or here when `None`.
fn command_in(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Stack {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> Stack {
        Stack::start_at(None).await
    }

    /// A stack spread over a NAT lab: moto and the test job in its server namespace, the
    /// binaries in its client namespace (every call they make crosses the NAT).
    pub async fn start_in(lab: &netns::NatLab) -> Stack {
        Stack::start_at(Some(Placement {
            client: lab.client.clone(),
            server: lab.server.clone(),
            server_addr: lab.server_addr.clone(),
        }))
        .await
    }

    async fn start_at(placement: Option<Placement>) -> Stack {
        let host = placement
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |p| p.server_addr.clone());
        let dir = tempfile::Builder::new()
            .prefix("fleet-test-")
            .tempdir()
            .expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let log = dir.path().join("moto.log");
            let launcher = repo_root().join("deploy/local/moto_server.py");
            let child = command_in(placement.as_ref().map(|p| p.server.as_str()), &python())
                .arg(launcher)
                .args(["-H", &host, "-p", &port.to_string()])
                .stdout(std::fs::File::create(&log).expect("moto log"))
                .stderr(
                    std::fs::File::options()
                        .append(true)
                        .open(&log)
                        .expect("moto log"),
                )
                .spawn()
                .expect("start moto_server");
            let mut moto = Proc {
                name: "moto".into(),
                child,
                log: log.clone(),
                status: None,
            };
            let endpoint = format!("http://{host}:{port}");
            if wait_http(&endpoint, &mut moto, Duration::from_secs(30)).await {
                let sdk = aws_config::defaults(BehaviorVersion::latest())
                    .endpoint_url(&endpoint)
                    .region(Region::new("us-east-1"))
                    .credentials_provider(Credentials::new("local", "local", None, None, "test"))
                    .load()
                    .await;
                return Stack {
                    endpoint,
                    dir,
                    names: Names {
                        queue: "fleet-jobs".into(),
                        dlq: "fleet-jobs-dlq".into(),
                        table: "fleet-ledger".into(),
                    },
                    sdk,
                    logs: std::sync::Mutex::new(vec![log]),
                    placement,
                    _moto: moto,
                };
            }
        }
        panic!("the local AWS endpoint (deploy/local/moto_server.py) did not start");
    }

    /// Starts the stack and runs `fleet-worker init`.
    pub async fn with_init() -> Stack {
        let stack = Stack::start().await;
        let out = stack.run(bin("fleet-worker"), &["init"], &[]);
        assert!(out.status.success(), "init failed: {}", out.stderr);
        stack
    }

    /// The environment every binary gets: the local endpoint, dummy credentials for it, and
    /// this test's resource names. Nothing is inherited from the caller's AWS settings.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("FLEET_QUEUE", &self.names.queue),
            ("FLEET_DLQ", &self.names.dlq),
            ("FLEET_TABLE", &self.names.table),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn command(&self, program: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let ns = self.placement.as_ref().map(|p| p.client.as_str());
        self.command_at(ns, program, args, extra)
    }

    fn command_at(
        &self,
        ns: Option<&str>,
        program: &Path,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Command {
        let mut c = command_in(ns, program);
        c.args(args).current_dir(self.dir.path()).env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(key) {
                c.env(key, v);
            }
        }
        c.envs(self.env());
        c.envs(extra.iter().map(|(k, v)| (*k, *v)));
        c
    }

    /// Runs a binary to completion.
    pub fn run(&self, program: PathBuf, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let out = self
            .command(&program, args, extra)
            .stdin(Stdio::null())
            .output()
            .expect("run binary");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts a long-running binary, its stdout and stderr going to `<name>.log`.
    pub fn spawn(
        &self,
        name: &str,
        program: PathBuf,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(&program, args, extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn binary");
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(log.clone());
        Proc {
            name: name.to_owned(),
            child,
            log,
            status: None,
        }
    }

    /// Starts the test job's local Invoke-API server; its executions go to `log`.
    pub async fn testjob(&self, extra_args: &[&str]) -> TestJob {
        self.testjob_with(extra_args, &[]).await
    }

    /// [`Stack::testjob`] with more environment variables for the job's server.
    pub async fn testjob_with(&self, extra_args: &[&str], env: &[(&str, &str)]) -> TestJob {
        let log = self.dir.path().join("executions.jsonl");
        let mut vars = vec![("FLEET_TESTJOB_LOG", log.to_str().expect("utf-8 path"))];
        vars.extend_from_slice(env);
        let listen = match &self.placement {
            Some(p) => format!("{}:0", p.server_addr),
            None => "127.0.0.1:0".to_owned(),
        };
        let mut args = vec!["serve", "--listen", &listen];
        args.extend_from_slice(extra_args);
        let mut child = self
            .command_at(
                self.placement.as_ref().map(|p| p.server.as_str()),
                &bin("fleet-testjob"),
                &args,
                &vars,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("testjob.log")).expect("log"))
            .spawn()
            .expect("spawn fleet-testjob");
        let stdout = child.stdout.take().expect("stdout");
        let addr = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            reader.read_line(&mut line).ok();
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
            });
            line.trim().strip_prefix("listening on ").map(str::to_owned)
        })
        .await
        .expect("read testjob address")
        .expect("fleet-testjob printed its address");
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.dir.path().join("testjob.log"));
        TestJob {
            endpoint: format!("http://{addr}"),
            executions: log,
            _proc: Proc {
                name: "testjob".into(),
                child,
                log: self.dir.path().join("testjob.log"),
                status: None,
            },
        }
    }

    /// Starts a worker replica calling `job`, with test-friendly timings; `extra` overrides.
    pub fn worker(&self, name: &str, job: &TestJob, extra: &[(&str, &str)]) -> Proc {
        let log = job.executions.to_str().expect("utf-8 path");
        let mut env: Vec<(&str, &str)> = vec![
            ("AWS_ENDPOINT_URL_LAMBDA", job.endpoint.as_str()),
            // For jobs the process launcher runs as the worker's children.
            ("FLEET_TESTJOB_LOG", log),
            ("FLEET_LAMBDA_FUNCTION", "job"),
            ("FLEET_WAIT_TIME_SECS", "1"),
            ("FLEET_RETRY_BASE_SECS", "1"),
            ("FLEET_CLOCK_SKEW_SECS", "1"),
            ("FLEET_REPLICA_ID", name),
        ];
        env.extend_from_slice(extra);
        self.spawn(name, bin("fleet-worker"), &["run"], &env)
    }

    /// Writes a request file and submits it with `--json`.
    pub fn submit(&self, request: &serde_json::Value) -> Output {
        self.submit_with(request, &[])
    }

    /// [`Stack::submit`] with more environment variables for the producer.
    pub fn submit_with(&self, request: &serde_json::Value, extra: &[(&str, &str)]) -> Output {
        let path = self.dir.path().join(format!("request-{}.json", uniq()));
        std::fs::write(&path, request.to_string()).expect("write request");
        self.run(
            bin("fleet-producer"),
            &["submit", path.to_str().expect("utf-8"), "--json"],
            extra,
        )
    }

    /// `fleet-producer jobs ID --json`: one object per job, with its attempt history.
    pub fn jobs_json(&self, request_id: &str) -> Vec<serde_json::Value> {
        let out = self.run(bin("fleet-producer"), &["jobs", request_id, "--json"], &[]);
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a job's JSON"))
            .collect()
    }

    /// `fleet-producer status ID --json`, parsed.
    pub fn status(&self, request_id: &str) -> Status {
        let out = self.run(
            bin("fleet-producer"),
            &["status", request_id, "--json"],
            &[],
        );
        assert!(out.status.success(), "status failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).expect("status JSON")
    }

    /// `fleet-producer status ID --json`, parsed; `None` while the request is not known (a
    /// request whose jobs were sent straight to SQS is known from its first claim).
    pub fn try_status(&self, request_id: &str) -> Option<Status> {
        let out = self.run(
            bin("fleet-producer"),
            &["status", request_id, "--json"],
            &[],
        );
        if !out.status.success() {
            assert!(
                out.stderr.contains("no request"),
                "status failed: {}",
                out.stderr
            );
            return None;
        }
        Some(serde_json::from_str(&out.stdout).expect("status JSON"))
    }

    /// Polls until the request is done.
    pub async fn wait_done(&self, request_id: &str, timeout: Duration) -> Status {
        let what = format!("request {request_id} to finish");
        wait_for_every(&what, timeout, Duration::from_millis(500), || async {
            self.try_status(request_id).filter(|s| s.done)
        })
        .await
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// An S3 client for the local endpoint (path-style addresses).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket in the local S3.
    pub async fn create_bucket(&self, bucket: &str) {
        self.s3()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
    }

    pub async fn queue_url(&self, name: &str) -> String {
        self.sqs()
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .expect("queue url")
            .queue_url
            .unwrap_or_default()
    }

    /// Visible + in flight + delayed messages in a queue.
    pub async fn queue_depth(&self, name: &str) -> u64 {
        let url = self.queue_url(name).await;
        fleet_shared::queue::sqs::SqsQueue::new(self.sqs(), url)
            .depth()
            .await
            .expect("queue depth")
            .total()
    }

    /// Polls until both queues are empty.
    pub async fn wait_queues_empty(&self, timeout: Duration) {
        wait_for("the queues to be empty", timeout, || async {
            let jobs = self.queue_depth(&self.names.queue).await;
            let dead = self.queue_depth(&self.names.dlq).await;
            (jobs == 0 && dead == 0).then_some(())
        })
        .await
    }

    /// Polls until the jobs queue is empty (the dead-letter queue may hold messages).
    pub async fn wait_queues_empty_but_dead_letters(&self) {
        wait_for(
            "the jobs queue to be empty",
            Duration::from_secs(60),
            || async { (self.queue_depth(&self.names.queue).await == 0).then_some(()) },
        )
        .await
    }

    /// Waits for a message on the dead-letter queue and returns it with its attributes.
    pub async fn wait_dead_letter(&self, timeout: Duration) -> aws_sdk_sqs::types::Message {
        let url = self.queue_url(&self.names.dlq).await;
        wait_for("a dead letter", timeout, || async {
            let out = self
                .sqs()
                .receive_message()
                .queue_url(&url)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive from the dead-letter queue");
            out.messages.unwrap_or_default().into_iter().next()
        })
        .await
    }

    /// Every message of a queue, with attributes, each received once (hidden for a minute).
    pub async fn drain_queue(&self, name: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let url = self.queue_url(name).await;
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let got = self
                .sqs()
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .wait_time_seconds(if empty == 0 { 0 } else { 1 })
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                empty += 1;
            } else {
                empty = 0;
                out.extend(got);
            }
        }
        out
    }

    /// An ECS cluster `fleet` with a Fargate task definition `fleet-job` (container `job`),
    /// and a subnet and security group of moto's default VPC.
    pub async fn ecs_setup(&self) -> EcsSetup {
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        ecs.create_cluster()
            .cluster_name("fleet")
            .send()
            .await
            .expect("CreateCluster");
        ecs.register_task_definition()
            .family("fleet-job")
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("job")
                    .image("fleet-job:latest")
                    .cpu(256)
                    .memory(512)
                    .essential(true)
                    .command("run")
                    .build(),
            )
            .send()
            .await
            .expect("RegisterTaskDefinition");
        let ids = self.python(
            "import boto3; ec2 = boto3.client('ec2'); \
             print(ec2.describe_subnets()['Subnets'][0]['SubnetId']); \
             print(ec2.describe_security_groups()['SecurityGroups'][0]['GroupId'])",
        );
        let mut lines = ids.lines();
        EcsSetup {
            cluster: "fleet".into(),
            task_definition: "fleet-job".into(),
            subnet: lines.next().expect("a subnet").to_owned(),
            security_group: lines.next().expect("a security group").to_owned(),
        }
    }

    /// Runs Python (the virtualenv's, with boto3) against the local endpoint; its stdout.
    pub fn python(&self, code: &str) -> String {
        let out = Command::new(python())
            .args(["-c", code])
            .env_clear()
            .envs(self.env())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets a moto state-manager transition, e.g. how fast ECS tasks move to STOPPED.
    pub fn moto_transition(&self, model: &str, transition: serde_json::Value) {
        let body = serde_json::json!({"model_name": model, "transition": transition});
        self.python(&format!(
            "import urllib.request; urllib.request.urlopen(urllib.request.Request('{}/moto-api/state-manager/set-transition', data={:?}.encode(), method='POST'))",
            self.endpoint,
            body.to_string()
        ));
    }

    /// The ledger, for reading job histories.
    pub fn ledger(&self) -> fleet_shared::ledger::dynamo::DynamoLedger {
        fleet_shared::ledger::dynamo::DynamoLedger::new(self.dynamodb(), &self.names.table)
    }

    /// A job's attempts as its history has them, oldest first.
    pub async fn history(
        &self,
        job: &fleet_shared::ids::JobId,
    ) -> Vec<fleet_shared::ledger::AttemptRecord> {
        use fleet_shared::ledger::RequestLedger;
        let ledger = self.ledger();
        let shards = ledger
            .get_request(job.request_id())
            .await
            .expect("request item")
            .map_or(fleet_shared::ledger::memory::DIRECT_JOB_SHARDS, |r| {
                r.job_shards
            });
        ledger
            .job_history(&fleet_shared::ledger::item::job_key(job, shards))
            .await
            .expect("history")
            .attempts
            .into_iter()
            .map(|e| e.record)
            .collect()
    }

    /// Items in the ledger table but its layout item: what requests and jobs wrote.
    pub async fn ledger_items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.table_items()
            .await
            .into_iter()
            .filter(|i| {
                i.get("pk").and_then(|v| v.as_s().ok()).map(String::as_str)
                    != Some(fleet_shared::ledger::item::LAYOUT_PK)
            })
            .collect()
    }

    /// Items in the ledger table.
    pub async fn table_items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .dynamodb()
                .scan()
                .table_name(&self.names.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return items;
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in self.logs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("----- last lines of {} -----", log.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

async fn wait_http(endpoint: &str, moto: &mut Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = endpoint.trim_start_matches("http://").to_owned();
    while Instant::now() < deadline {
        if moto.try_status().is_some() {
            return false;
        }
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `GET http://{addr}{path}`: the status code and body, or `None` when nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<hyper::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Spawns `command` (killed when dropped), which prints `listening on ADDR` first; it and
/// ADDR. Its later output is read and dropped.
pub async fn spawn_listening(
    mut command: tokio::process::Command,
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .unwrap_or_default();
    let addr = first
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("{command:?} printed {first:?}"))?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// Serves HTTP/1.1 on `listener` with `handle` for every request, each connection in its
/// own task, until the task running this is aborted.
pub async fn serve_http1<F, Fut, B, E>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn uniq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The local ECS resources [`Stack::ecs_setup`] creates.
#[derive(Debug, Clone)]
pub struct EcsSetup {
    pub cluster: String,
    pub task_definition: String,
    pub subnet: String,
    pub security_group: String,
}

impl EcsSetup {
    /// Points a configuration's ECS launcher at these resources.
    pub fn configure(&self, config: &mut fleet_shared::config::Config) {
        config.ecs.cluster = Some(self.cluster.clone());
        config.ecs.task_definition = Some(self.task_definition.clone());
        config.ecs.subnets = vec![self.subnet.clone()];
        config.ecs.security_groups = vec![self.security_group.clone()];
    }

    /// The worker environment that runs ECS-routed jobs on these resources.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLEET_ECS_LAUNCHER", "aws".into()),
            ("FLEET_ECS_CLUSTER", self.cluster.clone()),
            ("FLEET_ECS_TASK_DEFINITION", self.task_definition.clone()),
            ("FLEET_ECS_SUBNETS", self.subnet.clone()),
            ("FLEET_ECS_SECURITY_GROUPS", self.security_group.clone()),
            ("FLEET_ECS_POLL_SECS", "1".into()),
        ]
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} / {}", self.stdout, self.stderr))
    }
}

/// The test job's local server.
pub struct TestJob {
    /// Its Invoke-API endpoint, for `AWS_ENDPOINT_URL_LAMBDA`.
    pub endpoint: String,
    pub executions: PathBuf,
    _proc: Proc,
}

/// One line of the test job's execution log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Execution {
    pub job_id: String,
    pub attempt: u32,
    pub fence: u64,
    pub pid: u32,
    /// When the execution started, ms since the epoch.
    pub started_ms: u64,
    /// SHA-256 of the payload the job received (compact JSON).
    #[serde(default)]
    pub payload_sha256: Option<String>,
}

impl TestJob {
    pub fn executions(&self) -> Vec<Execution> {
        read_executions(&self.executions)
    }
}

pub fn read_executions(path: &Path) -> Vec<Execution> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad execution line {l:?}: {e}"))
        })
        .collect()
}

/// `status --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub request_id: String,
    pub total: u32,
    pub states: std::collections::BTreeMap<String, u32>,
    pub done: bool,
    pub attempts: u64,
    /// The request as a whole: RUNNING, FINISHED, CANCELLED or FAILED.
    pub state: String,
    /// Why the request failed as a whole, when it did.
    #[serde(default)]
    pub failed: Option<RequestFailed>,
    /// When its completion event was sent.
    #[serde(default)]
    pub notified_at_ms: Option<u64>,
    /// Its results' manifest, when exported on finishing.
    #[serde(default)]
    pub results: Option<String>,
    /// When it was cancelled, if it was.
    #[serde(default)]
    pub cancelled_at_ms: Option<u64>,
    /// Its window, if it has one.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestFailed {
    pub at_ms: u64,
    pub reason: String,
}

impl Status {
    pub fn count(&self, state: &str) -> u32 {
        self.states.get(state).copied().unwrap_or(0)
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_every(what, timeout, Duration::from_millis(100), check).await
}

// ---- the producer's HTTP API ----

/// Sends one HTTP/1 request to `addr`; the status, headers and body of the answer.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<hyper::body::Bytes>,
) -> (u16, hyper::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(body.into()))
        .expect("an HTTP request");
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 60 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the answer's body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A request whose answer is JSON: the status and the parsed body.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<hyper::body::Bytes>,
) -> (u16, serde_json::Value) {
    let (status, h, text) = http_request(addr, method, path, headers, body).await;
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{method} {path}: {status} {text}"
    );
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, v)
}

/// Starts `fleet-producer serve` on a free port; the process and its address.
pub async fn start_api(stack: &Stack, extra: &[(&str, &str)]) -> (Proc, String) {
    start_api_with(stack, &[], extra).await
}

/// [`start_api`] with more arguments to `serve`.
pub async fn start_api_with(
    stack: &Stack,
    args: &[&str],
    extra: &[(&str, &str)],
) -> (Proc, String) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let api = stack.spawn("api", bin("fleet-producer"), &all, extra);
    let addr = wait_for("the API to listen", Duration::from_secs(60), || async {
        api.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
    })
    .await;
    (api, addr)
}

/// Polls `check` every `every` until it returns `Some`, or panics after `timeout`.
pub async fn wait_for_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// The failure record a dead-lettered message carries.
pub fn failure_record(m: &aws_sdk_sqs::types::Message) -> fleet_shared::dead_letter::FailureRecord {
    let json = m
        .message_attributes()
        .and_then(|a| a.get(fleet_shared::dead_letter::attr::FAILURE))
        .and_then(|v| v.string_value())
        .unwrap_or_else(|| panic!("no failure record on {m:?}"));
    fleet_shared::dead_letter::FailureRecord::from_attribute(json)
        .unwrap_or_else(|| panic!("malformed failure record {json}"))
}

/// `n` job payloads made by `f` from their index.
pub fn jobs(n: usize, f: impl Fn(usize) -> serde_json::Value) -> Vec<serde_json::Value> {
    (0..n).map(f).collect()
}

/// `n` test-job payloads: `{"fail_permanent": true}` where `fails(i)`, else `{"echo": i}`.
pub fn echo_or_fail(n: usize, fails: impl Fn(usize) -> bool) -> Vec<serde_json::Value> {
    jobs(n, |i| {
        if fails(i) {
            serde_json::json!({"fail_permanent": true})
        } else {
            serde_json::json!({"echo": i})
        }
    })
}

/// Counts executions per job id.
pub fn executions_per_job(execs: &[Execution]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for e in execs {
        *m.entry(e.job_id.clone()).or_default() += 1;
    }
    m
}
