"""`llm`: one chat completion through the OpenAI API or any server that speaks it.

The provider is chosen by `base_url`: OpenAI (the default), Ollama
(http://localhost:11434/v1), vLLM, llama.cpp, LM Studio... With `response_schema` the
answer is requested as JSON (response_format `json_schema`, or `json_object` for the rest
of the run where the server refuses that), parsed and checked with jsonschema; an answer
that is not valid is sent back once, with the error, for a corrected one. A refusal is a
400 or 422 whose message names `response_format` or `json_schema`; any other 400 or 422
(a context too long, say) fails the task like any request another attempt would repeat.

The openai client retries 429 and 5xx answers itself, honouring Retry-After; retrying the
whole task stays the orchestrator's job, except after answers another attempt would get
again (400, 401, 403, 404, 422), which fail the task at once. The API key is sent in the
request and nowhere else: every error is scrubbed of it before it is raised. The
OPENAI_API_KEY setting is a default for OpenAI's own hosts only, so that it never reaches
another server unless a pipeline gives it as `api_key`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import jsonschema
import openai
from jsonschema.exceptions import best_match
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from flowctl.config import Settings
from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.engine.secrets import REDACTED
from flowctl.engine.spec.compile import parse_duration
from flowctl.errors import ExecutorError
from flowctl.schemas import load_schema

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Sent when no key is configured for a server that needs none (Ollama): the client wants one.
PLACEHOLDER_API_KEY = "no-key"
SCHEMA_INSTRUCTION = "Answer with one JSON value, and nothing else, that matches this JSON Schema:"
REPAIR_REQUEST = "{problem}\nAnswer again with only the corrected JSON."
_FENCED = re.compile(r"^```[a-zA-Z]*[ \t]*\n(.*?)\n?```$", re.S)
# A 400/422 naming one of these refuses `json_schema`: the run falls back to json_object.
_FORMAT_WORDS = ("response_format", "json_schema")
_MAX_QUOTED = 300  # characters of a server's message or a validation error kept in errors
# Statuses another attempt would get again: the task fails without using its retries.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
# Hosts that get the OPENAI_API_KEY setting when `api_key` is not given (and need a key).
OPENAI_HOST_SUFFIXES = (".openai.com", ".openai.azure.com")


class LlmExecutor(BaseExecutor):
    name: ClassVar[str] = "llm"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/llm")
    max_retries: ClassVar[int] = 2  # the openai client's retries of 429, 5xx and timeouts

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self._without_json_schema: set[str] = set()  # base URLs that refused json_schema

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        call = _Call.from_params(params, self.settings.openai_api_key)
        try:
            return await self._run(call)
        except ExecutorError as error:
            message = _redact(str(error), call.api_key)
            raise ExecutorError(message, retryable=error.retryable) from None
        except Exception as error:  # whatever it is, its message must not carry the key
            message = f"{type(error).__name__}: {error}"
            raise ExecutorError(_redact(message, call.api_key)) from None

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def _run(self, call: _Call) -> dict[str, Any]:
        messages = list(call.messages)
        completion = await self._complete(call, messages)
        usage = _Usage.of(completion)
        text = _text(completion)
        if call.response_schema is None:
            return _output(completion, text, None, usage)
        validator = _validator(call.response_schema)
        value, problem = _parse(text, validator)
        if problem is not None:
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": REPAIR_REQUEST.format(problem=problem)},
            ]
            completion = await self._complete(call, messages)
            usage = usage.plus(_Usage.of(completion))
            text = _text(completion)
            value, problem = _parse(text, validator)
            if problem is not None:
                raise ExecutorError(
                    f"the answer of {call.model!r} does not match response_schema, "
                    f"even after a repair attempt: {problem}"
                )
        return _output(completion, text, value, usage)

    async def _complete(self, call: _Call, messages: list[dict[str, str]]) -> ChatCompletion:
        client = self._client(call)
        try:
            if call.response_schema is None:
                return _checked(await _create(client, call, messages, None), call)
            if call.base_url not in self._without_json_schema:
                try:
                    completion = await _create(client, call, messages, _json_schema(call))
                    return _checked(completion, call)
                except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
                    if not _refuses_json_schema(error):
                        raise  # a context too long, a bad parameter: not the format's fault
                    self._without_json_schema.add(call.base_url)
            completion = await _create(client, call, messages, {"type": "json_object"})
            return _checked(completion, call)
        except (TimeoutError, openai.OpenAIError) as error:
            permanent = (
                isinstance(error, openai.APIStatusError) and error.status_code in PERMANENT_STATUSES
            )
            message = _describe(error, call, self.max_retries)
            raise ExecutorError(message, retryable=not permanent) from None
        except ValueError:  # a body that is not JSON
            raise ExecutorError(_not_a_completion(call)) from None

    def _client(self, call: _Call) -> openai.AsyncOpenAI:
        """One client per (base_url, api_key) for the run: connections are reused."""
        key = (call.base_url, call.api_key)
        client = self._clients.get(key)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=call.api_key, base_url=call.base_url, max_retries=self.max_retries
            )
            self._clients[key] = client
        return client


@dataclass(frozen=True, slots=True)
class _Call:
    """The rendered `with:` block, checked, with defaults resolved."""

    base_url: str
    api_key: str = ""
    model: str = ""
    messages: tuple[dict[str, str], ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    response_schema: dict[str, Any] | None = None
    timeout: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], default_key: str | None) -> _Call:
        """`params` has been checked against the `with:` schema by the orchestrator.

        `default_key` (the OPENAI_API_KEY setting) is used for OpenAI's hosts only.
        """
        base_url = str(params.get("base_url") or OPENAI_BASE_URL).rstrip("/")
        openai_host = _is_openai(base_url)
        api_key = str(params.get("api_key") or (default_key if openai_host else "") or "")
        if not api_key:
            if openai_host:
                raise ExecutorError(
                    f"no API key for {base_url}: set `api_key` (normally "
                    '"{{ secrets.OPENAI_API_KEY }}") or the OPENAI_API_KEY variable',
                    retryable=False,
                )
            api_key = PLACEHOLDER_API_KEY
        schema = params.get("response_schema")
        if schema is not None:
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as invalid:
                raise ExecutorError(
                    f"response_schema is not a valid JSON Schema: {_shorten(invalid.message)}",
                    retryable=False,
                ) from None
        timeout = params.get("timeout")
        return cls(
            base_url=base_url,
            api_key=api_key,
            model=params["model"],
            messages=_messages(params, schema),
            temperature=params.get("temperature"),
            max_tokens=params.get("max_tokens"),
            response_schema=schema,
            timeout=None if timeout is None else parse_duration(timeout),
        )


def _messages(params: dict[str, Any], schema: dict[str, Any] | None) -> tuple[dict[str, str], ...]:
    """system (with the schema instruction), then `messages`, then `prompt`."""
    system = params.get("system")
    if schema is not None:
        instruction = f"{SCHEMA_INSTRUCTION}\n{json.dumps(schema)}"
        system = f"{system}\n\n{instruction}" if system else instruction
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": m["role"], "content": m["content"]} for m in params.get("messages", [])]
    if "prompt" in params:
        messages.append({"role": "user", "content": params["prompt"]})
    return tuple(messages)


async def _create(
    client: openai.AsyncOpenAI,
    call: _Call,
    messages: list[dict[str, str]],
    response_format: ResponseFormat | None,
) -> ChatCompletion:
    """One chat completion; `timeout` bounds it, the client's retries included."""
    async with asyncio.timeout(call.timeout):
        return await client.chat.completions.create(
            model=call.model,
            messages=cast(list[ChatCompletionMessageParam], messages),
            temperature=openai.omit if call.temperature is None else call.temperature,
            max_tokens=openai.omit if call.max_tokens is None else call.max_tokens,
            response_format=openai.omit if response_format is None else response_format,
        )


def _json_schema(call: _Call) -> ResponseFormat:
    # strict=False: OpenAI's strict mode accepts only a subset of JSON Schema; the answer
    # is checked here against the whole schema anyway.
    assert call.response_schema is not None
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": call.response_schema, "strict": False},
    }


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _parse(text: str, validator: jsonschema.protocols.Validator) -> tuple[Any, str | None]:
    """(value, None), or (None, what is wrong with the answer)."""
    stripped = text.strip()
    fenced = _FENCED.match(stripped)  # models often wrap JSON in a ```json block
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as error:
        return None, f"The answer is not valid JSON: {error}."
    invalid = best_match(validator.iter_errors(value))
    if invalid is not None:
        return None, (
            f"The answer does not match the JSON Schema: at {invalid.json_path}: "
            f"{_shorten(invalid.message)}."
        )
    return value, None


def _checked(completion: Any, call: _Call) -> ChatCompletion:
    """The client builds its models leniently: a malformed body must not go further."""
    choices = getattr(completion, "choices", None)
    if isinstance(completion, ChatCompletion) and isinstance(choices, list) and choices:
        message = getattr(choices[0], "message", None)
        if message is not None and isinstance(getattr(message, "content", None), str | None):
            return completion
    raise ExecutorError(_not_a_completion(call))


def _not_a_completion(call: _Call) -> str:
    return f"{call.model!r} at {call.base_url} did not answer with a chat completion"


def _text(completion: ChatCompletion) -> str:
    return completion.choices[0].message.content or ""


@dataclass(frozen=True, slots=True)
class _Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def of(cls, completion: ChatCompletion) -> _Usage:
        usage = completion.usage
        if usage is None:
            return cls()
        return cls(usage.prompt_tokens, usage.completion_tokens)

    def plus(self, other: _Usage) -> _Usage:
        return _Usage(
            _add(self.prompt_tokens, other.prompt_tokens),
            _add(self.completion_tokens, other.completion_tokens),
        )


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def _output(completion: ChatCompletion, text: str, value: Any, usage: _Usage) -> dict[str, Any]:
    return {
        "text": text,
        "json": value,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        },
        "model": completion.model,
        "finish_reason": completion.choices[0].finish_reason,
    }


def _describe(error: BaseException, call: _Call, retries: int) -> str:
    """One line for the user; never the key (the caller redacts it once more anyway)."""
    where = f"{call.model!r} at {call.base_url}"
    if isinstance(error, TimeoutError) and call.timeout is not None:
        return f"{where} did not answer within {call.timeout:g}s (timeout)"
    if isinstance(error, openai.APITimeoutError):
        return f"{where} did not answer: the request timed out, {retries} retries included"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__
        return f"cannot reach {call.base_url}: {_shorten(str(cause or error))}"
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        retried = f" (after {retries} retries)" if status == 429 or status >= 500 else ""
        return f"{where} answered HTTP {status}{retried}: {_server_message(error)}"
    return f"{where}: {_shorten(str(error))}"


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        detail = body.get("error", body)
        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
            return _shorten(detail["message"])
        if isinstance(detail, str):
            return _shorten(detail)
    return _shorten(error.message)


def _refuses_json_schema(error: openai.APIStatusError) -> bool:
    """Whether a 400/422 is about `response_format` (a server without `json_schema`)."""
    said = f"{error.message} {json.dumps(error.body, default=str)}".lower()
    return any(word in said for word in _FORMAT_WORDS)


def _is_openai(base_url: str) -> bool:
    """OpenAI's own API (api.openai.com) or an Azure OpenAI resource."""
    host = urlsplit(base_url).hostname or ""
    return host == "openai.com" or host.endswith(OPENAI_HOST_SUFFIXES)


def _redact(text: str, api_key: str) -> str:
    return text.replace(api_key, REDACTED) if len(api_key) >= 3 else text


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 1] + "…"
