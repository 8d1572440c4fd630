"""Labelled sample grids of a trained run: prompts x seeds, a guidance sweep, and checkpoints x prompts.

Every image is drawn from a fixed seed with a CPU generator, so the same run gives byte-identical PNGs on
any machine that computes the same numbers. Cells are upscaled (nearest) to at least ``MIN_CELL_PX`` so
the 64 px images of the tiny model stay readable, and the rows and columns carry their prompt, seed,
guidance and training step as text, so a grid read on its own says what it shows.

    RUN/images/samples_grid.png        prompts x seeds at the first guidance scale
    RUN/images/guidance_sweep.png      prompts x (guidance x seeds), same seeds in each group
    RUN/images/checkpoints_grid.png    checkpoint step x prompt (first seed, first guidance)
    RUN/images/widget.png              the instance prompt, first seed and guidance (the card's widget)
    RUN/images/samples.json            every cell (prompt, seed, guidance, step, file, row, column)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw

from hubtools.atomic import save_image_atomic
from hubtools.config import RunConfig, load_run_config
from hubtools.devices import dtype_kwargs
from hubtools.families import Family
from hubtools.fonts import label_font
from hubtools import distributed
from hubtools.reporting import Reporter, reporter_or_silent
from hubtools.runfolder import (
    LORA_WEIGHTS_FILENAME, RunFolder, SampleCell, SamplesRecord, TrainResult, WidgetSample,
)
from hubtools.runfolder.layout import CHECKPOINTS_GRID, GUIDANCE_SWEEP, SAMPLES_GRID, WIDGET_IMAGE
MIN_CELL_PX = 192  # smaller images (the tiny model's 64 px) are upscaled, nearest, by a whole factor
MAX_CELL_PX = 384  # larger ones (SD's 512 px) are shown smaller, so a 4 x 6 sweep stays a few MB

_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (90, 90, 90)


@dataclass
class SampleResult:
    """What ``render_samples`` wrote: grid files by kind, the samples.json, and how many images it drew."""

    run_dir: Path
    grid_files: dict[str, Path]  # "samples", "guidance_sweep", "checkpoints" -> file
    samples_json: Path
    widget_image: Path  # the instance prompt at the first seed and guidance: the card's widget example
    images_generated: int
    seconds: float
    cells: list[SampleCell] = field(default_factory=list)

    @property
    def grids(self) -> list[Path]:
        return list(self.grid_files.values())

    @property
    def samples_grid(self) -> Path:
        return self.grid_files["samples"]

    @property
    def guidance_sweep(self) -> Path | None:
        return self.grid_files.get("guidance_sweep")

    @property
    def checkpoints_grid(self) -> Path | None:
        return self.grid_files.get("checkpoints")


# -- generation ----------------------------------------------------------------------------------------


def _use_scheduler(pipe, family: Family, name: str) -> None:
    """The named scheduler, where the family samples with a swappable one (some keep their flow-matching one)."""
    pipe.scheduler = family.sampling_scheduler(name, pipe.scheduler.config)


class _Sampler:
    """Draws (prompt, seed, guidance) images from one model state, caching what it already drew."""

    def __init__(self, pipe, family: Family, config: RunConfig, progress: Callable[[int], None], *,
                 share: tuple[int, int] | None = None, given: dict | None = None) -> None:
        self.pipe = pipe
        self.steps = config.sampling.num_inference_steps
        # the family's call arguments (e.g. max_sequence_length, and the size where the pipeline has its own)
        self.family = family
        self.extra = family.call_kwargs(dict(pipe.components[family.denoiser].config))
        if not family.pipeline_sizes_itself:
            self.extra.update(height=config.training.main_resolution, width=config.training.main_resolution)
        self.progress = progress
        self.generated = 0
        self._cache: dict[tuple[str, int, float, Size | None], Image.Image] = {}
        # Split across processes: a call (one batch of seeds) is drawn by process (call number % processes),
        # the others hold blanks in its place; what this process drew is kept in ``drawn`` by (model state,
        # prompt, seed, guidance, size). ``given``: every image drawn so, taken instead of drawing.
        self.share, self.given, self.drawn = share, given, {}
        self.calls, self.state = 0, 0
        self.blank_size = (config.training.main_resolution,) * 2

    def forget(self) -> None:
        """The model changed (a checkpoint's weights): nothing drawn so far is valid."""
        self._cache.clear()
        self.state += 1

    def images(self, prompt: str, seeds: list[int], guidance: float, size: Size | None = None) -> list[Image.Image]:
        """The images of ``prompt`` at ``seeds``; ``size`` (width, height): a training bucket's, else the model's."""
        missing = [s for s in seeds if (prompt, s, guidance, size) not in self._cache]
        if missing:
            keys = [(self.state, prompt, seed, guidance, size) for seed in missing]
            call, self.calls = self.calls, self.calls + 1
            if self.given is not None:
                drawn = [self.given[key] for key in keys]
            elif self.share is not None and call % self.share[1] != self.share[0]:
                drawn = [Image.new("RGB", size or self.blank_size, _BACKGROUND)] * len(missing)  # another's
            else:
                drawn = self._draw(prompt, missing, guidance, size)
                if self.share is not None:
                    self.drawn.update(zip(keys, drawn))
            for seed, image in zip(missing, drawn):
                self._cache[(prompt, seed, guidance, size)] = image
            self.generated += len(missing)
            self.progress(self.generated)
        return [self._cache[(prompt, s, guidance, size)] for s in seeds]

    def _draw(self, prompt: str, seeds: list[int], guidance: float, size: Size | None) -> list[Image.Image]:
        # One CPU generator per seed: the image of a seed does not depend on the device.
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        extra = self.extra if size is None else {**self.extra, "width": size[0], "height": size[1]}
        with torch.inference_mode():
            out = self.pipe(
                prompt=[prompt] * len(seeds), generator=generators, **self.family.guidance_kwargs(guidance),
                num_inference_steps=self.steps, output_type="pil", **extra,
            )
        return [image.convert("RGB") for image in out.images]


# -- the training buckets' shapes -------------------------------------------------------------------------

Size = tuple[int, int]  # (width, height)
MAX_GRID_BUCKETS = 3  # the samples grid shows at most this many bucket shapes, the most common ones


@dataclass
class SampleShapes:
    """The sizes the grids draw at when the concept set trained on buckets that are not all square: the samples
    grid one group of seeds per shape (portrait to landscape), everything else at the most common bucket."""

    grid: list[Size]
    widget: Size

    @classmethod
    def of(cls, buckets: dict[str, int] | None, resolution: int) -> SampleShapes | None:
        """From ``train_result.json``'s images per bucket ("WxH" -> count); None for a square set (today's grids).
        With several resolutions only the buckets of the largest area count."""
        sizes = {tuple(int(side) for side in label.split("x")): count for label, count in (buckets or {}).items()}
        sizes = {size: count for size, count in sizes.items() if size[0] * size[1] >= 0.75 * resolution**2} or sizes
        if all(width == height for width, height in sizes):
            return None
        common = sorted(sizes, key=lambda size: (-sizes[size], abs(size[0] - size[1]), size))
        shown = sorted(common[:MAX_GRID_BUCKETS], key=lambda size: (size[0] / size[1], size[0]))
        return cls(grid=shown, widget=common[0])


# -- drawing ---------------------------------------------------------------------------------------------


def _cell_size(image: Image.Image) -> int:
    side = max(image.size)
    if side < MIN_CELL_PX:
        return side * math.ceil(MIN_CELL_PX / side)
    return min(side, MAX_CELL_PX)


def _scaled_to(image: Image.Image, size: int) -> Image.Image:
    """A square cell of ``size``: a square image scaled to it, another shape scaled to fit and centred on white."""
    if image.size == (size, size):
        return image
    if image.width == image.height:
        upscale = size >= max(image.size)
        return image.resize((size, size), Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS)
    scale = size / max(image.size)
    fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    upscale = scale >= 1
    resized = image.resize(fitted, Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS)
    cell = Image.new("RGB", (size, size), _BACKGROUND)
    cell.paste(resized, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))
    return cell


def _widget_image(image: Image.Image) -> Image.Image:
    """The widget at its own shape, a small one (the tiny model's) upscaled by a whole factor."""
    side = max(image.size)
    if side >= MIN_CELL_PX:
        return image
    factor = math.ceil(MIN_CELL_PX / side)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap measured in pixels (long words stay whole rather than being cut)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


@dataclass
class _Grid:
    image: Image.Image
    left: int  # where the images start, right of the row labels
    top: int  # and below the headers
    cell: int

    def box(self, row: int, column: int) -> list[int]:
        x, y = self.left + column * self.cell, self.top + row * self.cell
        return [x, y, x + self.cell, y + self.cell]


def _labelled_grid(
    rows: list[list[Image.Image]],
    row_labels: list[str],
    column_labels: list[str],
    title: str,
    column_groups: list[tuple[str, int]] | None = None,
) -> _Grid:
    """Images in a ``make_image_grid`` grid with a title, optional column-group headers, column and row labels."""
    from diffusers.utils import make_image_grid

    n_rows, n_cols = len(rows), len(rows[0])
    cell = _cell_size(max((image for row in rows for image in row), key=lambda image: max(image.size)))
    flat = [_scaled_to(image, cell) for row in rows for image in row]
    grid = make_image_grid(flat, rows=n_rows, cols=n_cols)

    font_size = max(14, cell // 12)
    font, title_font = label_font(font_size), label_font(round(font_size * 1.15))
    pad = font_size // 2
    line = round(font_size * 1.3)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Row labels get up to 1.25 cells of width (prompts wrap), less when they are short (checkpoint steps).
    max_label = round(cell * 1.25) - 2 * pad
    row_lines = [_wrap(scratch, label, font, max_label) for label in row_labels]
    widest = max(scratch.textlength(text, font=font) for lines in row_lines for text in lines)
    left = math.ceil(min(widest, max_label)) + 3 * pad
    column_lines = [_wrap(scratch, label, font, cell - pad) for label in column_labels]
    column_height = max(len(lines) for lines in column_lines) * line
    title_top = pad
    group_top = title_top + line + pad // 2
    column_top = group_top + (line if column_groups else 0)
    top = column_top + column_height + pad

    width = max(left + grid.width, math.ceil(scratch.textlength(title, font=title_font)) + 2 * pad)
    canvas = Image.new("RGB", (width, top + grid.height), _BACKGROUND)
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, title_top), title, font=title_font, fill=_INK)
    if column_groups:
        x = left
        for label, span in column_groups:
            draw.text((x + span * cell / 2, group_top + line / 2), label, font=font, fill=_INK, anchor="mm")
            if x > left:  # a white rule between groups so the comparison reads as blocks
                draw.rectangle([x - 2, top, x + 1, top + grid.height], fill=_BACKGROUND)
            x += span * cell
    for j, lines in enumerate(column_lines):
        y0 = column_top + column_height - len(lines) * line  # bottom-aligned, just above the images
        for k, text in enumerate(lines):
            draw.text((left + j * cell + cell / 2, y0 + k * line + line / 2), text, font=font, fill=_MUTED, anchor="mm")
    for i, lines in enumerate(row_lines):
        y0 = top + i * cell + (cell - len(lines) * line) / 2
        for k, text in enumerate(lines):
            draw.text((pad, y0 + k * line), text, font=font, fill=_INK)
    return _Grid(canvas, left, top, cell)


def _sized(size: Size | None) -> dict[str, list[int]]:
    """A cell's ``size`` field: only where the grids draw at a bucket's size, so a square set's records read as before."""
    return {"size": list(size)} if size else {}


def _format_guidance(value: float) -> str:
    return f"{value:g}"


# -- checkpoints -----------------------------------------------------------------------------------------


def _load_checkpoint_into(pipe, family: Family, checkpoint: Path, lora: bool, *, load: bool = True) -> bool:
    """Swap the trained weights of ``checkpoint`` into ``pipe``; False when the folder holds no weights.
    ``load=False``: only whether it holds them (the images are drawn already)."""
    if lora:
        if not (checkpoint / LORA_WEIGHTS_FILENAME).is_file():
            return False
        if not load:
            return True
        pipe.unload_lora_weights()
        pipe.load_lora_weights(checkpoint, weight_name=LORA_WEIGHTS_FILENAME)
        return True
    if not (checkpoint / family.denoiser).is_dir():
        return False
    if not load:
        return True
    for name in (family.denoiser, *family.text_encoders):  # each trained part the checkpoint holds, same class
        if (checkpoint / name).is_dir():
            current = pipe.components[name]
            library = "diffusers" if type(current).__module__.startswith("diffusers") else "transformers"
            setattr(pipe, name, type(current).from_pretrained(
                checkpoint / name, **dtype_kwargs(library, current.dtype)).to(current.device))
    return True


# -- the stage -------------------------------------------------------------------------------------------


def render_samples(run_dir: Path, *, device=None, reporter: Reporter | None = None,
                   progress: bool = True) -> SampleResult | None:
    """Draw the run's sample grids into ``RUN/images`` and describe every cell in ``samples.json``; progress and
    the grids go to ``reporter`` (``progress=False`` drops the progress, for library callers).

    Under several processes every process calls it: each draws its share of the images (the batches one
    process would draw, in turn), the main process gathers them, lays out and writes the grids, byte for
    byte what one process writes, and returns the result (the others: None)."""
    reporter = reporter_or_silent(reporter, progress=progress)
    started = time.monotonic()
    from hubtools.devices import resolve_device
    from hubtools.pipelines import family_of, load_run_pipeline, record_of_run

    device = resolve_device("auto") if device is None else torch.device(device)
    config = load_run_config(Path(run_dir))
    family = family_of(record_of_run(Path(run_dir), config.model))  # the base model preflight resolved
    pipe = load_run_pipeline(Path(run_dir), device=device)
    _use_scheduler(pipe, family, config.sampling.scheduler)
    if not distributed.launched():
        return _render(run_dir, pipe, family, reporter, started)
    share = (distributed.rank(), distributed.world_size())
    shares = distributed.each("the sample grids",
                              lambda: _render(run_dir, pipe, family, reporter, started, share=share))
    if not distributed.is_main():
        return None
    given = {key: image for drawn in shares for key, image in drawn.items()}
    return _render(run_dir, pipe, family, reporter, started, given=given)


def _render(run_dir: Path, pipe, family: Family, reporter: Reporter, started: float, *, share: tuple[int, int] | None = None,
            given: dict | None = None):
    """The stage: with ``share``, only draw this process's share (nothing written; returns what it drew);
    with ``given``, lay out and write the images every process drew."""
    run = RunFolder(Path(run_dir))
    config = load_run_config(run.root)
    sampling = config.sampling
    prompts, seeds, guidances = config.sample_prompts, sampling.seeds, sampling.guidance_scales
    trained = TrainResult.read(run)
    final_step = int((trained.steps_done if trained else None) or config.training.steps)
    lora = run.is_lora
    checkpoints = run.list_checkpoints()
    writes = share is None
    total = len(prompts) * len(seeds) * len(guidances) + len(checkpoints) * len(prompts)
    progress = (lambda done: reporter.progress("grids", done, total)) if given is None else (lambda done: None)
    sampler = _Sampler(pipe, family, config, progress, share=share, given=given)
    scheduler_note = f"{family.sampling_scheduler_label(sampling.scheduler)}, {sampling.num_inference_steps} steps"
    cells: list[SampleCell] = []
    grids: dict[str, Path] = {}

    def save(kind: str, name: str, grid: _Grid, rows: list[list[dict[str, Any]]]) -> None:
        if not writes:
            return
        save_image_atomic(grid.image, run.images / name)
        grids[kind] = run.images / name
        reporter.artifact("grid", run.relative(run.images / name))
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                cells.append(SampleCell(**cell, grid=kind, file=run.relative(run.images / name), row=i, column=j,
                                        box=list(grid.box(i, j))))

    # prompts x seeds at the first guidance scale; a set trained on buckets of several shapes: the seeds at each
    shapes = SampleShapes.of((trained.settings or {}).get("buckets") if trained else None,
                             config.training.main_resolution)
    size = shapes.widget if shapes else None  # the sweep, the checkpoints and the widget: the most common bucket
    guidance = guidances[0]
    if shapes is None:
        rows = [sampler.images(p, seeds, guidance) for p in prompts]
        grid = _labelled_grid(
            rows, prompts, [f"seed {s}" for s in seeds],
            f"samples · step {final_step} · guidance {_format_guidance(guidance)} · {scheduler_note}",
        )
        save("samples", SAMPLES_GRID, grid,
             [[{"prompt": p, "seed": s, "guidance": guidance, "step": final_step} for s in seeds] for p in prompts])
    else:
        rows = [[img for shape in shapes.grid for img in sampler.images(p, seeds, guidance, shape)] for p in prompts]
        grid = _labelled_grid(
            rows, prompts, [f"seed {s}" for _ in shapes.grid for s in seeds],
            f"samples · step {final_step} · guidance {_format_guidance(guidance)} · {scheduler_note}",
            column_groups=[(f"{w}x{h}", len(seeds)) for w, h in shapes.grid],
        )
        save("samples", SAMPLES_GRID, grid,
             [[{"prompt": p, "seed": s, "guidance": guidance, "step": final_step, "size": list(shape)}
               for shape in shapes.grid for s in seeds] for p in prompts])
    widget = sampler.images(prompts[0], [seeds[0]], guidance, size)[0]
    if writes:
        save_image_atomic(_widget_image(widget), run.images / WIDGET_IMAGE)  # full size, small ones upscaled

    # the same seeds at every guidance scale, side by side
    if len(guidances) > 1:
        rows = [[img for g in guidances for img in sampler.images(p, seeds, g, size)] for p in prompts]
        grid = _labelled_grid(
            rows, prompts, [f"seed {s}" for _ in guidances for s in seeds],
            f"guidance sweep · step {final_step} · {scheduler_note}",
            column_groups=[(f"guidance {_format_guidance(g)}", len(seeds)) for g in guidances],
        )
        save("guidance_sweep", GUIDANCE_SWEEP, grid,
             [[{"prompt": p, "seed": s, "guidance": g, "step": final_step, **_sized(size)} for g in guidances
               for s in seeds] for p in prompts])

    # checkpoint x prompt: how the subject appears over training (the final model is the last row)
    if checkpoints:
        seed = seeds[0]
        final_row = [sampler.images(p, [seed], guidance, size)[0] for p in prompts]
        steps, rows = [], []
        for step, folder in checkpoints:
            if step == final_step or not _load_checkpoint_into(pipe, family, folder, lora, load=given is None):
                continue
            sampler.forget()
            steps.append(step)
            rows.append([sampler.images(p, [seed], guidance, size)[0] for p in prompts])
        steps.append(final_step)
        rows.append(final_row)
        grid = _labelled_grid(
            rows, [f"step {s}" + (" (final)" if s == final_step else "") for s in steps], prompts,
            f"checkpoints · seed {seed} · guidance {_format_guidance(guidance)} · {scheduler_note}",
        )
        save("checkpoints", CHECKPOINTS_GRID, grid,
             [[{"prompt": p, "seed": seed, "guidance": guidance, "step": s, **_sized(size)} for p in prompts]
              for s in steps])

    if not writes:
        return sampler.drawn
    # A grid this sampling did not draw (fewer guidance scales now, checkpoints removed) is stale.
    for kind, name in [("guidance_sweep", GUIDANCE_SWEEP), ("checkpoints", CHECKPOINTS_GRID)]:
        if kind not in grids:
            (run.images / name).unlink(missing_ok=True)

    SamplesRecord(
        scheduler=sampling.scheduler,
        num_inference_steps=sampling.num_inference_steps,
        prompts=prompts,
        seeds=seeds,
        guidance_scales=guidances,
        step=final_step,
        grids={kind: run.relative(path) for kind, path in grids.items()},
        widget=WidgetSample(prompt=prompts[0], seed=seeds[0], guidance=guidances[0],
                            file=run.relative(run.widget_image), **_sized(size)),
        cells=cells,
    ).write(run)
    return SampleResult(
        run_dir=run.root, grid_files=grids, samples_json=run.samples_json, widget_image=run.widget_image,
        images_generated=sampler.generated,
        seconds=time.monotonic() - started, cells=cells,
    )
