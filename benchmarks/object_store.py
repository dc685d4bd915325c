"""An S3-compatible server on 127.0.0.1 (moto's server mode, `pip install "moto[server]"`)
that answers every request after a delay, as object storage does, and logs what it was
asked: for the tests and benchmarks of reading paths. pyarrow's S3 filesystem reaches it
through AWS_ENDPOINT_URL."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

BUCKET = "featurex-images"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class Requests:
    """What the server was asked: (method, path) in arrival order, and the most at once; and
    the delay before each answer (seconds, changeable while it runs)."""

    delay: float = 0.05
    log: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.log.clear()
            self.most_in_flight = 0


def _slow(app: Callable[..., Any], requests: Requests) -> Callable[..., Any]:
    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with requests.lock:
            requests.log.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            requests.in_flight += 1
            requests.most_in_flight = max(requests.most_in_flight, requests.in_flight)
        try:
            time.sleep(requests.delay)
            return app(environ, start_response)
        finally:
            with requests.lock:
                requests.in_flight -= 1

    return slow


@contextmanager
def s3_server(delay: float = 0.05) -> Iterator[tuple[str, Requests]]:
    """A running server with an empty bucket: its endpoint URL and its request log. The
    environment points AWS_ENDPOINT_URL and test credentials at it while it runs."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    requests = Requests(delay=delay)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, _slow(app, requests), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="s3-server")
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    saved = {k: os.environ.get(k) for k in (*CREDENTIALS, "AWS_ENDPOINT_URL")}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    try:
        client().create_bucket(Bucket=BUCKET)
        requests.clear()
        yield endpoint, requests
    finally:
        server.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def upload(files: dict[str, bytes]) -> list[str]:
    """Put the files into the bucket; their s3:// URIs, in order."""
    s3 = client()
    for key, data in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return [f"s3://{BUCKET}/{key}" for key in files]
