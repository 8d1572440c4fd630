"""Scale benchmark of the local hub, driven by the stock huggingface_hub client.

Starts ``hubtools hub serve`` in a child process (so client and server do not share one interpreter),
then measures:

- resolve/HEAD latency (``get_hf_file_metadata``) on a 1-file repo and on a 10,000-file repo;
- a one-file commit on each of them (the cost of copying the parent's file rows);
- ``snapshot_download`` of a 3,000-file repo of small files into an empty cache.

    python benchmarks/bench_localhub.py                 # the figures in benchmarks/README.md
    python benchmarks/bench_localhub.py --big 2000 --snapshot 500 --heads 100   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOKEN = "bench-secret-token"


def start_hub(data: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(data), "--token", f"bench={TOKEN}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise SystemExit(f"the hub did not start (first line: {url!r})")
    return process, url


def make_repo(api, repo_id: str, n_files: int, batch: int = 5000) -> None:
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo_id)
    for start in range(0, n_files, batch):
        operations = [
            CommitOperationAdd(path_in_repo=f"data/{index // 1000:03d}/file-{index:05d}.txt",
                               path_or_fileobj=f"row {index}\n".encode())
            for index in range(start, min(start + batch, n_files))
        ]
        api.create_commit(repo_id, operations=operations, commit_message=f"files {start}+")


def head_latency_ms(url: str, repo_id: str, filename: str, n: int) -> float:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    target = hf_hub_url(repo_id, filename, endpoint=url)
    get_hf_file_metadata(target, token=TOKEN)  # warm-up: connection pool, first query
    times = []
    for _ in range(n):
        start = time.perf_counter()
        get_hf_file_metadata(target, token=TOKEN)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def one_file_commit_ms(api, repo_id: str, n: int = 5) -> float:
    times = []
    for index in range(n):
        start = time.perf_counter()
        api.upload_file(path_or_fileobj=f"change {index}\n".encode(), path_in_repo="bench-change.txt",
                        repo_id=repo_id, commit_message="one file")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=10_000, help="files in the big repo")
    parser.add_argument("--snapshot", type=int, default=3_000, help="files in the snapshot_download repo")
    parser.add_argument("--heads", type=int, default=300, help="HEAD requests per repo")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hubtools-bench-") as tmp:
        process, url = start_hub(Path(tmp) / "hub")
        os.environ.update({"HF_ENDPOINT": url, "HF_HOME": str(Path(tmp) / "hf-home"),
                           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_UPDATE_DOWNLOAD_COUNTS": "0"})
        try:
            from huggingface_hub import HfApi, snapshot_download

            api = HfApi(endpoint=url, token=TOKEN)
            api.create_repo("bench/one-file")
            api.upload_file(path_or_fileobj=b"row 0\n", path_in_repo="data/000/file-00000.txt",
                            repo_id="bench/one-file")
            start = time.perf_counter()
            make_repo(api, "bench/big", args.big)
            big_upload_s = time.perf_counter() - start
            make_repo(api, "bench/snapshot", args.snapshot)

            figures = {
                "head_ms_1_file": head_latency_ms(url, "bench/one-file", "data/000/file-00000.txt", args.heads),
                f"head_ms_{args.big}_files": head_latency_ms(url, "bench/big", "data/000/file-00000.txt",
                                                             args.heads),
                "commit_ms_1_file_repo": one_file_commit_ms(api, "bench/one-file"),
                f"commit_ms_{args.big}_file_repo": one_file_commit_ms(api, "bench/big"),
                f"upload_{args.big}_files_s": big_upload_s,
            }
            figures["head_ratio"] = figures[f"head_ms_{args.big}_files"] / figures["head_ms_1_file"]
            # CPU seconds of both sides too: on a shared machine the wall time says more about the neighbours.
            server_cpu, client_cpu = process_cpu_s(process.pid), own_cpu_s()
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            folder = snapshot_download("bench/snapshot", token=TOKEN, cache_dir=Path(tmp) / "snapshot-cache")
            figures[f"snapshot_download_{args.snapshot}_files_s"] = time.perf_counter() - start
            figures["snapshot_server_cpu_s"] = process_cpu_s(process.pid) - server_cpu
            figures["snapshot_client_cpu_s"] = own_cpu_s() - client_cpu
            figures["load_average_1min"] = (load_before + os.getloadavg()[0]) / 2
            assert sum(1 for path in Path(folder).rglob("*.txt")) == args.snapshot
        finally:
            process.terminate()
            process.wait(timeout=30)
    figures["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                         f"Python {platform.python_version()}"
    text = json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
