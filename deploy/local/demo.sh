#!/usr/bin/env bash
# The main job on the local stack: converts a few hundred CSV files in S3 to Parquet, part in
# Lambda (the job behind a local Invoke API) and part in containers (the same binary's
# container entrypoint, run as local processes), then checks every output.
#
#   deploy/local/demo.sh             DEMO_FILES=N (240) and DEMO_REPLICAS=K (3) change the size.
#   deploy/local/demo.sh --testjob   the test job instead: DEMO_JOBS=N (300) jobs of varied
#                                    durations, every tenth failing once.
#
# Progress goes to stderr and the terminal; the last line on stdout is one JSON object:
# {"files", "rows", "ok", "seconds", "per_target", ...}. Exit 0 only when every output was
# checked.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
cd "$FLEET_ROOT"

MODE=csv
case "${1:-}" in
  --testjob) MODE=testjob ;;
  "") ;;
  *) echo "usage: $0 [--testjob]" >&2; exit 2 ;;
esac
# Progress on stderr; the summary's JSON line goes to the original stdout (fd 3).
if [[ $MODE == csv ]]; then exec 3>&1 1>&2; fi
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
# DEMO_BIN=DIR uses binaries built elsewhere (the demo's own test does) and skips the build.
if [[ -n ${DEMO_BIN:-} ]]; then
  BIN=$DEMO_BIN
else
  echo "==> building (the first build compiles the AWS SDK and takes a few minutes)"
  cargo build --workspace --all-targets --quiet
  BIN=$FLEET_ROOT/target/debug
fi

echo "==> starting the local AWS stack"
stack_start "$work"
source "$work/stack.env"
export RUST_LOG=${RUST_LOG:-warn}
"$BIN/fleet-worker" init

if [[ $MODE == csv ]]; then
  FILES=${DEMO_FILES:-240}
  BUCKET=fleet-demo
  echo "==> writing $FILES CSV files of varied size to s3://$BUCKET/in/"
  "$FLEET_PYTHON" - "$FILES" "$BUCKET" <<'PY'
import io, random, sys, boto3, concurrent.futures
files, bucket = int(sys.argv[1]), sys.argv[2]
s3 = boto3.client("s3")
s3.create_bucket(Bucket=bucket)
cities = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Quebec, QC", 'The "Big" Apple']
def make(i):
    rng = random.Random(i)
    # Every 24th file is big (routed to a container); the rest are 20 to 1,500 rows.
    rows = rng.randint(60_000, 90_000) if i % 24 == 5 else rng.randint(20, 1_500)
    out = io.StringIO()
    out.write("id,city,amount,quantity,paid,day\n")
    for r in range(rows):
        city = rng.choice(cities)
        if "," in city or '"' in city:
            city = '"' + city.replace('"', '""') + '"'
        out.write(f"{i * 1_000_000 + r},{city},{rng.uniform(0, 5000):.2f},{rng.randint(1, 99)},"
                  f"{rng.choice(['true', 'false'])},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}\n")
    s3.put_object(Bucket=bucket, Key=f"in/part-{i:04d}.csv", Body=out.getvalue().encode())
    return rows
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    rows = sum(pool.map(make, range(files)))
print(f"    {files} files, {rows} rows", file=sys.stderr)
PY

  echo "==> starting the job behind a local Lambda Invoke API"
  "$BIN/fleet-csv-to-parquet" serve --listen 127.0.0.1:0 --function csv-to-parquet >"$work/job.out" 2>"$work/job.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^listening on ' "$work/job.out" 2>/dev/null && break; sleep 0.1; done
  export AWS_ENDPOINT_URL_LAMBDA="http://$(sed -n 's/^listening on //p' "$work/job.out")"
  # Inputs over 2 MiB go to a container; here that is the process launcher running the
  # same binary's container entrypoint.
  export FLEET_LAMBDA_FUNCTION=csv-to-parquet FLEET_ECS_LAUNCHER=process \
    FLEET_ECS_COMMAND="$BIN/fleet-csv-to-parquet run" FLEET_ROUTING_LAMBDA_MAX_INPUT_BYTES=2097152

  echo "==> starting $REPLICAS worker replicas"
  for i in $(seq "$REPLICAS"); do
    FLEET_REPLICA_ID="replica-$i" FLEET_CONCURRENCY=16 FLEET_WAIT_TIME_SECS=2 \
      "$BIN/fleet-worker" run 2>"$work/worker-$i.log" &
    pids+=($!)
  done

  cat >"$work/request.json" <<JSON
{"job_type": "csv-to-parquet",
 "source": {"s3_prefix": "s3://$BUCKET/in/", "group_bytes": 524288, "max_objects_per_job": 8},
 "params": {"output": "s3://$BUCKET/out/"}}
JSON
  start=$(date +%s.%N)
  request_id=$("$BIN/fleet-producer" submit "$work/request.json")
  echo "==> submitted request $request_id (s3://$BUCKET/in/)"
  "$BIN/fleet-producer" status "$request_id" --watch
  end=$(date +%s.%N)

  echo "==> checking every output"
  "$BIN/fleet-producer" status "$request_id" --json >"$work/status.json"
  "$BIN/fleet-producer" jobs "$request_id" --json >"$work/jobs.jsonl"
  "$BIN/fleet-csv-verify" --input "s3://$BUCKET/in/" --output "s3://$BUCKET/out/" --json >"$work/verify.json" || true
  python3 - "$work" "$start" "$end" "$REPLICAS" >&3 <<'PY'
import json, sys
work, start, end, replicas = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
status = json.load(open(f"{work}/status.json"))
try:
    v = json.load(open(f"{work}/verify.json"))
except ValueError:
    v = {"files": 0, "ok": 0, "rows": 0, "bytes_in": 0, "bytes_out": 0, "problems": ["the verifier did not run"]}
per_target = {}
for line in open(f"{work}/jobs.jsonl"):
    j = json.loads(line)
    if j["state"] == "SUCCEEDED":
        per_target[j["target"]] = per_target.get(j["target"], 0) + 1
secs = end - start
ok = status["done"] and status["states"]["SUCCEEDED"] == status["total"] and v["files"] > 0 and v["ok"] == v["files"] and not v["problems"]
err = sys.stderr
print(file=err)
print(f"request     {status['request_id']}", file=err)
print(f"jobs        {status['total']} ({', '.join(f'{k} {n}' for k, n in status['states'].items() if n)}; {status['attempts']} attempts)", file=err)
print(f"per target  {', '.join(f'{k} {n}' for k, n in sorted(per_target.items()))}", file=err)
print(f"files       {v['files']} CSV in, {v['ok']} Parquet outputs verified (rows and columns)", file=err)
print(f"rows        {v['rows']}", file=err)
print(f"bytes       {v['bytes_in']} in, {v['bytes_out']} out", file=err)
print(f"replicas    {replicas}", file=err)
print(f"time        {secs:.1f} s ({status['total'] / secs:.1f} jobs/s, {v['files'] / secs:.1f} files/s)", file=err)
for p in v["problems"][:20]:
    print(f"problem     {p}", file=err)
print(json.dumps({"files": v["files"], "rows": v["rows"], "ok": v["ok"], "seconds": round(secs, 1),
                  "per_target": per_target, "jobs": status["total"], "jobs_per_sec": round(status["total"] / secs, 2),
                  "bytes_in": v["bytes_in"], "bytes_out": v["bytes_out"], "request_id": status["request_id"]}))
sys.exit(0 if ok else 1)
PY
  exit $?
fi

export FLEET_LAMBDA_FUNCTION=fleet-testjob
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
