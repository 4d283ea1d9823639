"""The `validate` executor: inline schemas, schema files under the allowed roots, Pydantic
models, `fail_on_invalid`; and whole pipelines (transform → validate → sql) run through
the local Runner and through `flowctl run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from executors.one_task import run_task
from flowctl.config import Settings
from flowctl.engine.executors.base import TaskContext, executor_class
from flowctl.engine.executors.validate import ValidateExecutor
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.params import resolve_params
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import MemoryHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError

FLOWCTL = Path(sys.executable).parent / "flowctl"

INVOICE = {
    "type": "object",
    "required": ["number", "total"],
    "properties": {
        "number": {"type": "string", "pattern": "^INV-[0-9]+$"},
        "total": {"type": "number", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            },
        },
    },
}


def run(
    params: dict[str, Any],
    pipeline_dir: Path | None = None,
    settings: Settings | None = None,
) -> Any:
    async def go() -> Any:
        executor = ValidateExecutor(settings or Settings())
        try:
            return await executor.run(TaskContext("e", "check", 1, pipeline_dir), params)
        finally:
            await executor.aclose()

    return asyncio.run(go())


def test_the_registry_finds_the_executor() -> None:
    assert executor_class("validate") is ValidateExecutor


def test_valid_data_against_an_inline_schema() -> None:
    data = {"number": "INV-1", "total": 12.5, "lines": [{"sku": "a", "qty": 2}]}
    assert run({"data": data, "schema": INVOICE}) == {"valid": True, "errors": [], "data": data}


def test_invalid_data_lists_every_error_with_its_path() -> None:
    data = {
        "number": "1",
        "total": -3,
        "email": "not an address",
        "lines": [{"sku": "a"}, {"qty": "two"}],
    }
    result = run({"data": data, "schema": INVOICE})
    assert result["valid"] is False
    assert result["data"] == data
    assert [(e["path"], e["message"]) for e in result["errors"]] == [
        ("$.email", "'not an address' is not a 'email'"),
        ("$.lines[1]", "'sku' is a required property"),
        ("$.lines[1].qty", "'two' is not of type 'integer'"),
        ("$.number", "'1' does not match '^INV-[0-9]+$'"),
        ("$.total", "-3 is less than the minimum of 0"),
    ]


def test_a_schema_given_as_json_text() -> None:
    result = run({"data": {"a": 1}, "schema": json.dumps({"required": ["b"]})})
    assert result["errors"] == [{"path": "$", "message": "'b' is a required property"}]


def test_an_invalid_schema_is_an_error() -> None:
    with pytest.raises(ExecutorError, match=r"not a valid JSON Schema at \$.type"):
        run({"data": 1, "schema": {"type": "integr"}})


def test_fail_on_invalid_fails_with_the_errors() -> None:
    with pytest.raises(ExecutorError) as failure:
        run({"data": {"total": "x"}, "schema": INVOICE, "fail_on_invalid": True})
    assert str(failure.value) == (
        "data is invalid (2 errors): $: 'number' is a required property; "
        "$.total: 'x' is not of type 'number'"
    )
    valid = run(
        {"data": {"number": "INV-2", "total": 1}, "schema": INVOICE, "fail_on_invalid": True}
    )
    assert valid["valid"] is True


def test_rendered_inputs_are_checked() -> None:
    with_ = {"data": 1, "schema": {}, "fail_on_invalid": "{{ params.strict }}"}
    ran = run_task("validate", with_, params={"strict": "yes"})
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error == "task 'task': with.fail_on_invalid: is not of type 'boolean'"
    assert ran.attempts == [(1, TaskStatus.FAILED)]


# --- schema files ----------------------------------------------------------------------


def test_a_schema_file_under_the_pipeline_folder(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    (pipelines / "schemas").mkdir(parents=True)
    (pipelines / "schemas" / "invoice.json").write_text(json.dumps(INVOICE))
    (pipelines / "schemas" / "invoice.yaml").write_text("type: object\nrequired: [number]\n")
    good = {"number": "INV-1", "total": 1}
    ok = run({"data": good, "schema": "schemas/invoice.json"}, pipelines)
    assert ok["valid"] is True
    bad = run({"data": {"total": 1}, "schema": "schemas/./../schemas/invoice.yaml"}, pipelines)
    assert bad["errors"] == [{"path": "$", "message": "'number' is a required property"}]


def test_an_edited_schema_file_is_read_again(tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "integer"}')
    assert run({"data": 1, "schema": "s.json"}, tmp_path)["valid"] is True
    assert run({"data": 1, "schema": "s.json"}, tmp_path)["valid"] is True  # cached
    schema.write_text('{"type": "string", "minLength": 1}')
    os.utime(schema, ns=(1, 1))  # another mtime, whatever the clock's resolution
    assert run({"data": 1, "schema": "s.json"}, tmp_path)["valid"] is False


def test_a_schema_path_that_escapes_the_roots_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines, elsewhere = tmp_path / "pipelines", tmp_path / "elsewhere"
    pipelines.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.json").write_text("{}")
    (pipelines / "link.json").symlink_to(elsewhere / "secret.json")
    monkeypatch.chdir(pipelines)
    for name in ("../elsewhere/secret.json", str(elsewhere / "secret.json"), "link.json"):
        with pytest.raises(ExecutorError, match="outside the allowed folders"):
            run({"data": {}, "schema": name}, pipelines)
    with pytest.raises(ExecutorError, match=r"'missing\.json' does not exist \(looked in"):
        run({"data": {}, "schema": "missing.json"}, pipelines)
    # A folder named in FLOWCTL_FILE_ROOTS is allowed.
    settings = Settings(file_roots=(elsewhere,))
    assert run({"data": {}, "schema": str(elsewhere / "secret.json")}, pipelines, settings)["valid"]


def test_a_broken_schema_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ExecutorError, match=r"broken\.json cannot be parsed"):
        run({"data": {}, "schema": "broken.json"}, tmp_path)


def test_a_schema_file_that_is_not_utf8_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "latin1.json").write_bytes('{"type": "object", "title": "Café"}'.encode("latin-1"))
    with pytest.raises(ExecutorError) as raised:
        run({"data": {}, "schema": "latin1.json"}, tmp_path)
    assert str(raised.value) == (
        f"schema file {tmp_path.resolve() / 'latin1.json'} is not UTF-8 text "
        "(byte 32: b'\\xe9'); save it as UTF-8"
    )
    assert raised.value.retryable is False
    ran = run_task("validate", {"data": {}, "schema": "latin1.json"}, pipeline_dir=tmp_path)
    assert ran.error is not None and ran.error.startswith("schema file ")
    assert ran.attempts == [(1, TaskStatus.FAILED)]


# --- Pydantic models -------------------------------------------------------------------

MODELS = """\
from datetime import date

from pydantic import BaseModel


class Line(BaseModel):
    sku: str
    qty: int = 1


class Invoice(BaseModel):
    number: str
    total: float
    issued: date
    lines: list[Line] = []


NOT_A_MODEL = 42
"""


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "modelpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "invoices.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "modelpkg.invoices"


def test_a_model_coerces_the_data(models: str) -> None:
    data = {"number": "7", "total": "12.50", "issued": "2024-03-01", "lines": [{"sku": "a"}]}
    result = run({"data": data, "model": f"{models}:Invoice"})
    assert result == {
        "valid": True,
        "errors": [],
        "data": {
            "number": "7",
            "total": 12.5,
            "issued": "2024-03-01",
            "lines": [{"sku": "a", "qty": 1}],
        },
    }


def test_a_model_reports_errors_with_paths(models: str) -> None:
    data = {"number": "7", "total": "lots", "lines": [{"sku": "a", "qty": "x"}]}
    result = run({"data": data, "model": f"{models}:Invoice"})
    assert result["valid"] is False
    assert result["data"] == data
    paths = [e["path"] for e in result["errors"]]
    assert paths == ["$.total", "$.issued", "$.lines[0].qty"]
    assert result["errors"][1]["message"] == "Field required"
    with pytest.raises(ExecutorError, match=r"data is invalid \(3 errors\): \$.total"):
        run({"data": data, "model": f"{models}:Invoice", "fail_on_invalid": True})


def test_a_model_that_cannot_be_found(models: str) -> None:
    with pytest.raises(ExecutorError, match=r"cannot import model 'nowhere\.mod:X'"):
        run({"data": {}, "model": "nowhere.mod:X"})
    with pytest.raises(ExecutorError, match=r"must name a Pydantic model.*found int"):
        run({"data": {}, "model": f"{models}:NOT_A_MODEL"})
    with pytest.raises(ExecutorError, match="found nothing"):
        run({"data": {}, "model": f"{models}:Missing"})


# --- in a pipeline: what is retried ------------------------------------------------------


@pytest.mark.parametrize(
    ("with_", "message"),
    [
        (
            {"data": {"total": "x"}, "schema": INVOICE, "fail_on_invalid": True},
            "data is invalid (2 errors)",
        ),
        ({"data": 1, "schema": {"type": "integr"}}, "schema is not a valid JSON Schema"),
        ({"data": 1, "schema": "../elsewhere.json"}, "schema file '../elsewhere.json' is outside"),
        ({"data": 1, "schema": "missing.json"}, "schema file 'missing.json' does not exist"),
        ({"data": 1, "model": "nowhere.mod:X"}, "cannot import model 'nowhere.mod:X'"),
    ],
    ids=["fail-on-invalid", "bad-schema", "outside", "missing", "unknown-model"],
)
def test_an_error_another_attempt_cannot_fix_is_not_retried(
    tmp_path: Path, with_: dict[str, Any], message: str
) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (tmp_path / "elsewhere.json").write_text("{}")
    ran = run_task("validate", with_, retries=3, pipeline_dir=pipelines)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and ran.error.startswith(message)
    assert ran.attempts == [(1, TaskStatus.FAILED)]


CATALOGUE = """\
from pydantic import BaseModel, field_validator

LOOKUPS: list[str] = []


class Line(BaseModel):
    sku: str

    @field_validator("sku")
    @classmethod
    def known(cls, sku: str) -> str:
        LOOKUPS.append(sku)
        if len(LOOKUPS) == 1:
            raise ConnectionError("the catalogue did not answer")
        return sku
"""


def test_an_error_raised_by_a_model_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model may look things up: anything but invalid data may work the next time."""
    module = f"catalogue_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(CATALOGUE)
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = run_task("validate", {"data": {"sku": "a"}, "model": f"{module}:Line"}, retries=1)
    assert ran.result.status is WorkflowStatus.COMPLETED, ran.result.error
    assert ran.attempts == [(1, TaskStatus.FAILED), (2, TaskStatus.COMPLETED)]
    assert ran.checkpoints[0].error == "the catalogue did not answer"
    assert ran.result.tasks["task"].output == {"valid": True, "errors": [], "data": {"sku": "a"}}


# --- whole pipelines -------------------------------------------------------------------

PIPELINE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: store-invoices}
spec:
  params:
    invoices: {type: array}
  tasks:
    - id: shape
      executor: transform
      with:
        value: "{{ params.invoices | selectattr('total') | list }}"
    - id: check
      executor: validate
      with:
        data: "{{ tasks.shape.output }}"
        schema: schemas/invoices.json
        fail_on_invalid: true
    - id: store
      executor: sql
      when: "{{ tasks.check.output.valid }}"
      with:
        connection: warehouse
        statements:
          - statement: >-
              create table if not exists invoices
              (number text primary key, total numeric not null)
          - statement: insert into invoices (number, total) values (:number, :total)
            parameters: "{{ tasks.check.output.data }}"
    - id: report
      executor: sql
      needs: [store]
      with:
        connection: warehouse
        statement: >-
          select count(*) as n, sum(total) as total from invoices where total >= :at_least
        parameters: {at_least: 0}
        fetch: one
  output: "{{ tasks.report.output.rows[0] }}"
"""

SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["number", "total"],
        "properties": {"number": {"type": "string"}, "total": {"type": "number"}},
    },
}

INVOICES = [
    {"number": "INV-1", "total": 10.25},
    {"number": "INV-2", "total": 0},
    {"number": "INV-3", "total": 5},
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    (folder / "schemas").mkdir(parents=True)
    (folder / "schemas" / "invoices.json").write_text(json.dumps(SCHEMA))
    (folder / "store.yaml").write_text(PIPELINE)
    return folder


def test_a_pipeline_validates_then_stores_then_reads(project: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    document = load_text(PIPELINE)
    assert [d.format() for d in validate_document(document)] == []
    ir = compile_document(document)
    history = MemoryHistory()
    record = new_execution(history, ir, resolve_params(ir["params"], {"invoices": INVOICES}, {}))
    runner = Runner(
        history, pipeline_dir=project, settings=Settings(connections={"WAREHOUSE": url})
    )
    result = asyncio.run(runner.run(record))
    assert result.error is None
    assert result.status is WorkflowStatus.COMPLETED
    assert {k: s.status for k, s in result.tasks.items()} == dict.fromkeys(
        ["shape", "check", "store", "report"], TaskStatus.COMPLETED
    )
    assert result.result == {"n": 2, "total": 15.25}  # INV-2 (total 0) was filtered out
    engine = create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(text("select number from invoices order by number")).all()
    engine.dispose()
    assert [row.number for row in stored] == ["INV-1", "INV-3"]


def test_an_invalid_input_stops_the_pipeline_before_sql(project: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    ir = compile_document(load_text(PIPELINE))
    history = MemoryHistory()
    bad = [{"number": 1, "total": 3}]
    record = new_execution(history, ir, resolve_params(ir["params"], {"invoices": bad}, {}))
    settings = Settings(connections={"WAREHOUSE": url})
    result = asyncio.run(Runner(history, pipeline_dir=project, settings=settings).run(record))
    assert result.status is WorkflowStatus.FAILED
    assert result.tasks["check"].error == (
        "data is invalid (1 error): $[0].number: 1 is not of type 'string'"
    )
    assert result.tasks["store"].status is TaskStatus.UPSTREAM_FAILED
    assert not (tmp_path / "warehouse.db").exists()


def test_flowctl_run_with_a_connection_from_the_environment(project: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"invoices": INVOICES}))
    environment = {
        **os.environ,
        "FLOWCTL_CONN_WAREHOUSE": url,
        "FLOWCTL_DATABASE_URL": f"sqlite:///{tmp_path / 'history.db'}",
    }
    done = subprocess.run(
        [FLOWCTL, "run", project / "store.yaml", "--params-file", params, "--output", "json"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert result["status"] == "COMPLETED"
    assert result["result"] == {"n": 2, "total": 15.25}
    assert result["tasks"]["check"]["output"]["valid"] is True


def test_flowctl_run_names_an_unknown_connection(project: Path, tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCTL_CONN_")}
    environment["FLOWCTL_CONN_OTHER"] = "sqlite:///other.db"
    invoices = json.dumps([{"number": "INV-9", "total": 1}])
    done = subprocess.run(
        [FLOWCTL, "run", project / "store.yaml", "--no-history", "-p", f"invoices={invoices}"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr + done.stdout
    assert "unknown connection 'warehouse': set FLOWCTL_CONN_WAREHOUSE" in done.stdout
