"""Runs a moto server (DynamoDB, SQS, SNS emulator) on 127.0.0.1:PORT for bulklink's tests.

Prints "ready" once it accepts requests, and stops when its standard input closes, so the
test process that started it can never leave it behind.

DynamoDB requests are served one at a time: DynamoDB isolates conditional writes and
transactions (a concurrent conflicting one is cancelled), while moto's threaded server
would interleave them. Other services stay concurrent, so SQS long polls do not block.
"""

import os
import sys
import threading

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def serialize_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main() -> None:
    port = int(sys.argv[1])
    app = serialize_dynamodb(DomainDispatcherApplication(create_backend_app))
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
