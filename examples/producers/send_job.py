"""Send one job to Fleet's jobs queue from Python, with nothing but boto3 and the message
schema (shared/schema/job-message.v1.json).

    python send_job.py QUEUE_URL REQUEST_ID INDEX JOB_TYPE '{"key": "a.png"}'

AWS settings come from the usual chain (environment, profile, role); AWS_ENDPOINT_URL points
it at a local endpoint. The worker creates the job's ledger item when it first claims it;
send the same message again and the job still runs once.
"""

import json
import sys
import time

import boto3


def send_job(queue_url, request_id, index, job_type, payload):
    message = {
        "version": 1,
        "request_id": request_id,  # [A-Za-z0-9_-]{1,64}
        "job_id": f"{request_id}:{index}",  # <request_id>:<index>, index 0..999999999
        "job_type": job_type,  # [A-Za-z0-9_.-]{1,64}
        "attempt": 1,
        "payload": payload,  # any JSON
        "enqueued_at_ms": int(time.time() * 1000),
        # optional: "max_attempts": 1..100,
        #           "routing": {"target": "lambda" | "ecs" | "auto", "estimated_secs": 30}
    }
    sqs = boto3.client("sqs")
    return sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message))["MessageId"]


if __name__ == "__main__":
    url, request_id, index, job_type, payload = sys.argv[1:6]
    print(send_job(url, request_id, int(index), job_type, json.loads(payload)))
