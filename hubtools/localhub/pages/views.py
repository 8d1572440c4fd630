"""What the pages show, read from the hub's storage: repo summaries (cached per commit), file listings,
the card's metadata as facts, the "use this model" snippet, dataset rows and the hackathon boards.

Nothing here decides who may see what: callers pass repos that ``HubContext.may_read`` let through.
Summaries are cached by head commit id, which never changes meaning (a new commit is a new id), so
the index of a 1,000-repo hub costs one ref lookup per repo once the cache is warm.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubtools.localhub.cards import CardMetadataError, derive_tags, parse_card_metadata
from hubtools.localhub.naming import URL_PREFIXES
from hubtools.localhub.storage import DEFAULT_BRANCH, Commit, Repo, Storage

MAX_CARD_BYTES = 1024 * 1024
MAX_PREVIEW_BYTES = 512 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
VIEWER_ROWS = 12
THUMBNAIL_PX = 160
MAX_THUMBNAIL_SOURCE_PIXELS = 40_000_000
MAX_ROW_GROUP_BYTES = 256 * 1024 * 1024


def repo_path(repo: Repo) -> str:
    """The repo's page path: ``/ns/name``, ``/datasets/ns/name`` or ``/spaces/ns/name``."""
    return f"/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"


def file_url(repo: Repo, mode: str, revision: str, path: str = "") -> str:
    url = f"{repo_path(repo)}/{mode}/{quote(revision, safe='')}"
    return f"{url}/{quote(path)}" if path else url


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


# ---- summaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A repo at its main branch, as the index, the repo header and the leaderboard show it."""

    repo: Repo
    commit_oid: str
    last_modified: str
    card: dict[str, Any] | None
    card_error: str | None
    readme: str | None
    tags: list[str]
    library_name: str | None
    pipeline_tag: str | None
    files: list[str]
    widget_image: str | None  # a repo path
    widget_prompt: str | None

    @property
    def title(self) -> str:
        return self.repo.repo_id.split("/", 1)[1]

    @property
    def namespace(self) -> str:
        return self.repo.repo_id.split("/", 1)[0]


class SummaryCache:
    """Summaries by (repo, head commit id); bounded, least recently used out first."""

    def __init__(self, storage: Storage, size: int = 4096) -> None:
        self.storage = storage
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], Summary] = OrderedDict()
        self._lock = threading.Lock()
        self._version = 0  # bumped on every new summary: what the memo of top_tags is keyed on
        self._top_tags: tuple[Any, list[tuple[str, int]]] = (None, [])

    def head(self, repo: Repo) -> str | None:
        ref = self.storage.get_ref(repo.repo_type, repo.repo_id, "branch", DEFAULT_BRANCH)
        return ref.commit_oid if ref else None

    def summary(self, repo: Repo, oid: str | None = None) -> Summary | None:
        oid = oid or self.head(repo)
        if oid is None:
            return None
        key = (repo.repo_type, repo.repo_id, oid)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                # likes, downloads and visibility live on the repo row, not in the commit
                return cached if cached.repo == repo else _with_repo(cached, repo)
        commit = self.storage.get_commit(repo.repo_type, repo.repo_id, oid)
        if commit is None:
            return None
        made = summarize(self.storage, repo, commit)
        with self._lock:
            self._items[key] = made
            self._version += 1
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return made


    def top_tags(self, repos: list[Repo], limit: int = 16) -> list[tuple[str, int]]:
        """The commonest tags among ``repos`` whose summaries are cached (all of them once warm)."""
        wanted = {(repo.repo_type, repo.repo_id) for repo in repos}
        key = (self._version, hash(frozenset(wanted)), limit)
        if self._top_tags[0] == key:
            return self._top_tags[1]
        with self._lock:
            latest = {(k[0], k[1]): s for k, s in self._items.items() if (k[0], k[1]) in wanted}
        counts = Counter(tag for s in latest.values() for tag in s.tags
                         if not tag.startswith(("license:", "base_model:", "dataset:")))
        self._top_tags = (key, counts.most_common(limit))
        return self._top_tags[1]

    def warm(self, repos: list[Repo]) -> None:
        """Summarize every repo (run in a background thread once per server: the tag list then covers all)."""
        for repo in repos:
            time.sleep(0)  # hand the GIL to the request threads between repos: they come first
            try:
                self.summary(repo)
            except Exception:  # noqa: BLE001 - a repo deleted meanwhile, a closed store: warming is optional
                continue


def _with_repo(summary: Summary, repo: Repo) -> Summary:
    from dataclasses import replace

    return replace(summary, repo=repo)


def read_text_file(storage: Storage, commit: Commit, path: str, limit: int = MAX_CARD_BYTES) -> str | None:
    entry = commit.tree.get(path)
    if entry is None or entry.size > limit:
        return None
    try:
        return storage.blobs.read_blob(entry.sha256).decode("utf-8", "replace")
    except OSError:
        return None


def summarize(storage: Storage, repo: Repo, commit: Commit) -> Summary:
    files = sorted(path for path, _ in commit.tree.items())
    readme = read_text_file(storage, commit, "README.md")
    card, card_error = None, None
    if readme is not None:
        try:
            card = parse_card_metadata(readme)
        except CardMetadataError as error:
            card_error = str(error)
    tags, library_name, pipeline_tag = derive_tags(card, files)
    widget_image, widget_prompt = _widget(card, files)
    return Summary(repo, commit.oid, commit.date, card, card_error, readme, tags, library_name, pipeline_tag, files,
                   widget_image, widget_prompt)


def _widget(card: dict | None, files: list[str]) -> tuple[str | None, str | None]:
    """The card's first widget prompt and its output image (a file of the repo), if any."""
    widgets = (card or {}).get("widget")
    if isinstance(widgets, dict):
        widgets = [widgets]
    image, prompt = None, None
    for widget in widgets if isinstance(widgets, list) else []:
        if not isinstance(widget, dict):
            continue
        if prompt is None and isinstance(widget.get("text"), str):
            prompt = widget["text"]
        output = widget.get("output")
        url = output.get("url") if isinstance(output, dict) else None
        if image is None and isinstance(url, str) and url.removeprefix("./") in files:
            image = url.removeprefix("./")
    if image is None:  # no widget output: the first image a card would show
        image = next((f for f in files if f.startswith("images/") and f.lower().endswith(IMAGE_SUFFIXES)), None)
    return image, prompt


# ---- the index ---------------------------------------------------------------------------------

SORTS = {"likes": "most likes", "downloads": "most downloads", "updated": "recently updated"}


@dataclass
class IndexPage:
    items: list[Summary]
    total: int
    page: int
    pages: int
    top_tags: list[tuple[str, int]]


def index_page(cache: SummaryCache, repos: list[Repo], *, search: str, tag: str, sort: str, page: int,
               per_page: int = 24) -> IndexPage:
    """One page of the index. Sorting by likes or downloads with no tag filter needs the cards of the shown
    repos only (the repo rows hold the counters), so even a cold cache renders it quickly; a tag filter or
    "recently updated" reads every card once (cached afterwards)."""
    needles = [word for word in search.lower().split() if word]
    if needles:
        repos = [repo for repo in repos if all(n in repo.repo_id.lower() for n in needles)]
    if tag or sort == "updated":
        found = [s for s in (cache.summary(repo) for repo in repos) if s is not None]
        if tag:
            found = [s for s in found if tag in s.tags]
        if sort == "updated":
            found.sort(key=lambda s: s.repo.repo_id)
            found.sort(key=lambda s: s.last_modified, reverse=True)
        else:
            found.sort(key=_counter_key(sort, lambda s: s.repo))
        total, window = len(found), found
    else:
        repos = sorted(repos, key=_counter_key(sort, lambda repo: repo))
        total, window = len(repos), repos
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    shown = window[(page - 1) * per_page : page * per_page]
    items = [item if isinstance(item, Summary) else cache.summary(item) for item in shown]
    return IndexPage([item for item in items if item is not None], total, page, pages, cache.top_tags(repos))


def _counter_key(sort: str, repo_of: Any) -> Any:
    column = "downloads" if sort == "downloads" else "likes"
    return lambda item: (-getattr(repo_of(item), column), repo_of(item).repo_id)


# ---- a repo's facts ----------------------------------------------------------------------------


@dataclass
class EvalRow:
    task: str
    dataset: str
    metric: str
    value: str


def eval_rows(card: dict | None) -> list[EvalRow]:
    """The ``model-index`` results as table rows (the Hub's "Evaluation results" box)."""
    rows: list[EvalRow] = []
    for model in _dicts((card or {}).get("model-index")):
        for result in _dicts(model.get("results")):
            task = result.get("task") if isinstance(result.get("task"), dict) else {}
            dataset = result.get("dataset") if isinstance(result.get("dataset"), dict) else {}
            for metric in _dicts(result.get("metrics")):
                value = metric.get("value")
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                rows.append(EvalRow(str(task.get("name") or task.get("type") or ""),
                                    str(dataset.get("name") or dataset.get("type") or ""),
                                    str(metric.get("name") or metric.get("type") or ""), shown))
    return rows


def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def usage_snippet(summary: Summary, endpoint: str) -> tuple[str, str]:
    """(language, code) a visitor copies to use the repo from Python against this hub (short lines: it
    sits in the sidebar)."""
    repo = summary.repo
    header = f"# export HF_ENDPOINT={endpoint}\n"
    name = json.dumps(repo.repo_id)
    if repo.repo_type == "dataset":
        return "python", header + f"from datasets import load_dataset\n\nds = load_dataset({name})\n"
    if repo.repo_type == "space":
        return "bash", f"git clone {endpoint}/spaces/{repo.repo_id}\n"
    base = as_list((summary.card or {}).get("base_model"))
    lora = "model_index.json" not in summary.files and base and any(f.endswith(".safetensors") for f in summary.files)
    lines = [header + "from diffusers import DiffusionPipeline", ""]
    if lora:
        lines += [f"pipe = DiffusionPipeline.from_pretrained(\n    {json.dumps(base[0])})", f"pipe.load_lora_weights({name})"]
    else:
        lines += [f"pipe = DiffusionPipeline.from_pretrained(\n    {name})"]
    lines += ['pipe = pipe.to("cuda")  # or "cpu"', f"prompt = {json.dumps(summary.widget_prompt or 'a photo of a dog')}",
              "image = pipe(prompt).images[0]", 'image.save("out.png")']
    return "python", "\n".join(lines) + "\n"


# ---- files -------------------------------------------------------------------------------------


@dataclass
class TreeItem:
    name: str
    path: str
    is_folder: bool
    size: int = 0
    lfs: bool = False
    sha256: str = ""

    @property
    def size_text(self) -> str:
        return "" if self.is_folder else human_size(self.size)


def tree_items(commit: Commit, folder: str) -> list[TreeItem] | None:
    """The folder's direct children, folders first; None when ``folder`` is not a folder of the commit."""
    if folder and not commit.tree.is_folder(folder):
        return None
    prefix = folder + "/" if folder else ""
    folders = [TreeItem(path[len(prefix):], path, True) for path in commit.tree.folders(folder, recursive=False)]
    files = [TreeItem(path[len(prefix):], path, False, entry.size, entry.lfs, entry.sha256)
             for path, entry in commit.tree.under(folder, recursive=False)]
    return sorted(folders, key=lambda i: i.name.lower()) + sorted(files, key=lambda i: i.name.lower())


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    parts = [p for p in path.split("/") if p]
    return [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


# ---- the dataset viewer ------------------------------------------------------------------------


@dataclass
class Cell:
    text: str = ""
    image: str | None = None  # a URL (resolve/) or a data: URL of a thumbnail


@dataclass
class RowsView:
    source: str  # the file the rows come from
    columns: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    total: int | None = None


_rows_cache: OrderedDict[str, RowsView] = OrderedDict()
_rows_lock = threading.Lock()


def dataset_rows(storage: Storage, repo: Repo, commit: Commit, revision: str) -> RowsView | None:
    """The first rows of the dataset: from its parquet files (what ``datasets.push_to_hub`` writes) or an
    imagefolder's ``metadata.jsonl``; None when there is neither."""
    files = sorted(path for path, _ in commit.tree.items())
    parquet = [f for f in files if f.endswith(".parquet")]
    if parquet:
        entry = commit.tree[parquet[0]]
        with _rows_lock:
            cached = _rows_cache.get(entry.sha256)
        if cached is None:
            cached = _parquet_rows(storage.blobs.blob_path(entry.sha256), parquet[0])
            with _rows_lock:
                _rows_cache[entry.sha256] = cached
                while len(_rows_cache) > 64:
                    _rows_cache.popitem(last=False)
        return cached
    metadata = next((f for f in files if f == "metadata.jsonl" or f.endswith("/metadata.jsonl")), None)
    if metadata is not None:
        return _imagefolder_rows(storage, repo, commit, revision, metadata)
    return None


def _parquet_rows(path: Path, name: str) -> RowsView:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    view = RowsView(name, list(parquet.schema_arrow.names), total=parquet.metadata.num_rows)
    metadata = parquet.metadata
    if metadata.num_row_groups == 0 or metadata.row_group(0).total_byte_size > MAX_ROW_GROUP_BYTES:
        return view  # reading a few rows would mean decoding a huge row group: show the columns only
    batch = next(parquet.iter_batches(batch_size=VIEWER_ROWS), None)
    if batch is None:
        return view
    for record in batch.to_pylist():
        view.rows.append([_cell(record.get(column)) for column in view.columns])
    return view


def _cell(value: Any) -> Cell:
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
        return Cell(text=str(value.get("path") or ""), image=thumbnail_data_url(bytes(value["bytes"])))
    text = "" if value is None else str(value)
    return Cell(text=text if len(text) <= 300 else text[:300] + "…")


def thumbnail_data_url(data: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_THUMBNAIL_SOURCE_PIXELS:
                return None  # not worth decoding for a thumbnail (and a decompression bomb never is)
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG decodes at a reduced scale
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _imagefolder_rows(storage: Storage, repo: Repo, commit: Commit, revision: str, metadata: str) -> RowsView:
    text = read_text_file(storage, commit, metadata, limit=4 * 1024 * 1024) or ""
    folder = metadata.rsplit("/", 1)[0] + "/" if "/" in metadata else ""
    lines = [line for line in text.splitlines() if line.strip()]
    view = RowsView(metadata, total=len(lines))
    records = []
    for line in lines[:VIEWER_ROWS]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    view.columns = list(dict.fromkeys(key for record in records for key in record))
    for record in records:
        row = []
        for column in view.columns:
            value = record.get(column)
            if column == "file_name" and isinstance(value, str) and (folder + value) in commit.tree:
                row.append(Cell(text=value, image=file_url(repo, "resolve", revision, folder + value)))
            else:
                row.append(_cell(value))
        view.rows.append(row)
    return view


# ---- the hackathon -----------------------------------------------------------------------------


@dataclass
class Entry:
    rank: int
    summary: Summary
    rules: list[Any]  # hackathon.RuleResult

    @property
    def failed(self) -> list[Any]:
        return [rule for rule in self.rules if not rule.passed]


@dataclass
class Board:
    theme: str
    title: str
    description: str
    entries: list[Entry]


_rules_cache: OrderedDict[tuple[str, str, bool], list[Any]] = OrderedDict()


def hackathon_boards(storage: Storage, cache: SummaryCache, repos: list[Repo]) -> list[Board]:
    """The leaderboard of ``hubtools.hackathon`` (its grouping and order, its rule check) over the repos."""
    from types import SimpleNamespace

    from hubtools import hackathon

    summaries = {}
    for repo in repos:
        summary = cache.summary(repo)
        if summary is not None and hackathon.HACKATHON_TAG in summary.tags:
            summaries[repo.repo_id] = summary
    models = [SimpleNamespace(id=s.repo.repo_id, likes=s.repo.likes, downloads=s.repo.downloads, tags=s.tags)
              for s in summaries.values()]
    themes = {theme.name: theme for theme in hackathon.load_themes()}
    boards = []
    for board in hackathon.group_by_theme(models):
        theme = themes.get(board.theme)
        entries = [Entry(e.rank, summaries[e.repo_id], entry_rules(storage, summaries[e.repo_id]))
                   for e in board.entries]
        boards.append(Board(board.theme, board.title, theme.description if theme else "", entries))
    return boards


def entry_rules(storage: Storage, summary: Summary) -> list[Any]:
    from hubtools import hackathon

    key = (summary.repo.repo_type + "/" + summary.repo.repo_id, summary.commit_oid, summary.repo.private)
    with _rows_lock:
        cached = _rules_cache.get(key)
    if cached is not None:
        return cached
    commit = storage.get_commit(summary.repo.repo_type, summary.repo.repo_id, summary.commit_oid)
    tree = dict(commit.tree.items()) if commit else {}

    def fetch(filename: str) -> Path:
        return storage.blobs.blob_path(tree[filename].sha256)

    submission = hackathon.submission_from_readme(summary.repo.repo_id, summary.repo.private, summary.files,
                                                  summary.readme, fetch)
    rules = hackathon.check_rules(submission)
    with _rows_lock:
        _rules_cache[key] = rules
        while len(_rules_cache) > 4096:
            _rules_cache.popitem(last=False)
    return rules
