"""What a repo's pages show besides its card: the card's facts (evaluation results), the "use this
model" snippet and the file listing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hubtools.localhub.pages.formatting import as_list, human_size
from hubtools.localhub.pages.summaries import Summary
from hubtools.localhub.storage import Commit

MAX_PREVIEW_BYTES = 512 * 1024


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
              "image = pipe(prompt=prompt).images[0]", 'image.save("out.png")']
    return "python", "\n".join(lines) + "\n"



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
