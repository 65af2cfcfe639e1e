"""The worker's probe endpoint: GET /livez and /readyz over plain HTTP, for the chart's `httpGet` probes.

A stdlib server on a daemon thread: the worker has no gRPC server to carry grpc health, and a probe every few
seconds needs nothing more. Everything is bounded: the requests in flight (beyond them a connection is closed
unanswered, which the prober counts as one failure and retries), how long a client may take to send its request,
one request per connection. A failing request is logged, never raised into the worker.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from services.search.worker.health import HealthReport, WorkerHealth

log = logging.getLogger(__name__)

ROUTES: dict[str, Callable[[HealthReport], bool]] = {
    "/livez": lambda report: report.live,
    "/readyz": lambda report: report.ready,
}
MAX_IN_FLIGHT = 8
REQUEST_TIMEOUT_S = 2.0


class _Handler(BaseHTTPRequestHandler):
    server: _ProbeServer
    timeout = REQUEST_TIMEOUT_S  # a client that sends nothing holds its thread this long at most
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connections to hold

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        verdict = ROUTES.get(urlsplit(self.path).path)
        if verdict is None:
            self.send_error(404)
            return
        report = self.server.health.report()
        body = report.to_json().encode()
        self.send_response(200 if verdict(report) else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds per pod: not worth a log line each


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int, health: WorkerHealth, max_in_flight: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.health = health
        self._slots = threading.BoundedSemaphore(max_in_flight)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("health probe from %s failed", client_address, exc_info=True)


class HealthServer:
    """Binds at construction (an OSError if the port is taken), serves from `start()` until `close()`."""

    def __init__(self, health: WorkerHealth, host: str, port: int, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._server = _ProbeServer(host, port, health, max_in_flight)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
