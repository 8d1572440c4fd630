"""Server CPU spent on hostile bodies: one NDJSON commit line of 13 MB and of 60 MB, and 100,000 nested
brackets on a JSON route. The hub runs as its own process (``hub serve``, as users run it); its CPU time
is read from /proc before and after each request (Linux).

    python benchmarks/bench_parsing.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_localhub import TOKEN, start_hub  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line_body(megabytes: int):
    yield b'{"key": "header", "value": {"summary": "big"}}\n{"key": "file", "value": {"content": "'
    for _ in range(megabytes):
        yield b"A" * (1024 * 1024)
    yield b'", "path": "big.txt", "encoding": "base64"}}\n'


def measure(pid: int, send) -> tuple[float, float, int | str]:  # noqa: ANN001
    before, start = cpu_seconds(pid), time.perf_counter()
    try:
        status: int | str = send().status_code
    except httpx.HTTPError as error:
        status = type(error).__name__
    time.sleep(0.2)  # let the server finish what it was doing
    return cpu_seconds(pid) - before, time.perf_counter() - start, status


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_hub(Path(folder) / "data")
        try:
            headers = {"authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=url, timeout=300) as client:
                client.post("/api/repos/create", json={"name": "parse"}, headers=headers).raise_for_status()
                commit = "/api/models/bench/parse/commit/main"
                cases = {
                    "NDJSON line 13 MB": lambda: client.post(commit, content=line_body(13), headers=headers),
                    "NDJSON line 60 MB": lambda: client.post(commit, content=line_body(60), headers=headers),
                    "100,000 nested brackets": lambda: client.post(
                        "/api/validate-yaml", content=b'{"content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                }
                print("| body | answer | server CPU s | wall s |\n|---|---|--:|--:|")
                for name, send in cases.items():
                    cpu, wall, status = measure(process.pid, send)
                    print(f"| {name} | {status} | {cpu:.2f} | {wall:.2f} |")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
