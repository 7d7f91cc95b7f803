"""Test fixtures shared by the convnet-data tests.

`xp` is numpy, or cupy when CONVNET_TEST_DEVICE=cuda (the tests-cuda session); there, a
missing GPU is an error, never a skip. `http_server` serves files from memory on
127.0.0.1, including a route that cuts the connection halfway through a file.
"""

from __future__ import annotations

import http.server
import os
import pathlib
import threading

import numpy
import pytest
from convnet_core import backend

# The bundled MNIST files of this checkout, wherever the package under test is installed.
BUNDLED_MNIST = pathlib.Path(__file__).resolve().parents[3] / "data" / "mnist"


@pytest.fixture(autouse=True)
def _bundled_mnist(monkeypatch):
    """Point load_mnist() at this checkout's data/mnist (unless the test changes it)."""
    monkeypatch.setenv("CONVNET_DATA_DIR", str(BUNDLED_MNIST))


@pytest.fixture(scope="session")
def xp():
    if os.environ.get("CONVNET_TEST_DEVICE") == "cuda":
        return backend.array_module("cuda")
    return numpy


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a thread, serving `files` (path -> bytes).

    GET /cut/<path> announces the full length of <path> but sends only half of it and
    closes the connection. Every request path is recorded in `requests`.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                cut = self.path.startswith("/cut/")
                path = self.path[len("/cut") :] if cut else self.path
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="session")
def _loopback_server():
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def http_server(_loopback_server):
    """The loopback server, with no files and no recorded requests."""
    _loopback_server.files.clear()
    _loopback_server.requests.clear()
    return _loopback_server
