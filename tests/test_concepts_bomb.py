"""Decompression bombs are refused from their header, under a real memory cap (RLIMIT_AS)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from hubtools.resources import DEMO_CONCEPT_DIR

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux-only")

HEADROOM = 300 * 2**20  # what the capped process may allocate beyond what it already has


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, colour_type: int = 2) -> None:
    """A valid PNG of black pixels: kilobytes on disk, hundreds of megabytes once decoded."""
    channels = {0: 1, 2: 3}[colour_type]
    row = b"\x00" * (1 + width * channels)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def jpeg_claiming(path: Path, width: int, height: int) -> None:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))


CAPPED_PREPARE = textwrap.dedent(
    """
    import json, resource, sys
    from hubtools.concepts import prepare_concept

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    cap = vm_bytes() + int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:  # the cap is real: a 400 MB buffer cannot be had
        bytearray(400 * 2**20)
        cap_works = False
    except MemoryError:
        cap_works = True
    concept = prepare_concept(sys.argv[1], sys.argv[2], resolution=64, progress=False)
    print(json.dumps({"cap_works": cap_works, "entries": {e.path: [e.status, e.reason] for e in concept.entries}}))
    """
)


def test_bombs_are_rejected_under_a_memory_cap(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DEMO_CONCEPT_DIR / "00.jpg", src / "dog.jpg")
    png_bomb(src / "bomb-rgb.png", 12_000, 9_000)  # 108 Mpx: Pillow only *warns* here; 430 MB decoded
    png_bomb(src / "bomb-gray.png", 20_000, 20_000, colour_type=0)  # 400 Mpx: Pillow's own hard limit
    jpeg_claiming(src / "bomb.jpg", 65_000, 65_000)  # 4 gigapixels in a 600-byte file
    assert max(path.stat().st_size for path in src.iterdir()) < 2 * 2**20

    result = subprocess.run(
        [sys.executable, "-c", CAPPED_PREPARE, str(src), str(tmp_path / "out"), str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cap_works"]
    entries = report["entries"]
    assert entries["dog.jpg"] == ["accepted", "ok"]
    assert entries["bomb-rgb.png"][0] == "rejected"
    assert entries["bomb-rgb.png"][1].startswith("possible decompression bomb (108 megapixels): over the 89")
    assert entries["bomb-gray.png"][0] == "rejected" and "decompression bomb (400 megapixels)" in entries["bomb-gray.png"][1]
    assert entries["bomb.jpg"][0] == "rejected" and "decompression bomb (4225 megapixels)" in entries["bomb.jpg"][1]


def test_own_header_check_holds_when_pillow_limit_is_disabled(tmp_path, monkeypatch):
    # Some libraries set Image.MAX_IMAGE_PIXELS = None globally; the header check must still refuse.
    from hubtools.concepts.files import RejectedImage, read_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    jpeg_claiming(tmp_path / "bomb.jpg", 65_000, 65_000)
    with pytest.raises(RejectedImage, match=r"possible decompression bomb \(65000x65000, 4225 megapixels\)"):
        read_image((tmp_path / "bomb.jpg").read_bytes(), name="bomb.jpg", min_side=64)
