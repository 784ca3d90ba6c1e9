#!/usr/bin/env bash
# Fuzzes the job-message parser (fuzz/fuzz_targets/parse_message.rs) with libFuzzer, seeded
# with the bad-message corpus and the schema's valid examples. Not part of CI.
#
#   deploy/local/fuzz.sh [SECONDS]     default 60; findings go to fuzz/artifacts/
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
corpus=fuzz/corpus/parse_message
mkdir -p "$corpus"
python3 - "$corpus" <<'PY'
import hashlib, json, os, sys
out = sys.argv[1]
bodies = [e["body"] for e in json.load(open("tests/corpus/bad-messages.json"))]
bodies += [json.dumps(v) for v in json.load(open("shared/schema/job-message.v1.examples.json"))["valid"]]
for b in bodies:
    data = b.encode()
    with open(os.path.join(out, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
PY
RUSTC_BOOTSTRAP=1 cargo fuzz run parse_message "$corpus" -- -max_total_time="$seconds"
