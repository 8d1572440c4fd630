"""The CLIP tokenizer of Stable Diffusion 1.x, built offline from the shipped BPE merge list.

Stable Diffusion 1.x tokenizes with OpenAI CLIP's byte-level BPE (``openai/clip-vit-large-patch14``).
Its merge list is public data; from it ``vocab.json`` and ``merges.txt`` follow deterministically
(see ``hubtools/data/clip-bpe/README.md``), so an exact ``CLIPTokenizer`` needs no download. The files
are built once per installed version (and shipped merge list) into the user's cache
(``$HUBTOOLS_CACHE/tokenizers/``) and loaded from there: nothing goes to the temp directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from hubtools import __version__
from hubtools.resources import CLIP_BPE_FILE
from hubtools.usercache import built_once, user_cache

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


_FILES_FORMAT = 1  # bump when the files written here change


@lru_cache(maxsize=None)
def _cached_folder(name: str) -> Path:
    """``tokenizers/<name>-<hubtools version>-<merge list hash>`` in the user's cache."""
    digest = hashlib.sha256(CLIP_BPE_FILE.read_bytes()).hexdigest()[:12]
    return user_cache("tokenizers", f"{name}-{__version__}-f{_FILES_FORMAT}-{digest}")


@lru_cache(maxsize=1)
def _tokenizer_files() -> Path:
    # Built once per installed version (0.6 s), then only read.
    return built_once(_cached_folder("clip"), write_clip_tokenizer_files)


def build_clip_tokenizer() -> CLIPTokenizer:
    """An exact Stable Diffusion 1.x ``CLIPTokenizer``, built offline."""
    return CLIPTokenizer.from_pretrained(str(_tokenizer_files()))


# -- a small T5 tokenizer (FLUX.1's second tokenizer), built offline ---------------------------------------

T5_MODEL_MAX_LENGTH = 512
_T5_WORDS = 4000


def _t5_pieces() -> list[tuple[str, float]]:
    """Unigram pieces with SentencePiece's conventions: ``<pad>``, ``</s>``, ``<unk>`` as ids 0-2, then
    whole words after a space (``▁word``), word parts, and every single character the words use, so any
    English text tokenizes without ``<unk>``. The words are the CLIP vocabulary's first whole words (its
    most frequent), so the list is deterministic and needs no download."""
    vocab, _ = clip_vocab_and_merges()
    words = [token[:-4] for token in sorted(vocab, key=vocab.get)
             if token.endswith("</w>") and token[:-4].isascii() and token[:-4].isalpha() and len(token) > 5]
    words = words[:_T5_WORDS]
    chars = sorted({c for word in words for c in word} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = set()
    for rank, word in enumerate(words):  # more frequent words get higher (less negative) log-probabilities
        for piece, score in ((f"\u2581{word}", -2.0 - rank / 1000), (word, -4.0 - rank / 1000)):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, score))
    for char in chars:
        for piece in (char, f"\u2581{char}"):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -12.0))
    pieces.append(("\u2581", -11.0))
    return pieces


def write_t5_tokenizer_file(out_dir: Path) -> Path:
    """``tokenizer.json`` of a T5-style Unigram tokenizer (Metaspace pre-tokenizer, ``</s>`` appended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(_t5_pieces(), unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def build_t5_tokenizer():
    """A ``T5TokenizerFast`` for the tiny FLUX model (the real T5's vocabulary is not shipped)."""
    from transformers import T5TokenizerFast

    path = built_once(_cached_folder("t5"), write_t5_tokenizer_file) / "tokenizer.json"
    return T5TokenizerFast(tokenizer_file=str(path), eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=T5_MODEL_MAX_LENGTH)
