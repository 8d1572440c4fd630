"""The tables the run commands print: the plan of ``--dry-run``, the training summary and the eval scores.

Cells hold user data (paths, prompts, repo ids), so they are ``Text``: rich never reads them as markup.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from hubtools.config import describe_precision
from hubtools.runfolder import TrainResult


def _table(title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    return table


def _row(table: Table, label: str, value: Any) -> None:
    table.add_row(label, Text(str(value)))


def plan_table(checked) -> Table:
    """``hubtools.runner.Preflight`` as a table."""
    table = _table("hubtools: the plan")
    cfg = checked.config
    _row(table, "run folder", checked.run_dir)
    _row(table, "base model", f"{cfg.model.base_model}" + (f" @ {cfg.model.revision}" if cfg.model.revision else ""))
    if cfg.model.vae:
        _row(table, "vae", cfg.model.vae)
    _row(table, "concept set", cfg.concept.source)
    _row(table, "instance prompt", checked.instance_prompt)
    if checked.class_prompt:
        _row(table, "prior preservation",
             f"{cfg.prior.num_class_images} x '{checked.class_prompt}', weight {cfg.prior.loss_weight}")
    _row(table, "training", f"{cfg.training.method}, {cfg.training.steps} steps, lr {cfg.training.learning_rate:g}, "
                            f"{', '.join(map(str, cfg.training.resolutions))} px, batch {cfg.training.batch_size}, seed {cfg.training.seed}")
    _row(table, "sampling", f"{len(cfg.sampling.prompts)} prompts x {len(cfg.sampling.seeds)} seeds, "
                            f"guidance {', '.join(f'{g:g}' for g in cfg.sampling.guidance_scales)}")
    if cfg.publish.repo_id:
        visibility = "private" if cfg.publish.private else "public"
        theme = f", hackathon theme {cfg.publish.hackathon_theme}" if cfg.publish.hackathon_theme else ""
        _row(table, "push to", f"{cfg.publish.repo_id} ({visibility}{theme})")
    _row(table, "memory", _memory_text(cfg.training))
    if getattr(checked, "estimate", None) is not None:
        _row(table, "estimated time", checked.estimate.text())
    report = checked.identifier_report
    if report is not None:
        _row(table, "identifier", f"{report.text!r}: {report.num_tokens} token(s) {report.tokens}")
    _row(table, "stages", " -> ".join(checked.stages))
    return table


def _memory_text(training) -> str:
    """What ``training.memory`` will do, said before anything is loaded (a profile is applied at the start)."""
    if training.memory == "manual":
        precision = ("precision by device" if training.mixed_precision == "auto"
                     else describe_precision(training.mixed_precision))
        return (f"as set: {precision}, "
                f"{'8-bit Adam' if training.use_8bit_adam else 'AdamW'}, gradient checkpointing "
                f"{'on' if training.gradient_checkpointing else 'off'}")
    if training.memory == "auto":
        return "auto: the family's largest profile that fits the free GPU memory, at start"
    return f"profile {training.memory}: its method and savers apply at start"


def train_table(result: TrainResult) -> Table:
    """What training did, as a table."""
    table = _table("training")
    _row(table, "steps", f"{result.steps_done} / {result.steps_total}")
    if result.final_loss is not None:
        _row(table, "final loss", f"{result.final_loss:.4f}")
    _row(table, "time", f"{result.wall_seconds:.1f} s ({result.steps_per_second or 0:.2f} steps/s)")
    if result.peak_memory_bytes:
        _row(table, "peak GPU memory", f"{result.peak_memory_bytes / 2**30:.2f} GiB")
    _row(table, "device", f"{result.device}, {describe_precision(result.mixed_precision)}")
    for weight in result.weight_files:
        _row(table, "weights", f"{weight.path} (sha256 {weight.sha256[:12]}…)")
    return table


def eval_table(result) -> Table:
    """The scores of ``hubtools eval`` and ``train-and-push --eval``: ours, the base model, the real photos and the
    paper's numbers (labelled), to three decimals as the card shows them."""
    table = Table(title=f"Evaluation of {result.identifier} {result.class_noun} "
                        f"({len(result.prompts)} prompts x {result.n_per_prompt} images, {result.prompt_source})")
    table.add_column("metric")
    table.add_column("ours", justify="right")
    table.add_column("base", justify="right")
    table.add_column("photos", justify="right")
    table.add_column("paper SD*", justify="right")
    table.add_column("paper photos*", justify="right")
    for row in result.comparison_rows():
        arrow = "↑" if row.metric.higher_is_better else "↓"
        ours = _fmt(row.ours)
        if row.ours is not None and row.baseline is not None and row.ours != row.baseline:
            better = (row.ours > row.baseline) == row.metric.higher_is_better
            ours = Text(ours, style="green" if better else "red")
        paper = _fmt(row.paper) + (" (Imagen)" if row.paper is not None and "Imagen" in (row.paper_label or "") else "")
        table.add_row(f"{row.metric.name} {arrow}", ours, _fmt(row.baseline), _fmt(row.real), paper, _fmt(row.paper_real))
    table.caption = ("base: the base model, same prompts and seeds; photos: the subject's own photos compared with "
                     "each other. *paper: the DreamBooth paper's numbers (Ruiz et al. 2022, DreamBooth on Stable "
                     "Diffusion and real images, DreamBench averages; PRES: Imagen with prior preservation), not "
                     "measurements of this model. "
                     "DIV here is DINO-based (the paper's is LPIPS).")
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
