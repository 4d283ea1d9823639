"""`http`: one HTTP request (the seed's API executor), through one httpx client per run.

What it promises, beyond sending the request:

- it never connects to a link-local or cloud metadata address (169.254.0.0/16,
  fe80::/10, fd00:ec2::254) unless `allow_link_local: true`: the host of every hop is
  resolved and every address checked before the hop is sent, and redirects are followed
  here, one checked hop at a time, never by httpx;
- a body larger than `max_response_bytes` fails the attempt without being read to its end;
- 429, 502, 503 and 504 are retried a few times, honouring Retry-After; anything else
  fails the attempt, and the task's own `retries` (the orchestrator's) take over, except
  for what another attempt cannot fix (a refused address, a bad URL, a 4xx status other
  than 408, 425 and 429): those fail the task at once (`retryable=False`);
- credentials never appear in an error or in the output: messages name the URL without
  its userinfo and query, and the credentials' values are redacted from what a server
  echoes back. No cookie is kept between requests.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import json
import random
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, ClassVar
from urllib.request import Request as UrllibRequest

import httpx

from flowctl.config import Settings
from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.engine.secrets import REDACTED
from flowctl.engine.spec.compile import parse_duration
from flowctl.errors import ExecutorError
from flowctl.schemas import load_schema

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# 4xx statuses that another attempt may not get again; any other 4xx fails the task at once.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 425, 429})
MAX_RETRIES = 3  # after the first request: four requests at most
RETRY_BACKOFF = 0.25  # seconds before the first retry when there is no Retry-After; doubles
MAX_RETRY_AFTER = 60.0  # a longer wait is left to the task's retries, not a blocked attempt
MAX_REDIRECTS = 10
EXCERPT_BYTES = 4096  # read from a refused response, for its message
EXCERPT_CHARS = 200

REFUSED_NETWORKS = (
    ip_network("169.254.0.0/16"),
    ip_network("fe80::/10"),
    ip_network("fd00:ec2::254/128"),
)


class _NoCookies(DefaultCookiePolicy):
    """Tasks share the run's client; a cookie set for one must not reach another."""

    def set_ok(self, cookie: Cookie, request: UrllibRequest) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _Call:
    """A `with:` block, checked and read once."""

    method: str
    url: str
    headers: dict[str, str]
    params: Any
    json: Any
    has_json: bool
    body: str | None
    timeout: float
    expect_status: frozenset[int] | None
    response: str | None
    max_response_bytes: int
    allow_link_local: bool
    hidden: tuple[str, ...]  # credentials' values, longest first

    def expects(self, status: int) -> bool:
        if self.expect_status is None:
            return 200 <= status < 300
        return status in self.expect_status

    def redact(self, text: str) -> str:
        for value in self.hidden:
            text = text.replace(value, REDACTED)
        return text


class HttpExecutor(BaseExecutor):
    name: ClassVar[str] = "http"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/http")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client: httpx.AsyncClient | None = None  # made by the first request

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        call = _read_call(params, ctx.secrets)
        try:
            return await self._run(call)
        except ExecutorError as error:
            raise ExecutorError(call.redact(str(error)), retryable=error.retryable) from None
        except httpx.HTTPError as error:  # while reading a body, say
            detail = str(error) or type(error).__name__
            message = f"{call.method} {safe_url(call.url)}: {detail}"
            raise ExecutorError(call.redact(message)) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one call: retries around exchanges -------------------------------------------

    async def _run(self, call: _Call) -> dict[str, Any]:
        for retry in range(MAX_RETRIES + 1):
            try:
                async with asyncio.timeout(call.timeout):
                    response, body = await self._exchange(call)
            except (TimeoutError, httpx.TimeoutException):
                raise ExecutorError(
                    f"{call.method} {safe_url(call.url)}: timed out after {call.timeout:g}s"
                ) from None
            status = response.status_code
            if call.expects(status):
                return _output(call, response, body)
            wait = None
            if status in RETRY_STATUSES and retry < MAX_RETRIES:
                wait = retry_after(response.headers.get("retry-after"), datetime.now(UTC))
                if wait is None:
                    wait = random.uniform(0.5, 1.0) * RETRY_BACKOFF * 2**retry
            if wait is None or wait > MAX_RETRY_AFTER:
                raise ExecutorError(
                    _status_message(call, response, body, retry + 1, wait),
                    retryable=not _is_permanent(status),
                )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, call: _Call) -> tuple[httpx.Response, bytes]:
        """Sends the request and follows redirects, checking every hop's addresses."""
        client = self._http()
        headers = dict(call.headers)
        try:
            url = httpx.URL(call.url)
            if call.params:  # merged into the URL's own query (httpx would replace it)
                url = url.copy_merge_params(call.params)
            request = client.build_request(
                call.method,
                url,
                headers=headers,
                json=call.json if call.has_json else None,
                content=call.body,
                timeout=httpx.Timeout(call.timeout),
            )
        except (httpx.InvalidURL, TypeError, ValueError) as error:
            raise ExecutorError(
                f"{call.method} {safe_url(call.url)}: {error}", retryable=False
            ) from None
        for _ in range(MAX_REDIRECTS + 1):
            await self._check_hop(call, request.url)
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as error:
                detail = str(error) or type(error).__name__
                raise ExecutorError(f"{call.method} {safe_url(request.url)}: {detail}") from None
            try:
                if response.next_request is not None and not call.expects(response.status_code):
                    request = response.next_request
                    if request.url.scheme not in ("http", "https"):
                        raise ExecutorError(
                            f"{call.method} {safe_url(response.url)}: redirected to a "
                            f"{request.url.scheme!r} URL, not http(s)"
                        )
                    continue
                limit = call.max_response_bytes
                if not call.expects(response.status_code):
                    limit = min(limit, EXCERPT_BYTES)
                    body = await _read_body(response, limit, truncate=True)
                else:
                    body = await _read_body(response, limit, truncate=False)
                    if body is None:
                        raise ExecutorError(
                            f"{call.method} {safe_url(response.url)}: the response is larger "
                            f"than max_response_bytes ({limit} bytes); it was not read"
                        )
                return response, body or b""
            finally:
                await response.aclose()
        raise ExecutorError(
            f"{call.method} {safe_url(call.url)}: more than {MAX_REDIRECTS} redirects"
        )

    async def _check_hop(self, call: _Call, url: httpx.URL) -> None:
        if call.allow_link_local:
            return
        host = url.host
        try:
            addresses = [ip_address(host)]
        except ValueError:
            try:
                addresses = await self._resolve(host, url.port or _default_port(url))
            except OSError as error:
                raise ExecutorError(
                    f"{call.method} {safe_url(url)}: cannot resolve {host!r}: {error}"
                ) from None
        for address in addresses:
            if is_refused_address(address):
                shown = host if str(address) == host else f"{host!r} ({address})"
                raise ExecutorError(
                    f"{call.method} {safe_url(url)}: refused to connect to {shown}: link-local "
                    "and cloud metadata addresses are refused unless allow_link_local is true",
                    retryable=False,
                )

    async def _resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [ip_address(str(info[4][0]).partition("%")[0]) for info in infos]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: no proxy (it would connect for us, past the address check),
            # no .netrc credentials; configuration comes from Settings only.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=_ssl_context(),
                cookies=CookieJar(policy=_NoCookies()),
            )
        return self._client


# -- reading `with:` ---------------------------------------------------------------------


def _read_call(params: dict[str, Any], secrets: Iterable[str]) -> _Call:
    """The call a `with:` block describes; the orchestrator has checked it against the schema."""
    headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    hidden = [v for v in secrets if len(v) >= 3]
    hidden += [v for k, v in headers.items() if k.lower() in ("authorization", "cookie")]
    url = str(params["url"])
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ExecutorError(f"with.url: {error}", retryable=False) from None
    auth = params.get("auth")
    if parsed.userinfo:  # sent as basic credentials by us, so that we know what to redact
        url = str(_without_userinfo(parsed))
        hidden.append(parsed.password)
        if auth is None:
            auth = {"basic": {"username": parsed.username, "password": parsed.password}}
    if auth is not None:
        if "bearer" in auth:
            token = auth["bearer"]
            header = f"Bearer {token}"
            hidden += [token]
        else:
            username, password = auth["basic"]["username"], auth["basic"]["password"]
            blob = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            header = f"Basic {blob}"
            hidden += [password, blob]
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = header
    timeout = params.get("timeout", DEFAULT_TIMEOUT)
    try:
        seconds = parse_duration(timeout)
    except ValueError as error:
        raise ExecutorError(f"with.timeout: {error}", retryable=False) from None
    expect = params.get("expect_status")
    return _Call(
        method=params.get("method", "GET"),
        url=url,
        headers=headers,
        params=params.get("params"),
        json=params.get("json"),
        has_json="json" in params,
        body=params.get("body"),
        timeout=seconds,
        expect_status=None if expect is None else frozenset(expect),
        response=params.get("response"),
        max_response_bytes=params.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES),
        allow_link_local=bool(params.get("allow_link_local", False)),
        hidden=tuple(sorted({v for v in hidden if v}, key=len, reverse=True)),
    )


# -- reading the response ----------------------------------------------------------------


async def _read_body(response: httpx.Response, limit: int, *, truncate: bool) -> bytes | None:
    """At most `limit` bytes of the body; None (or, if `truncate`, the first bytes) beyond."""
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit] if truncate else None
    return b"".join(chunks)


def _output(call: _Call, response: httpx.Response, body: bytes) -> dict[str, Any]:
    output: dict[str, Any] = {
        "status": response.status_code,
        "headers": {k: call.redact(v) for k, v in response.headers.items()},
        "url": call.redact(str(_without_userinfo(response.url))),
    }
    mode = call.response or ("json" if _is_json(response) else "text")
    if mode == "bytes":
        output["base64"] = base64.b64encode(body).decode("ascii")
    elif mode == "text":
        output["text"] = call.redact(_decode(response, body))
    elif not body.strip():
        output["json"] = None
    else:
        try:
            output["json"] = _redact_json(call, json.loads(body))
        except ValueError as error:
            raise ExecutorError(
                f"{call.method} {safe_url(response.url)}: the response is not JSON ({error}): "
                f"{_excerpt(_decode(response, body))}"
            ) from None
    return output


def _redact_json(call: _Call, value: Any) -> Any:
    if not call.hidden:
        return value
    if isinstance(value, str):
        return call.redact(value)
    if isinstance(value, dict):
        return {call.redact(k): _redact_json(call, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(call, v) for v in value]
    return value


def _is_json(response: httpx.Response) -> bool:
    media: str = response.headers.get("content-type", "")
    media = media.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _decode(response: httpx.Response, body: bytes) -> str:
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        return body.decode("utf-8", errors="replace")


def _is_permanent(status: int) -> bool:
    """A status another attempt would get again (not in `expect_status`, checked before)."""
    return 400 <= status < 500 and status not in TRANSIENT_CLIENT_STATUSES


def _status_message(
    call: _Call, response: httpx.Response, body: bytes, requests: int, wait: float | None
) -> str:
    try:
        reason = HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = response.reason_phrase
    text = f"{call.method} {safe_url(response.url)}: status {response.status_code} {reason}"
    if call.expect_status is not None:
        text += f" (expected {', '.join(map(str, sorted(call.expect_status)))})"
    if requests > 1:
        text += f" after {requests} requests"
    if wait is not None:
        text += f" (the server asked to retry after {wait:g}s)"
    excerpt = _excerpt(_decode(response, body))
    return f"{text}: {excerpt}" if excerpt else text


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


# -- addresses, URLs, Retry-After ---------------------------------------------------------


def is_refused_address(address: IPv4Address | IPv6Address) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in REFUSED_NETWORKS)


def safe_url(url: str | httpx.URL) -> str:
    """The URL for a message: no userinfo, and the query (where keys go) shown as `?…`."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    shown = _without_userinfo(parsed).copy_with(query=None, fragment=None)
    return str(shown) + ("?…" if parsed.query else "")


def _without_userinfo(url: httpx.URL) -> httpx.URL:
    return url.copy_with(username=None, password=None) if url.userinfo else url


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes ~50 ms: once per process, not once per run."""
    return httpx.create_ssl_context()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds (a number of seconds or an HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
