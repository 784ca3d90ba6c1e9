#!/usr/bin/env bash
# The main job on the local stack: starts moto, the test job behind a local Lambda Invoke
# API, and three worker replicas; submits a request of 300 jobs of varied durations (some
# fail once, then succeed); shows live progress; prints a summary; stops what it started.
#
#   deploy/local/demo.sh            DEMO_JOBS=N and DEMO_REPLICAS=K change the size.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
cd "$FLEET_ROOT"

JOBS=${DEMO_JOBS:-300}
REPLICAS=${DEMO_REPLICAS:-3}
work=$(mktemp -d -t fleet-demo.XXXXXX)
pids=()

cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stack_stop "$work"
  if ((rc != 0)); then echo "demo failed; logs are in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --all-targets: the same feature set as deploy/local/test.sh, so the two share one build.
echo "==> building (the first build compiles the AWS SDK and takes a few minutes)"
cargo build --workspace --all-targets --quiet
BIN=$FLEET_ROOT/target/debug

echo "==> starting the local AWS stack"
stack_start "$work"
source "$work/stack.env"
export FLEET_LAMBDA_FUNCTION=fleet-testjob RUST_LOG=${RUST_LOG:-warn}
"$BIN/fleet-worker" init

echo "==> starting the job behind a local Lambda Invoke API"
"$BIN/fleet-testjob" serve --listen 127.0.0.1:0 --function fleet-testjob >"$work/testjob.out" 2>"$work/testjob.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$work/testjob.out" 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL_LAMBDA="http://$(sed -n 's/^listening on //p' "$work/testjob.out")"

echo "==> starting $REPLICAS worker replicas"
for i in $(seq "$REPLICAS"); do
  FLEET_REPLICA_ID="replica-$i" FLEET_CONCURRENCY=32 FLEET_RETRY_BASE_SECS=1 FLEET_WAIT_TIME_SECS=2 \
    "$BIN/fleet-worker" run 2>"$work/worker-$i.log" &
  pids+=($!)
done

# Durations from 0.1 s to about 4 s (a long tail); every tenth job fails once, then succeeds.
python3 - "$JOBS" >"$work/request.json" <<'PY'
import json, random, sys
rng = random.Random(7)
jobs = []
for i in range(int(sys.argv[1])):
    job = {"sleep_ms": min(4000, int(rng.lognormvariate(6.2, 0.8))), "echo": i}
    if i % 10 == 3:
        job["fail_times"] = 1
    jobs.append(job)
print(json.dumps({"job_type": "demo", "jobs": jobs}))
PY

start=$(date +%s.%N)
request_id=$("$BIN/fleet-producer" submit "$work/request.json")
echo "==> submitted request $request_id ($JOBS jobs)"
"$BIN/fleet-producer" status "$request_id" --watch
end=$(date +%s.%N)

"$BIN/fleet-producer" status "$request_id" --json >"$work/status.json"
python3 - "$work/status.json" "$start" "$end" "$REPLICAS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
states = ", ".join(f"{k} {v}" for k, v in s["states"].items() if v)
print()
print(f"request    {s['request_id']}")
print(f"jobs       {s['total']} ({states})")
print(f"replicas   {sys.argv[4]}")
print(f"time       {secs:.1f} s")
print(f"throughput {s['total'] / secs:.1f} jobs/s")
print(f"attempts   {s['attempts']} ({s['attempts'] - s['total']} retries)")
sys.exit(0 if s["done"] and s["states"]["SUCCEEDED"] == s["total"] else 1)
PY
