"""The local AWS endpoint: moto's server, with DynamoDB calls made atomic.

moto's server handles requests on many threads and its DynamoDB backend has no lock, so two
concurrent conditional UpdateItem calls can both see the old item and both succeed. Real
DynamoDB never allows that, and the ledger's claims rely on it. This launcher runs moto's own
WSGI application unchanged, except that DynamoDB requests are served one at a time. SQS and
every other service stay concurrent (an SQS long poll must not block the others).

    python deploy/local/moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class SerialDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, the response built under the lock."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                return [b"".join(self.app(environ, start_response))]
        return self.app(environ, start_response)


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
        SerialDynamoDB(app),
        threaded=True,
        request_handler=QuietHandler,
    )


if __name__ == "__main__":
    main()
