"""The local AWS endpoint: moto's server, with the atomicity AWS gives and moto lacks.

moto's server handles requests on many threads, and its backends take no locks:

- two concurrent conditional DynamoDB UpdateItem calls can both see the old item and both
  succeed (real DynamoDB never allows that; the ledger's claims rely on it);
- SQS DeleteMessage rebuilds the queue's message list from a snapshot, so a concurrent
  delete or send can be lost (a deleted message comes back, a sent one vanishes);
- two concurrent ReceiveMessage calls can hand out the same message.

This launcher runs moto's own WSGI application unchanged, except that DynamoDB requests are
served one at a time, SQS requests other than ReceiveMessage one at a time, and
ReceiveMessage calls one at a time per queue (a long poll on one queue does not hold up the
other calls).

    python deploy/local/moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import io
import json
import signal
import sys
import threading
from collections import defaultdict

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class Serialise:
    """WSGI middleware: the locks described above, each response built under its lock."""

    def __init__(self, app):
        self.app = app
        self.dynamodb = threading.Lock()
        self.sqs = threading.Lock()
        self.receives = defaultdict(threading.Lock)
        self.receives_guard = threading.Lock()

    def lock_for(self, environ):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            return self.dynamodb
        if target == "AmazonSQS.ReceiveMessage":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                queue = json.loads(body).get("QueueUrl", "")
            except ValueError:
                queue = ""
            with self.receives_guard:
                return self.receives[queue.rsplit("/", 1)[-1]]
        if target.startswith("AmazonSQS."):
            return self.sqs
        return None

    def __call__(self, environ, start_response):
        lock = self.lock_for(environ)
        if lock is None:
            return self.app(environ, start_response)
        with lock:
            return [b"".join(self.app(environ, start_response))]


class QuietHandler(MotoRequestHandler):
    """Logs errors only; a line per request would bury them."""

    def log_request(self, code="-", size="-"):
        if str(code).startswith("5"):
            super().log_request(code, size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        Serialise(app),
        threaded=True,
        request_handler=QuietHandler,
    )


if __name__ == "__main__":
    main()
