"""Finding the photos in a folder and reading one image safely, whatever state it is in.

Every input gets a verdict a person can read: ``ignored`` (junk that is not meant as a photo),
``rejected`` (meant as a photo but unusable, with why), or a decoded RGB image plus notes on what was
done to it (EXIF rotation, alpha flattened, first frame of an animation...). Nothing here writes.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from hubtools.errors import first_line

# Extensions tried as images of a concept source (wider than imagefiles.IMAGE_SUFFIXES: these are
# converted to PNG on prepare); anything else in the folder is ignored (notes, videos, sidecars).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif", ".avif"}
)
# Photo formats Pillow cannot read without plugins: rejected with advice rather than silently ignored.
UNSUPPORTED_PHOTO_EXTENSIONS = {".heic": "HEIC", ".heif": "HEIF", ".dng": "DNG raw", ".cr2": "CR2 raw", ".nef": "NEF raw"}
CAPTION_FILES = frozenset({"metadata.jsonl", "metadata.csv"})
SIDECAR_SUFFIX = ".txt"  # kohya's caption file beside each image
OS_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r", ".ds_store"})
OS_JUNK_DIRS = frozenset({"__macosx", ".git", ".svn", "@eadir", "$recycle.bin", ".trash", ".thumbnails"})

# Decoders Pillow may use. Without this list a file named .jpg could be opened as EPS (which runs
# Ghostscript) or any other exotic plugin; photos need none of them. (JPEG covers cameras' MPO files.)
SAFE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "AVIF")


def _open_formats() -> list[str]:
    Image.init()
    return [name for name in SAFE_FORMATS if name in Image.OPEN]  # AVIF only in newer Pillow builds

# Above this many pixels an image is refused before decoding: a decompression bomb is a small file whose
# header promises gigapixels. Pillow's own default (about 89 Mpx, ~270 MB as RGB) covers phone photos.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@dataclass
class FoundFile:
    """One file under the source folder, in a stable order, with its verdict if already decided."""

    rel_path: str  # posix path relative to the source folder
    path: Path
    ignored_reason: str | None = None  # set for files that are not photos at all


@dataclass
class ReadImage:
    """A successfully decoded input, oriented and converted to RGB."""

    image: Image.Image  # RGB, upright; possibly reduced (JPEG draft) but never below the target size
    original_size: tuple[int, int]  # width, height as stored in the file, after EXIF orientation
    notes: list[str] = field(default_factory=list)


class RejectedImage(Exception):
    """The input was meant as a photo but cannot be used. ``str()`` is the human reason."""


def walk_source(src: Path) -> list[FoundFile]:
    """Every file under ``src`` (recursively, symlinked folders not followed), sorted by relative path."""
    found: list[FoundFile] = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel_dir = Path(dirpath).relative_to(src)
        # Hidden and OS-junk folders are pruned whole, but still reported so nothing is silently skipped.
        for name in list(dirnames):
            if name.startswith(".") or name.lower() in OS_JUNK_DIRS:
                dirnames.remove(name)
                rel = (rel_dir / name).as_posix() + "/"
                found.append(FoundFile(rel, Path(dirpath) / name, "hidden or system folder"))
        for name in filenames:
            path = Path(dirpath) / name
            found.append(FoundFile((rel_dir / name).as_posix(), path, _ignore_reason(name)))
    found.sort(key=lambda f: f.rel_path)
    return found


def _ignore_reason(name: str) -> str | None:
    lower = name.lower()
    suffix = Path(lower).suffix
    if lower in CAPTION_FILES:
        return "captions file (used for captions)"
    if lower in OS_JUNK_NAMES or lower.startswith("._"):
        return "operating-system file"
    if name.startswith("."):
        return "hidden file"
    if suffix in IMAGE_EXTENSIONS or suffix in UNSUPPORTED_PHOTO_EXTENSIONS:
        return None
    return f"not an image file ({suffix or 'no extension'})"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_image(data: bytes, *, name: str, min_side: int, max_pixels: int = MAX_PIXELS) -> ReadImage:
    """Decode ``data`` (the file's bytes) into an upright RGB image, or raise ``RejectedImage``.

    ``min_side`` is the training resolution: a JPEG is decoded at the smallest scale that still covers
    it (``Image.draft``), so a 50-megapixel photo never costs 50 megapixels of memory.
    """
    suffix = Path(name).suffix.lower()
    if suffix in UNSUPPORTED_PHOTO_EXTENSIONS:
        kind = UNSUPPORTED_PHOTO_EXTENSIONS[suffix]
        raise RejectedImage(f"{kind} files cannot be read; export the photo as JPEG or PNG")
    if not data:
        raise RejectedImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) between 1x and 2x its pixel limit; a warning is a bomb too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, min_side=min_side, max_pixels=max_pixels)
        except RejectedImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow refused inside open(): its message carries the pixel count, not the dimensions.
            claimed = re.search(r"\((\d+) pixels\)", str(error))
            raise RejectedImage(_bomb_reason(None, max_pixels, int(claimed[1]) if claimed else None)) from None
        except UnidentifiedImageError:
            raise RejectedImage("not a readable image (unknown or corrupt format)") from None
        except MemoryError:
            raise RejectedImage("too large to decode in the available memory") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as error:
            # Pillow reports truncation and corrupt streams as OSError/SyntaxError/ValueError.
            detail = first_line(error)
            if "truncated" in detail.lower():
                raise RejectedImage("truncated image: the file ends early (an interrupted copy or download?)") from None
            raise RejectedImage(f"corrupt image data ({detail})") from None


def _bomb_reason(size: tuple[int, int] | None, max_pixels: int, pixels: int | None = None) -> str:
    if size:
        dims = f" ({size[0]}x{size[1]}, {size[0] * size[1] / 1e6:.0f} megapixels)"
    else:
        dims = f" ({pixels / 1e6:.0f} megapixels)" if pixels else ""
    return (
        f"possible decompression bomb{dims}: over the {max_pixels / 1e6:.0f} megapixel limit; "
        "downscale it before use"
    )


def _decode(data: bytes, *, min_side: int, max_pixels: int) -> ReadImage:
    notes: list[str] = []
    im = Image.open(io.BytesIO(data), formats=_open_formats())
    # The header is read, nothing is decoded yet: refuse giant canvases before spending memory on them.
    width, height = im.size
    if width <= 0 or height <= 0:
        raise RejectedImage(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise RejectedImage(_bomb_reason((width, height), max_pixels))
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.seek(0)
        kind = "animated" if getattr(im, "is_animated", False) and im.format != "TIFF" else "multi-page"
        notes.append(f"{kind} ({frames} frames): used the first frame")
    fmt = im.format or "image"
    if fmt in ("JPEG", "MPO"):
        # Ask libjpeg for a reduced-scale decode whose short side still covers ``min_side``.
        short = min(width, height)
        if short > min_side:
            scale = min_side / short
            requested = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
            im.draft(None, requested)
    exif_orientation = _exif_orientation(im)
    im.load()  # raises on truncated or corrupt data
    original_size = (width, height)
    if exif_orientation in (5, 6, 7, 8):
        original_size = (height, width)
    if exif_orientation not in (None, 1):
        try:
            im = ImageOps.exif_transpose(im)
            notes.append(f"rotated upright per EXIF orientation {exif_orientation}")
        except Exception:  # a malformed EXIF block must not cost the photo
            notes.append("EXIF orientation unreadable: used as stored")
    im = _to_rgb(im, notes)
    return ReadImage(image=im, original_size=original_size, notes=notes)


def _exif_orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


_SRGB = None


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha onto white, 16-bit scaled (not clipped), ICC honoured."""
    mode = im.mode
    icc = im.info.get("icc_profile")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's own conversion clips 16-bit values at 255 (a white image); scale 0..65535 instead.
        values = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")
        notes.append(f"converted from 16-bit ({mode}) to 8-bit")
    elif mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if values.size and float(values.max()) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")
        notes.append("converted from floating point to 8-bit")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("transparency flattened onto white")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode == "CMYK" and icc:
        converted = _icc_to_srgb(im, icc)
        if converted is not None:
            notes.append("converted from CMYK to RGB using its colour profile")
            return converted
    if im.mode == "RGB" and icc:
        converted = _icc_to_srgb(im, icc)
        if converted is not None:
            return converted
    if im.mode != "RGB":
        notes.append(f"converted from {_MODE_NAMES.get(im.mode, im.mode)} to RGB")
        try:
            im = im.convert("RGB")
        except ValueError:  # e.g. LAB or HSV, which Pillow cannot convert
            raise RejectedImage(f"unsupported colour mode {im.mode}; save it as an RGB JPEG or PNG") from None
    return im


_MODE_NAMES = {"CMYK": "CMYK", "L": "grayscale", "1": "black and white", "P": "palette", "YCbCr": "YCbCr"}


def _icc_to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    # Phone photos are often Display P3: convert to sRGB so colours match what the phone showed.
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, _srgb_profile(), outputMode="RGB")
    except Exception:
        return None


# Where the square sits inside the resized image, as fractions of the spare width and height.
_CROP_ANCHORS = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5)}
CROP_MODES = tuple(_CROP_ANCHORS)


def fit_to_square(image: Image.Image, resolution: int, crop: str = "center") -> Image.Image:
    """Resize so the short side is ``resolution`` and crop a square (center, top, bottom, left, right)."""
    width, height = image.size
    side = min(width, height)
    dx, dy = width - side, height - side
    fx, fy = _CROP_ANCHORS[crop]
    left, top = round(dx * fx), round(dy * fy)
    box = (left, top, left + side, top + side)
    # reducing_gap lets Pillow shrink by integer steps first: faster, same result class, deterministic.
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


