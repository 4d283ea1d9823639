"""The `ocr` executor against the real Tesseract binary, on images drawn by the tests.

Every image is black text in Pillow's scalable default font on white, which Tesseract
reads reliably; each test looks for distinctive words, case- and space-insensitively.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytesseract
import pytest
from PIL import Image, ImageDraw, ImageFont

from executors.one_task import run_task
from flowctl.config import Settings
from flowctl.engine.executors.base import TaskContext, executor_class
from flowctl.engine.executors.ocr import MAX_BYTES, OcrExecutor
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.params import resolve_params
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import MemoryHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError

FLOWCTL = Path(sys.executable).parent / "flowctl"
FIRST = "quokka harbor 4721"
SECOND = "pelican meadow 9358"


def page(text: str) -> Image.Image:
    image = Image.new("L", (1000, 160), 255)
    ImageDraw.Draw(image).text((40, 50), text, font=ImageFont.load_default(size=48), fill=0)
    return image


def encoded(image: Image.Image, kind: str, *more: Image.Image) -> bytes:
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    elif more:
        image.save(buffer, format=kind, save_all=True, append_images=list(more), resolution=300)
    else:
        image.save(buffer, format=kind, dpi=(300, 300))
    return buffer.getvalue()


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pipeline's folder, also the working directory: the only allowed root."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def ocr(
    root: Path,
    source: Any,
    settings: Settings | None = None,
    executor: type[OcrExecutor] = OcrExecutor,
    **options: Any,
) -> dict[str, Any]:
    ctx = TaskContext("execution", "read", 1, pipeline_dir=root)
    output = asyncio.run(executor(settings or Settings()).run(ctx, {"source": source, **options}))
    json.dumps(output)  # what the history stores
    return output


def failure(root: Path, source: Any, **options: Any) -> str:
    with pytest.raises(ExecutorError) as caught:
        ocr(root, source, **options)
    return str(caught.value)


# -- formats ----------------------------------------------------------------------------


def test_the_registry_finds_the_executor() -> None:
    assert executor_class("ocr") is OcrExecutor


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF"])
def test_reads_an_image_file(root: Path, kind: str) -> None:
    (root / f"scan.{kind.lower()}").write_bytes(encoded(page(FIRST), kind))
    output = ocr(root, f"scan.{kind.lower()}")
    assert FIRST in normalized(output["text"])
    assert [p["page"] for p in output["pages"]] == [1]
    assert FIRST in normalized(output["pages"][0]["text"])
    assert isinstance(output["confidence"], float)
    assert 50 < output["confidence"] <= 100
    assert output["confidence"] == output["pages"][0]["confidence"]
    assert output["language"] == "eng"


def test_every_frame_of_a_tiff_is_a_page(root: Path) -> None:
    (root / "two.tiff").write_bytes(encoded(page(FIRST), "TIFF", page(SECOND)))
    output = ocr(root, "two.tiff")
    assert [p["page"] for p in output["pages"]] == [1, 2]
    assert FIRST in normalized(output["pages"][0]["text"])
    assert SECOND in normalized(output["pages"][1]["text"])


def test_reads_every_page_of_a_pdf_or_the_chosen_ones(root: Path) -> None:
    (root / "two.pdf").write_bytes(encoded(page(FIRST), "PDF", page(SECOND)))
    everything = ocr(root, "two.pdf", psm=6)
    assert [p["page"] for p in everything["pages"]] == [1, 2]
    first, second = (normalized(p["text"]) for p in everything["pages"])
    assert FIRST in first and "pelican" not in first
    assert SECOND in second and "quokka" not in second
    assert normalized(everything["text"]).index(FIRST) < normalized(everything["text"]).index(
        SECOND
    )
    confidences = [p["confidence"] for p in everything["pages"]]
    assert all(0 <= c <= 100 for c in [*confidences, everything["confidence"]])
    assert min(confidences) <= everything["confidence"] <= max(confidences)

    chosen = ocr(root, "two.pdf", pages=[2])
    assert [p["page"] for p in chosen["pages"]] == [2]
    assert SECOND in normalized(chosen["text"])
    assert "quokka" not in normalized(chosen["text"])

    assert failure(root, "two.pdf", pages=[2, 3]) == "source 'two.pdf' has 2 pages; no page 3"


def test_a_blank_page_has_no_text_and_zero_confidence(root: Path) -> None:
    (root / "blank.png").write_bytes(encoded(Image.new("L", (600, 300), 255), "PNG"))
    output = ocr(root, "blank.png")
    assert output["text"] == ""
    assert output["pages"] == [{"page": 1, "text": "", "confidence": 0.0}]
    assert output["confidence"] == 0.0


# -- data from upstream tasks ----------------------------------------------------------


def _sources(png: bytes) -> dict[str, Any]:
    text = base64.b64encode(png).decode()
    return {
        "http-output": {"status": 200, "base64": text},
        "base64": text,
        "base64-wrapped": "\n".join(text[i : i + 76] for i in range(0, len(text), 76)),
        "data-uri": f"data:image/png;base64,{text}",
        "bytes": png,
    }


@pytest.mark.parametrize("form", list(_sources(b"")))
def test_reads_data_from_an_upstream_task(root: Path, form: str) -> None:
    source = _sources(encoded(page(FIRST), "PNG"))[form]
    assert FIRST in normalized(ocr(root, source)["text"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"body": "x"}, "needs a base64 string under `base64`"),
        ({"base64": "%%%%"}, "source `base64` is not valid base64"),
        (base64.b64encode(b"GIF89a" + bytes(300)).decode(), "looks like base64 but is not"),
        ("data:image/png;base64,***", "is not valid base64"),
        (b"", "is empty"),
        (b"plain words, not an image", "is not a PNG, JPEG, TIFF or PDF file"),
        (42, "got int"),
        ("  ", "got an empty string"),
    ],
)
def test_refuses_bad_data(root: Path, source: Any, message: str) -> None:
    assert message in failure(root, source)


# -- files and the allowed roots -------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside.png"
    path.write_bytes(encoded(page(FIRST), "PNG"))
    return path


def test_refuses_paths_that_escape_the_allowed_roots(root: Path, outside: Path) -> None:
    (root / "link.png").symlink_to(outside)
    (root / "sub").mkdir()
    for path in ["../outside.png", "sub/../../outside.png", str(outside), "link.png"]:
        message = failure(root, path)
        assert message.startswith(f"source {path!r} is outside the allowed folders ({root})")
        assert "FLOWCTL_FILE_ROOTS" in message


def test_file_roots_allow_more_folders(root: Path, outside: Path) -> None:
    (root / "link.png").symlink_to(outside)
    settings = Settings.from_env({"FLOWCTL_FILE_ROOTS": str(outside.parent)})
    assert FIRST in normalized(ocr(root, "link.png", settings)["text"])


def test_a_file_named_like_base64_is_read_from_disk(root: Path) -> None:
    """`scans/invoice2024` is all base64 letters, 16 and more of them: it is still a path."""
    assert failure(root, "scans/invoice2024") == (
        f"source 'scans/invoice2024' does not exist (looked in {root})"
    )
    (root / "scans").mkdir()
    (root / "scans" / "invoice2024").write_bytes(encoded(page(FIRST), "PNG"))
    assert FIRST in normalized(ocr(root, "scans/invoice2024")["text"])
    (root / "scans" / "invoiceScan2024A").write_bytes(encoded(page(SECOND), "PNG"))
    assert SECOND in normalized(ocr(root, "scans/invoiceScan2024A")["text"])  # decodes too


def test_missing_and_unreadable_files(root: Path) -> None:
    assert failure(root, "missing.png") == (
        f"source 'missing.png' does not exist (looked in {root})"
    )
    (root / "folder.png").mkdir()
    assert failure(root, "folder.png") == "source 'folder.png' is not a regular file"
    (root / "notes.txt").write_text("plain words, not an image", encoding="utf-8")
    assert failure(root, "notes.txt") == "source 'notes.txt' is not a PNG, JPEG, TIFF or PDF file"
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a PDF")
    assert failure(root, "broken.pdf").startswith("cannot read the PDF source 'broken.pdf': ")
    (root / "cut.png").write_bytes(encoded(page(FIRST), "PNG")[:200])
    assert failure(root, "cut.png").startswith("cannot read source 'cut.png': ")
    if os.geteuid() != 0:  # root reads anything
        (root / "secret.png").write_bytes(encoded(page(FIRST), "PNG"))
        (root / "secret.png").chmod(0)
        assert failure(root, "secret.png") == "cannot read source 'secret.png': Permission denied"


# -- limits and options ----------------------------------------------------------------


def test_refuses_sources_over_the_size_limit(root: Path) -> None:
    with (root / "huge.png").open("wb") as file:
        file.truncate(MAX_BYTES + 1)  # sparse: costs no disk
    message = failure(root, "huge.png")
    assert message == (
        f"source 'huge.png' is {MAX_BYTES + 1:,} bytes, more than the limit of {MAX_BYTES:,} bytes"
    )
    assert "more than the limit" in failure(root, {"base64": "A" * (MAX_BYTES * 4 // 3 + 8)})


def test_refuses_more_pages_than_the_limit(root: Path) -> None:
    class OnePage(OcrExecutor):
        max_pages = 1

    (root / "two.pdf").write_bytes(encoded(page(FIRST), "PDF", page(SECOND)))
    with pytest.raises(ExecutorError, match="more than the limit of 1 read by one task"):
        ocr(root, "two.pdf", executor=OnePage)
    assert [p["page"] for p in ocr(root, "two.pdf", executor=OnePage, pages=[1])["pages"]] == [1]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lang", "eng; rm", "with.lang: does not match "),
        ("psm", 14, "with.psm: 14 is greater than the maximum of 13"),
        ("psm", "6 --tessdata-dir /tmp", "with.psm: is not of type"),
        ("pages", [0], "with.pages[0]: 0 is less than the minimum of 1"),
        ("pages", 2, "with.pages: 2 is not of type 'array'"),
    ],
)
def test_refuses_bad_options_before_reading(
    root: Path, option: str, value: Any, message: str
) -> None:
    (root / "scan.png").write_bytes(encoded(page(FIRST), "PNG"))
    with_ = {"source": "scan.png", option: "{{ params.value }}"}
    ran = run_task("ocr", with_, params={"value": value}, pipeline_dir=root)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and ran.error.startswith(f"task 'task': {message}")
    assert ran.attempts == [(1, TaskStatus.FAILED)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lang": "eng\n"}, "lang must look like 'eng' or 'eng+deu'"),  # `$` allows a newline
        ({"lang": "eng; rm"}, "lang must look like 'eng' or 'eng+deu'"),
        ({"psm": "6 --tessdata-dir /tmp"}, "psm must be an integer from 0 to 13"),
    ],
)
def test_the_command_line_options_are_checked_by_the_executor_too(
    root: Path, options: dict[str, Any], message: str
) -> None:
    """`lang` and `psm` reach Tesseract's command line: checked again where they are used."""
    assert message in failure(root, "scan.png", **options)


def test_a_missing_language_pack_says_what_to_install(root: Path) -> None:
    message = failure(root, "scan.png", lang="eng+zzz")
    assert message.startswith("Tesseract has no language data for 'zzz' (installed: eng")
    assert message.endswith("install it with `apt-get install tesseract-ocr-zzz`")


def test_a_missing_tesseract_says_how_to_install_it(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    message = failure(root, "scan.png")
    assert message.startswith("tesseract is not installed or not on PATH")
    assert "apt-get install tesseract-ocr tesseract-ocr-eng" in message


# -- in pipelines ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.png", "source 'missing.png' does not exist"),
        ("../outside.png", "source '../outside.png' is outside the allowed folders"),
        ("notes.txt", "source 'notes.txt' is not a PNG, JPEG, TIFF or PDF file"),
    ],
)
def test_an_error_another_attempt_cannot_fix_is_not_retried(
    root: Path, source: str, message: str
) -> None:
    (root / "notes.txt").write_text("plain words, not an image", encoding="utf-8")
    ran = run_task("ocr", {"source": source}, retries=3, pipeline_dir=root)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and ran.error.startswith(message)
    assert ran.attempts == [(1, TaskStatus.FAILED)]


def test_a_missing_language_pack_is_not_retried(root: Path) -> None:
    (root / "scan.png").write_bytes(encoded(page(FIRST), "PNG"))
    ran = run_task("ocr", {"source": "scan.png", "lang": "zzz"}, retries=3, pipeline_dir=root)
    assert ran.error is not None and ran.error.startswith("Tesseract has no language data")
    assert ran.attempts == [(1, TaskStatus.FAILED)]


def test_a_failed_tesseract_run_is_retried(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "scan.png").write_bytes(encoded(page(FIRST), "PNG"))
    real = pytesseract.image_to_data
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise pytesseract.TesseractError(-9, "killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pytesseract, "image_to_data", flaky)
    ran = run_task("ocr", {"source": "scan.png"}, retries=1, pipeline_dir=root)
    assert ran.result.status is WorkflowStatus.COMPLETED, ran.result.error
    assert ran.attempts == [(1, TaskStatus.FAILED), (2, TaskStatus.COMPLETED)]
    assert ran.checkpoints[0].error == "tesseract failed on page 1: killed"
    assert FIRST in normalized(ran.result.tasks["task"].output["text"])


PIPELINE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: read-scan}
spec:
  params:
    document: {type: string}
  defaults: {retries: 0}
  tasks:
    - id: read
      executor: ocr
      with: {source: "{{ params.document }}", lang: eng, psm: 6}
    - id: shout
      executor: transform
      with:
        value:
          words: "{{ tasks.read.output.text | upper }}"
          pages: "{{ tasks.read.output.pages | length }}"
          sure: "{{ tasks.read.output.confidence > 50 }}"
  output: "{{ tasks.shout.output }}"
"""


def test_runs_in_a_pipeline(root: Path) -> None:
    (root / "scans").mkdir()
    (root / "scans" / "page.png").write_bytes(encoded(page(FIRST), "PNG"))
    document = load_text(PIPELINE)
    assert [d.format() for d in validate_document(document)] == []
    ir = compile_document(document)
    history = MemoryHistory()

    def run(path: str) -> Any:
        record = new_execution(history, ir, resolve_params(ir["params"], None, {"document": path}))
        return asyncio.run(Runner(history, pipeline_dir=root).run(record))

    result = run("scans/page.png")
    assert result.status is WorkflowStatus.COMPLETED, result.error
    assert FIRST.upper() in " ".join(result.result["words"].split())
    assert result.result["pages"] == 1
    assert result.result["sure"] is True

    failed = run("../scans/page.png")
    assert failed.status is WorkflowStatus.FAILED
    assert failed.error == (
        "task 'read' failed: source '../scans/page.png' is outside the allowed folders "
        f"({root}); add its folder to FLOWCTL_FILE_ROOTS to allow it"
    )


def test_flowctl_run_reads_a_scan(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "read.yaml").write_text(PIPELINE, encoding="utf-8")
    (project / "pipelines" / "scan.tiff").write_bytes(encoded(page(SECOND), "TIFF"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCTL_")}
    command = ["run", "pipelines/read.yaml", "-p", "document=scan.tiff", "--no-history"]
    done = subprocess.run(
        [FLOWCTL, *command, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "COMPLETED"
    assert SECOND.upper() in " ".join(result["result"]["words"].split())
    read = result["tasks"]["read"]["output"]
    assert isinstance(read["confidence"], float) and 50 < read["confidence"] <= 100
    assert read["language"] == "eng"
