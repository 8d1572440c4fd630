"""Threads per process: the offline demo's wall time alone and beside a second demo, with OpenMP's idle threads
spinning (``OMP_WAIT_POLICY=ACTIVE``) and waiting passively (what ``hubtools`` sets unless told otherwise).

Two torch processes whose OpenMP threads spin on the same cores slow each other down many times over; passive
waiting (and, under torchrun / accelerate launch, each process taking its share of the cores:
``hubtools.distributed.threads_per_process``) keeps two jobs at about twice the time of one.

    python benchmarks/bench_threads.py                 # 20 training steps per demo
    python benchmarks/bench_threads.py --steps 60 --out threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def demos(count: int, steps: int, policy: str, root: Path) -> float:
    """Seconds until ``count`` demos started together have all finished."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["OMP_WAIT_POLICY"] = policy
    started = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-m", "hubtools", "--quiet", "demo", "--steps", str(steps), "--out",
                                 str(root / f"{policy}-{count}-{i}")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for i in range(count)]
    for process in running:
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"demo failed: {err[-2000:]}")
    return round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="hubtools-bench-threads-") as tmp:
        for policy in ("ACTIVE", "PASSIVE"):
            alone = demos(1, args.steps, policy, Path(tmp))
            beside = demos(2, args.steps, policy, Path(tmp))
            results[policy] = {"alone_s": alone, "two_at_once_s": beside}
            print(policy, results[policy], file=sys.stderr, flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_after": os.getloadavg(),
              "demo_steps": args.steps, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
