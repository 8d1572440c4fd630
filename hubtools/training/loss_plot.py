"""The loss-curve PNG, drawn with Pillow: a line chart of the training losses and, on a second axis, the
subject fidelity of the validation images.

Pillow rather than matplotlib: importing ``matplotlib.pyplot`` and drawing one figure costs 1.5-2.5 CPU-seconds
at the end of every run, this a few milliseconds. The chart is drawn at twice its size and scaled down, which
smooths its lines and text.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from hubtools.atomic import save_image_atomic
from hubtools.fonts import label_font

SIZE = (800, 450)  # pixels of the PNG
SCALE = 2  # drawn at SCALE times SIZE, then scaled down
BLUE, ORANGE, GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # matplotlib's tab: colours
INK, GRID, WHITE = (38, 38, 38), (222, 222, 222), (255, 255, 255)


@dataclass(frozen=True)
class Series:
    """One thing drawn: points (x, y), how, in which colour, against which y axis, under which label."""

    points: Sequence[tuple[float, float]]
    label: str
    colour: tuple[int, int, int]
    style: str = "line"  # "line", "dashed", "dots" (faint points), "markers" (line with round markers)
    right_axis: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        pad = abs(low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float, ticks: list[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0))
    return f"{value:.{decimals}f}"


class _Axis:
    """Maps data values to pixels along one direction."""

    def __init__(self, ticks: list[float], start: float, end: float) -> None:
        self.ticks, self.low, self.high, self.start, self.end = ticks, ticks[0], ticks[-1], start, end

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def draw_line_chart(series: Sequence[Series], path: Path, *, title: str, x_label: str, y_label: str,
                    right_label: str | None = None, legend_below: bool = False) -> Path:
    """Write a PNG of SIZE pixels with the series drawn against a left (and maybe right) y axis."""
    width, height = SIZE[0] * SCALE, SIZE[1] * SCALE
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    font, small = label_font(13 * SCALE), label_font(11 * SCALE)
    left_series = [s for s in series if not s.right_axis and s.points]
    right_series = [s for s in series if s.right_axis and s.points]

    legend_rows = math.ceil(len(series) / 2) if legend_below else 0
    box_left, box_right = 70 * SCALE, width - (70 if right_series else 20) * SCALE
    box_top, box_bottom = 34 * SCALE, height - (46 + 18 * legend_rows) * SCALE

    xs = [x for s in series for x, _ in s.points]
    x_axis = _Axis(nice_ticks(min(xs, default=0), max(xs, default=1)), box_left, box_right)
    y_left = _Axis(nice_ticks(*_range(left_series)), box_bottom, box_top)
    y_right = _Axis(nice_ticks(*_range(right_series)), box_bottom, box_top) if right_series else None

    for tick in x_axis.ticks:  # grid and tick labels
        x = x_axis(tick)
        draw.line([(x, box_top), (x, box_bottom)], fill=GRID, width=SCALE)
        _text(draw, (x, box_bottom + 4 * SCALE), _label(tick, x_axis.ticks), small, anchor="ma")
    for tick in y_left.ticks:
        y = y_left(tick)
        draw.line([(box_left, y), (box_right, y)], fill=GRID, width=SCALE)
        _text(draw, (box_left - 5 * SCALE, y), _label(tick, y_left.ticks), small, anchor="rm")
    if y_right is not None:
        for tick in y_right.ticks:
            _text(draw, (box_right + 5 * SCALE, y_right(tick)), _label(tick, y_right.ticks), small, anchor="lm")
    draw.rectangle([box_left, box_top, box_right, box_bottom], outline=INK, width=SCALE)

    for one in series:
        axis = y_right if one.right_axis else y_left
        if axis is not None and one.points:
            _draw_series(draw, [(x_axis(x), axis(y)) for x, y in one.points], one)

    _text(draw, (width / 2, 10 * SCALE), title, font, anchor="ma")
    _text(draw, ((box_left + box_right) / 2, box_bottom + 22 * SCALE), x_label, font, anchor="ma")
    _vertical_text(image, (14 * SCALE, (box_top + box_bottom) / 2), y_label, font)
    if right_label and y_right is not None:
        _vertical_text(image, (width - 14 * SCALE, (box_top + box_bottom) / 2), right_label, font)
    if legend_below:
        _legend(draw, series, small, origin=(box_left, box_bottom + 44 * SCALE), columns=2,
                column_width=(box_right - box_left) / 2)
    else:
        rows = [(s, draw.textlength(s.label, font=small)) for s in series]
        legend_width = max((w for _, w in rows), default=0) + 40 * SCALE
        _legend(draw, series, small, origin=(box_right - legend_width - 6 * SCALE, box_top + 8 * SCALE), columns=1,
                column_width=legend_width, framed=True)

    return save_image_atomic(image.resize(SIZE, Image.Resampling.LANCZOS), path, format="PNG")


def _range(series: Sequence[Series]) -> tuple[float, float]:
    values = [y for s in series for _, y in s.points if math.isfinite(y)]
    return (min(values), max(values)) if values else (0.0, 1.0)


def _draw_series(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], one: Series) -> None:
    if one.style == "dots":
        faint = tuple(round(255 - (255 - c) * 0.3) for c in one.colour)
        radius = 2 * SCALE
        for x, y in points:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=faint)
        return
    line_width = 2 * SCALE if one.style in ("line", "markers") else int(1.5 * SCALE)
    if one.style == "dashed":
        for a, b in _dashes(points, dash=8 * SCALE, gap=5 * SCALE):
            draw.line([a, b], fill=one.colour, width=line_width)
    elif len(points) > 1:
        draw.line(points, fill=one.colour, width=line_width, joint="curve")
    if one.style == "markers" or len(points) == 1:
        radius = 3.5 * SCALE
        for x, y in points:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=one.colour)


def _dashes(points: list[tuple[float, float]], dash: float, gap: float) -> list[tuple[tuple[float, float], ...]]:
    """Pieces of the polyline through ``points``: ``dash`` long, ``gap`` apart, measured along the line."""
    pieces, drawing, left = [], True, dash
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while done < length:
            take = min(left, length - done)
            a = (x0 + (x1 - x0) * done / length, y0 + (y1 - y0) * done / length)
            b = (x0 + (x1 - x0) * (done + take) / length, y0 + (y1 - y0) * (done + take) / length)
            if drawing:
                pieces.append((a, b))
            done += take
            left -= take
            if left <= 0:
                drawing = not drawing
                left = dash if drawing else gap
    return pieces


def _legend(draw: ImageDraw.ImageDraw, series: Sequence[Series], font, *, origin: tuple[float, float], columns: int,
            column_width: float, framed: bool = False) -> None:
    row_height = 18 * SCALE
    rows = math.ceil(len(series) / columns)
    x0, y0 = origin
    if framed:
        draw.rectangle([x0, y0, x0 + column_width, y0 + rows * row_height + 6 * SCALE], fill=WHITE, outline=GRID,
                       width=SCALE)
    for index, one in enumerate(series):
        x = x0 + (index % columns) * column_width + 8 * SCALE
        y = y0 + (index // columns) * row_height + 3 * SCALE + row_height / 2
        sample = Series([(x, y), (x + 24 * SCALE, y)], one.label, one.colour, one.style)
        _draw_series(draw, [(x, y), (x + 12 * SCALE, y), (x + 24 * SCALE, y)] if one.style == "dots" else
                     list(sample.points), sample)
        _text(draw, (x + 30 * SCALE, y), one.label, font, anchor="lm")


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, anchor: str) -> None:
    try:
        draw.text(xy, text, fill=INK, font=font, anchor=anchor)
    except ValueError:  # Pillow's bitmap font (no FreeType) takes no anchor
        draw.text(xy, text, fill=INK, font=font)


def _vertical_text(image: Image.Image, centre: tuple[float, float], text: str, font) -> None:
    """Text turned a quarter left, centred on ``centre``."""
    probe = ImageDraw.Draw(image)
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    strip = Image.new("RGB", (int(right - left) + 4, int(bottom - top) + 4), WHITE)
    ImageDraw.Draw(strip).text((2 - left, 2 - top), text, fill=INK, font=font)
    turned = strip.rotate(90, expand=True)
    image.paste(turned, (int(centre[0] - turned.width / 2), int(centre[1] - turned.height / 2)))
