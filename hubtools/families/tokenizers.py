"""Every tokenizer a base model has (SD: one CLIP; SDXL: two CLIP; FLUX.1: CLIP and T5), read from the base
repo's own tokenizer folders, and how each one splits the identifier.

DreamBooth's identifier should be one rare token to every text encoder that reads the prompt: a word
that CLIP keeps whole may still be three pieces to FLUX's T5, each with a meaning of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    return family, tokenizers


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
