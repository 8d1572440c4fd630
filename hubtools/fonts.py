"""The one font every labelled picture uses (grids, contact sheets): Pillow's bundled one, no system fonts."""

from __future__ import annotations

from PIL import ImageFont


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font (needs FreeType)
    except Exception:  # pragma: no cover - Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()
