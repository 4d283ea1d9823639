"""`ocr`: text from images (PNG, JPEG, TIFF) and PDFs with Tesseract.

The source is a file under the allowed roots (see `flowctl.engine.files`) or data from
an upstream task: raw bytes, a base64 string, a `data:` URI, or a mapping with a
`base64` key (what the `http` executor gives for a binary body). A string that names a
file under the allowed roots is that file, even when it is also valid base64
(`scans/invoice2024`); otherwise it is data only if it decodes to the signature of a PNG,
JPEG, TIFF or PDF, and a path that does not exist otherwise. PDF pages are rendered
with pdfium at 300 dpi; every frame of a TIFF is a page. Each page is one Tesseract
run through pytesseract, in a thread, so the event loop never waits on it.

The output is plain JSON: `text`, `pages` (`page`, `text`, `confidence`), `confidence`
(the mean word confidence, 0-100) and `language`.

What another attempt cannot fix fails the task at once (`retryable=False`): a path outside
the allowed roots or missing, a source that is not a supported format, a limit exceeded,
Tesseract or a language pack not installed. A failed Tesseract run may be retried.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import re
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pypdfium2 as pdfium
import pytesseract
from PIL import Image, ImageOps, UnidentifiedImageError

from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.engine.files import allowed_roots, read_file, resolve_file
from flowctl.errors import ExecutorError
from flowctl.schemas import load_schema

MAX_BYTES = 50 * 1024 * 1024  # of a source, file or data
MAX_PAGES = 100  # read in one task; `pages` picks some of a longer document
MAX_PIXELS = 80_000_000  # of one page (Pillow warns of decompression bombs above 89M)
PDF_DPI = 300
PAGE_TIMEOUT = 300  # seconds of Tesseract per page: a cancelled task cannot stop the thread
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF")
KINDS = "a PNG, JPEG, TIFF or PDF"

_LANG = re.compile(r"[a-z_]+(\+[a-z_]+)*")  # fullmatch: no trailing newline either
_BASE64 = re.compile(r"^[A-Za-z0-9+/\-_]+={0,2}$")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_LONGEST_PATH = 4096
_LONGEST_NAME = 256  # longer base64-looking text is taken for base64, never for a path
# pdfium is not thread-safe; parallel ocr tasks share this process and its threads.
_PDFIUM_LOCK = threading.Lock()

_INSTALL_TESSERACT = (
    "tesseract is not installed or not on PATH: install it with "
    "`apt-get install tesseract-ocr tesseract-ocr-eng` (Debian/Ubuntu; `make system-deps` "
    "does it) or `brew install tesseract` (macOS)"
)


@dataclass(frozen=True, slots=True)
class OcrOptions:
    lang: str = "eng"
    psm: int | None = None
    pages: tuple[int, ...] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OcrOptions:
        """The options of a `with:` block the orchestrator checked against the schema.

        `lang` and `psm` end up on Tesseract's command line: they are checked once more
        here, so that nothing else can ever get there.
        """
        lang = params.get("lang", "eng")
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise ExecutorError(
                f"lang must look like 'eng' or 'eng+deu', got {lang!r}", retryable=False
            )
        psm = params.get("psm")
        if psm is not None and (_not_int(psm) or not 0 <= psm <= 13):
            raise ExecutorError(
                f"psm must be an integer from 0 to 13, got {psm!r}", retryable=False
            )
        pages = params.get("pages")
        return cls(lang, psm, None if pages is None else tuple(sorted(set(pages))))


class OcrExecutor(BaseExecutor):
    name: ClassVar[str] = "ocr"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/ocr")
    max_bytes: ClassVar[int] = MAX_BYTES
    max_pages: ClassVar[int] = MAX_PAGES

    _languages: frozenset[str] | None = None

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        options = OcrOptions.from_params(params)
        await self._check_languages(options.lang)
        data, shown = await self._load(ctx, params.get("source"))
        document = await asyncio.to_thread(_open_document, data, shown)
        try:
            numbers = self._select(document.page_count, options.pages, shown)
            pages: list[dict[str, Any]] = []
            confidences: list[float] = []
            for number in numbers:
                image, dpi = await asyncio.to_thread(document.render, number)
                text, words = await asyncio.to_thread(_recognize, image, dpi, options, number)
                confidences.extend(words)
                pages.append({"page": number, "text": text, "confidence": _mean(words)})
        finally:
            await asyncio.to_thread(document.close)
        return {
            "text": "\n\n".join(page["text"] for page in pages if page["text"]),
            "pages": pages,
            "confidence": _mean(confidences),
            "language": options.lang,
        }

    async def _check_languages(self, lang: str) -> None:
        if self._languages is None:
            self._languages = await asyncio.to_thread(_installed_languages)
        missing = [name for name in lang.split("+") if name not in self._languages]
        if missing:
            packages = " ".join(f"tesseract-ocr-{name.replace('_', '-')}" for name in missing)
            installed = ", ".join(sorted(self._languages)) or "none"
            raise ExecutorError(
                f"Tesseract has no language data for {', '.join(map(repr, missing))} "
                f"(installed: {installed}): install it with `apt-get install {packages}`",
                retryable=False,
            )

    async def _load(self, ctx: TaskContext, source: Any) -> tuple[bytes, str]:
        """The source's bytes, and how to name the source in errors."""
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            shown = f"source ({len(data):,} bytes)"
        elif isinstance(source, Mapping):
            encoded = source.get("base64")
            if not isinstance(encoded, str):
                keys = ", ".join(map(str, source)) or "none"
                raise ExecutorError(
                    "a mapping source needs a base64 string under `base64` (as the http "
                    f"executor's output has); its keys: {keys}",
                    retryable=False,
                )
            data = self._decode_base64(encoded, "source `base64`")
            shown = f"source ({len(data):,} bytes from base64)"
        elif isinstance(source, str) and source.strip():
            if source.startswith("data:"):
                data = self._decode_data_uri(source)
                shown = f"source (data: URI, {len(data):,} bytes)"
            elif (real := await self._existing_file(ctx, source)) is not None:
                return await self._read(real, source), f"source {source!r}"
            elif (decoded := self._maybe_base64(source)) is not None:
                data = decoded
                shown = f"source ({len(data):,} bytes from base64)"
            else:
                return await self._read_path(ctx, source), f"source {source!r}"
        else:
            raise ExecutorError(
                "source must be a file path, base64 text, a data: URI, bytes or a mapping "
                f"with `base64`, got {_describe(source)}",
                retryable=False,
            )
        if not data:
            raise ExecutorError(f"{shown} is empty", retryable=False)
        if len(data) > self.max_bytes:
            raise ExecutorError(
                f"{shown} is more than the limit of {self.max_bytes:,} bytes", retryable=False
            )
        return data, shown

    async def _read_path(self, ctx: TaskContext, path: str) -> bytes:
        if len(path) > _LONGEST_PATH:
            raise ExecutorError(
                f"source ({len(path):,} characters) is neither a file path nor base64 of {KINDS}",
                retryable=False,
            )
        roots = allowed_roots(self.settings, ctx.pipeline_dir)
        real = await asyncio.to_thread(resolve_file, path, roots, what="source")
        return await self._read(real, path)

    async def _existing_file(self, ctx: TaskContext, text: str) -> Path | None:
        """The real path of `text` if it names a regular file under the allowed roots.

        Asked first: a file's name may also be valid base64 (`scans/invoice2024`).
        """
        if len(text) > _LONGEST_PATH:
            return None
        roots = allowed_roots(self.settings, ctx.pipeline_dir)
        try:
            return await asyncio.to_thread(resolve_file, text, roots, what="source")
        except (ExecutorError, OSError):  # OSError: a name too long, for one
            return None

    async def _read(self, real: Path, shown_as: str) -> bytes:
        return await asyncio.to_thread(
            read_file, real, max_bytes=self.max_bytes, shown_as=shown_as, what="source"
        )

    def _decode_base64(self, text: str, shown: str) -> bytes:
        compact = "".join(text.split())
        if len(compact) * 3 // 4 > self.max_bytes + 2:
            raise ExecutorError(
                f"{shown} is more than the limit of {self.max_bytes:,} bytes", retryable=False
            )
        try:
            return _b64decode(compact)
        except (binascii.Error, ValueError):
            raise ExecutorError(f"{shown} is not valid base64", retryable=False) from None

    def _maybe_base64(self, text: str) -> bytes | None:
        """Decoded bytes if `text` is base64 of a known format, None if it may be a path.

        Text no longer than a file's name counts as base64 only when it decodes to the
        signature of a known format; anything else is taken for a (missing) path.
        """
        compact = "".join(text.split())
        if len(compact) < 16 or not _BASE64.match(compact):
            return None
        if len(compact) <= _LONGEST_NAME:
            try:
                data = _b64decode(compact)
            except (binascii.Error, ValueError):
                return None
            return data if _kind(data) is not None else None
        data = self._decode_base64(compact, "source (base64)")  # the size limit holds here
        if _kind(data) is None:
            raise ExecutorError(f"source looks like base64 but is not {KINDS}", retryable=False)
        return data

    def _decode_data_uri(self, uri: str) -> bytes:
        header, comma, payload = uri.partition(",")
        if not comma:
            raise ExecutorError(
                "source is a data: URI without a comma before its data", retryable=False
            )
        if header.endswith(";base64"):
            return self._decode_base64(payload, "source (data: URI)")
        if len(payload) > self.max_bytes * 3:
            raise ExecutorError(
                f"source (data: URI) is more than {self.max_bytes:,} bytes", retryable=False
            )
        return urllib.parse.unquote_to_bytes(payload)

    def _select(self, count: int, wanted: Sequence[int] | None, shown: str) -> Sequence[int]:
        if wanted is None:
            numbers: Sequence[int] = range(1, count + 1)
        else:
            absent = [number for number in wanted if number > count]
            if absent:
                raise ExecutorError(
                    f"{shown} has {count} page{'s' * (count != 1)}; "
                    f"no page {', '.join(map(str, absent))}",
                    retryable=False,
                )
            numbers = wanted
        if len(numbers) > self.max_pages:
            raise ExecutorError(
                f"{shown} has {count} pages, more than the limit of {self.max_pages} "
                "read by one task; choose some with `pages`",
                retryable=False,
            )
        return numbers


# -- documents: pages as images ------------------------------------------------------


class _Document(Protocol):
    page_count: int

    def render(self, number: int) -> tuple[Image.Image, int | None]:
        """Page `number` (1-based) as an 8-bit grayscale image, and its dpi if known."""
        ...

    def close(self) -> None: ...


def _open_document(data: bytes, shown: str) -> _Document:
    if _kind(data) == "PDF":
        return _PdfDocument(data, shown)
    return _ImageDocument(data, shown)


class _PdfDocument:
    def __init__(self, data: bytes, shown: str) -> None:
        self.shown = shown
        with _PDFIUM_LOCK:
            try:
                self._pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as error:
                raise ExecutorError(f"cannot read the PDF {shown}: {error}") from None
            self.page_count: int = len(self._pdf)

    def render(self, number: int) -> tuple[Image.Image, int | None]:
        with _PDFIUM_LOCK:
            page = self._pdf[number - 1]
            try:
                width, height = page.get_size()
                scale = min(PDF_DPI / 72, math.sqrt(MAX_PIXELS / max(width * height, 1.0)))
                bitmap = page.render(scale=scale, grayscale=True)
                image: Image.Image = bitmap.to_pil().convert("L")  # a copy, owning its pixels
                bitmap.close()
            except pdfium.PdfiumError as error:
                raise ExecutorError(
                    f"cannot render page {number} of {self.shown}: {error}"
                ) from None
            finally:
                page.close()
        return image, round(72 * scale)

    def close(self) -> None:
        with _PDFIUM_LOCK:
            self._pdf.close()


class _ImageDocument:
    def __init__(self, data: bytes, shown: str) -> None:
        self.shown = shown
        self._lock = threading.Lock()  # a cancelled task closes the image while a page renders
        try:
            self._image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            self.page_count: int = getattr(self._image, "n_frames", 1)
        except UnidentifiedImageError:
            raise ExecutorError(f"{shown} is not {KINDS} file", retryable=False) from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ExecutorError(f"cannot read the image {shown}: {error}") from None

    def render(self, number: int) -> tuple[Image.Image, int | None]:
        where = f"page {number} of {self.shown}" if self.page_count > 1 else self.shown
        with self._lock:
            return self._render(number, where)

    def _render(self, number: int, where: str) -> tuple[Image.Image, int | None]:
        try:
            self._image.seek(number - 1)
            width, height = self._image.size
            if width * height > MAX_PIXELS:
                raise ExecutorError(
                    f"{where} is {width}x{height} pixels, more than the limit of "
                    f"{MAX_PIXELS:,} pixels",
                    retryable=False,
                )
            frame = ImageOps.exif_transpose(self._image)
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise ExecutorError(f"cannot read {where}: {error}") from None
        return _grayscale(frame), None  # files often claim 72 dpi: let Tesseract estimate

    def close(self) -> None:
        with self._lock:
            self._image.close()


def _grayscale(image: Image.Image) -> Image.Image:
    """Transparent parts become white, as on paper."""
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, "white")
        paper.alpha_composite(rgba)
        return paper.convert("L")
    return image.convert("L")


def _kind(data: bytes) -> str | None:
    if b"%PDF-" in data[:1024]:
        return "PDF"
    if data.startswith(_MAGIC):
        return "image"
    return None


# -- Tesseract ------------------------------------------------------------------------


def _installed_languages() -> frozenset[str]:
    try:
        return frozenset(pytesseract.get_languages())
    except (pytesseract.TesseractNotFoundError, FileNotFoundError):
        raise ExecutorError(_INSTALL_TESSERACT, retryable=False) from None


def _recognize(
    image: Image.Image, dpi: int | None, options: OcrOptions, number: int
) -> tuple[str, list[float]]:
    """The page's text (lines by newlines, paragraphs by blank lines), and its words'
    confidences, from one Tesseract run (its TSV output)."""
    config = []
    if options.psm is not None:
        config.append(f"--psm {options.psm}")
    if dpi is not None:
        config.append(f"--dpi {dpi}")
    try:
        tsv = pytesseract.image_to_data(
            image, lang=options.lang, config=" ".join(config), timeout=PAGE_TIMEOUT
        )
    except pytesseract.TesseractNotFoundError:
        raise ExecutorError(_INSTALL_TESSERACT, retryable=False) from None
    except pytesseract.TesseractError as error:
        raise ExecutorError(f"tesseract failed on page {number}: {error.message}") from None
    except RuntimeError as error:  # pytesseract's timeout
        raise ExecutorError(f"tesseract failed on page {number}: {error}") from None
    return _parse_tsv(str(tsv))


def _parse_tsv(tsv: str) -> tuple[str, list[float]]:
    rows = [line.split("\t") for line in tsv.splitlines()]
    if not rows:
        return "", []
    column = {name: index for index, name in enumerate(rows[0])}
    paragraphs: dict[tuple[str, str], dict[str, list[str]]] = {}
    confidences: list[float] = []
    for row in rows[1:]:
        if len(row) <= column["text"] or row[column["level"]] != "5":
            continue
        word = row[column["text"]].strip()
        if not word:
            continue
        paragraph = (row[column["block_num"]], row[column["par_num"]])
        paragraphs.setdefault(paragraph, {}).setdefault(row[column["line_num"]], []).append(word)
        confidence = float(row[column["conf"]])
        if confidence >= 0:
            confidences.append(confidence)
    text = "\n\n".join(
        "\n".join(" ".join(words) for words in lines.values()) for lines in paragraphs.values()
    )
    return text, confidences


# -- small helpers --------------------------------------------------------------------


def _b64decode(compact: str) -> bytes:
    """Standard or URL-safe alphabet; missing padding is forgiven."""
    padded = compact + "=" * (-len(compact) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string"
    return "null" if value is None else type(value).__name__
