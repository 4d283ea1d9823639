"""The `llm` executor, driven through the real openai client against a stand-in
chat-completions server on 127.0.0.1: prompts and messages, structured output and its
repair, retries of 429 and 5xx, timeouts, API keys (never shown), a whole pipeline run
and `flowctl run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from servers.chat_completions import ChatServer, Reply, chat_server

from executors.one_task import run_task
from flowctl.config import Settings
from flowctl.engine.executors.base import TaskContext, executor_class
from flowctl.engine.executors.llm import (
    PLACEHOLDER_API_KEY,
    SCHEMA_INSTRUCTION,
    LlmExecutor,
    _Call,
)
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.params import resolve_params
from flowctl.engine.secrets import Secrets
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import MemoryHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError

__all__ = ["chat_server"]  # the fixture, used by name

FLOWCTL = Path(sys.executable).parent / "flowctl"
KEY = "sk-test-7f3a9c2e1b"
CTX = TaskContext("execution-1", "ask", 1)
INVOICE_SCHEMA = {
    "type": "object",
    "required": ["number", "total"],
    "properties": {"number": {"type": "string"}, "total": {"type": "number"}},
}


def call(params: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Runs the executor once, as the orchestrator does: construct, run, aclose."""

    async def main() -> dict[str, Any]:
        executor = LlmExecutor(settings or Settings())
        try:
            return await executor.run(CTX, params)
        finally:
            await executor.aclose()

    return asyncio.run(main())


def fails(params: dict[str, Any], settings: Settings | None = None) -> str:
    with pytest.raises(ExecutorError) as raised:
        call(params, settings)
    return str(raised.value)


def ask(server: ChatServer, **params: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "api_key": KEY, "model": "gpt-test", **params}


# --- answers -----------------------------------------------------------------------------


def test_the_registry_finds_the_llm_executor() -> None:
    assert executor_class("llm") is LlmExecutor


def test_a_prompt_gives_text_usage_model_and_finish_reason(chat_server: ChatServer) -> None:
    chat_server.reply(Reply("Paris is the capital.", model="gpt-test-2024", finish_reason="stop"))
    output = call(ask(chat_server, prompt="Capital of France?", temperature=0, max_tokens=50))
    assert output == {
        "text": "Paris is the capital.",
        "json": None,
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        "model": "gpt-test-2024",
        "finish_reason": "stop",
    }
    [request] = chat_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-test"
    assert request.messages == [{"role": "user", "content": "Capital of France?"}]
    assert (request.body["temperature"], request.body["max_tokens"]) == (0, 50)
    assert "response_format" not in request.body
    json.dumps(output)  # a task's output is stored as JSON


def test_a_server_without_usage_and_a_truncated_answer(chat_server: ChatServer) -> None:
    chat_server.reply(Reply("It was the best", finish_reason="length", usage=False))
    output = call(ask(chat_server, prompt="Tell a story", max_tokens=4))
    assert output["usage"] == {"prompt_tokens": None, "completion_tokens": None}
    assert (output["text"], output["finish_reason"]) == ("It was the best", "length")


def test_system_then_messages_then_prompt(chat_server: ChatServer) -> None:
    call(
        ask(
            chat_server,
            system="You are terse.",
            messages=[
                {"role": "user", "content": "Invoice 1: total 12.50"},
                {"role": "assistant", "content": "12.5"},
            ],
            prompt="Invoice 2: total 7",
        )
    )
    assert chat_server.requests[0].messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Invoice 1: total 12.50"},
        {"role": "assistant", "content": "12.5"},
        {"role": "user", "content": "Invoice 2: total 7"},
    ]


def test_messages_alone_are_enough(chat_server: ChatServer) -> None:
    chat_server.reply("hi")
    output = call(ask(chat_server, messages=[{"role": "user", "content": "hello"}]))
    assert output["text"] == "hi"
    assert chat_server.requests[0].messages == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("body", ["<html>busy</html>", '{"choices": []}', '{"choices": "x"}'])
def test_a_malformed_answer_is_a_clear_error(chat_server: ChatServer, body: str) -> None:
    chat_server.reply(Reply(raw=body))
    message = fails(ask(chat_server, prompt="x"))
    assert message == f"'gpt-test' at {chat_server.base_url} did not answer with a chat completion"


# --- structured output -----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ['{"number": "A-1", "total": 12.5}', '```json\n{"number": "A-1", "total": 12.5}\n```'],
    ids=["plain", "fenced"],
)
def test_a_valid_structured_answer_is_the_json_output(chat_server: ChatServer, answer: str) -> None:
    chat_server.reply(answer)
    output = call(ask(chat_server, prompt="Invoice A-1, 12.50", response_schema=INVOICE_SCHEMA))
    assert output["json"] == {"number": "A-1", "total": 12.5}
    assert output["text"] == answer
    [request] = chat_server.requests
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": INVOICE_SCHEMA, "strict": False},
    }
    system = request.messages[0]
    assert system["role"] == "system"
    assert system["content"] == f"{SCHEMA_INSTRUCTION}\n{json.dumps(INVOICE_SCHEMA)}"


@pytest.mark.parametrize(
    ("first", "complaint"),
    [
        ("Sure! The total is 12.50.", "The answer is not valid JSON: Expecting value"),
        ('{"number": "A-1"}', "at $: 'total' is a required property"),
        ('{"number": "A-1", "total": "12.50"}', "at $.total: '12.50' is not of type 'number'"),
    ],
    ids=["not-json", "missing-property", "wrong-type"],
)
def test_an_invalid_answer_is_repaired_once(
    chat_server: ChatServer, first: str, complaint: str
) -> None:
    chat_server.reply(first, '{"number": "A-1", "total": 12.5}')
    output = call(
        ask(chat_server, system="Extract.", prompt="Invoice A-1", response_schema=INVOICE_SCHEMA)
    )
    assert output["json"] == {"number": "A-1", "total": 12.5}
    assert len(chat_server.requests) == 2
    before, after = (r.messages for r in chat_server.requests)
    assert after[: len(before)] == before
    bad_answer, repair = after[len(before) :]
    assert bad_answer == {"role": "assistant", "content": first}
    assert repair["role"] == "user"
    assert complaint in repair["content"]
    assert repair["content"].endswith("Answer again with only the corrected JSON.")
    prompt_tokens = sum(len(str(m["content"]).split()) for m in before + after)
    completion_tokens = len(first.split()) + 4
    assert output["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


def test_an_answer_still_invalid_after_the_repair_fails_with_the_validation_error(
    chat_server: ChatServer,
) -> None:
    chat_server.reply('{"number": "A-1"}', '{"number": 7, "total": 1}')
    message = fails(ask(chat_server, prompt="Invoice A-1", response_schema=INVOICE_SCHEMA))
    assert message == (
        "the answer of 'gpt-test' does not match response_schema, even after a repair "
        "attempt: The answer does not match the JSON Schema: at $.number: 7 is not of "
        "type 'string'."
    )
    assert len(chat_server.requests) == 2


def test_a_server_without_json_schema_gets_json_object(chat_server: ChatServer) -> None:
    refused = Reply.failure(400, "response_format type 'json_schema' is not supported")
    chat_server.reply(refused, '{"number": "A-1", "total": 1}', '{"number": "A-2", "total": 2}')

    async def main() -> list[Any]:
        executor = LlmExecutor(Settings())
        params = ask(chat_server, prompt="Invoice", response_schema=INVOICE_SCHEMA)
        try:
            return [(await executor.run(CTX, params))["json"] for _ in range(2)]
        finally:
            await executor.aclose()

    assert asyncio.run(main()) == [{"number": "A-1", "total": 1}, {"number": "A-2", "total": 2}]
    formats = [r.body["response_format"]["type"] for r in chat_server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]  # remembered for the run


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid value for RESPONSE_FORMAT: 'json_schema'"),
        (422, "JSON_Schema output is not available for this model"),
    ],
)
def test_a_refusal_naming_the_format_in_any_case_gets_json_object(
    chat_server: ChatServer, status: int, message: str
) -> None:
    chat_server.reply(Reply.failure(status, message), '{"number": "A-1", "total": 1}')
    output = call(ask(chat_server, prompt="Invoice", response_schema=INVOICE_SCHEMA))
    assert output["json"] == {"number": "A-1", "total": 1}
    formats = [r.body["response_format"]["type"] for r in chat_server.requests]
    assert formats == ["json_schema", "json_object"]


def test_another_400_on_a_json_schema_request_fails_and_changes_nothing(
    chat_server: ChatServer,
) -> None:
    """A context too long is the request's fault, not json_schema's: no switch to json_object."""
    too_long = "This model's maximum context length is 8192 tokens; you requested 9000 tokens."
    chat_server.reply(Reply.failure(400, too_long), '{"number": "A-2", "total": 2}')

    async def main() -> tuple[str, Any]:
        executor = LlmExecutor(Settings())
        params = ask(chat_server, prompt="Invoice", response_schema=INVOICE_SCHEMA)
        try:
            with pytest.raises(ExecutorError) as raised:
                await executor.run(CTX, params)
            assert raised.value.retryable is False
            return str(raised.value), (await executor.run(CTX, params))["json"]
        finally:
            await executor.aclose()

    message, second = asyncio.run(main())
    assert message == f"'gpt-test' at {chat_server.base_url} answered HTTP 400: {too_long}"
    assert second == {"number": "A-2", "total": 2}
    formats = [r.body["response_format"]["type"] for r in chat_server.requests]
    assert formats == ["json_schema", "json_schema"]  # the next request still asks for it

    chat_server.reply(Reply.failure(422, too_long), "never asked")
    ran = run_task("llm", ask(chat_server, prompt="x", response_schema=INVOICE_SCHEMA), retries=3)
    assert ran.error == f"'gpt-test' at {chat_server.base_url} answered HTTP 422: {too_long}"
    assert ran.attempts == [(1, TaskStatus.FAILED)]
    assert len(chat_server.requests) == 3


def test_an_invalid_response_schema_fails_before_any_request(chat_server: ChatServer) -> None:
    message = fails(ask(chat_server, prompt="x", response_schema={"type": "invoice"}))
    assert message.startswith("response_schema is not a valid JSON Schema: 'invoice' is not")
    assert chat_server.requests == []


def test_rendered_values_are_checked_against_the_schema(chat_server: ChatServer) -> None:
    with_ = ask(chat_server, prompt="x", temperature="{{ params.temperature }}")
    ran = run_task("llm", with_, params={"temperature": "hot"})
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error == "task 'task': with.temperature: is not of type 'number'"
    assert ran.attempts == [(1, TaskStatus.FAILED)]
    assert chat_server.requests == []


# --- retries and timeouts --------------------------------------------------------------


def test_a_429_is_retried_after_retry_after(chat_server: ChatServer) -> None:
    chat_server.reply(Reply.failure(429, "Rate limit reached", **{"Retry-After": "1"}), "done")
    assert call(ask(chat_server, prompt="x"))["text"] == "done"
    first, second = chat_server.requests
    # Without Retry-After the client's first backoff is 0.5 s at most.
    assert second.at - first.at >= 0.9


def test_a_500_is_retried(chat_server: ChatServer) -> None:
    chat_server.reply(Reply.failure(500, "The server had an error"), "done")
    assert call(ask(chat_server, prompt="x"))["text"] == "done"
    assert len(chat_server.requests) == 2


def test_a_slow_server_times_out_with_a_clear_error(chat_server: ChatServer) -> None:
    chat_server.reply(Reply("late", delay=5))
    started = time.monotonic()
    message = fails(ask(chat_server, prompt="x", timeout="300ms"))
    assert time.monotonic() - started < 2
    assert message == f"'gpt-test' at {chat_server.base_url} did not answer within 0.3s (timeout)"


def test_an_unreachable_server_is_named() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{free.getsockname()[1]}/v1"

    class QuickLlm(LlmExecutor):
        max_retries = 0  # connection errors are retried too; not needed to see the message

    async def main() -> None:
        executor = QuickLlm(Settings())
        try:
            await executor.run(CTX, {"base_url": base_url, "model": "m", "prompt": "x"})
        finally:
            await executor.aclose()

    with pytest.raises(ExecutorError, match=rf"^cannot reach {base_url}: "):
        asyncio.run(main())


# --- in a pipeline: what is retried ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "'temperature' is not supported with this model"),
        (401, "Incorrect API key provided"),
        (403, "Country, region, or territory not supported"),
        (404, "The model `gpt-test` does not exist"),
        (422, "Unprocessable"),
    ],
)
def test_an_answer_another_attempt_would_get_again_is_not_retried(
    chat_server: ChatServer, status: int, message: str
) -> None:
    chat_server.reply(Reply.failure(status, message), "never asked")
    ran = run_task("llm", ask(chat_server, prompt="x"), retries=3)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error == f"'gpt-test' at {chat_server.base_url} answered HTTP {status}: {message}"
    assert ran.attempts == [(1, TaskStatus.FAILED)]
    assert len(chat_server.requests) == 1


def test_a_timeout_is_retried_by_the_task(chat_server: ChatServer) -> None:
    chat_server.reply(Reply("late", delay=1), "in time")
    ran = run_task("llm", ask(chat_server, prompt="x", timeout="200ms"), retries=1)
    assert ran.result.status is WorkflowStatus.COMPLETED, ran.result.error
    assert ran.attempts == [(1, TaskStatus.FAILED), (2, TaskStatus.COMPLETED)]
    assert ran.checkpoints[0].error == (
        f"'gpt-test' at {chat_server.base_url} did not answer within 0.2s (timeout)"
    )
    assert ran.result.tasks["task"].output["text"] == "in time"


# --- API keys ----------------------------------------------------------------------------


def test_a_rejected_key_is_not_retried_and_never_shown(chat_server: ChatServer) -> None:
    # Some servers quote the whole key back.
    chat_server.reply(Reply.failure(401, f"Incorrect API key provided: {KEY}."))
    message = fails(ask(chat_server, prompt="x"))
    assert message == (
        f"'gpt-test' at {chat_server.base_url} answered HTTP 401: Incorrect API key provided: ***."
    )
    [request] = chat_server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_an_explicit_key_wins_over_openai_api_key(chat_server: ChatServer) -> None:
    call(ask(chat_server, prompt="x"), Settings(openai_api_key="sk-from-environment"))
    assert chat_server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_ollama_needs_no_key(chat_server: ChatServer) -> None:
    chat_server.reply("llama says hi")
    params = {"base_url": chat_server.base_url + "/", "model": "llama3.1", "prompt": "hi"}
    output = call(params, Settings(openai_api_key=None))
    assert (output["text"], output["model"]) == ("llama says hi", "llama3.1")
    [request] = chat_server.requests
    assert request.headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_the_openai_api_key_setting_never_reaches_another_server(chat_server: ChatServer) -> None:
    settings = Settings(openai_api_key=KEY)
    params = {"base_url": chat_server.base_url, "model": "llama3.1", "prompt": "hi"}
    call(params, settings)
    ran = run_task("llm", params, settings=settings)
    assert ran.result.status is WorkflowStatus.COMPLETED, ran.result.error
    given = run_task(
        "llm", {**params, "api_key": "{{ secrets.LLM_KEY }}"}, secrets={"LLM_KEY": KEY}
    )
    assert given.result.status is WorkflowStatus.COMPLETED, given.result.error
    sent = [r.headers["authorization"] for r in chat_server.requests]
    assert sent == [f"Bearer {PLACEHOLDER_API_KEY}"] * 2 + [f"Bearer {KEY}"]


@pytest.mark.parametrize(
    ("base_url", "gets_the_setting"),
    [
        (None, True),
        ("https://api.openai.com/v1", True),
        ("https://eu.api.openai.com/v1", True),
        ("https://my-resource.openai.azure.com/openai/v1", True),
        ("http://localhost:11434/v1", False),
        ("https://api.openai.com.example.net/v1", False),
        ("https://notopenai.com/v1", False),
        ("https://openai.azure.com.evil.example/v1", False),
    ],
)
def test_the_openai_api_key_setting_is_for_openai_hosts_only(
    base_url: str | None, gets_the_setting: bool
) -> None:
    params = {"model": "m", "prompt": "x", **({"base_url": base_url} if base_url else {})}
    api_key = _Call.from_params(params, "sk-from-environment").api_key
    assert api_key == ("sk-from-environment" if gets_the_setting else PLACEHOLDER_API_KEY)


@pytest.mark.parametrize("base_url", [None, "https://api.openai.com/v1"])
def test_openai_without_a_key_is_a_clear_error(base_url: str | None) -> None:
    params = {"model": "gpt-4o-mini", "prompt": "x", "api_key": ""}
    if base_url:
        params["base_url"] = base_url
    assert fails(params, Settings(openai_api_key=None)) == (
        "no API key for https://api.openai.com/v1: set `api_key` (normally "
        '"{{ secrets.OPENAI_API_KEY }}") or the OPENAI_API_KEY variable'
    )


# --- through the engine ----------------------------------------------------------------

PIPELINE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: invoices}
spec:
  params:
    base_url: {type: string}
  tasks:
    - id: extract
      executor: llm
      with:
        base_url: "{{ params.base_url }}"
        api_key: "{{ secrets.LLM_KEY }}"
        model: gpt-test
        prompt: "Invoice A-1, total 12.50"
        response_schema: {type: object, required: [number, total]}
    - id: again
      executor: llm
      needs: [extract]
      on_failure: continue
      with:
        base_url: "{{ params.base_url }}"
        api_key: "{{ secrets.LLM_KEY }}"
        model: gpt-test
        prompt: "Total of {{ tasks.extract.output.json.number }}?"
  output: "{{ tasks.extract.output.json }}"
"""


def test_a_pipeline_sends_the_secret_key_and_stores_it_nowhere(chat_server: ChatServer) -> None:
    chat_server.reply(
        '{"number": "A-1", "total": 12.5}',
        Reply.failure(401, f"Incorrect API key provided: {KEY}"),
    )
    document = load_text(PIPELINE)
    assert [d.format() for d in validate_document(document)] == []
    ir = compile_document(document)
    history = MemoryHistory()
    record = new_execution(
        history, ir, resolve_params(ir["params"], None, {"base_url": chat_server.base_url})
    )
    runner = Runner(history, secrets=Secrets({"LLM_KEY": KEY}), settings=Settings())
    result = asyncio.run(runner.run(record))

    assert result.status is WorkflowStatus.COMPLETED
    assert result.result == {"number": "A-1", "total": 12.5}
    assert result.tasks["again"].status is TaskStatus.FAILED
    assert [r.headers["authorization"] for r in chat_server.requests] == [f"Bearer {KEY}"] * 2
    assert chat_server.requests[1].messages[-1]["content"] == "Total of A-1?"
    stored = history.checkpoints(record.id)
    assert [(c.task_id, c.status) for c in stored] == [
        ("extract", TaskStatus.COMPLETED),
        ("again", TaskStatus.FAILED),
    ]
    assert stored[1].error is not None and "HTTP 401" in stored[1].error
    everything = repr(stored) + repr(history.get_execution(record.id)) + repr(result.as_dict())
    assert KEY not in everything


def test_flowctl_run_with_the_llm_executor(chat_server: ChatServer, tmp_path: Path) -> None:
    (tmp_path / "ask.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: ask}
            spec:
              params:
                base_url: {type: string}
                city: {type: string}
              tasks:
                - id: ask
                  executor: llm
                  with:
                    base_url: "{{ params.base_url }}"
                    model: llama3.1
                    system: Answer with JSON.
                    prompt: "Where is {{ params.city }}?"
                    response_schema: {type: object, required: [country]}
              output: {country: "{{ tasks.ask.output.json.country }}"}
            """
        )
    )
    chat_server.reply('{"country": "France"}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCTL_", "OPENAI_"))}
    env["FLOWCTL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'history.db'}"
    params = ["-p", f"base_url={chat_server.base_url}", "-p", "city=Paris"]
    done = subprocess.run(
        [str(FLOWCTL), "run", "ask.yaml", "--output", "json", *params],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "COMPLETED"
    assert document["result"] == {"country": "France"}
    assert document["tasks"]["ask"]["output"]["json"] == {"country": "France"}
    assert document["tasks"]["ask"]["output"]["finish_reason"] == "stop"
    [request] = chat_server.requests
    assert request.messages[-1] == {"role": "user", "content": "Where is Paris?"}
