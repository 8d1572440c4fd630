"""One PNG a person can look at: every usable image as a labelled thumbnail, what was left out beside it.

Drawn with PIL alone (``diffusers.utils.make_image_grid`` has no labels and would import torch).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

from hubtools.concepts.manifest import ManifestEntry, PreparedConcept
from hubtools.fonts import label_font

THUMB = 160
PAD = 12
LABEL_LINES = 2
LINE = 16
PANEL_WIDTH = 500
MAX_LISTED = 45
BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
STATUS_COLOURS = {"accepted": (46, 139, 87), "duplicate": (230, 140, 0), "rejected": (200, 40, 40), "ignored": (140, 140, 140)}


def _fit(text: str, width_chars: int) -> str:
    return text if len(text) <= width_chars else "…" + text[-(width_chars - 1) :]


def render_contact_sheet(
    concept: PreparedConcept, path: Path, extra_thumbnails: dict[int, Image.Image] | None = None
) -> Path:
    """Write the sheet for ``concept`` to ``path``. ``extra_thumbnails`` maps entry index -> image for
    inputs that were decoded but not used (duplicates, too small), so a person can see them too."""
    extra_thumbnails = extra_thumbnails or {}
    font, small, title_font = label_font(13), label_font(12), label_font(16)
    tiles: list[tuple[Image.Image, ManifestEntry]] = []
    for index, entry in enumerate(concept.entries):
        if entry.status == "accepted" and entry.output:
            with Image.open(concept.dir / entry.output) as image:
                tiles.append((image.convert("RGB"), entry))
        elif index in extra_thumbnails:
            tiles.append((extra_thumbnails[index], entry))
    left_out = [entry for entry in concept.entries if entry.status != "accepted"]
    bucketed = bool(concept.buckets)
    if bucketed:  # the images in their buckets: one bucket after another, the most common first
        order = list(concept.bucket_counts())
        tiles.sort(key=lambda tile: (tile[1].status != "accepted", order.index(_bucket_label(tile[1]))
                                     if tile[1].bucket else len(order)))

    columns = max(1, min(6, math.ceil(math.sqrt(max(len(tiles), 1)))))
    rows = max(1, math.ceil(len(tiles) / columns))
    cell_w, cell_h = THUMB + PAD, THUMB + PAD + LABEL_LINES * LINE + 4
    header_h = 2 * LINE + 2 * PAD
    grid_w = PAD + columns * cell_w
    panel_lines = _panel_lines(left_out)
    height = max(header_h + rows * cell_h + PAD, header_h + (len(panel_lines) + 2) * LINE + PAD)
    sheet = Image.new("RGB", (grid_w + PANEL_WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    counts = concept.counts
    revision = f"@{concept.source_revision[:12]}" if concept.source_revision else ""
    draw.text((PAD, PAD), f"{_fit(concept.public_source, 90)}{revision}", fill=INK, font=title_font)
    size = (", ".join(f"{label}: {count}" for label, count in concept.bucket_counts().items()) if bucketed
            else f"{concept.resolution}x{concept.resolution} px")
    summary = (
        f"{size}, {concept.crop} crop   |   "
        f"{counts.get('accepted', 0)} accepted, {counts.get('rejected', 0)} rejected, "
        f"{counts.get('duplicate', 0)} duplicate, {counts.get('ignored', 0)} ignored"
    )
    draw.text((PAD, PAD + LINE + 4), summary, fill=MUTED, font=font)

    if not tiles:
        draw.text((PAD, header_h), "no usable images", fill=STATUS_COLOURS["rejected"], font=title_font)
    for position, (image, entry) in enumerate(tiles):
        x = PAD + (position % columns) * cell_w
        y = header_h + (position // columns) * cell_h
        if entry.status == "accepted" and bucketed:  # its bucket's shape, as large as the tile allows
            scale = THUMB / max(image.size)
            thumb = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        elif entry.status == "accepted":  # square at the training resolution: fill the tile, even from 64 px
            thumb = image.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
        else:  # shown at most at its own size, so a too-small photo looks small
            thumb = image.copy()
            thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
        left, top = x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2
        sheet.paste(thumb, (left, top))
        colour = STATUS_COLOURS[entry.status]
        if bucketed and entry.status == "accepted":  # the frame shows the bucket's shape
            draw.rectangle((left - 2, top - 2, left + thumb.width + 1, top + thumb.height + 1), outline=colour, width=3)
        else:
            draw.rectangle((x - 2, y - 2, x + THUMB + 1, y + THUMB + 1), outline=colour, width=3)
        first = Path(entry.output).name if entry.output else entry.status.upper()
        if entry.bucket and entry.status == "accepted":
            first += f"  {_bucket_label(entry)}"
        draw.text((x, y + THUMB + 4), _fit(first, 24), fill=colour, font=font)
        draw.text((x, y + THUMB + 4 + LINE), _fit(entry.label, 26), fill=MUTED, font=small)

    panel_x = grid_w + PAD
    draw.line((grid_w, PAD, grid_w, height - PAD), fill=(210, 210, 210), width=1)
    draw.text((panel_x, header_h - LINE - 4), "Not used", fill=INK, font=title_font)
    y = header_h + 4
    for text, colour in panel_lines:
        draw.text((panel_x, y), text, fill=colour, font=small)
        y += LINE
    sheet.save(path, format="PNG")
    return path


def _bucket_label(entry: ManifestEntry) -> str:
    return f"{entry.bucket[0]}x{entry.bucket[1]}" if entry.bucket else ""


def _panel_lines(entries: list[ManifestEntry]) -> list[tuple[str, tuple[int, int, int]]]:
    if not entries:
        return [("nothing: every file was used", MUTED)]
    lines: list[tuple[str, tuple[int, int, int]]] = []
    # Rejected and duplicates first: those are the ones a person must act on.
    ordered = sorted(entries, key=lambda entry: {"rejected": 0, "duplicate": 1, "ignored": 2}[entry.status])
    for listed, entry in enumerate(ordered):
        if listed >= MAX_LISTED:
            lines.append((f"... and {len(ordered) - listed} more: see manifest.json", MUTED))
            break
        colour = STATUS_COLOURS[entry.status]
        lines.append((f"{entry.status.upper()}  {_fit(entry.label, 52)}", colour))
        for part in textwrap.wrap(entry.reason, 66)[:2]:
            lines.append(("    " + part, MUTED))
    return lines
