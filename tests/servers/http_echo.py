"""A real HTTP server on 127.0.0.1, scripted per test, for the `http` executor's tests.

By default it echoes every request as JSON (method, path, query, headers, body). A test
scripts a path with `server.route(path, reply, ...)`: each request to it takes the next
reply, and the last one repeats. A reply is a `Reply`, or a function of the recorded
request that returns one. Every request is recorded in `server.requests`.

    def test_x(http_server: EchoServer) -> None:
        http_server.route("/busy", Reply(503), Reply.of_json({"ok": True}))
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def as_json(self) -> dict[str, Any]:
        text = self.body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": text,
            "json": parsed,
        }


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    # Bytes streamed after `body`, with no Content-Length, until done or the client goes.
    stream: int = 0

    @classmethod
    def of_json(cls, value: Any, status: int = 200, **headers: str) -> Reply:
        return cls(status, json.dumps(value), {"Content-Type": "application/json", **headers})

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status, headers={"Location": location})


Script = Reply | Callable[[Recorded], Reply]


class EchoServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.streamed: dict[str, int] = {}  # path → bytes written by `stream` replies
        self._routes: dict[str, list[Script]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_request(self) -> None:
                server._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_request

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-answer is what some tests do

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,))

    def route(self, path: str, *replies: Script) -> None:
        with self._lock:
            self._routes[path] = list(replies)

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        recorded = Recorded(
            method=handler.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length) if length else b"",
        )
        with self._lock:
            self.requests.append(recorded)
            script = self._routes.get(split.path)
            if script is None:
                reply: Script = Reply.of_json(recorded.as_json())
            elif len(script) > 1:
                reply = script.pop(0)
            else:
                reply = script[0]
        if not isinstance(reply, Reply):
            reply = reply(recorded)
        self._answer(handler, split.path, reply)

    def _answer(self, handler: BaseHTTPRequestHandler, path: str, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if not reply.stream and "content-length" not in {k.lower() for k in reply.headers}:
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command == "HEAD":
            return
        handler.wfile.write(body)
        sent = 0
        chunk = b"x" * CHUNK
        try:
            while sent < reply.stream:
                handler.wfile.write(chunk[: reply.stream - sent])
                sent += min(CHUNK, reply.stream - sent)
        except OSError:
            pass  # the client stopped reading
        finally:
            with self._lock:
                self.streamed[path] = self.streamed.get(path, 0) + sent


@pytest.fixture
def http_server() -> Iterator[EchoServer]:
    """A fresh scripted server for one test."""
    with EchoServer() as server:
        yield server
