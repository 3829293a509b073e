"""Runs a moto server (DynamoDB, SQS, SNS, S3, KMS emulator) on 127.0.0.1:PORT for bulklink's tests.

Prints "ready" once it accepts requests, and stops when its standard input closes, so the
test process that started it can never leave it behind.

DynamoDB requests are served one at a time: DynamoDB isolates conditional writes and
transactions (a concurrent conflicting one is cancelled), while moto's threaded server
would interleave them. Other services stay concurrent, so SQS long polls do not block.

A table's stream records are not deep-copied when moto backs a table up to roll a
transaction back (it deep-copies the whole table before every transaction): copied record by
record, each transaction grew slower with every write ever streamed. The backup's shard
holds the same records, which never change once written, in a list of its own. A rollback
still replaces the shard object, so readers take a fresh iterator for each read.

With BULKLINK_MOTO_CALLS naming a file, every call signed with an access key that starts
with "rehearsal-" is appended to it as one JSON line per IAM action it needs:
{"key", "action", "resource"} (a transaction is one line per item, as IAM authorises it).
The deployment rehearsal gives each function binary such a key, so what each one calls can
be held against its Terraform role.

With BULKLINK_MOTO_STATS naming a file, the calls are counted by kind with the time moto
spent on them (a DynamoDB call's time inside the one-at-a-time lock), to find what keeps a
slow run's emulator busy: `BULKLINK_MOTO_STATS=/tmp/moto-stats.txt scripts/contract.sh`.
"""

import base64
import collections
import inspect
import io
import json
import os
import re
import sys
import threading
import time
from urllib.parse import parse_qs, unquote

from moto.dynamodb.models.table import StreamShard, Table
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def _copy_stream_shard(shard, memo):
    """A shard's backup for a transaction's rollback: the same (immutable) records in a list
    of its own, not a deep copy of every record."""
    twin = StreamShard.__new__(StreamShard)
    memo[id(shard)] = twin
    twin.__dict__.update(shard.__dict__)
    twin.table = memo.get(id(shard.table), shard.table)
    twin.items = list(shard.items)
    return twin


StreamShard.__deepcopy__ = _copy_stream_shard


# moto answers every Query by listing the whole table, sorted, and keeping the items that
# match: each query cost time in proportion to everything ever written, and a long run (the
# contract run's fuzzing writes thousands of items) slowed to seconds a request. A query of
# the table reads only its partition here; a query of an index still looks at every item
# (moto keeps no index), unsorted, since the query sorts what matches itself.
_query_params = list(inspect.signature(Table.query).parameters)
_table_query = Table.query
_table_all_items = Table.all_items


def _query(self, *args, **kwargs):
    bound = dict(zip(_query_params[1:], args), **kwargs)
    self._bulklink_query = (bound.get("index_name"), bound.get("hash_key"))
    try:
        return _table_query(self, *args, **kwargs)
    finally:
        self._bulklink_query = None


def _all_items(self):
    query = getattr(self, "_bulklink_query", None)
    if query is None:
        return _table_all_items(self)
    index_name, hash_key = query
    if index_name is None and hash_key is not None:
        partition = self.items.get(hash_key)
        if partition is None:
            return []
        return list(partition.values()) if self.range_key_attr else [partition]
    if self.range_key_attr:
        return [item for partition in self.items.values() for item in partition.values()]
    return list(self.items.values())


Table.query = _query
Table.all_items = _all_items


def serialize_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


# IAM authorises an SQS batch call as its single-message action.
SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}

TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def iam_calls(service: str, target: str, body: bytes, environ=None):
    """(action, resource) for each IAM authorisation the request needs."""
    if target.startswith("DynamoDB_20120810."):
        op = target.split(".", 1)[1]
        data = json.loads(body or b"{}")
        if op in ("BatchGetItem", "BatchWriteItem"):
            return [(f"dynamodb:{op}", f"table/{t}") for t in data.get("RequestItems", {})]
        if op == "TransactWriteItems":
            out = []
            for item in data.get("TransactItems", []):
                for kind, action in TRANSACT_ACTIONS.items():
                    if kind in item:
                        out.append((f"dynamodb:{action}", f"table/{item[kind]['TableName']}"))
            return out
        if op == "TransactGetItems":
            return [("dynamodb:GetItem", f"table/{i['Get']['TableName']}") for i in data.get("TransactItems", [])]
        resource = f"table/{data.get('TableName', '')}"
        if data.get("IndexName"):
            resource += f"/index/{data['IndexName']}"
        return [(f"dynamodb:{op}", resource)]
    if target.startswith("DynamoDBStreams_20120810."):
        op = target.split(".", 1)[1]
        data = json.loads(body or b"{}")
        # moto's shard iterators begin with the stream's ARN.
        stream = data.get("StreamArn") or data.get("ShardIterator", "").split("|", 1)[0]
        return [(f"dynamodb:{op}", stream)]
    if target.startswith("TrentService."):
        # KMS: the key a call uses, as "key/{id}": named by KeyId (an ARN or id), or, for a
        # Decrypt, by the ciphertext (moto's blob begins with the key's 36-character id).
        op = target.split(".", 1)[1]
        data = json.loads(body or b"{}")
        key_id = data.get("KeyId", "")
        if not key_id and data.get("CiphertextBlob"):
            key_id = base64.b64decode(data["CiphertextBlob"])[:36].decode("ascii", "replace")
        return [(f"kms:{op}", "key/" + key_id.split("key/")[-1])]
    if target.startswith("AmazonSQS."):
        data = json.loads(body or b"{}")
        op = target.split(".", 1)[1]
        return [(f"sqs:{SQS_BATCH_ACTIONS.get(op, op)}", data.get("QueueUrl", ""))]
    if service == "s3":
        # REST: the action follows from the method (HEAD is authorized as GetObject; a PUT
        # with a copy source reads that object too). Resources as bucket/key.
        method = environ["REQUEST_METHOD"]
        resource = environ.get("PATH_INFO", "").lstrip("/")
        if method in ("GET", "HEAD"):
            return [("s3:GetObject", resource)]
        if method == "DELETE":
            return [("s3:DeleteObject", resource)]
        if method == "PUT":
            out = [("s3:PutObject", resource)]
            source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
            if source:
                out.append(("s3:GetObject", unquote(source).lstrip("/")))
            return out
        return [(f"s3:{method}", resource)]
    if service in ("sqs", "sns"):
        form = parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", [""])[0]
        resource = form.get("QueueUrl", form.get("TopicArn", [""]))[0]
        return [(f"{service}:{action}", resource)]
    return []


def log_calls(app, path: str):
    out = open(path, "a", buffering=1, encoding="utf-8")
    lock = threading.Lock()
    credential = re.compile(r"Credential=(rehearsal-[^/]+)/[^/]+/[^/]+/([^/]+)/")
    presigned = re.compile(r"X-Amz-Credential=(rehearsal-[^/]+)/[^/]+/[^/]+/([^/]+)/")

    def wrapped(environ, start_response):
        # In the Authorization header, or (a presigned URL) in the query string.
        found = credential.search(environ.get("HTTP_AUTHORIZATION", "")) or presigned.search(
            unquote(environ.get("QUERY_STRING", ""))
        )
        if found:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            key, service = found.group(1), found.group(2)
            lines = [
                json.dumps({"key": key, "action": a, "resource": r})
                for a, r in iam_calls(service, environ.get("HTTP_X_AMZ_TARGET", ""), body, environ)
            ]
            with lock:
                for line in lines:
                    out.write(line + "\n")
        return app(environ, start_response)

    return wrapped


def call_stats(app, path: str):
    """Counts the calls by kind (X-Amz-Target, or path; a DynamoDB key's partition and sort
    key with ids masked) with the time moto spent on them and their answers' mean size, and
    rewrites `path` with the table, costliest first, every 200 calls."""
    totals = collections.defaultdict(lambda: [0, 0.0, 0])
    lock = threading.Lock()
    ids = re.compile(r"[0-9a-f-]{8,}")

    def kind(environ) -> str:
        target = environ.get("HTTP_X_AMZ_TARGET", "") or environ.get("PATH_INFO", "")
        if not target.startswith("DynamoDB_"):
            return target
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            key = json.loads(body or b"{}")
            key = key.get("Key") or key.get("Item") or {}
        except ValueError:
            return target
        pk = (key.get("pk") or {}).get("S", "")
        sk = (key.get("sk") or {}).get("S", "")
        return f"{target} {ids.sub('*', pk)} / {ids.sub('*', sk)[:30]}".rstrip(" /")

    def wrapped(environ, start_response):
        name = kind(environ)
        began = time.perf_counter()
        out = list(app(environ, start_response))
        took = time.perf_counter() - began
        with lock:
            row = totals[name]
            row[0] += 1
            row[1] += took
            row[2] += sum(len(b) for b in out)
            if sum(r[0] for r in totals.values()) % 200 == 0:
                with open(path, "w", encoding="utf-8") as f:
                    for name, (n, secs, size) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
                        f.write(f"{secs:9.1f} s {n:7d} calls {size / n:9.0f} B  {name}\n")
        return out

    return wrapped


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    if os.environ.get("BULKLINK_MOTO_STATS"):
        app = call_stats(app, os.environ["BULKLINK_MOTO_STATS"])
    app = serialize_dynamodb(app)
    if os.environ.get("BULKLINK_MOTO_CALLS"):
        app = log_calls(app, os.environ["BULKLINK_MOTO_CALLS"])
    server = make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # returns at EOF: the parent has gone
    server.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
