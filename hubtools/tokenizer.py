"""The CLIP tokenizer of Stable Diffusion 1.x, built offline from the shipped BPE merge list.

Stable Diffusion 1.x tokenizes with OpenAI CLIP's byte-level BPE (``openai/clip-vit-large-patch14``).
Its merge list is public data; from it ``vocab.json`` and ``merges.txt`` follow deterministically
(see ``hubtools/data/clip-bpe/README.md``), so an exact ``CLIPTokenizer`` needs no download.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from hubtools.resources import CLIP_BPE_FILE

CLIP_MODEL_MAX_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode symbols (CLIP reuses it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def _read_merges(bpe_file: Path) -> list[str]:
    lines = gzip.open(bpe_file, "rt", encoding="utf-8").read().split("\n")
    return lines[1 : _NUM_MERGES + 1]  # line 0 is a header


def clip_vocab_and_merges(bpe_file: Path = CLIP_BPE_FILE) -> tuple[dict[str, int], list[str]]:
    """The 49,408-entry vocabulary and the merge list, in CLIP's id order."""
    merges = _read_merges(bpe_file)
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer_files(out_dir: Path, bpe_file: Path = CLIP_BPE_FILE) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``out_dir`` and return it."""
    vocab, merges = clip_vocab_and_merges(bpe_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"model_max_length": CLIP_MODEL_MAX_LENGTH, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out_dir


@lru_cache(maxsize=1)
def _tokenizer_files() -> Path:
    # Built once per process; the files are small (2 MB) and building takes well under a second.
    return write_clip_tokenizer_files(Path(tempfile.mkdtemp(prefix="hubtools-clip-tokenizer-")))


def build_clip_tokenizer() -> CLIPTokenizer:
    """An exact Stable Diffusion 1.x ``CLIPTokenizer``, built offline."""
    return CLIPTokenizer.from_pretrained(str(_tokenizer_files()))
