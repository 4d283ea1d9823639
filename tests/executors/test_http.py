"""The `http` executor against a real HTTP server on 127.0.0.1 (tests/servers/http_echo.py).

What a user sees: the request that arrives, the output, retries and their waits, the
limits (size, time, link-local addresses) and the messages of failures, with no
credentials in them, down to a `flowctl run` of an enrichment pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from servers.http_echo import EchoServer, Recorded, Reply, http_server

from executors.one_task import run_task
from flowctl.config import Settings
from flowctl.engine.executors.base import TaskContext, executor_class
from flowctl.engine.executors.http import HttpExecutor, retry_after
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.params import resolve_params
from flowctl.engine.secrets import Secrets
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import MemoryHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError

__all__ = ["http_server"]  # the fixture, used by name

FLOWCTL = Path(sys.executable).parent / "flowctl"
TOKEN = "tok-5e1f9c2a7b3d"
PASSWORD = "pw-8c4d2e6f0a1b"
METADATA = "http://169.254.169.254/latest/meta-data"


def call(params: dict[str, Any], secrets: frozenset[str] = frozenset()) -> Any:
    """One `run()` of a fresh executor, closed afterwards, as the orchestrator does."""

    async def go() -> Any:
        executor = HttpExecutor(Settings())
        try:
            return await executor.run(TaskContext("e-1", "t", 1, secrets=secrets), params)
        finally:
            await executor.aclose()

    return asyncio.run(go())


def failure(params: dict[str, Any]) -> str:
    with pytest.raises(ExecutorError) as raised:
        call(params)
    return str(raised.value)


@pytest.fixture
def connections() -> Iterator[list[Any]]:
    """The address of every socket connect() this process makes during the test."""
    seen: list[Any] = []
    _CONNECTS.append(seen)
    try:
        yield seen
    finally:
        _CONNECTS.remove(seen)


_CONNECTS: list[list[Any]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _CONNECTS:
        _CONNECTS[-1].append(args[1])


sys.addaudithook(_audit)  # cannot be removed; it records only inside `connections`


def connected_hosts(connections: list[Any]) -> set[str]:
    return {str(address[0]) for address in connections if isinstance(address, tuple)}


# --- requests and outputs ---------------------------------------------------------------


def test_the_executor_is_registered_as_http() -> None:
    assert executor_class("http") is HttpExecutor


def test_get_json(http_server: EchoServer) -> None:
    http_server.route("/companies/c-1", Reply.of_json({"name": "Acme", "n": [1, 2]}))
    output = call({"url": f"{http_server.url}/companies/c-1"})
    assert output["status"] == 200
    assert output["json"] == {"name": "Acme", "n": [1, 2]}
    assert output["url"] == f"{http_server.url}/companies/c-1"
    assert output["headers"]["content-type"] == "application/json"
    assert "text" not in output
    assert json.loads(json.dumps(output)) == output  # checkpointable as it is
    assert http_server.requests[0].method == "GET"


def test_post_json_body(http_server: EchoServer) -> None:
    output = call({"method": "POST", "url": f"{http_server.url}/enrich", "json": {"a": [1, None]}})
    seen = http_server.requests[0]
    assert (seen.method, seen.headers["content-type"]) == ("POST", "application/json")
    assert json.loads(seen.body) == {"a": [1, None]}
    assert output["json"]["json"] == {"a": [1, None]}


def test_put_raw_body(http_server: EchoServer) -> None:
    call(
        {
            "method": "PUT",
            "url": f"{http_server.url}/upload",
            "body": "plain text, é",
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        }
    )
    seen = http_server.requests[0]
    assert seen.method == "PUT"
    assert seen.body == "plain text, é".encode()
    assert seen.headers["content-type"] == "text/plain; charset=utf-8"


def test_query_params_are_added_to_the_url(http_server: EchoServer) -> None:
    output = call({"url": f"{http_server.url}/search?lang=en", "params": {"q": "a b&c", "page": 2}})
    assert http_server.requests[0].query == {"lang": ["en"], "q": ["a b&c"], "page": ["2"]}
    assert output["url"].startswith(f"{http_server.url}/search?")


def test_headers_arrive(http_server: EchoServer) -> None:
    call({"url": http_server.url, "headers": {"X-Trace": "abc-123", "Accept": "text/csv"}})
    headers = http_server.requests[0].headers
    assert (headers["x-trace"], headers["accept"]) == ("abc-123", "text/csv")


def test_bearer_auth_arrives_and_is_not_in_the_output(http_server: EchoServer) -> None:
    output = call({"url": f"{http_server.url}/me", "auth": {"bearer": TOKEN}})
    assert http_server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert output["json"]["headers"]["authorization"] == "Bearer ***"  # the echo, redacted
    assert TOKEN not in json.dumps(output)


def test_basic_auth_arrives_and_is_not_in_the_output(http_server: EchoServer) -> None:
    auth = {"basic": {"username": "svc", "password": PASSWORD}}
    output = call({"url": f"{http_server.url}/me", "auth": auth})
    sent = http_server.requests[0].headers["authorization"]
    scheme, _, blob = sent.partition(" ")
    assert (scheme, base64.b64decode(blob).decode()) == ("Basic", f"svc:{PASSWORD}")
    assert blob not in json.dumps(output) and PASSWORD not in json.dumps(output)


def test_auth_replaces_an_authorization_header(http_server: EchoServer) -> None:
    call({"url": http_server.url, "headers": {"authorization": "x"}, "auth": {"bearer": TOKEN}})
    assert http_server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_cookies_are_not_kept_between_requests(http_server: EchoServer) -> None:
    http_server.route("/login", Reply(200, "ok", {"Set-Cookie": "session=s3cr3t; Path=/"}))

    async def two_requests() -> None:
        executor = HttpExecutor(Settings())
        try:
            await executor.run(TaskContext("e", "a", 1), {"url": f"{http_server.url}/login"})
            await executor.run(TaskContext("e", "b", 1), {"url": f"{http_server.url}/other"})
        finally:
            await executor.aclose()

    asyncio.run(two_requests())
    assert "cookie" not in http_server.requests_to("/other")[0].headers


# --- statuses ---------------------------------------------------------------------------


def test_expect_status_accepts_the_listed_codes(http_server: EchoServer) -> None:
    http_server.route("/gone", Reply(410, "gone for good"))
    output = call({"url": f"{http_server.url}/gone", "expect_status": [200, 410]})
    assert (output["status"], output["text"]) == (410, "gone for good")


def test_any_2xx_is_accepted_by_default(http_server: EchoServer) -> None:
    http_server.route("/created", Reply.of_json({"id": 7}, status=201))
    assert call({"url": f"{http_server.url}/created", "method": "POST"})["status"] == 201


def test_an_unexpected_status_fails_with_method_url_status_and_body(
    http_server: EchoServer,
) -> None:
    http_server.route("/missing", Reply(404, "no such company\n   c-9 " + "x" * 5000))
    message = failure(
        {"url": f"{http_server.url}/missing?api_key=k-SECRET-123", "method": "DELETE"}
    )
    assert message.startswith(f"DELETE {http_server.url}/missing?…: status 404 Not Found: ")
    assert "no such company c-9 xxx" in message  # whitespace collapsed
    assert len(message) < 400  # an excerpt, not the body
    assert "k-SECRET-123" not in message


def test_a_status_outside_expect_status_fails(http_server: EchoServer) -> None:
    http_server.route("/created", Reply(201, "made"))
    message = failure({"url": f"{http_server.url}/created", "expect_status": [200]})
    assert "status 201 Created (expected 200): made" in message


def test_credentials_never_appear_in_a_failure(http_server: EchoServer) -> None:
    """The server echoes the request into its error: the message keeps none of it."""
    http_server.route("/deny", lambda r: Reply(401, json.dumps(r.headers)))
    bearer = failure({"url": f"{http_server.url}/deny", "auth": {"bearer": TOKEN}})
    assert "status 401 Unauthorized" in bearer and "Bearer ***" in bearer
    assert TOKEN not in bearer
    basic = failure(
        {
            "url": f"http://user:{PASSWORD}@127.0.0.1:{http_server.port}/deny",
            "auth": {"basic": {"username": "svc", "password": PASSWORD}},
        }
    )
    assert "status 401" in basic and PASSWORD not in basic and "user:" not in basic
    blob = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    assert blob not in basic and '"authorization": "Basic ***"' in basic
    # credentials in the URL are sent as basic auth, and redacted in the same way
    in_url = failure({"url": f"http://user:{PASSWORD}@127.0.0.1:{http_server.port}/deny"})
    sent = http_server.requests[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert PASSWORD not in in_url and sent.split()[1] not in in_url


# --- how the body is read ---------------------------------------------------------------


def test_text_is_the_default_for_other_content_types(http_server: EchoServer) -> None:
    http_server.route("/t", Reply(200, "héllo", {"Content-Type": "text/plain; charset=utf-8"}))
    output = call({"url": f"{http_server.url}/t"})
    assert output["text"] == "héllo" and "json" not in output


def test_response_text_keeps_json_as_text(http_server: EchoServer) -> None:
    http_server.route("/j", Reply.of_json({"a": 1}))
    assert call({"url": f"{http_server.url}/j", "response": "text"})["text"] == '{"a": 1}'


def test_response_bytes_gives_base64(http_server: EchoServer) -> None:
    data = bytes(range(256))
    http_server.route("/bin", Reply(200, data, {"Content-Type": "application/octet-stream"}))
    output = call({"url": f"{http_server.url}/bin", "response": "bytes"})
    assert base64.b64decode(output["base64"]) == data
    assert "text" not in output and "json" not in output


def test_response_json_that_is_not_json_fails(http_server: EchoServer) -> None:
    http_server.route("/html", Reply(200, "<html>oops</html>", {"Content-Type": "text/html"}))
    message = failure({"url": f"{http_server.url}/html", "response": "json"})
    assert "the response is not JSON" in message and "<html>oops</html>" in message


# --- retries ----------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(http_server: EchoServer) -> None:
    http_server.route("/limited", Reply(429, headers={"Retry-After": "1"}), Reply.of_json("ok"))
    started = time.monotonic()
    output = call({"url": f"{http_server.url}/limited"})
    elapsed = time.monotonic() - started
    assert output["json"] == "ok"
    assert len(http_server.requests_to("/limited")) == 2
    assert 0.95 <= elapsed < 2.0


def test_503_is_retried(http_server: EchoServer) -> None:
    http_server.route("/busy", Reply(503), Reply.of_json({"ok": True}))
    assert call({"url": f"{http_server.url}/busy"})["json"] == {"ok": True}
    assert len(http_server.requests_to("/busy")) == 2


def test_503_three_times_after_the_first_fails(http_server: EchoServer) -> None:
    http_server.route("/down", Reply(503, "maintenance"))
    started = time.monotonic()
    message = failure({"url": f"{http_server.url}/down"})
    assert len(http_server.requests_to("/down")) == 4
    assert "status 503 Service Unavailable after 4 requests: maintenance" in message
    assert time.monotonic() - started >= 0.4  # backed off: 0.25 s, 0.5 s, 1 s, halved at least


def test_other_errors_are_not_retried(http_server: EchoServer) -> None:
    http_server.route("/bad", Reply(500, "boom"))
    assert "status 500" in failure({"url": f"{http_server.url}/bad"})
    assert len(http_server.requests_to("/bad")) == 1


def test_a_retry_after_too_long_is_not_waited_for(http_server: EchoServer) -> None:
    http_server.route("/later", Reply(429, headers={"Retry-After": "3600"}))
    started = time.monotonic()
    message = failure({"url": f"{http_server.url}/later"})
    assert "the server asked to retry after 3600s" in message
    assert time.monotonic() - started < 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    in_90s = format_datetime(datetime(2026, 5, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert retry_after("5", now) == 5.0
    assert retry_after(in_90s, now) == 90.0
    assert retry_after("Fri, 01 May 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


# --- limits -----------------------------------------------------------------------------


def test_a_body_over_max_response_bytes_fails_without_reading_it_all(
    http_server: EchoServer,
) -> None:
    size = 200 * 1024 * 1024
    http_server.route("/huge", Reply(200, stream=size))
    started = time.monotonic()
    message = failure({"url": f"{http_server.url}/huge", "max_response_bytes": 1024})
    assert "larger than max_response_bytes (1024 bytes)" in message
    assert time.monotonic() - started < 5
    time.sleep(0.2)  # the server notices that the client went away
    assert http_server.streamed["/huge"] < size // 4


def test_a_declared_length_over_the_limit_fails_before_reading(http_server: EchoServer) -> None:
    http_server.route("/big", Reply(200, b"x" * 2000))
    assert "max_response_bytes" in failure(
        {"url": f"{http_server.url}/big", "max_response_bytes": 1999}
    )
    assert call({"url": f"{http_server.url}/big", "max_response_bytes": 2000})["text"]


def test_a_slow_server_times_out(http_server: EchoServer) -> None:
    http_server.route("/slow", Reply(200, "late", delay=3))
    started = time.monotonic()
    message = failure({"url": f"{http_server.url}/slow", "timeout": "300ms"})
    assert message == f"GET {http_server.url}/slow: timed out after 0.3s"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "FETCH", "with.method: is not one of ['GET', 'POST', "),
        ("timeout", "soon", "with.timeout: is not valid under any of the given schemas"),
        ("url", "ftp://x/", "with.url: does not match "),
    ],
)
def test_rendered_values_are_checked_before_any_request(
    http_server: EchoServer, field: str, value: str, message: str
) -> None:
    with_ = {"url": f"{http_server.url}/x", field: "{{ params.value }}"}
    ran = run_task("http", with_, params={"value": value})
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and ran.error.startswith(f"task 'task': {message}")
    assert ran.attempts == [(1, TaskStatus.FAILED)]  # not retried: it would fail again
    assert http_server.requests == []


def test_a_rejected_value_is_not_quoted_in_the_error(http_server: EchoServer) -> None:
    """A URL from params may carry a password that is not a declared secret."""
    ran = run_task("http", {"url": "{{ params.url }}"}, params={"url": "ftp://u:hunter2@x/"})
    assert ran.error is not None and ran.error.startswith("task 'task': with.url: does not")
    assert "hunter2" not in json.dumps([(c.error, c.input) for c in ran.checkpoints])


# --- link-local and metadata addresses ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        METADATA,
        "http://169.254.1.1:8080/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/latest",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_link_local_addresses_are_refused_without_connecting(
    url: str, connections: list[Any]
) -> None:
    started = time.monotonic()
    message = failure({"url": url, "auth": {"bearer": TOKEN}})
    assert "refused to connect to " in message
    assert "link-local and cloud metadata addresses are refused" in message
    assert time.monotonic() - started < 0.5
    assert connections == []  # not even tried


def test_a_name_is_refused_if_any_of_its_addresses_is_link_local(
    monkeypatch: pytest.MonkeyPatch, connections: list[Any]
) -> None:
    async def resolve(self: HttpExecutor, host: str, port: int) -> list[Any]:
        assert (host, port) == ("metadata.example", 80)
        addresses: list[IPv4Address | IPv6Address] = [
            ip_address("93.184.216.34"),
            ip_address("169.254.169.254"),
        ]
        return addresses

    monkeypatch.setattr(HttpExecutor, "_resolve", resolve)
    message = failure({"url": "http://metadata.example/latest/meta-data"})
    assert "refused to connect to 'metadata.example' (169.254.169.254)" in message
    assert connections == []


def test_an_unresolvable_name_fails_clearly() -> None:
    assert "cannot resolve 'no-such-host.invalid'" in failure(
        {"url": "http://no-such-host.invalid/"}
    )


def test_a_redirect_to_a_metadata_address_is_refused(
    http_server: EchoServer, connections: list[Any]
) -> None:
    http_server.route("/go", Reply.redirect(METADATA))
    message = failure({"url": f"{http_server.url}/go"})
    assert message.startswith(f"GET {METADATA}: refused to connect to 169.254.169.254")
    assert connected_hosts(connections) == {"127.0.0.1"}


def test_redirects_on_the_same_server_are_followed(http_server: EchoServer) -> None:
    http_server.route("/old", Reply.redirect("/new", 301))
    http_server.route("/new", Reply.of_json("here"))
    output = call({"url": f"{http_server.url}/old"})
    assert (output["json"], output["url"]) == ("here", f"{http_server.url}/new")


def test_credentials_are_not_sent_to_another_origin(http_server: EchoServer) -> None:
    http_server.route("/away", Reply.redirect(f"http://localhost:{http_server.port}/there"))
    output = call({"url": f"{http_server.url}/away", "auth": {"bearer": TOKEN}})
    assert output["url"] == f"http://localhost:{http_server.port}/there"
    assert "authorization" in http_server.requests_to("/away")[0].headers
    assert "authorization" not in http_server.requests_to("/there")[0].headers


def test_a_listed_redirect_status_is_returned_not_followed(http_server: EchoServer) -> None:
    http_server.route("/old", Reply.redirect(METADATA))
    output = call({"url": f"{http_server.url}/old", "expect_status": [302]})
    assert (output["status"], output["headers"]["location"]) == (302, METADATA)


def test_allow_link_local_lifts_the_check(http_server: EchoServer, connections: list[Any]) -> None:
    """The address cannot be reached from here: only that the check did not refuse it."""
    http_server.route("/go", Reply.redirect(METADATA))
    params = {"url": f"{http_server.url}/go", "allow_link_local": True, "timeout": "500ms"}
    try:
        call(params)
    except ExecutorError as error:
        assert "refused to connect" not in str(error)
    assert "169.254.169.254" in connected_hosts(connections)


# --- in a pipeline: what is retried ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reply", "requests"),
    [
        ("/missing", Reply(404, "no such company"), 1),
        ("/denied", Reply(403, "forbidden"), 1),
        ("/bad", Reply(400, "bad request"), 1),
        (METADATA, None, 0),
    ],
)
def test_an_error_another_attempt_cannot_fix_is_not_retried(
    http_server: EchoServer, path: str, reply: Reply | None, requests: int
) -> None:
    if reply is not None:
        http_server.route(path, reply)
    url = path if "://" in path else f"{http_server.url}{path}"
    ran = run_task("http", {"url": url}, retries=3)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.attempts == [(1, TaskStatus.FAILED)]
    assert len(http_server.requests) == requests


@pytest.mark.parametrize("status", [408, 500])
def test_a_transient_error_is_retried_by_the_task(http_server: EchoServer, status: int) -> None:
    http_server.route("/flaky", Reply(status, "try again"), Reply.of_json("ok"))
    ran = run_task("http", {"url": f"{http_server.url}/flaky"}, retries=1)
    assert ran.result.status is WorkflowStatus.COMPLETED, ran.result.error
    assert ran.attempts == [(1, TaskStatus.FAILED), (2, TaskStatus.COMPLETED)]
    assert ran.result.tasks["task"].output["json"] == "ok"


def test_secrets_in_auth_stay_out_of_errors_and_checkpoints(http_server: EchoServer) -> None:
    def deny(request: Recorded) -> Reply:
        return Reply(500, f"cannot serve {request.headers.get('authorization')}")

    http_server.route("/deny", deny)
    text = textwrap.dedent(
        f"""\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {{name: secret-http}}
        spec:
          tasks:
            - id: call
              executor: http
              retries: 1
              retry_delay: 10ms
              with:
                url: "{http_server.url}/deny"
                auth: {{bearer: "{{{{ secrets.API_TOKEN }}}}"}}
        """
    )
    document = load_text(text)
    assert [d.format() for d in validate_document(document)] == []
    ir = compile_document(document)
    history = MemoryHistory()
    record = new_execution(history, ir, resolve_params(ir["params"], None, {}))
    runner = Runner(history, secrets=Secrets({"API_TOKEN": TOKEN}))
    result = asyncio.run(runner.run(record))

    assert result.status is WorkflowStatus.FAILED
    error = result.tasks["call"].error
    assert (
        error is not None and "status 500 Internal Server Error: cannot serve Bearer ***" in error
    )
    assert len(http_server.requests_to("/deny")) == 2  # the task's retry
    assert http_server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    checkpoints = history.checkpoints(record.id)
    assert [c.status for c in checkpoints] == [TaskStatus.FAILED, TaskStatus.FAILED]
    stored = repr(checkpoints) + repr(history.get_execution(record.id))
    assert TOKEN not in stored and TOKEN not in repr(result.as_dict())


ENRICHMENT = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: http-enrichment-test}
spec:
  params:
    api_base: {type: string}
    company_ids: {type: array, default: ["c-1001", "c-1002"]}
  defaults: {retries: 1, retry_delay: 100ms, timeout: 10s}
  tasks:
    - id: lookup
      executor: http
      for_each: "{{ params.company_ids }}"
      with:
        url: "{{ params.api_base }}/companies/{{ item }}"
        headers: {Accept: application/json}
        auth: {bearer: "{{ secrets.REGISTRY_TOKEN }}"}
        expect_status: [200]
    - id: enrich
      executor: http
      for_each: "{{ tasks.lookup.output }}"
      with:
        method: POST
        url: "{{ params.api_base }}/enrich"
        json: {name: "{{ item.json.name }}"}
    - id: records
      executor: transform
      with:
        value: "{{ tasks.enrich.output | map(attribute='json') | list }}"
  output:
    companies: "{{ tasks.records.output }}"
"""


def test_flowctl_run_an_enrichment_pipeline(http_server: EchoServer, tmp_path: Path) -> None:
    def company(request: Recorded) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, "who are you?")
        company_id = request.path.rsplit("/", 1)[1]
        return Reply.of_json({"id": company_id, "name": f"Company {company_id}"})

    def enrich(request: Recorded) -> Reply:
        name = json.loads(request.body)["name"]
        return Reply.of_json({"name": name, "size": len(name)})

    for company_id in ("c-1", "c-2", "c-3"):
        http_server.route(f"/companies/{company_id}", company)
    http_server.route("/companies/c-2", Reply(503), company)  # retried by the executor
    http_server.route("/enrich", enrich)
    pipeline = tmp_path / "enrichment.yaml"
    pipeline.write_text(ENRICHMENT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCTL_")}
    env["FLOWCTL_SECRET_REGISTRY_TOKEN"] = TOKEN
    ids = json.dumps(["c-1", "c-2", "c-3"])
    done = subprocess.run(
        [
            *(str(FLOWCTL), "run", str(pipeline), "--no-history", "--output", "json"),
            *("-p", f"api_base={http_server.url}", "-p", f"company_ids={ids}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["result"] == {
        "companies": [
            {"name": "Company c-1", "size": 11},
            {"name": "Company c-2", "size": 11},
            {"name": "Company c-3", "size": 11},
        ]
    }
    lookups = document["tasks"]["lookup"]["output"]
    assert [o["status"] for o in lookups] == [200, 200, 200]
    assert len(http_server.requests_to("/companies/c-2")) == 2
    assert TOKEN not in done.stdout + done.stderr
