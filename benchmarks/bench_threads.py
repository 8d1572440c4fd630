"""Threads per process: the offline demo's wall time alone and beside a second demo, with OpenMP's idle threads
spinning (``OMP_WAIT_POLICY=ACTIVE``) and waiting passively (what ``hubtools`` sets unless told otherwise).

Two torch processes whose OpenMP threads spin on the same cores slow each other down many times over; passive
waiting (and, under torchrun / accelerate launch, each process taking its share of the cores:
``hubtools.distributed.threads_per_process``) keeps two jobs at about twice the time of one.

    python benchmarks/bench_threads.py                 # 20 training steps per demo
    python benchmarks/bench_threads.py --steps 60 --limit 900 --out threads.json
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


def demos(count: int, steps: int, policy: str, root: Path, limit: float) -> float | None:
    """Seconds until ``count`` demos started together have all finished; None when they were still running
    after ``limit`` seconds (then they are stopped: spinning neighbours also slow everything else on the machine)."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["OMP_WAIT_POLICY"] = policy
    started = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-m", "hubtools", "--quiet", "demo", "--steps", str(steps), "--out",
                                 str(root / f"{policy}-{count}-{i}")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for i in range(count)]
    try:
        for process in running:
            _, err = process.communicate(timeout=max(1.0, limit - (time.perf_counter() - started)))
            if process.returncode:
                raise SystemExit(f"demo failed: {err[-2000:]}")
    except subprocess.TimeoutExpired:
        for process in running:
            process.kill()
            process.wait()
        return None
    return round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--policies", default="PASSIVE,ACTIVE", help="OMP_WAIT_POLICY values, in this order")
    parser.add_argument("--limit", type=float, default=600, help="seconds after which a measurement is stopped")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {}
    load = {"before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="hubtools-bench-threads-") as tmp:
        for policy in args.policies.split(","):
            results[policy] = {}
            for count, key in ((1, "alone_s"), (2, "two_at_once_s")):
                took = demos(count, args.steps, policy, Path(tmp), args.limit)
                results[policy][key] = took if took is not None else f"> {args.limit:g} (stopped)"
                print(policy, key, results[policy][key], "load", os.getloadavg(), file=sys.stderr, flush=True)
    load["after"] = os.getloadavg()
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average": load,
              "demo_steps": args.steps, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
