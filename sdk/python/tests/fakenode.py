"""A stand-in region node for unit tests: plain HTTP on loopback, answering
the routes of PROTOCOL.md the way a test script says."""

from __future__ import annotations

import json
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

ALLOW = {
    "allowed": True,
    "reason": "ALLOW",
    "explanation": "",
    "entitlement": "acme-pro",
    "limit": None,
    "remaining": None,
    "overage": False,
    "valid_until": None,
    "trial": False,
    "seats": {"used": 2, "total": 2, "holders": []},
    "upgrade_hint": None,
    "config": {"max_resolution": "4k"},
}


def dead_endpoint() -> str:
    """A loopback URL nothing listens on (a port bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class FakeNode:
    def __init__(self, name: str = "eu-1") -> None:
        self.name = name
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        # What /v1/check answers: (status, body) or a callable of the request body.
        self.check: Callable[[Any], tuple[int, Any]] = lambda body: (200, dict(ALLOW, revision=7, staleness_seconds=3, answered_by=self.name))
        self.events: "queue.Queue[Optional[str]]" = queue.Queue()
        self.watch_status = 200
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                node.requests.append(("POST", self.path, dict(self.headers), body))
                if not self.headers.get("Authorization", "").startswith("Bearer tgc_"):
                    self._send(401, {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                     "code": "CREDENTIAL_REQUIRED", "detail": "an application credential is required"},
                               "application/problem+json")
                    return
                if self.path == "/v1/check":
                    status, answer = node.check(body)
                    self._send(status, answer, "application/json" if status == 200 else "application/problem+json")
                elif self.path == "/v1/checks":
                    results = []
                    for c in body["checks"]:
                        status, answer = node.check(c)
                        if status == 200:
                            d = {k: v for k, v in answer.items() if k not in ("revision", "staleness_seconds", "answered_by")}
                            results.append({"decision": d})
                        else:
                            results.append({"error": {"code": answer.get("code", "X"), "message": answer.get("detail", "")}})
                    self._send(200, {"results": results, "revision": 7, "staleness_seconds": 3, "answered_by": node.name})
                else:
                    self._send(404, {"status": 404, "code": "NOT_FOUND", "detail": "no such endpoint", "title": "Not Found"})

            def do_GET(self) -> None:
                node.requests.append(("GET", self.path, dict(self.headers), None))
                if not self.path.startswith("/v1/watch"):
                    self._send(404, {"status": 404, "code": "NOT_FOUND", "detail": "no such endpoint"})
                    return
                if node.watch_status != 200:
                    self._send(node.watch_status, {"status": node.watch_status, "code": "UNAVAILABLE", "detail": "try another"})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    chunk = node.events.get()
                    if chunk is None:
                        break
                    try:
                        self.wfile.write(chunk.encode())
                        self.wfile.flush()
                    except OSError:
                        break
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def send(self, event: str, data: Any, id: Optional[int] = None) -> None:
        text = f"event: {event}\n"
        if id is not None:
            text += f"id: {id}\n"
        text += f"data: {json.dumps(data)}\n\n"
        self.events.put(text)

    def end_stream(self) -> None:
        self.events.put(None)

    def close(self) -> None:
        self.end_stream()
        self.server.shutdown()
        self.server.server_close()
