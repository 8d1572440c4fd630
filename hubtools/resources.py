"""Where the data files shipped with hubtools live, in a wheel and in a source checkout alike."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
CLIP_BPE_FILE = DATA_DIR / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"
DREAMBENCH_DIR = DATA_DIR / "dreambench"
DEMO_CONCEPT_DIR = DREAMBENCH_DIR / "dog"
DREAMBENCH_PROMPTS_FILE = DREAMBENCH_DIR / "prompts_and_classes.txt"


def _shipped_dir(name: str) -> Path:
    # A wheel force-includes the top-level folder inside the package; a source checkout has it beside.
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


TEMPLATES_DIR = _shipped_dir("templates")
HACKATHON_DIR = _shipped_dir("hackathon")
