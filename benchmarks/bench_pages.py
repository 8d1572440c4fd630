"""Render times of the local hub's HTML pages on a hub of 1,000 model repos.

Seeds a fresh data folder through ``Storage`` (cards with tags, widget images, a pipeline index, one in
ten a hackathon entry), starts ``hubtools hub serve`` on it in a child process, then times each page over
one keep-alive connection: the first request (cold: summaries not cached yet) and the median of the
next ``--repeat`` (warm).

    python benchmarks/bench_pages.py                  # the figures in benchmarks/README.md
    python benchmarks/bench_pages.py --repos 200 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_localhub import TOKEN, start_hub  # run as a script from benchmarks/

THEMES = ("animal", "science", "food", "landscape", "wildcard")


def _png(index: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (index * 37 % 256, index * 91 % 256, index * 53 % 256)).save(out, format="PNG")
    return out.getvalue()


def _card(index: int) -> str:
    tags = ["text-to-image", "dreambooth", f"group-{index % 20}"]
    if index % 10 == 0:
        tags += ["dreambooth-hackathon", THEMES[index // 10 % len(THEMES)]]
    return (
        "---\n"
        f"license: creativeml-openrail-m\nbase_model: hubtools/tiny-stable-diffusion\ntags: {json.dumps(tags)}\n"
        f"widget:\n- text: a photo of sks{index} dog\n  output:\n    url: images/widget.png\n"
        "---\n\n"
        f"# Model {index}\n\nA DreamBooth fine-tune.\n\n![grid](images/widget.png)\n\n"
        "```python\nfrom diffusers import DiffusionPipeline\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )


def seed(data: Path, repos: int) -> None:
    from hubtools.localhub.storage import AddFile, FileEntry, Storage, git_blob_oid

    storage = Storage(data)

    def entry(content: bytes, lfs: bool = False) -> FileEntry:
        return FileEntry(storage.blobs.put_bytes(content), len(content), git_blob_oid(content), lfs)

    index_json = json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    shared = [
        AddFile("model_index.json", entry(index_json.encode())),
        AddFile("unet/config.json", entry(b'{"sample_size": 8}')),
        AddFile("unet/diffusion_pytorch_model.safetensors", entry(b"\0" * 4096, lfs=True)),
    ]
    for index in range(repos):
        repo_id = f"user{index % 50}/model-{index:04d}"
        storage.create_repo("model", repo_id, f"user{index % 50}", False)
        files = shared + [AddFile("README.md", entry(_card(index).encode())),
                          AddFile("images/widget.png", entry(_png(index), lfs=True))]
        storage.commit("model", repo_id, "main", files, title="Upload", message="", author=f"user{index % 50}")
        storage.set_counter("model", repo_id, "likes", index * 7 % 101)


def time_page(client, path: str, repeat: int) -> tuple[float, float]:
    start = time.perf_counter()
    response = client.get(path)
    cold = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return cold, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    import httpx

    with tempfile.TemporaryDirectory(prefix="hubtools-bench-pages-") as tmp:
        data = Path(tmp) / "hub"
        started = time.perf_counter()
        seed(data, args.repos)
        print(f"seeded {args.repos} repos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        process, url = start_hub(data)
        try:
            pages = {
                "index (likes)": "/",
                "index, warm cache, sorted by update": "/?sort=updated",
                "index, tag filter": "/?tag=group-3",
                "index, search, page 2": "/?search=model-0&p=2",
                "model page": "/user7/model-0007",
                "file tree": "/user7/model-0007/tree/main",
                "folder": "/user7/model-0007/tree/main/unet",
                "blob (text)": "/user7/model-0007/blob/main/README.md",
                "commits": "/user7/model-0007/commits/main",
                f"hackathon ({args.repos // 10} entries)": "/hackathon",
            }
            results = {}
            with httpx.Client(base_url=url, timeout=120) as client:
                for name, path in pages.items():
                    results[name] = time_page(client, path, args.repeat)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"{args.repos} repos, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"| page | first request (ms) | warm median of {args.repeat} (ms) |")
    print("|---|---:|---:|")
    for name, (cold, warm) in results.items():
        print(f"| {name} | {cold:.0f} | {warm:.1f} |")


if __name__ == "__main__":
    main()
