"""The DreamBooth Hackathon: themes, the submission check, the leaderboard and community concept sets.

Themes live in ``hackathon/themes.toml``. An entry is a public model repo whose card carries the tag
``dreambooth-hackathon`` and one theme tag; the community votes with likes. Everything here reads the Hub
through ``huggingface_hub`` (``HF_ENDPOINT`` decides which Hub), so it works the same on the local hub.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hubtools.config import check_repo_id
from hubtools import errors
from hubtools.errors import ConfigError
from hubtools.formatting import as_list
from hubtools.hub_errors import hub_errors
from hubtools.resources import HACKATHON_DIR

THEMES_FILE = HACKATHON_DIR / "themes.toml"
HACKATHON_TAG = "dreambooth-hackathon"
DEFAULT_LICENSE = "creativeml-openrail-m"
NO_THEME = "none"  # the leaderboard group of entries that carry no theme tag

# Components of a diffusers pipeline that hold weights (the others are tokenizers, schedulers...).
_WEIGHTED_COMPONENTS = {"unet", "vae", "text_encoder", "text_encoder_2", "transformer", "prior", "decoder"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)", re.IGNORECASE)


# -- themes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theme:
    name: str  # also the theme's tag, e.g. "animal"
    title: str
    emoji: str
    description: str
    widget_prompt: str  # with {identifier} and {class_noun}

    @property
    def tags(self) -> list[str]:
        """The tags an entry in this theme carries."""
        return [HACKATHON_TAG, self.name]

    def widget_text(self, identifier: str, class_noun: str) -> str:
        return self.widget_prompt.format(identifier=identifier, class_noun=class_noun)

    def card_section_markdown(self) -> str:
        """The model card's hackathon section."""
        return (
            f"## DreamBooth Hackathon: {self.title} {self.emoji}\n\n"
            f"This model is an entry in the **{self.title}** theme of the DreamBooth Hackathon. "
            f"{self.description}\n\n"
            f"It carries the tags `{HACKATHON_TAG}` and `{self.name}`. Entries are ranked by likes within "
            f"their theme: if you like this one, press the like button on its page. See the ranking with "
            f"`hubtools hackathon leaderboard --theme {self.name}`.\n"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": self.tags}


@lru_cache(maxsize=4)
def _read_themes(path: Path) -> tuple[Theme, ...]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return tuple(Theme(**entry) for entry in data["themes"])
    except FileNotFoundError:
        raise ConfigError(f"hackathon themes file not found: {path} (reinstall hubtools)") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"hackathon themes file {path} is invalid: {error}") from None


def load_themes(path: Path = THEMES_FILE) -> list[Theme]:
    """The hackathon's themes, in the order of ``hackathon/themes.toml``."""
    return list(_read_themes(Path(path)))


def theme_names() -> list[str]:
    return [theme.name for theme in load_themes()]


def get_theme(name: str) -> Theme:
    """The theme called ``name`` (its tag or its title, any case)."""
    wanted = name.strip().lower()
    for theme in load_themes():
        if wanted in (theme.name, theme.title.lower()):
            return theme
    raise ConfigError(f"unknown hackathon theme {name!r}: choose one of {', '.join(theme_names())}")


def themes_of(tags: list[str] | None) -> list[Theme]:
    """The themes whose tags appear in ``tags``, in theme order."""
    present = {tag.lower() for tag in tags or []}
    return [theme for theme in load_themes() if theme.name in present]


# -- talking to the Hub -------------------------------------------------------------------------------


def _api(token: str | None):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _hub_call(what: str, call, *args, **kwargs):
    """Run a read-only Hub call, its errors as one-line ``HubError``s."""
    with hub_errors(what):
        return call(*args, **kwargs)


# -- the submission check -----------------------------------------------------------------------------


@dataclass
class RuleResult:
    rule: str
    passed: bool
    detail: str  # what was found
    fix: str | None = None  # how to make it pass, when it does not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Submission:
    """What the rules look at. ``fetch(filename)`` is a local path to one of the repo's files: a download
    from the Hub for ``check_submission``, the blob itself when the local hub's pages check an entry."""

    repo_id: str
    private: bool
    files: list[str]
    metadata: dict[str, Any]
    metadata_error: str | None
    card_text: str | None
    fetch: Callable[[str], Path]


def submission_from_readme(repo_id: str, private: bool, files: list[str], readme: str | None,
                           fetch: Callable[[str], Path]) -> Submission:
    """A submission whose README text is at hand (``None`` when the repo has none)."""
    from huggingface_hub import ModelCard

    metadata, metadata_error, card_text = {}, None, None
    if readme is not None:
        try:
            card = ModelCard(readme, ignore_metadata_errors=False)
            metadata, card_text = card.data.to_dict(), card.text
        except ValueError as error:  # the card's YAML header does not parse
            metadata_error = errors.first_line(error)
            card_text = readme
    return Submission(repo_id, private, files, metadata, metadata_error, card_text, fetch)


def _fetch_submission(repo_id: str, token: str | None) -> Submission:
    api = _api(token)
    info = _hub_call(f"model {repo_id}", api.model_info, repo_id)
    files = [sibling.rfilename for sibling in info.siblings or []]
    if not files:
        files = _hub_call(f"model {repo_id}", api.list_repo_files, repo_id)

    def fetch(filename: str) -> Path:
        return Path(_hub_call(f"{filename} of {repo_id}", api.hf_hub_download, repo_id, filename))

    readme = fetch("README.md").read_text(encoding="utf-8", errors="replace") if "README.md" in files else None
    return submission_from_readme(repo_id, bool(info.private), files, readme, fetch)


def check_submission(repo_id: str, *, token: str | None = None, load: bool = False) -> list[RuleResult]:
    """Every hackathon rule for the model ``repo_id``, passed or not, with how to fix the failures.

    ``load=True`` also loads a full pipeline with diffusers (a real one downloads gigabytes).
    """
    return check_rules(_fetch_submission(check_repo_id(repo_id, "model"), token), token=token, load=load)


def check_rules(submission: Submission, *, token: str | None = None, load: bool = False) -> list[RuleResult]:
    """The rules over a submission already fetched (``check_submission`` fetches it from the Hub)."""
    tags = [str(tag) for tag in as_list(submission.metadata.get("tags"))]
    return [
        _rule_public(submission),
        _rule_hackathon_tag(submission, tags),
        _rule_theme_tag(tags),
        _rule_license(submission),
        _rule_widget(submission),
        _rule_example_image(submission),
        _rule_model_files(submission, token, load),
    ]


def _no_card_fix(submission: Submission) -> str | None:
    if submission.card_text is None:
        return "the repo has no README.md: push one (`hubtools card RUN` then `hubtools push RUN`)"
    if submission.metadata_error:
        return f"the card's YAML header does not parse ({submission.metadata_error}): fix it first"
    return None


def _rule_public(submission: Submission) -> RuleResult:
    if not submission.private:
        return RuleResult("public", True, "the repo is public")
    return RuleResult(
        "public", False, "the repo is private: nobody else can see or like it",
        f"make it public in the repo's Settings on the Hub, or run "
        f"`HfApi().update_repo_settings({submission.repo_id!r}, private=False)`",
    )


def _rule_hackathon_tag(submission: Submission, tags: list[str]) -> RuleResult:
    if HACKATHON_TAG in tags:
        return RuleResult("hackathon-tag", True, f"tagged {HACKATHON_TAG}")
    fix = _no_card_fix(submission) or f"add `{HACKATHON_TAG}` to the tags in the card's YAML header"
    return RuleResult("hackathon-tag", False, f"the card has no `{HACKATHON_TAG}` tag: the leaderboard won't list it", fix)


def _rule_theme_tag(tags: list[str]) -> RuleResult:
    themes = themes_of(tags)
    names = ", ".join(theme_names())
    if len(themes) == 1:
        return RuleResult("theme-tag", True, f"theme {themes[0].name}")
    if not themes:
        return RuleResult("theme-tag", False, "no theme tag", f"add one theme tag to the card's tags: {names}")
    found = ", ".join(theme.name for theme in themes)
    return RuleResult("theme-tag", False, f"several theme tags ({found})", "keep exactly one theme tag")


def _rule_license(submission: Submission) -> RuleResult:
    licence = submission.metadata.get("license")
    if licence:
        return RuleResult("license", True, f"licence {licence}")
    fix = _no_card_fix(submission) or (
        f"add `license: {DEFAULT_LICENSE}` to the card's YAML header (Stable Diffusion 1.x's licence carries over)"
    )
    return RuleResult("license", False, "the card names no licence", fix)


def _rule_widget(submission: Submission) -> RuleResult:
    prompts = [entry.get("text") for entry in as_list(submission.metadata.get("widget")) if isinstance(entry, dict)]
    prompts = [text for text in prompts if isinstance(text, str) and text.strip()]
    if prompts:
        return RuleResult("widget", True, f"widget prompt {prompts[0]!r}")
    fix = _no_card_fix(submission) or (
        "add a widget to the card's YAML header, e.g. `widget: [{text: \"a photo of IDENTIFIER CLASS on the moon\"}]`"
    )
    return RuleResult("widget", False, "the card has no widget prompt: visitors can't try the model", fix)


def card_images(card_text: str) -> list[str]:
    """The image sources a card's markdown shows (markdown images and ``<img>`` tags)."""
    return _MARKDOWN_IMAGE.findall(card_text) + _HTML_IMAGE.findall(card_text)


def _repo_path_of(source: str, repo_id: str) -> str | None:
    """The repo file an image source points to, or None for an image hosted elsewhere."""
    for marker in (f"/{repo_id}/resolve/", f"/{repo_id}/raw/", f"/{repo_id}/blob/"):
        if marker in source:
            return source.split(marker, 1)[1].split("/", 1)[-1].split("?", 1)[0]
    if re.match(r"^[a-z][a-z0-9+.-]*:", source, re.IGNORECASE):  # http:, https:, data:
        return None
    return source.removeprefix("./").split("?", 1)[0].split("#", 1)[0]


def _rule_example_image(submission: Submission) -> RuleResult:
    if submission.card_text is None:
        return RuleResult("example-image", False, "no card, so no example image", _no_card_fix(submission))
    sources = card_images(submission.card_text)
    if not sources:
        return RuleResult(
            "example-image", False, "the card shows no example image",
            "add a sample grid to the card, e.g. `![samples](images/samples_grid.png)` with the file pushed "
            "(`hubtools push RUN` does both)",
        )
    missing = []
    for source in sources:
        path = _repo_path_of(source, submission.repo_id)
        if path is None or path in submission.files:
            return RuleResult("example-image", True, f"shows {source}")
        missing.append(path)
    return RuleResult(
        "example-image", False, f"the card's image {missing[0]} is not in the repo",
        f"push {missing[0]} too, or point the card at an image that is in the repo",
    )


def _rule_model_files(submission: Submission, token: str | None, load: bool) -> RuleResult:
    files = set(submission.files)
    if "model_index.json" in files:
        problem = _pipeline_problem(submission, files)
        if problem is None and load:
            problem = _load_problem(submission.repo_id, token)
        if problem:
            return RuleResult("model-files", False, problem,
                              "push the complete trained pipeline again (`hubtools push RUN`)")
        return RuleResult("model-files", True, "diffusers pipeline" + (", loads" if load else " with all components"))
    lora_files = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if lora_files:
        problem = _lora_problem(submission, lora_files[0])
        if problem:
            return RuleResult("model-files", False, problem, "push the LoRA weights again (`hubtools push RUN`)")
        return RuleResult("model-files", True, f"LoRA weights {lora_files[0]}")
    return RuleResult(
        "model-files", False, "no model: neither model_index.json nor LoRA weights (*.safetensors) in the repo",
        "push the trained model (`hubtools push RUN`)",
    )


def _read_json(submission: Submission, filename: str) -> Any:
    return json.loads(submission.fetch(filename).read_text(encoding="utf-8"))


def _pipeline_problem(submission: Submission, files: set[str]) -> str | None:
    """What is wrong with a diffusers pipeline's files (None when nothing is): every component that
    model_index.json names has its folder, the weighted ones a parseable config.json and weights."""
    try:
        index = _read_json(submission, "model_index.json")
    except json.JSONDecodeError as error:
        return f"model_index.json is not valid JSON ({error})"
    if not isinstance(index, dict) or "_class_name" not in index:
        return "model_index.json has no _class_name: it is not a diffusers pipeline index"
    components = [name for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0]]
    for name in components:
        in_folder = [f for f in files if f.startswith(f"{name}/")]
        if not in_folder:
            return f"model_index.json names {name} but the repo has no {name}/ folder"
        if name in _WEIGHTED_COMPONENTS:
            if f"{name}/config.json" not in files:
                return f"{name}/config.json is missing"
            if not any(f.endswith(_WEIGHT_SUFFIXES) for f in in_folder):
                return f"{name}/ has no weights (*.safetensors or *.bin)"
            try:
                _read_json(submission, f"{name}/config.json")
            except json.JSONDecodeError:
                return f"{name}/config.json is not valid JSON"
    return None


def _lora_problem(submission: Submission, filename: str) -> str | None:
    from safetensors import SafetensorError, safe_open

    path = submission.fetch(filename)
    try:
        with safe_open(path, framework="pt") as weights:
            keys = list(weights.keys())
    except (SafetensorError, OSError, ValueError) as error:
        return f"{filename} does not load as safetensors ({errors.first_line(error)})"
    if not any("lora" in key.lower() for key in keys):
        return f"{filename} holds no LoRA tensors and there is no model_index.json"
    return None


def _load_problem(repo_id: str, token: str | None) -> str | None:
    from diffusers import DiffusionPipeline

    try:
        DiffusionPipeline.from_pretrained(repo_id, token=token)
    except Exception as error:  # noqa: BLE001 - any failure to load is what this rule reports
        return f"the pipeline does not load with diffusers: {type(error).__name__}: {errors.first_line(error)}"
    return None


# -- the leaderboard ----------------------------------------------------------------------------------


@dataclass
class LeaderboardEntry:
    rank: int
    repo_id: str
    likes: int
    downloads: int
    theme: str  # a theme name, or NO_THEME


@dataclass
class ThemeBoard:
    theme: str  # a theme name, or NO_THEME
    title: str
    entries: list[LeaderboardEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def leaderboard(theme: str | None = None, top: int | None = None, *, token: str | None = None) -> list[ThemeBoard]:
    """Hackathon entries by theme, most liked first (ties by name), ``top`` per theme.

    An entry with several theme tags is listed under the first in theme order; entries without one are
    grouped under ``none`` (left out when ``theme`` is given).
    """
    if top is not None and top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    if theme:
        get_theme(theme)  # an unknown theme is a mistake to report before any Hub call
    models = _hub_call("the hackathon's models", lambda: list(_api(token).list_models(filter=HACKATHON_TAG)))
    return group_by_theme(models, theme, top)


def group_by_theme(models: Iterable[Any], theme: str | None = None, top: int | None = None) -> list[ThemeBoard]:
    """``leaderboard``'s grouping and order over models already listed (anything with ``id``, ``likes``,
    ``downloads`` and ``tags``, like huggingface_hub's ``ModelInfo``)."""
    wanted = get_theme(theme) if theme else None
    boards = {t.name: ThemeBoard(t.name, f"{t.title} {t.emoji}") for t in load_themes()}
    boards[NO_THEME] = ThemeBoard(NO_THEME, "No theme tag")
    for model in sorted(models, key=lambda m: (-(m.likes or 0), m.id)):
        if HACKATHON_TAG not in (model.tags or []):
            continue  # a search backend that matched loosely
        themes = themes_of(model.tags)
        board = boards[themes[0].name if themes else NO_THEME]
        board.entries.append(LeaderboardEntry(len(board.entries) + 1, model.id, model.likes or 0,
                                              model.downloads or 0, board.theme))
    result = [board for name, board in boards.items() if (wanted is None or name == wanted.name)]
    result = [board for board in result if board.entries or board.theme != NO_THEME]
    for board in result:
        board.entries = board.entries[:top] if top else board.entries
    return result


# -- community concept sets ---------------------------------------------------------------------------


@dataclass
class CommunityDataset:
    repo_id: str
    likes: int
    downloads: int
    tags: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def community_datasets(search: str | None = None, *, token: str | None = None) -> list[CommunityDataset]:
    """Concept sets to train on with ``--concept ns/name``: datasets tagged ``dreambooth-hackathon`` and,
    with ``search``, datasets whose name contains it; most liked first."""
    api = _api(token)
    found = {d.id: d for d in _hub_call("the hackathon's datasets", lambda: list(api.list_datasets(filter=HACKATHON_TAG)))}
    if search:
        needle = search.lower()
        found = {key: d for key, d in found.items() if needle in key.lower()}
        found.update({d.id: d for d in _hub_call("datasets", lambda: list(api.list_datasets(search=search)))})
    ordered = sorted(found.values(), key=lambda d: (-(d.likes or 0), d.id))
    return [CommunityDataset(d.id, d.likes or 0, d.downloads or 0, list(d.tags or [])) for d in ordered]
