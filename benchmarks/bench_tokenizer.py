"""Start-up share of the CLIP tokenizer: built from the shipped BPE list each run (what every run did before
issue 30, into a new temp folder) against loaded from the user's cache (built once per installed version).

    python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from transformers import CLIPTokenizer

from hubtools import tokenizer


def main(repeats: int = 5) -> None:
    built, cached = [], []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp())
        started = time.perf_counter()
        tokenizer.write_clip_tokenizer_files(folder)
        CLIPTokenizer.from_pretrained(str(folder))
        built.append(time.perf_counter() - started)
        shutil.rmtree(folder)
        tokenizer._tokenizer_files.cache_clear()  # as a new process finds it
        started = time.perf_counter()
        CLIPTokenizer.from_pretrained(str(tokenizer._tokenizer_files()))
        cached.append(time.perf_counter() - started)
    print(f"built and loaded: {statistics.median(built):.3f} s; loaded from the cache: "
          f"{statistics.median(cached):.3f} s (medians of {repeats})")


if __name__ == "__main__":
    main()
