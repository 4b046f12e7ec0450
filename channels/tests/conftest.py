"""A tiny stand-in for the hub's webhook endpoints: the sandbox's callbacks land here, verbatim.

(The ``sandbox`` fixture itself lives in the root conftest: campaigns' tests use it too.)
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    def __init__(self, server: ThreadingHTTPServer):
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.requests: list[dict] = []

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Callbacks arrive after the sandbox's delay: wait for ``count`` of them (or fail clearly)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= count, f"expected {count} callbacks, got {len(self.requests)}"
        return list(self.requests)


@pytest.fixture
def receiver():
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # the http.server API names it so
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver = Receiver(server)
    receiver.requests = requests
    yield receiver
    server.shutdown()
    server.server_close()
