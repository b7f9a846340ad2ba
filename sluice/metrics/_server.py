"""A small HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``, in a daemon thread.

prometheus-client's own ``start_http_server`` serves ``/metrics`` only; the health
endpoints need their own paths, so this is the standard library's
``ThreadingHTTPServer`` with three routes. A scrape never touches the poll loop: it
reads counters the loop keeps up to date.

Example:
    >>> import urllib.request
    >>> class Fixed:
    ...     def metrics(self): return b"up 1\\n"
    ...     def health(self): return True, {"status": "ok"}
    ...     def readiness(self): return False, {"status": "not ready", "reason": "starting"}
    >>> server = MetricsServer(Fixed(), port=0, host="127.0.0.1")
    >>> urllib.request.urlopen(server.url + "/metrics").read()
    b'up 1\\n'
    >>> try:
    ...     urllib.request.urlopen(server.url + "/readyz")
    ... except urllib.error.HTTPError as exc:
    ...     exc.code, exc.read()
    (503, b'{"status":"not ready","reason":"starting"}')
    >>> server.close()
"""

from __future__ import annotations

import errno
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from sluice.errors import ConfigError

__all__ = ["Endpoints", "MetricsServer", "check_port"]

logger = logging.getLogger(__name__)

_JSON = "application/json"


class Endpoints(Protocol):
    """What a metrics server serves: Prometheus text, and health and readiness as ``(ok, JSON body)``."""

    def metrics(self) -> bytes: ...

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...


def check_port(port: object, what: str = "metrics_port") -> int | None:
    """Validate a TCP port number (``0``: any free port; ``None``: no server).

    Example:
        >>> check_port(9464), check_port(None)
        (9464, None)
        >>> check_port(70000)
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: metrics_port=70000 must be a TCP port number from 0 to 65535 (0: any free port), or None for no metrics server
    """
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = (
            f"{what}={port!r} must be a TCP port number from 0 to 65535 (0: any free port), "
            "or None for no metrics server"
        )
        raise ConfigError(msg)
    return port


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        endpoints = self.server.endpoints
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, endpoints.metrics())
            elif path in ("/healthz", "/readyz"):
                ok, body = endpoints.health() if path == "/healthz" else endpoints.readiness()
                self._send(200 if ok else 503, _JSON, orjson.dumps(body))
            elif path == "/":
                index = {"endpoints": ["/metrics", "/healthz", "/readyz"]}
                self._send(200, _JSON, orjson.dumps(index))
            else:
                body = {"error": f"no such path {path!r}", "endpoints": ["/metrics", "/healthz", "/readyz"]}
                self._send(404, _JSON, orjson.dumps(body))
        except Exception as exc:
            logger.exception("serving %s failed", path)
            self._send(500, _JSON, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves ``endpoints`` on ``host:port`` from a daemon thread until ``close()``.

    Args:
        endpoints: what to serve (see ``Endpoints``).
        port: the TCP port; ``0`` picks a free one (read it back from ``port``).
        host: the address to bind (default all interfaces, as Prometheus exporters do).

    Raises:
        ConfigError: the port is in use or cannot be bound.
    """

    def __init__(self, endpoints: Endpoints, port: int, host: str = "0.0.0.0") -> None:
        try:
            self._server = _Server((host, port), endpoints)
        except OSError as exc:
            why = (
                "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            )
            msg = (
                f"metrics port {port} on {host} {why}; choose another with --metrics-port (or metrics_port=)"
            )
            raise ConfigError(msg) from exc
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="sluice-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://host:port`` (``127.0.0.1`` when bound to all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
