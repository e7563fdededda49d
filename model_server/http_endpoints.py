"""The HTTP side of the server: /healthz, /readyz and /metrics, served by the supervisor.

/healthz is 200 while the supervisor runs (liveness). /readyz is 200 only when every worker has
loaded and warmed the model and the server is not draining; a load balancer or Kubernetes
sends traffic only then. /metrics is Prometheus text, added up over the workers.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from model_server.logs import kv

log = logging.getLogger(__name__)


class ServerState:
    """What /readyz reports; written by the supervisor loop, read by HTTP threads."""

    def __init__(self, n_workers: int) -> None:
        self._lock = threading.Lock()
        self._n_workers = n_workers
        self._ready: set[int] = set()
        self._draining = False

    def worker_ready(self, worker_id: int) -> None:
        with self._lock:
            self._ready.add(worker_id)

    def worker_gone(self, worker_id: int) -> None:
        with self._lock:
            self._ready.discard(worker_id)

    def start_draining(self) -> None:
        with self._lock:
            self._draining = True

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if self._draining:
                return False, "draining"
            if len(self._ready) < self._n_workers:
                return False, f"{len(self._ready)}/{self._n_workers} workers ready"
            return True, "ready"


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ready, reason = self.server.state.readiness()
            self._reply(200 if ready else 503, f"{reason}\n".encode())
        elif path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, b"not found\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra=kv(client=self.client_address[0], line=format % args))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], state: ServerState, registry: CollectorRegistry
    ) -> None:
        self.state = state
        self.registry = registry
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class HttpEndpoints:
    """The HTTP server on its own thread."""

    def __init__(
        self, host: str, port: int, state: ServerState, registry: CollectorRegistry
    ) -> None:
        self._server = _HTTPServer((host, port), state, registry)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rtbserve-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
