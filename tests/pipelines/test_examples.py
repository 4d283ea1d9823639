"""The example pipelines in pipelines/ run end to end, through `flowctl run`, on real parts:
Tesseract, SQLite, and local HTTP servers standing in for the LLM and the company APIs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from fixtures.invoices import Invoice, draw
from servers.chat_completions import ChatServer, Reply, chat_server
from servers.http_echo import EchoServer, Recorded, http_server
from servers.http_echo import Reply as HttpReply

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"
FLOWCTL = str(Path(sys.executable).parent / "flowctl")

__all__ = ["chat_server", "http_server"]  # fixtures used below


def flowctl_run(
    pipeline: str, *params: str, cwd: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    command = [FLOWCTL, "run", str(PIPELINES / pipeline), "--output", "json"]
    for param in params:
        command += ["-p", param]
    environment = {
        "PATH": os.environ["PATH"],
        "FLOWCTL_DATABASE_URL": f"sqlite:///{cwd / 'history.db'}",
        **(env or {}),
    }
    done = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_offline_demo_reads_checks_and_stores_the_sample_invoice(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'warehouse.db'}"
    first = flowctl_run("offline-invoice.yaml", f"database={database}", cwd=tmp_path)
    assert first["status"] == "COMPLETED"
    assert first["result"]["invoice"] | {"confidence": None} == {
        "number": "INV-1001",
        "date": "2026-11-02",
        "total": 46.0,
        "confidence": None,
    }
    assert first["result"]["valid"] is True
    assert first["result"]["stored"] == {"invoices": 1, "amount": 46.0}
    assert {task["status"] for task in first["tasks"].values()} == {"COMPLETED"}

    again = flowctl_run("offline-invoice.yaml", f"database={database}", cwd=tmp_path)
    assert again["result"]["stored"] == {"invoices": 1, "amount": 46.0}  # an upsert, not a copy


def test_the_offline_demo_reads_another_invoice_and_refuses_a_bad_one(tmp_path: Path) -> None:
    invoice = Invoice(number="INV-2417", date="2026-10-30", lines=(("Paper", 4, 3.25),))
    draw(invoice, tmp_path / "scan.png")
    database = f"sqlite:///{tmp_path / 'warehouse.db'}"
    result = flowctl_run(
        "offline-invoice.yaml", "document=scan.png", f"database={database}", cwd=tmp_path
    )
    assert result["result"]["invoice"]["number"] == "INV-2417"
    assert result["result"]["invoice"]["total"] == 13.0

    bad = Invoice(number="X-99", date="2026-10-30")  # fails the number pattern
    draw(bad, tmp_path / "bad.png")
    result = flowctl_run(
        "offline-invoice.yaml", "document=bad.png", f"database={database}", cwd=tmp_path
    )
    assert result["status"] == "COMPLETED"
    assert result["result"]["valid"] is False
    assert result["tasks"]["store"]["status"] == "SKIPPED"
    rows = sqlite3.connect(tmp_path / "warehouse.db").execute("select number from invoices")
    assert [row[0] for row in rows] == ["INV-2417"]


def test_invoice_extraction_runs_ocr_llm_validate_and_sql(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    invoice = Invoice(number="INV-3302", date="2026-09-14", lines=(("Ink", 2, 19.99),))
    draw(invoice, tmp_path / "invoice.png")
    fields = {"number": invoice.number, "date": invoice.date, "total": invoice.total}
    chat_server.reply(Reply(content=json.dumps(fields)))
    warehouse = tmp_path / "warehouse.db"

    result = flowctl_run(
        "invoice-extraction.yaml",
        f"document={tmp_path / 'invoice.png'}",
        f"llm_base_url={chat_server.base_url}",
        "model=stand-in-model",
        cwd=tmp_path,
        env={
            "FLOWCTL_SECRET_OPENAI_API_KEY": "sk-test-key-1234",
            "FLOWCTL_SECRET_WAREHOUSE_URL": f"sqlite:///{warehouse}",
        },
    )

    assert result["status"] == "COMPLETED", result
    assert result["result"]["invoice"] == fields
    assert result["result"]["valid"] is True
    (request,) = chat_server.requests
    prompt = request.messages[-1]["content"]
    assert "INV-3302" in prompt and "Total: 39.98" in prompt  # the OCR text reached the LLM
    assert request.headers["authorization"] == "Bearer sk-test-key-1234"
    assert request.body["model"] == "stand-in-model"
    rows = sqlite3.connect(warehouse).execute("select number, date, total from invoices")
    assert list(rows) == [("INV-3302", "2026-09-14", 39.98)]
    assert "sk-test-key-1234" not in json.dumps(result)


def test_http_enrichment_looks_up_and_enriches_every_company(
    tmp_path: Path, http_server: EchoServer
) -> None:
    companies = {"c-1": ("Acme", "NL"), "c-2": ("Globex", "US")}
    for company_id, (name, country) in companies.items():
        http_server.route(
            f"/companies/{company_id}", HttpReply.of_json({"name": name, "country": country})
        )

    def enrich(request: Recorded) -> HttpReply:
        body = json.loads(request.body)
        return HttpReply.of_json({**body, "employees": len(body["name"]) * 100})

    http_server.route("/enrich", enrich)
    result = flowctl_run(
        "http-enrichment.yaml",
        f"api_base={http_server.url}",
        'company_ids=["c-1", "c-2"]',
        cwd=tmp_path,
        env={"FLOWCTL_SECRET_REGISTRY_TOKEN": "registry-token-5678"},
    )
    assert result["status"] == "COMPLETED", result
    assert result["result"]["companies"] == [
        {"name": "Acme", "country": "NL", "employees": 400},
        {"name": "Globex", "country": "US", "employees": 600},
    ]
    assert result["result"]["valid"] is True
    lookups = [r for r in http_server.requests if r.path.startswith("/companies/")]
    assert {r.headers["authorization"] for r in lookups} == {"Bearer registry-token-5678"}
