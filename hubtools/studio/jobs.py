"""The studio's jobs: a queue kept in SQLite under the data folder, and the worker that runs them.

A job is a folder ``DATA/jobs/<id>/`` (``photos/`` as uploaded, ``concept/`` the prepared preview,
``hubtools.toml`` the run's config, ``run/`` the run folder, ``events.jsonl`` what its commands said,
``stderr.log``) and one row of ``studio.sqlite``. The worker runs each step as the CLI does, in a child
process, ``python -m hubtools --json <command> ...``, with stdout appended to ``events.jsonl``: the page
streams that file, and a studio killed with SIGKILL finds every job as it was. A job that was running
then is queued again and its training continues from its last checkpoint (``train RUN --resume``).

One job at a time per GPU (one on a CPU-only machine): each slot is a thread that claims the oldest
queued job in one transaction.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    source TEXT,                      -- 'upload' or the Hub dataset id
    state TEXT NOT NULL,              -- draft, queued, running, done, failed, cancelled
    steps_done INTEGER NOT NULL DEFAULT 0,
    queued_at REAL,
    pid INTEGER,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    push_state TEXT,                  -- NULL, pushing, pushed, failed
    push_url TEXT,
    repo_id TEXT
);
"""
FINAL_STATES = ("done", "failed", "cancelled")
EVENTS_FILE = "events.jsonl"
STDERR_FILE = "stderr.log"
CONFIG_FILE = "hubtools.toml"


@dataclass
class Job:
    id: str
    created_at: float
    title: str
    source: str | None
    state: str
    steps_done: int
    queued_at: float | None
    pid: int | None
    error: str | None
    cancel_requested: int
    push_state: str | None
    push_url: str | None
    repo_id: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("pid")
        return data


class JobStore:
    """The jobs table and each job's folder under ``DATA/jobs``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "studio.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def create(self) -> Job:
        job_id = secrets.token_hex(6)
        with self._connect() as db:
            db.execute("INSERT INTO jobs (id, created_at, state) VALUES (?, ?, 'draft')", (job_id, time.time()))
        self.folder(job_id).mkdir(parents=True)
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(**dict(row)) if row else None

    def list(self) -> list[Job]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state != 'draft' ORDER BY created_at DESC").fetchall()
        return [Job(**dict(row)) for row in rows]

    def update(self, job_id: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))

    def queue(self, job_id: str) -> None:
        self.update(job_id, state="queued", queued_at=time.time(), error=None, cancel_requested=0)

    def claim_next(self) -> Job | None:
        """The oldest queued job, marked running, or None; one transaction, so two slots never share a job."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY queued_at LIMIT 1").fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (row["id"],))
            db.execute("COMMIT")
        return self.get(row["id"]) if row else None

    def recover(self) -> list[str]:
        """After a crash or kill -9: what was running is queued again, first in line (its training resumes)."""
        with self._connect() as db:
            rows = db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()
            db.execute("UPDATE jobs SET state = 'queued', pid = NULL, queued_at = 0 WHERE state = 'running'")
            db.execute("UPDATE jobs SET push_state = 'failed' WHERE push_state = 'pushing'")
        for row in rows:
            append_event(self.folder(row["id"]), "note", message="the studio restarted: resuming the job")
        return [row["id"] for row in rows]


def append_event(job_dir: Path, event: str, **fields: Any) -> None:
    """An event of the studio itself, in the same file and shape as the commands' ``--json`` events."""
    line = json.dumps({"event": event, "time": time.time(), **fields}, ensure_ascii=False)
    with open(job_dir / EVENTS_FILE, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Complete event lines from byte ``offset`` on: [(offset after the line, event)], new offset."""
    path = job_dir / EVENTS_FILE
    if not path.is_file():
        return [], offset
    with open(path, "rb") as source:
        source.seek(offset)
        chunk = source.read()
    events: list[tuple[int, dict[str, Any]]] = []
    position = offset
    for line in chunk.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line still being written: read it next time
        position += len(line)
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a command's stray output line: not an event
        if isinstance(event, dict) and "event" in event:
            events.append((position, event))
    return events, position


# -- the steps of a job: the CLI's own commands ----------------------------------------------------------


def job_steps(job_dir: Path) -> list[tuple[str, list[str]]]:
    """(name, the ``hubtools`` arguments) of each step: train (or resume), sample, evaluate when asked."""
    from hubtools.config import load_config

    run = job_dir / "run"
    config = load_config(job_dir / CONFIG_FILE)
    if (run / CONFIG_FILE).is_file():  # the run folder is set up: its training continues from its checkpoint
        train = ["train", str(run), "--resume"]
    else:
        train = ["train", "--config", str(job_dir / CONFIG_FILE), "--out", str(run)]
    steps = [("train", train), ("sample", ["sample", str(run)])]
    if config.eval.enabled:
        steps.append(("eval", ["eval", str(run)]))
    return steps


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the studio dies (Linux), so a killed studio leaves no trainer."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_DEATHSIG
    except (OSError, AttributeError):
        pass


def run_command(job_dir: Path, args: list[str], *, env: dict[str, str] | None = None,
                on_start: Any = None) -> int:
    """``python -m hubtools --json ARGS`` with stdout appended to the job's events; returns the exit code."""
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    child_env.pop("HUBTOOLS_DEBUG", None)
    with open(job_dir / EVENTS_FILE, "ab") as events, open(job_dir / STDERR_FILE, "ab") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubtools", "--json", *args], stdout=events, stderr=errors,
            stdin=subprocess.DEVNULL, cwd=job_dir, env=child_env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        if on_start is not None:
            on_start(process.pid)
        return process.wait()


def last_error(job_dir: Path) -> str:
    """The last ``error`` event's message, else the last line the command wrote on stderr."""
    events, _ = read_events(job_dir)
    for _, event in reversed(events):
        if event.get("event") == "error":
            return str(event.get("message", "failed"))
    path = job_dir / STDERR_FILE
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1] if lines else "the command failed"


class Worker:
    """``slots`` threads, each running one job at a time, step by step, until the studio stops."""

    def __init__(self, store: JobStore, slots: int = 1, poll_s: float = 0.5) -> None:
        self.store = store
        self.slots = max(1, slots)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.devices = visible.split(",") if visible else [str(slot) for slot in range(self.slots)]
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()

    def start(self) -> None:
        for slot in range(self.slots):
            threading.Thread(target=self._loop, args=(slot,), name=f"hubtools-studio-slot-{slot}",
                             daemon=True).start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self, slot: int) -> None:
        env = {"CUDA_VISIBLE_DEVICES": self.devices[slot]} if self.slots > 1 else {}
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self._run(job, env)

    def _run(self, job: Job, env: dict[str, str]) -> None:
        job_dir = self.store.folder(job.id)
        steps = job_steps(job_dir)
        for index, (name, args) in enumerate(steps):
            if index < job.steps_done:
                continue
            append_event(job_dir, "stage", message=f"studio: {name}")
            code = run_command(job_dir, args, env=env, on_start=lambda pid: self.store.update(job.id, pid=pid))
            current = self.store.get(job.id)
            if current is None:
                return
            if current.cancel_requested:
                self.store.update(job.id, state="cancelled", pid=None)
                append_event(job_dir, "note", message="cancelled: resume continues from the last checkpoint")
                return
            if code != 0:
                self.store.update(job.id, state="failed", pid=None, error=last_error(job_dir))
                return
            self.store.update(job.id, steps_done=index + 1)
        self.store.update(job.id, state="done", pid=None)
        append_event(job_dir, "stage", message="studio: done")

    def cancel(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        if job.state == "queued":
            self.store.update(job_id, state="cancelled")
            return
        self.store.update(job_id, cancel_requested=1)
        if job.state == "running" and job.pid:
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def gpu_slots() -> int:
    """One slot per visible GPU (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``), one without: the CPU runs
    one job at a time. Asked without importing torch, so the studio starts in a second."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"]))
    import shutil

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 1
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, sum(1 for line in listed.splitlines() if line.startswith("GPU ")))
