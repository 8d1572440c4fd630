"""The base model resolved once: ``model.base_model`` -> ``BaseModelRecord`` (``RUN/base_model.json``).

Resolution reads two small JSON files and nothing else: ``model_index.json`` (its ``_class_name`` is the
family, from the registry in ``hubtools.families``; any other class is an error naming the supported ones)
and the trained component's ``config.json`` (the family's variant; its parameter count, from the model
class built on the meta device: no weights are fetched or allocated). Preflight resolves; ``set_up_folder``
writes the record; every later stage reads it (``record_of_run``), pinned to the commit it resolved to.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hubtools.basemodels import resolve_base_model
from hubtools.config import ModelConfig
from hubtools.errors import ConfigError, HubError
from hubtools.families import Family, by_name, detect
from hubtools.hub_errors import hub_errors
from hubtools.hubenv import current_endpoint
from hubtools.runfolder import RunFolder
from hubtools.runfolder.base_model import BaseModelRecord

__all__ = [
    "BaseModelRecord", "check_model_reference", "count_parameters", "family_of", "read_denoiser_config",
    "read_model_index", "record_of_run", "resolve_base_model_record", "resolve_base_revision",
]


def _resolve_moved_id(model_id: str) -> str:
    resolved, note = resolve_base_model(model_id)
    if note:
        logging.getLogger("hubtools").warning(note)
    return resolved


def check_model_reference(model_id: str, *, what: str = "base model",
                          example: str = "stable-diffusion-v1-5/stable-diffusion-v1-5") -> None:
    """A model is a folder or a Hub id: anything else (a path that does not exist) is the user's typo, said in
    one line before any client turns it into a repo-id error."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(model_id).expanduser().is_dir():
        return
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise ConfigError(f"{what} {model_id}: no such folder, and not a Hub model id (namespace/name): check "
                          f"the path, or give the id, e.g. {example}") from None


def resolve_base_revision(model_cfg: ModelConfig, token: str | None = None) -> tuple[str, str | None]:
    """(model id after known moves, commit sha) of a Hub base model; local folders have no sha."""
    model_id = model_cfg.base_model
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser()), None
    from huggingface_hub import HfApi

    check_model_reference(model_id)
    model_id = _resolve_moved_id(model_id)

    with hub_errors(f"base model {model_id}", token=token, missing=ConfigError, revision=model_cfg.revision,
                    revision_hint="check --revision",
                    not_found_hint="check the id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), or log in if it is private"):
        info = HfApi(token=token).model_info(model_id, revision=model_cfg.revision)
    return model_id, info.sha


def read_model_index(model_id: str, revision: str | None, token: str | None = None) -> dict[str, Any]:
    """``model_index.json`` of a local pipeline folder or a Hub repo at ``revision``."""
    local = Path(model_id).expanduser()
    try:
        if local.is_dir():
            path = local / "model_index.json"
            if not path.is_file():
                raise ConfigError(f"base model folder {model_id} has no model_index.json: point --base-model at a "
                                  "diffusers pipeline folder (save_pretrained layout)")
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(hf_hub_download(model_id, "model_index.json", revision=revision, token=token))
            except EntryNotFoundError:
                raise ConfigError(f"base model {model_id} has no model_index.json: it is not a diffusers pipeline "
                                  "(single-file checkpoints are not supported; use the diffusers version)") from None
        return json.loads(path.read_text(encoding="utf-8"))
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"model_index.json of {model_id} is not valid JSON ({error})") from None
    except OSError as error:
        raise HubError(f"could not read model_index.json of {model_id} from {current_endpoint()}: {error}") from None


def read_denoiser_config(family: Family, model_id: str, revision: str | None,
                         token: str | None = None) -> dict[str, Any]:
    """The trained component's ``config.json`` (variants differ there), or {} when it cannot be read."""
    local = Path(model_id).expanduser()
    try:
        if local.is_dir():
            path = local / family.denoiser / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, f"{family.denoiser}/config.json", revision=revision, token=token))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def count_parameters(class_name: str | None, config: dict[str, Any]) -> int | None:
    """Parameters of a diffusers model class built from ``config`` on the meta device (no weights, no memory);
    None when the class or config is unknown."""
    if not class_name or not config:
        return None
    import diffusers
    from accelerate import init_empty_weights
    from diffusers.utils import logging as diffusers_logging

    model_class = getattr(diffusers, class_name, None)
    if model_class is None:
        return None
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # unknown keys of another diffusers version are noise here
    try:
        with init_empty_weights():
            model = model_class.from_config(config)
        return int(sum(parameter.numel() for parameter in model.parameters()))
    except Exception as error:  # a config this diffusers cannot build: the loader says what is wrong
        logging.getLogger("hubtools").debug("could not count the parameters of %s: %s", class_name, error)
        return None
    finally:
        diffusers_logging.set_verbosity(verbosity)


def resolve_base_model_record(model_cfg: ModelConfig, token: str | None = None) -> BaseModelRecord:
    """The base model of ``model_cfg`` resolved: id after moves, commit, family, variant, trained component and
    its parameter count. An unreachable or missing base model, a folder that is not a pipeline and a class no
    family trains are errors that say what to do."""
    model_id, sha = resolve_base_revision(model_cfg, token=token)
    revision = sha or model_cfg.revision
    index = read_model_index(model_id, revision, token=token)
    family = detect(index, source=f"base model {model_id}")
    denoiser_config = read_denoiser_config(family, model_id, revision, token=token)
    class_name = (index.get(family.denoiser) or [None, None])[-1] or denoiser_config.get("_class_name")
    return BaseModelRecord(
        repo_id=model_id, revision=model_cfg.revision, commit=sha, family=family.name,
        pipeline_class=family.pipeline_class_name, variant=family.variant(denoiser_config),
        trained_component=family.denoiser, parameter_count=count_parameters(class_name, denoiser_config),
        denoiser_config=denoiser_config,
    )


def family_of(record: BaseModelRecord) -> Family:
    """The family a record names (from the registry; one this hubtools does not know is an error)."""
    return by_name(record.family)


def record_of_run(run_dir: Path, model_cfg: ModelConfig | None = None, token: str | None = None) -> BaseModelRecord:
    """The run's ``base_model.json``; a run folder set up without one (an older hubtools, or a library caller
    that wrote only the config) has it resolved from its config now and written, once."""
    folder = RunFolder(Path(run_dir))
    record = BaseModelRecord.read(folder)
    if record is not None:
        return record
    if model_cfg is None:
        from hubtools.config import load_run_config

        model_cfg = load_run_config(folder.root).model
    record = resolve_base_model_record(model_cfg, token=token)
    if folder.root.is_dir():
        record.write(folder)
    return record
