"""Writes bad-messages.json: message bodies that every worker must dead-letter with a reason
on their first receive, without crashing or delaying other messages.

    python3 tests/corpus/generate.py   (from the repository root; the output is committed)

Each entry is {"why": ..., "body": ...}; entries with "unknown_type": true are well formed but
name a job type the test's worker configuration does not know.
"""

import json
import os

GOOD = {
    "version": 1,
    "request_id": "bad",
    "job_id": "bad:0",
    "job_type": "test",
    "attempt": 1,
    "payload": {},
    "enqueued_at_ms": 1764150000000,
}

entries = []


def add(why, body, **extra):
    entries.append({"why": why, "body": body, **extra})


def doc(why, **changes):
    d = dict(GOOD)
    for k, v in changes.items():
        if v is REMOVE:
            d.pop(k, None)
        else:
            d[k] = v
    add(why, json.dumps(d))


REMOVE = object()

# Not JSON at all.
for i, text in enumerate([
    "x", "hello world", "{", "}", "[", "]", "{\"version\": 1,", "{'version': 1}", "version=1",
    "<message><version>1</version></message>", "SELECT * FROM jobs", "NaN", "Infinity",
    "-Infinity", "undefined", "{version: 1}", "{\"version\": 1}}", "[1, 2", "\"unterminated",
    "{\"a\": tru}", "{\"a\": nul}", "0x10", "1.2.3", "--", "{\"version\": 01}", "{,}",
    "{\"version\": 1,,}", "\t\n ", "é", "日本語", "{\"version\": 1} trailing", "// comment",
    "{\"version\": 1 /* c */}", "{\"version\":\"1\"\"}", "\"\\ud800\"", "{\"s\": \"\\x41\"}",
]):
    add(f"not JSON ({i})", text)

# JSON, but not an object.
for v in [None, True, False, 0, 1, -1, 3.5, 1e300, "", "message", [], [1, 2, 3], [GOOD],
          [[]], {"nested": GOOD}.get("nested") and [GOOD, GOOD], "{\"version\": 1}", [None]]:
    add(f"not an object: {json.dumps(v)[:40]}", json.dumps(v))

# Version.
for v in [REMOVE, 0, 2, -1, 100, "1", "v1", 1.5, None, [], {}, True, 1e3, 18446744073709551616, 1.0]:
    doc(f"version {v!r}" if v is not REMOVE else "no version", version=v)
add("version only", json.dumps({"version": 1}))
add("empty object", "{}")

# Unknown fields.
for name in ["priority", "Version", "jobId", "request", "payload2", "ttl", "retries", "queue",
             "meta", "x", "", " version", "routing_hint", "max_attempt", "enqueued_at",
             "deadline", "tags", "owner", "fence", "state"]:
    doc(f"unknown field {name!r}", **{name: 1})
for name in ["memory_mb", "targets", "Target", "estimated", "gpu"]:
    doc(f"unknown routing field {name!r}", routing={name: 1})

# Required fields missing.
for field in ["request_id", "job_id", "job_type", "attempt", "payload", "enqueued_at_ms"]:
    doc(f"no {field}", **{field: REMOVE})
    d = {k: v for k, v in GOOD.items() if k not in (field, "version")}
    add(f"no version and no {field}", json.dumps(d))

# Wrong types.
wrong = {
    "request_id": [1, None, [], {}, True],
    "job_id": [1, None, ["bad:0"], {}, 0],
    "job_type": [1, None, ["test"], {}, False],
    "attempt": ["1", None, [1], {}, 1.5, True],
    "enqueued_at_ms": ["now", None, [], {}, 1.5, True, "2026-11-26T00:00:00Z"],
    "max_attempts": ["3", [], {}, 2.5, True],
    "routing": ["lambda", 1, [], True],
}
for field, values in wrong.items():
    for v in values:
        doc(f"{field} of the wrong type: {json.dumps(v)}", **{field: v})

# Ids.
for rid in ["", " ", "a b", "a:b", "a/b", "ä", "x" * 65, "tab\there", "new\nline", "a.b",
            "a#b", "a@b", "😀", "a,b", "a;b"]:
    jid = f"{rid}:0"
    doc(f"request id {rid!r}", request_id=rid, job_id=jid)
for jid in ["bad", "bad:", ":0", "bad:01", "bad:-1", "bad:1a", "bad:1000000000", "bad:0:0",
            "bad: 0", "bad:+1", "bad:1.0", "bad:0x1", "bad :0", "bad:٣", "BAD:0", "bad:00",
            "bad:9999999999", "bad:١", ":", ""]:
    doc(f"job id {jid!r}", job_id=jid)
for other in ["good", "bad2", "ba", "bad-", "BAD"]:
    doc(f"job id of request {other!r}", job_id=f"{other}:0")

# Job types.
for jt in ["", "-test", ".test", "_test", "te st", "te/st", "te:st", "t" * 65, "tést", "test\n",
           "日本", "te*st"]:
    doc(f"job type {jt!r}", job_type=jt)

# Numbers out of range.
for a in [0, -1, 4294967296, 99999999999]:
    doc(f"attempt {a}", attempt=a)
for m in [0, -1, 101, 1000, 4294967296]:
    doc(f"max_attempts {m}", max_attempts=m)
for e in [-1, -1764150000000, 18446744073709551616]:
    doc(f"enqueued_at_ms {e}", enqueued_at_ms=e)
for r in [{"target": "gpu"}, {"target": "LAMBDA"}, {"target": None}, {"target": 1},
          {"estimated_secs": -1}, {"estimated_secs": "600"}, {"estimated_secs": None},
          {"estimated_secs": []}]:
    doc(f"routing {json.dumps(r)}", routing=r)

# Duplicate keys and odd encodings.
add("duplicate version", '{"version": 1, "version": 2, "request_id": "bad", "job_id": "bad:0", "job_type": "test", "attempt": 1, "payload": {}, "enqueued_at_ms": 1}')
add("duplicate job_id", '{"version": 1, "request_id": "bad", "job_id": "bad:0", "job_id": "bad:1", "job_type": "test", "attempt": 1, "payload": {}, "enqueued_at_ms": 1}')
add("lone surrogate in a string", '{"version": 1, "request_id": "bad", "job_id": "bad:0", "job_type": "te\\ud800st", "attempt": 1, "payload": {}, "enqueued_at_ms": 1}')

# Well formed, but of a job type the worker does not run.
for jt in ["unknown", "test2", "Test", "deploy", "resize"]:
    doc(f"unknown job type {jt!r}", job_type=jt, job_id="bad:0")
    entries[-1]["unknown_type"] = True

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad-messages.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(entries, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"{len(entries)} bad messages written to {out}")
