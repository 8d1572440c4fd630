"""Photos uploaded from the browser, streamed into the job's ``photos/`` folder under a size cap.

Each file part is written as it arrives (never spooled to the system's temp folder), beside its final
name, and renamed into place once whole. What cannot be stored gets a verdict in the same shape as
``concept prepare``'s manifest entries: a name holding a path, a file over the cap (its bytes are read
and dropped, never kept), too many files. Everything that is stored is then judged by ``concept prepare``
itself (bombs, non-images, truncated files), so the answer per file is the CLI's.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from hubtools.concepts.manifest import ManifestEntry
from hubtools.errors import InputError

MAX_FILES = 500
MAX_NAME_CHARS = 200


@dataclass
class UploadOutcome:
    stored: list[str] = field(default_factory=list)  # file names now in the photos folder
    refused: list[ManifestEntry] = field(default_factory=list)  # what was not stored, and why


def name_problem(name: str) -> str | None:
    """Why a file name cannot be stored as it is (a path, a control character, too long), or None."""
    if not name or name in (".", ".."):
        return "the file has no name: upload it with its file name"
    if "/" in name or "\\" in name:
        return "the file name holds a folder path: upload the photo itself, by its own name"
    if any(ord(char) < 32 for char in name) or len(name) > MAX_NAME_CHARS:
        return f"the file name has control characters or is over {MAX_NAME_CHARS} characters: rename it"
    return None


class _Part:
    def __init__(self, folder: Path, limit: int, outcome: UploadOutcome) -> None:
        self.folder, self.limit, self.outcome = folder, limit, outcome
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.temp: Path | None = None
        self.handle = None
        self.size = 0
        self.refusal: str | None = None

    def begin(self, count: int) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if b"filename" not in options:
            return  # a plain form field: not a photo, nothing to keep
        self.name = options[b"filename"].decode("utf-8", errors="replace")
        self.refusal = name_problem(self.name)
        if self.refusal is None and count > MAX_FILES:
            self.refusal = f"more than {MAX_FILES} files in one upload: send the rest in another"
        if self.refusal is None:
            self.temp = self.folder / f".upload-{secrets.token_hex(8)}"
            self.handle = open(self.temp, "wb")

    def write(self, data: bytes) -> None:
        if self.name is None:
            return
        self.size += len(data)
        if self.handle is not None and self.size > self.limit:
            self._drop()
            self.refusal = (f"larger than the {self.limit // 2**20} MB limit per photo: "
                            "export it smaller (a photo needs a few MB at most)")
        if self.handle is not None:
            self.handle.write(data)

    def end(self) -> None:
        if self.name is None:
            return
        if self.handle is not None:
            self.handle.close()
            os.replace(self.temp, self.folder / self.name)
            self.outcome.stored.append(self.name)
        else:
            self.outcome.refused.append(ManifestEntry(status="rejected", reason=self.refusal or "not stored",
                                                      path=self.name))

    def _drop(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._drop()


async def receive_photos(content_type: str, body: AsyncIterator[bytes], folder: Path, *,
                         limit_bytes: int) -> UploadOutcome:
    """Stream a ``multipart/form-data`` body's files into ``folder``; each at most ``limit_bytes``."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InputError("send the photos as multipart/form-data (a form with file fields)")
    folder.mkdir(parents=True, exist_ok=True)
    outcome = UploadOutcome()
    state: dict[str, object] = {"part": None, "field": b"", "value": b"", "count": 0}

    def part_begin() -> None:
        state["part"] = _Part(folder, limit_bytes, outcome)

    def header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = state["field"] + data[start:end]  # type: ignore[operator]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = state["value"] + data[start:end]  # type: ignore[operator]

    def header_end() -> None:
        state["part"].headers[state["field"].lower()] = state["value"]  # type: ignore[union-attr]
        state["field"], state["value"] = b"", b""

    def headers_finished() -> None:
        state["count"] = int(state["count"]) + 1  # type: ignore[call-overload]
        state["part"].begin(state["count"])  # type: ignore[union-attr]

    def part_data(data: bytes, start: int, end: int) -> None:
        state["part"].write(data[start:end])  # type: ignore[union-attr]

    def part_end() -> None:
        state["part"].end()  # type: ignore[union-attr]
        state["part"] = None

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
        "on_header_end": header_end, "on_headers_finished": headers_finished, "on_part_data": part_data,
        "on_part_end": part_end,
    })
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except Exception as error:
        if state["part"] is not None:
            state["part"].abort()  # type: ignore[union-attr]
        raise InputError(f"the upload was cut short or is not valid multipart ({type(error).__name__}): "
                         "send the photos again") from None
    return outcome
