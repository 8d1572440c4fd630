"""Every tokenizer a base model has (SD: one CLIP; SDXL: two CLIP; FLUX.1: CLIP and T5), read from the base
repo's own tokenizer folders, and how each one splits the identifier.

DreamBooth's identifier should be one rare token to every text encoder that reads the prompt: a word
that CLIP keeps whole may still be three pieces to FLUX's T5, each with a meaning of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hubtools.families import Family, detect


@dataclass
class TokenizerSplit:
    """How one tokenizer of the base model reads the identifier."""

    tokenizer: str  # the pipeline component: tokenizer, tokenizer_2
    tokenizer_class: str
    tokens: list[str]
    num_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The tokenizers the identifier check loaded (SDXL's second CLIP, FLUX's T5: a quarter second each), kept for the
# pipeline that training loads next in the same process (``take_loaded_tokenizers``), so none is read twice before
# the first step. One base model at a time; taking them empties it.
_LOADED: dict[tuple[str, str | None], dict[str, Any]] = {}


def _key(base_model: str, revision: str | None) -> tuple[str, str | None]:
    local = Path(base_model).expanduser()
    return (str(local.resolve()), None) if local.is_dir() else (base_model, revision)


def take_loaded_tokenizers(base_model: str, revision: str | None) -> dict[str, Any]:
    """{component name: tokenizer} already loaded in this process from ``base_model`` at ``revision`` (a local
    folder at any revision), handed over once; {} when none."""
    return _LOADED.pop(_key(base_model, revision), {})


def base_model_tokenizers(base_model: str, *, revision: str | None = None, token: str | None = None,
                          model_index: dict[str, Any] | None = None,
                          skip_first: bool = False) -> tuple[Family, dict[str, Any]]:
    """(family, {component name: tokenizer}) of a base model, each tokenizer from its own folder in the repo
    (``tokenizer/``, ``tokenizer_2/``), loaded with the class ``model_index.json`` names; ``skip_first``
    leaves out the first (CLIP) one, which the offline check already has."""
    import transformers

    from hubtools.base_model import read_model_index

    index = model_index if model_index is not None else read_model_index(base_model, revision, token=token)
    family = detect(index, source=f"base model {base_model}")
    tokenizers = {}
    skip = skip_first and family.first_tokenizer_is_clip  # a family whose first is no CLIP keeps it
    for name in family.tokenizers[1:] if skip else family.tokenizers:
        library, class_name = index.get(name, [None, None])
        tokenizer_class = getattr(transformers, class_name or "AutoTokenizer", transformers.AutoTokenizer)
        tokenizers[name] = tokenizer_class.from_pretrained(base_model, subfolder=name, revision=revision, token=token)
    _LOADED.clear()
    _LOADED[_key(base_model, revision)] = dict(tokenizers)
    return family, tokenizers


def tokenizer_fingerprint(base_model: str | None, record=None) -> str | None:
    """What the base model's tokenizers are, for the identifier check's cache: a hash of its tokenizer folders'
    files (a local folder), ``repo@commit`` (a Hub model resolved to a commit), "none" without a base model; None
    when that cannot be told (the check then runs uncached)."""
    if base_model is None:
        return "none"
    local = Path(base_model).expanduser()
    if local.is_dir():
        digest = hashlib.sha256()
        folders = sorted(p for p in local.iterdir() if p.is_dir() and p.name.startswith("tokenizer"))
        for path in sorted(f for folder in folders for f in folder.rglob("*") if f.is_file()):
            digest.update(str(path.relative_to(local)).encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()
    if record is not None and record.commit:
        return f"{record.repo_id}@{record.commit}"
    return None


def further_tokenizers(base_model: str | None, revision: str | None = None) -> tuple[dict[str, Any], str | None]:
    """({component name: tokenizer}, problem): the base model's tokenizers after its first CLIP one (SDXL's
    second, FLUX's T5; all of them where the first is no CLIP: Qwen-Image's), none for SD 1.x; when the base model cannot be read now, none and one line saying
    why (the CLIP check still runs offline)."""
    from hubtools.errors import HubtoolsError

    if base_model is None:
        return {}, None
    try:
        return base_model_tokenizers(base_model, revision=revision, skip_first=True)[1], None
    except (HubtoolsError, OSError, ValueError, ImportError) as error:  # ImportError: a processor's extra needs
        return {}, f"could not read the further tokenizers of {base_model}: {error}"


def identifier_splits(text: str, tokenizers: dict[str, Any]) -> list[TokenizerSplit]:
    """The identifier's pieces in each tokenizer (no special tokens)."""
    splits = []
    for name, tokenizer in tokenizers.items():
        # a processor (FLUX.2 [dev] ships Mistral's as a PixtralProcessor) splits text with its tokenizer
        tokenizer = tokenizer if hasattr(tokenizer, "convert_ids_to_tokens") else tokenizer.tokenizer
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        splits.append(TokenizerSplit(name, type(tokenizer).__name__, tokens, len(ids)))
    return splits


def split_warnings(text: str, splits: list[TokenizerSplit]) -> list[str]:
    """One line per tokenizer (other than the first, which the CLIP check covers) that splits the identifier."""
    return [split_warning(text, split) for split in splits[1:] if split.num_tokens != 1]


def split_warning(text: str, split: TokenizerSplit) -> str:
    """The line for a tokenizer that reads the identifier as several pieces."""
    return (f"{text!r} is {split.num_tokens} tokens to {split.tokenizer} ({split.tokenizer_class}: "
            f"{' + '.join(split.tokens)}): that text encoder reads it as pieces with meanings of their own")
