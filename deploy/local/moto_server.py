"""The local AWS endpoint: moto's server, with the atomicity AWS gives and moto lacks.

moto's server handles requests on many threads, and its backends take no locks:

- two concurrent conditional DynamoDB UpdateItem calls can both see the old item and both
  succeed (real DynamoDB never allows that; the ledger's claims rely on it);
- SQS DeleteMessage rebuilds the queue's message list from a snapshot, so a concurrent
  delete or send can be lost (a deleted message comes back, a sent one vanishes);
- two concurrent ReceiveMessage calls can hand out the same message.

- ECS RunTask ignores `clientToken`, so a repeated RunTask starts a second task.
- EventBridge PutEvents and SNS Publish write into SQS queues (a rule's or a subscription's
  target) without SQS's lock.

This launcher runs moto's own WSGI application unchanged, except that DynamoDB requests are
served one at a time, SQS requests (and EventBridge and SNS calls, which may write to
queues) one at a time, ECS requests one at a time, and a RunTask
with a `clientToken` seen before gets the first call's answer again (as AWS does). A long poll (ReceiveMessage with
WaitTimeSeconds) must not hold the lock while it waits, so the launcher polls moto without
waiting, under the lock, and between polls sleeps until a message may have become receivable
(a send, or a visibility set to 0) or a second passes (a message whose visibility timeout
ends is seen within that second). moto's SQS builds a queue's whole attribute map, counting
every queued message, for each message sent and each received; the launcher has those build
only the attribute they read. moto's SQS reads the clock through datetimes for every
queued message on every receive; the launcher gives it a cheaper clock with the same values.
moto's DynamoDB Query sorts the whole table on every call; the launcher has it sort only
the partition asked for. moto's TransactWriteItems keeps a deep copy of every table it
touches to roll back a cancelled transaction, which costs as much as the table on every
call; the launcher has it copy only the items the transaction writes (its rollback is the
same: an untouched item is the same object before and after).

    python deploy/local/moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import io
import json
import signal
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def makes_visible(target, body):
    """Whether an SQS write can make a message receivable at once: a send, or a visibility
    change to 0. Only these wake the waiting long polls; waking them on every delete and
    heartbeat would have them re-poll moto hundreds of times a second under load."""
    if target in ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch"):
        return True
    if target not in ("AmazonSQS.ChangeMessageVisibility", "AmazonSQS.ChangeMessageVisibilityBatch"):
        return False
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return True
    entries = request.get("Entries") or [request]
    return any(int(e.get("VisibilityTimeout") or 0) == 0 for e in entries)


class Serialise:
    """WSGI middleware: the locks described above, each response built under its lock."""

    def __init__(self, app):
        self.app = app
        self.dynamodb = threading.Lock()
        self.sqs = threading.Lock()
        self.sqs_changed = threading.Condition()
        self.ecs = threading.Lock()
        self.run_task_tokens = {}

    def call(self, environ, lock):
        """Calls moto under `lock`; returns status, headers and body."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        with lock:
            body = b"".join(self.app(environ, capture))
        return captured["status"], captured["headers"], body

    def receive(self, environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length) or b"{}")
        deadline = time.monotonic() + int(request.get("WaitTimeSeconds") or 0)
        request["WaitTimeSeconds"] = 0
        body = json.dumps(request).encode()
        while True:
            env = dict(environ)
            env["wsgi.input"] = io.BytesIO(body)
            env["CONTENT_LENGTH"] = str(len(body))
            status, headers, out = self.call(env, self.sqs)
            remaining = deadline - time.monotonic()
            if not status.startswith("200") or remaining <= 0:
                return status, headers, out
            try:
                if json.loads(out or b"{}").get("Messages"):
                    return status, headers, out
            except ValueError:
                return status, headers, out
            with self.sqs_changed:
                self.sqs_changed.wait(timeout=min(1.0, remaining))

    def run_task(self, environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            token = json.loads(body or b"{}").get("clientToken")
        except ValueError:
            token = None
        with self.ecs:
            if token and token in self.run_task_tokens:
                return self.run_task_tokens[token]
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["status"], captured["headers"] = status, headers

            out = b"".join(self.app(environ, capture))
            answer = (captured["status"], captured["headers"], out)
            if token and captured["status"].startswith("200"):
                self.run_task_tokens[token] = answer
            return answer

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target == "AmazonEC2ContainerServiceV20141113.RunTask":
            status, headers, out = self.run_task(environ)
        elif target.startswith("AmazonEC2ContainerServiceV20141113."):
            status, headers, out = self.call(environ, self.ecs)
        elif target.startswith("DynamoDB_"):
            status, headers, out = self.call(environ, self.dynamodb)
        elif target == "AmazonSQS.ReceiveMessage":
            status, headers, out = self.receive(environ)
        elif target.startswith("AWSEvents.") or "/sns/aws4_request" in environ.get(
            "HTTP_AUTHORIZATION", ""
        ):
            # EventBridge and SNS deliver to SQS queues inside moto: under the SQS lock.
            status, headers, out = self.call(environ, self.sqs)
            with self.sqs_changed:
                self.sqs_changed.notify_all()
        elif target.startswith("AmazonSQS."):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            status, headers, out = self.call(environ, self.sqs)
            if makes_visible(target, body):
                with self.sqs_changed:
                    self.sqs_changed.notify_all()
        else:
            return self.app(environ, start_response)
        start_response(status, headers)
        return [out]


def fast_sqs_clock():
    """moto's SQS checks every message's visibility and delay on each receive, each check
    building two datetimes; with thousands of messages queued that dominated the endpoint's
    time. The same clock, read as a float: same values, a fraction of the cost."""
    import moto.core.utils as core_utils
    import moto.sqs.models as sqs_models

    def now_s(dt=None):
        return time.time() if dt is None else core_utils.unix_time(dt)

    def now_ms(dt=None):
        return now_s(dt) * 1000.0

    sqs_models.unix_time = now_s
    sqs_models.unix_time_millis = now_ms


def cheap_queue_attributes():
    """moto's SQS builds a queue's whole attribute map to read one attribute of it: on every
    message sent (ContentBasedDeduplication) and on every message received (the retention
    period, read three times). Three of the map's counts scan every queued message, so
    sending or receiving n messages cost n squared (20,000 jobs took minutes to enqueue and
    to drain). While a send or that retention check runs, the map holds only the attribute
    read, built as the full map builds it (same groups, booleans as "true"/"false");
    GetQueueAttributes and everything else still get the full map. Requests are served one
    at a time (`Serialise`); the wanted names are per thread all the same."""
    import moto.sqs.models as sqs_models

    queue_class = sqs_models.Queue
    state = threading.local()
    full = queue_class.attributes.fget

    def attributes(queue):
        wanted = getattr(state, "wanted", None)
        if wanted is None:
            return full(queue)
        groups = [queue.BASE_ATTRIBUTES]
        if queue.fifo_queue:
            groups.append(queue.FIFO_ATTRIBUTES)
        if queue.kms_master_key_id:
            groups.append(queue.KMS_ATTRIBUTES)
        result = {}
        for group in groups:
            for name in group:
                if name in wanted:
                    value = getattr(queue, sqs_models.camelcase_to_underscores(name))
                    result[name] = str(value).lower() if isinstance(value, bool) else value
        return result

    def reading(names, method):
        def wrapped(*args, **kwargs):
            outer = getattr(state, "wanted", None)
            state.wanted = names
            try:
                return method(*args, **kwargs)
            finally:
                state.wanted = outer

        return wrapped

    queue_class.attributes = property(attributes)
    backend = sqs_models.SQSBackend
    dedup = frozenset(["ContentBasedDeduplication"])
    backend.send_message = reading(dedup, backend.send_message)
    backend.send_message_batch = reading(dedup, backend.send_message_batch)
    backend.is_message_valid_based_on_retention_period = reading(
        frozenset(["MessageRetentionPeriod"]),
        backend.is_message_valid_based_on_retention_period,
    )


def cheap_queries():
    """moto's DynamoDB Query lists and sorts every item of the table, then keeps those of
    the partition asked for: each query of a table of 20,000 jobs sorted 20,000 items (the
    sweeper's index queries and a request's paged listings dominated the endpoint's time).
    During a Query the item list holds only the items its own partition test would keep,
    in the same order (the same sort, of fewer items); the test itself still runs after."""
    import inspect

    from moto.dynamodb.models.table import Item, Table

    state = threading.local()
    original_items = Table.all_items
    original_query = Table.query
    signature = inspect.signature(original_query)

    def all_items(table):
        keep = getattr(state, "keep", None)
        if keep is None:
            return original_items(table)
        items = []
        for hash_set in table.items.values():
            for item in hash_set.values() if table.range_key_attr else [hash_set]:
                if isinstance(item, Item) and keep(item):
                    items.append(item)
        return sorted(
            items,
            key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key,
        )

    def partition_test(args):
        if args.get("index_name"):
            conditions = args.get("hash_key_conditions") or []
            if not conditions:
                return None

            def keep(item):
                for name, expected in conditions:
                    value = item.attrs.get(name)
                    if not value or value != expected:
                        return False
                return True

            return keep
        hash_key = args.get("hash_key")
        return lambda item: item.hash_key == hash_key

    def query(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        outer = getattr(state, "keep", None)
        state.keep = partition_test(bound)
        try:
            return original_query(*args, **kwargs)
        finally:
            state.keep = outer

    Table.all_items = all_items
    Table.query = query


def cheap_transaction_rollback():
    """See the module's description. The copy moto keeps of a table (to put back if the
    transaction is cancelled) becomes a shallow copy whose item maps are new dictionaries and
    whose touched items are deep copies: restoring it restores exactly those items. Requests
    are served one at a time (`Serialise`), so the set of touched keys is per call."""
    import copy as real_copy
    from collections import defaultdict

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    touched = {}

    def snapshot(table):
        snap = real_copy.copy(table)
        items = defaultdict(dict)
        for h, inner in table.items.items():
            items[h] = dict(inner) if isinstance(inner, dict) else inner
        for h, r in touched.get(table.name, ()):
            if h not in items:
                continue
            if r is None:
                items[h] = real_copy.deepcopy(items[h])
            elif r in items[h]:
                items[h][r] = real_copy.deepcopy(items[h][r])
        snap.items = items
        return snap

    class Copy:
        @staticmethod
        def deepcopy(x, memo=None):
            if isinstance(x, Table) and x.name in touched:
                return snapshot(x)
            return real_copy.deepcopy(x, memo)

        def __getattr__(self, name):
            return getattr(real_copy, name)

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        touched.clear()
        try:
            for entry in transact_items:
                for op_type, op in entry.items():
                    table = self.tables.get(op.get("TableName"))
                    if table is None:
                        continue
                    key = op["Item"] if op_type == "Put" else op.get("Key", {})
                    h = key.get(table.hash_key_attr)
                    r = key.get(table.range_key_attr) if table.range_key_attr else None
                    if h is None:
                        continue
                    touched.setdefault(table.name, []).append(
                        (DynamoType(h), DynamoType(r) if r is not None else None)
                    )
            return original(self, transact_items)
        finally:
            touched.clear()

    models.copy = Copy()
    models.DynamoDBBackend.transact_write_items = transact_write_items


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
    fast_sqs_clock()
    cheap_queue_attributes()
    cheap_queries()
    cheap_transaction_rollback()
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
