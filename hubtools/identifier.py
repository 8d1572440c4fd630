"""Is this DreamBooth identifier a rare single token that means nothing yet?

DreamBooth binds the subject to "a photo of [identifier] [class]", and the paper asks for a rare *single*
token with a weak prior. Three mistakes are common and invisible without looking at the tokenizer:
- a made-up word that BPE splits into several pieces (``pkblz`` is ``pk`` + ``bl`` + ``z``), each with
  a meaning of its own;
- the vocabulary's internal byte-level spelling of a token typed literally (``ðŁĴŁ`` is how the vocabulary
  stores the emoji 💟: typed as is it is seven tokens, while 💟 itself is one);
- a token the model already knows well (``sks`` is one token, but it is a rifle).

``check_identifier`` reports all of this from the tokenizer alone and, given the text encoder's weights,
adds the identifier's nearest neighbours in token-embedding space and how strongly it moves the prompt
(its prior). ``suggest_identifiers`` proposes rare single tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from hubtools.errors import InputError, first_line

END_OF_WORD = "</w>"  # CLIP's BPE marks the last piece of a word with this suffix

# Identifiers known to be bad choices although they are single tokens, and why.
KNOWN_BAD_IDENTIFIERS: dict[str, str] = {
    "sks": "it is a rifle (the SKS) to Stable Diffusion: guns leak into the samples, as Hugging Face's "
    "DreamBooth write-up found, although it is the popular default",
    "xxx": "it strongly means explicit content: samples drift towards it and the safety checker blanks them",
    "nsfw": "it means explicit content: samples drift towards it and the safety checker blanks them",
    "kkk": "it names a hate group: the prior is strong and offensive",
}

# Vowel-less strings that are still words (interjections, abbreviations everyone reads).
_VOWELLESS_WORDS = frozenset(
    "hmm hmmm shh brr psst pfft tsk grr nth zzz mmm pls plz thx btw bff omg wtf smh tbh idk lmk nyc dc "
    "www mrs mr dr st ft pm am tv dvd cd dj mvp ceo cbd lsd dprk gmbh ssh fck dbz hmv bbc cnn nba nfl nhl mlb ufc wwe".split()
)
_VOWELS = set("aeiouy")
_SUGGESTION_SHAPE = re.compile(r"[a-z]{3,4}")
_DEFAULT_CLASS_NOUN = "object"  # stands in for the class when none is given, to measure the prior


@dataclass
class Neighbour:
    """A vocabulary token close to the identifier in the text encoder's token-embedding space."""

    token: str
    token_id: int
    similarity: float  # cosine similarity of the input embeddings, in [-1, 1]


@dataclass
class IdentifierReport:
    text: str
    tokens: list[str]  # the pieces as they read (``pk``, ``bl``, ``z``; ``💟``)
    vocab_tokens: list[str]  # the pieces as the vocabulary spells them (``z</w>``, ``ðŁĴŁ</w>``)
    token_ids: list[int]
    num_tokens: int
    single_token: bool
    byte_level_of: str | None  # the string this text is the byte-level spelling of (``ðŁĴŁ`` -> ``💟``)
    suggestion: str | None  # what to type instead, when the text is a poor choice
    is_word: bool  # a common word or name of the vocabulary: it already has a meaning
    known_bad: str | None  # why it is a known bad choice, if it is one
    rarity: float | None  # single tokens: 0 (merged first, most frequent) .. 1 (merged last, rarest)
    warnings: list[str] = field(default_factory=list)
    nearest_neighbours: list[Neighbour] | None = None
    prior_strength: float | None = None  # cosine distance "a photo of [id] [class]" vs "a photo of a [class]"
    prior_prompts: tuple[str, str] | None = None
    other_tokenizers: list[dict[str, Any]] | None = None  # the split in the base model's further tokenizers

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        if self.prior_prompts is not None:
            data["prior_prompts"] = list(self.prior_prompts)
        return data


@dataclass
class IdentifierSuggestion:
    text: str
    token_id: int
    rarity: float
    prior_strength: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- byte-level spelling -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's table from bytes to printable symbols, which CLIP's (and most byte-level BPE) vocabularies use.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {symbol: byte for byte, symbol in bytes_to_unicode().items()}


def decode_byte_level(text: str) -> str | None:
    """The string whose byte-level spelling ``text`` is (``ðŁĴŁ`` -> ``💟``), or None if it is not one."""
    decoder = _byte_decoder()
    body = text.replace(END_OF_WORD, "")
    if not body or not all(char in decoder for char in body):
        return None
    try:
        decoded = bytes(decoder[char] for char in body).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded if decoded != body else None  # plain ASCII spells itself


def readable_piece(vocab_token: str) -> str:
    """A vocabulary token as it reads: ``z</w>`` -> ``z``, ``ðŁĴŁ</w>`` -> ``💟`` (partial bytes stay as spelled)."""
    body = vocab_token.removesuffix(END_OF_WORD)
    return decode_byte_level(body) or body


# -- the check --------------------------------------------------------------------------------------


def default_tokenizer():
    """Stable Diffusion 1.x's CLIP tokenizer, built offline from the shipped BPE merges."""
    from hubtools.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer()


def load_tokenizer_and_text_encoder(base_model: str, *, revision: str | None = None, weights: bool = True,
                                    token: str | None = None) -> tuple[Any, Any, list[str]]:
    """(tokenizer, text encoder or None, notes) of a base model (Hub id or diffusers folder).

    A tokenizer that can't be fetched falls back to the built CLIP tokenizer (the one of SD 1.x), and
    missing weights only cost the neighbours and the prior: the notes say which happened.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    from hubtools.basemodels import resolve_base_model

    notes: list[str] = []
    model_id, moved = resolve_base_model(base_model)
    if moved:
        notes.append(moved)
    family = _family_of(model_id, revision, token)
    if family is not None and not family.first_tokenizer_is_clip:
        notes.append(f"{family.title} reads prompts with no CLIP tokenizer: the checks below use Stable Diffusion "
                     "1.x's, built offline, and list the split in the model's own tokenizer")
        return default_tokenizer(), None, notes
    try:
        tokenizer = CLIPTokenizer.from_pretrained(model_id, subfolder="tokenizer", revision=revision, token=token)
    except (OSError, ValueError) as error:
        notes.append(f"could not fetch the tokenizer of {model_id} ({first_line(error)}); "
                     "using Stable Diffusion 1.x's CLIP tokenizer, built offline")
        tokenizer = default_tokenizer()
    text_encoder = None
    if weights:
        try:
            text_encoder = CLIPTextModel.from_pretrained(model_id, subfolder="text_encoder", revision=revision,
                                                         token=token)
            text_encoder.eval()
        except (OSError, ValueError) as error:
            notes.append(f"no text encoder weights for {model_id} ({first_line(error)}): neighbours and prior skipped")
    return tokenizer, text_encoder, notes


def _family_of(model_id: str, revision: str | None, token: str | None):
    """The base model's family from its ``model_index.json``; None when it cannot be read or is unknown (the CLIP
    tokenizer is then tried as before)."""
    from hubtools.base_model import read_model_index
    from hubtools.errors import HubtoolsError
    from hubtools.families import detect

    try:
        return detect(read_model_index(model_id, revision, token=token))
    except (HubtoolsError, OSError, ValueError):
        return None


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _rarity(tokenizer, token_id: int) -> float:
    # Byte-level BPE numbers merges in the order they were learnt, most frequent first: a late id is rare.
    return round(token_id / max(len(tokenizer) - 1, 1), 4)


_COMMON_WORD_IDS = 10_512  # the first 10,000 merges: the commonest strings of CLIP's training captions


def _common_bigrams(tokenizer) -> frozenset[str]:
    """Letter pairs (with ^ and $ for the word's ends) that recur among the vocabulary's commonest words."""
    key = (type(tokenizer).__name__, len(tokenizer))
    if key not in _BIGRAM_CACHE:
        counts: Counter[str] = Counter()
        for vocab_token, token_id in tokenizer.get_vocab().items():
            body = vocab_token.removesuffix(END_OF_WORD)
            if token_id < _COMMON_WORD_IDS and vocab_token.endswith(END_OF_WORD) and len(body) >= 3 \
                    and body.isascii() and body.isalpha():
                counts.update(_bigrams(body))
        _BIGRAM_CACHE[key] = frozenset(pair for pair, n in counts.items() if n >= 3)
    return _BIGRAM_CACHE[key]


_BIGRAM_CACHE: dict[tuple, frozenset[str]] = {}


def _bigrams(word: str) -> list[str]:
    framed = f"^{word}$"
    return [framed[i : i + 2] for i in range(len(framed) - 1)]


def _is_word(vocab_token: str, tokenizer) -> bool:
    """Whether a single vocabulary token reads as a word or name (so the model knows what it means)."""
    body = vocab_token.removesuffix(END_OF_WORD)
    if not vocab_token.endswith(END_OF_WORD) or not body.isascii() or not body.isalpha():
        return False
    if body in _VOWELLESS_WORDS:
        return True
    if not _VOWELS & set(body):
        return False  # vowel-less tokens are abbreviations, mostly rare enough
    # Every whole-word token was frequent in CLIP's captions; one spelled like English words and names
    # (at most one letter pair unseen among the commonest words) is taken as one: ``olis`` is, ``ohwx`` isn't.
    common = _common_bigrams(tokenizer)
    return sum(pair not in common for pair in _bigrams(body.lower())) <= 1


def check_identifier(
    text: str,
    *,
    tokenizer=None,
    text_encoder=None,
    class_noun: str | None = None,
    num_neighbours: int = 8,
    other_tokenizers: dict[str, Any] | None = None,
) -> IdentifierReport:
    """Tokenize ``text`` as the base model does and say whether it is a good DreamBooth identifier.
    ``other_tokenizers`` are the base model's further tokenizers (SDXL's second CLIP, FLUX's T5), by
    component name: the identifier's split in each is reported, and a split is a warning."""
    text = text.strip()
    if not text:
        raise InputError("the identifier is empty: pass the rare token that will name your subject, e.g. pkblz")
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    token_ids = _token_ids(tokenizer, text)
    vocab_tokens = tokenizer.convert_ids_to_tokens(token_ids)
    single = len(token_ids) == 1
    byte_level_of = decode_byte_level(text)
    known_bad = KNOWN_BAD_IDENTIFIERS.get(text.lower())
    is_word = single and _is_word(vocab_tokens[0], tokenizer) and known_bad is None
    report = IdentifierReport(
        text=text,
        tokens=[readable_piece(token) for token in vocab_tokens],
        vocab_tokens=vocab_tokens,
        token_ids=token_ids,
        num_tokens=len(token_ids),
        single_token=single,
        byte_level_of=byte_level_of,
        suggestion=None,
        is_word=is_word,
        known_bad=known_bad,
        rarity=_rarity(tokenizer, token_ids[0]) if single else None,
    )
    _add_warnings(report, tokenizer, class_noun)
    if other_tokenizers:
        from hubtools.families.tokenizers import identifier_splits, split_warnings

        # hubtools' own CLIP check first (its name is never shown), then the base model's tokenizers by name
        splits = identifier_splits(text, {"clip": tokenizer, **other_tokenizers})
        report.other_tokenizers = [split.to_dict() for split in splits[1:]]
        report.warnings.extend(split_warnings(text, splits))
    if text_encoder is not None:
        report.nearest_neighbours = nearest_neighbours(token_ids, tokenizer, text_encoder, k=num_neighbours)
        report.prior_prompts = prior_prompts(text, class_noun)
        report.prior_strength = prior_strength(text, tokenizer, text_encoder, class_noun=class_noun)
    return report


def _add_warnings(report: IdentifierReport, tokenizer, class_noun: str | None) -> None:
    text, warn = report.text, report.warnings.append
    if report.byte_level_of is not None:
        decoded = report.byte_level_of
        decoded_count = len(_token_ids(tokenizer, decoded))
        report.suggestion = decoded
        warn(
            f"{text!r} is the vocabulary's internal byte-level spelling of {decoded!r}: typed literally it is "
            f"{report.num_tokens} tokens; type {decoded!r} instead ({_count(decoded_count)})"
        )
    elif not report.single_token:
        pieces = " + ".join(report.tokens)
        warn(
            f"{text!r} is {report.num_tokens} tokens ({pieces}), not one: each piece brings a meaning of its "
            "own and the subject is spread over all of them; pick a rare single token "
            "(`hubtools identifier suggest`)"
        )
    if report.known_bad is not None:
        warn(f"{text!r} is a known bad identifier: {report.known_bad}")
    elif report.is_word:
        warn(
            f"{text!r} is an ordinary word or name to the model: training has to overwrite what it already "
            "means; pick a rare token (`hubtools identifier suggest`)"
        )
    if class_noun and text.lower() == class_noun.strip().lower():
        warn(f"the identifier {text!r} is the class noun itself: it cannot tell your subject from its class")
    if report.suggestion is None and report.warnings:
        suggestions = suggest_identifiers(1, tokenizer=tokenizer)
        report.suggestion = suggestions[0].text if suggestions else None


def _count(n: int) -> str:
    return "1 token" if n == 1 else f"{n} tokens"


# -- with the text encoder's weights ----------------------------------------------------------------


def _encoder_device(text_encoder):
    return next(text_encoder.parameters()).device


def nearest_neighbours(token_ids: list[int], tokenizer, text_encoder, *, k: int = 8) -> list[Neighbour]:
    """The ``k`` vocabulary tokens whose input embeddings are closest (cosine) to the identifier's.

    For several pieces the identifier's embedding is their mean: a rough stand-in for what they add up to.
    """
    import torch

    weights = text_encoder.get_input_embeddings().weight.detach()
    if max(token_ids) >= weights.shape[0]:
        return []  # a tokenizer larger than the encoder's vocabulary: nothing meaningful to compare
    with torch.no_grad():
        query = weights[token_ids].float().mean(dim=0, keepdim=True)
        similarity = torch.nn.functional.cosine_similarity(weights.float(), query, dim=1)
        excluded = set(token_ids) | set(tokenizer.all_special_ids)
        similarity[[i for i in excluded if i < weights.shape[0]]] = -2.0
        best = torch.topk(similarity, k=min(k, weights.shape[0] - len(excluded)))
    tokens = tokenizer.convert_ids_to_tokens(best.indices.tolist())
    return [
        Neighbour(token=readable_piece(token), token_id=int(index), similarity=round(float(score), 4))
        for token, index, score in zip(tokens, best.indices.tolist(), best.values.tolist())
    ]


def prior_prompts(text: str, class_noun: str | None) -> tuple[str, str]:
    noun = (class_noun or _DEFAULT_CLASS_NOUN).strip()
    return f"a photo of {text} {noun}", f"a photo of a {noun}"


def _pooled_embeddings(prompts: list[str], tokenizer, text_encoder):
    import torch

    batch = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                      truncation=True, return_tensors="pt")
    with torch.no_grad():
        output = text_encoder(input_ids=batch.input_ids.to(_encoder_device(text_encoder)))
    return output.pooler_output.float()


def prior_strengths(texts: list[str], tokenizer, text_encoder, *, class_noun: str | None = None) -> list[float]:
    """For each text, how far "a photo of [text] [class]" moves from "a photo of a [class]".

    The distance is the cosine distance (0 = no change, up to 2) of the text encoder's pooled outputs: an
    identifier with a weak prior barely moves the prompt, one with a strong meaning pulls it away.
    """
    import torch

    reference = _pooled_embeddings([prior_prompts("", class_noun)[1]], tokenizer, text_encoder)
    prompts = [prior_prompts(text, class_noun)[0] for text in texts]
    embeddings = _pooled_embeddings(prompts, tokenizer, text_encoder)
    distances = 1.0 - torch.nn.functional.cosine_similarity(embeddings, reference, dim=1)
    return [round(float(d), 4) for d in distances]


def prior_strength(text: str, tokenizer, text_encoder, *, class_noun: str | None = None) -> float:
    return prior_strengths([text], tokenizer, text_encoder, class_noun=class_noun)[0]


# -- suggestions ------------------------------------------------------------------------------------


def _candidate_tokens(tokenizer) -> list[tuple[int, str]]:
    """Rare-looking single tokens, rarest first: whole-word tokens of 3-4 lowercase ASCII letters with no
    vowel (so neither words nor names), no tripled letter, not known to be bad, that spell themselves."""
    candidates = []
    for vocab_token, token_id in tokenizer.get_vocab().items():
        body = vocab_token.removesuffix(END_OF_WORD)
        if (
            vocab_token.endswith(END_OF_WORD)
            and _SUGGESTION_SHAPE.fullmatch(body)
            and not (_VOWELS & set(body))
            and body not in _VOWELLESS_WORDS
            and body not in KNOWN_BAD_IDENTIFIERS
            and not re.search(r"(.)\1\1", body)
        ):
            candidates.append((token_id, body))
    candidates.sort(reverse=True)
    return candidates


def suggest_identifiers(
    n: int = 10,
    *,
    tokenizer=None,
    text_encoder=None,
    class_noun: str | None = None,
    pool_size: int | None = None,
) -> list[IdentifierSuggestion]:
    """``n`` rare single-token identifiers, rarest first; with the text encoder, weakest prior first among
    the ``pool_size`` rarest (default ``max(10 * n, 100)``)."""
    if n < 1:
        raise InputError(f"--n must be at least 1 (got {n})")
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    chosen: list[IdentifierSuggestion] = []
    pool = n if text_encoder is None else (pool_size or max(10 * n, 100))
    for token_id, body in _candidate_tokens(tokenizer):
        if _token_ids(tokenizer, body) != [token_id]:  # typed on its own it must come back as this token
            continue
        chosen.append(IdentifierSuggestion(text=body, token_id=token_id, rarity=_rarity(tokenizer, token_id)))
        if len(chosen) >= pool:
            break
    if text_encoder is not None and chosen:
        strengths = prior_strengths([s.text for s in chosen], tokenizer, text_encoder, class_noun=class_noun)
        for suggestion, strength in zip(chosen, strengths):
            suggestion.prior_strength = strength
        chosen.sort(key=lambda s: (s.prior_strength, -s.rarity))
    return chosen[:n]
