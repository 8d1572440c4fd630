"""Training metrics: one JSON line per step in ``logs/metrics.jsonl``, the same scalars to TensorBoard
through accelerate's trackers, and a loss-curve PNG at the end. ``LossWindow`` turns the loop's losses,
read back from the device a window of steps at a time, into those rows."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hubtools.atomic import write_text_atomic
from hubtools.errors import HubtoolsError
from hubtools.runfolder import read_jsonl
from hubtools.training.loss_plot import BLUE, GREEN, ORANGE, Series, draw_line_chart


class MetricsLog:
    """Appends rows on the main process; other processes hold a disabled log."""

    def __init__(self, path: Path, accelerator, *, enabled: bool) -> None:
        self.path, self.accelerator, self.enabled = Path(path), accelerator, enabled

    def keep_until(self, step: int) -> None:
        """On resume: forget rows after the checkpoint, which the resumed run computes again."""
        if not self.enabled:
            return
        kept = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def reset(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
        for row in rows:
            scalars = {f"train/{k}": v for k, v in row.items() if k not in ("step", "time") and v is not None}
            self.accelerator.log(scalars, step=row["step"])


@dataclass
class LossWindow:
    """The steps since the last host sync. Reading losses back stalls the GPU, so it happens once per
    window, for everything that needs the values: the NaN check, the metrics rows, the reporter's metrics."""

    metrics: MetricsLog
    reporter: Any  # hubtools.reporting.Reporter
    device: torch.device
    has_prior: bool
    learning_rate: float  # named in the advice when the loss is no longer finite
    mixed_precision: str  # likewise
    run_started: float  # time.perf_counter() at the start of the run: the rows' time column
    started: float  # when this window began: its steps per second
    steps: list[tuple[int, torch.Tensor, float]] = field(default_factory=list)  # (step, loss parts on device, lr)
    rows: list[dict[str, Any]] = field(default_factory=list)  # every row made so far

    def add(self, step: int, loss_parts: torch.Tensor, lr: float) -> None:
        """``loss_parts``: (loss, instance loss, prior loss) of the step, still on the device."""
        self.steps.append((step, loss_parts, lr))

    def flush(self) -> None:
        if not self.steps:
            return
        values = torch.stack([parts for _, parts, _ in self.steps]).tolist()
        now = time.perf_counter()
        rate = len(self.steps) / max(now - self.started, 1e-9)
        rows = []
        for (step, _, lr), (loss, instance_loss, prior_loss) in zip(self.steps, values):
            if not math.isfinite(loss):
                raise HubtoolsError(
                    f"the loss became {loss} at step {step}: lower the learning rate (now {self.learning_rate:g}) "
                    f"or use --mixed-precision bf16/no instead of {self.mixed_precision}; resume from the last "
                    "checkpoint with --resume --force after changing it"
                )
            rows.append({"step": step, "loss": loss, "instance_loss": instance_loss,
                         "prior_loss": prior_loss if self.has_prior else None, "lr": lr,
                         "it/s": rate, "time": round(now - self.run_started, 3)})
        self.metrics.write(rows)
        self.rows.extend(rows)
        for row in rows:
            values = {key: value for key, value in row.items() if key not in ("step", "time") and value is not None}
            if self.device.type == "cuda":
                values["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
            self.reporter.metric(row["step"], values)
        self.steps, self.started = [], now


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curve(rows: list[dict[str, Any]], path: Path, *, title: str,
                    fidelity: list[dict[str, Any]] | None = None) -> Path | None:
    """Raw per-step losses as faint points, a moving average over them, the prior term if any, and the
    DINO fidelity of the validation images on a second axis when it was measured."""
    rows = [row for row in rows if row.get("loss") is not None]
    if not rows:
        return None
    steps = [row["step"] for row in rows]
    window = max(1, len(rows) // 20)
    losses = [row["loss"] for row in rows]
    series = [Series(list(zip(steps, losses)), "loss (per step)", BLUE, "dots"),
              Series(list(zip(steps, smooth(losses, window))), f"loss ({window}-step average)", BLUE)]
    prior = [(row["step"], row["prior_loss"]) for row in rows if row.get("prior_loss") is not None]
    if prior:
        series.append(Series(list(zip([s for s, _ in prior], smooth([v for _, v in prior], window))),
                             f"prior loss ({window}-step average)", ORANGE, "dashed"))
    fidelity = [row for row in fidelity or [] if row.get("dino") is not None]
    if fidelity:
        series.append(Series([(row["step"], row["dino"]) for row in fidelity],
                             "subject fidelity (DINO, validation images)", GREEN, "markers", right_axis=True))
    # with a second axis the legend goes below the plot: two axes' lines would run through one drawn inside it
    return draw_line_chart(series, Path(path), title=title, x_label="training step", y_label="loss (MSE)",
                           right_label="DINO similarity to the photos" if fidelity else None,
                           legend_below=bool(fidelity))
