"""A stand-in for the OpenAI chat-completions API: a real HTTP server on 127.0.0.1.

It answers POST /v1/chat/completions as OpenAI, Ollama or vLLM do, so the real openai
client can talk to it. A test scripts the answers (`server.reply(...)`, one per request,
in order; an empty script answers "ok") and reads the requests it received
(`server.requests`), with their headers, bodies and arrival times.

    from servers.chat_completions import ChatServer, Reply, chat_server
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

COMPLETIONS_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion whose message is `content`, or an error."""

    content: str | None = "ok"
    status: int = 200
    finish_reason: str = "stop"
    model: str | None = None  # None: the model that was asked for
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the error body's message, for a status >= 400
    delay: float = 0.0  # seconds to wait before answering
    usage: bool = True
    raw: str | None = None  # a body sent as is (a malformed answer)

    @classmethod
    def failure(cls, status: int, message: str, **headers: str) -> Reply:
        return cls(status=status, error=message, headers=headers)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    at: float  # time.monotonic() when it arrived

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages


class ChatServer:
    """ThreadingHTTPServer in a thread; `base_url` is what `with: base_url` takes."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def reply(self, *replies: Reply | str) -> None:
        """Queues answers; a string is a completion with that content."""
        with self._lock:
            self._script.extend(Reply(r) if isinstance(r, str) else r for r in replies)

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes the handlers that are delaying their answer
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            return self._script.popleft() if self._script else Reply()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path != COMPLETIONS_PATH:
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._next(Received(self.path, headers, body, time.monotonic()))
                if reply.delay and server._closing.wait(reply.delay):
                    return
                if reply.raw is not None:
                    self._send(reply.status, None, reply.headers, raw=reply.raw.encode())
                    return
                if reply.status >= 400:
                    error = {"message": reply.error or "error", "type": "server_error"}
                    self._send(reply.status, {"error": error}, reply.headers)
                    return
                self._send(200, _completion(body, reply, len(server.requests)), reply.headers)

            def _send(
                self, status: int, document: Any, headers: dict[str, str], raw: bytes = b""
            ) -> None:
                payload = raw or json.dumps(document).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a timeout test)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _completion(request: dict[str, Any], reply: Reply, number: int) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
    completion_tokens = len((reply.content or "").split())
    document: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or request["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    if reply.usage:
        document["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return document


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer().start()
    try:
        yield server
    finally:
        server.stop()
