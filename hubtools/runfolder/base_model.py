"""``RUN/base_model.json``: the base model of a run, resolved once before anything is trained.

Preflight turns ``model.base_model`` (a Hub id with an optional revision, or a local folder) into this
record: the repo id after known moves, the commit the revision resolved to, the family that trains it and
its variant, the trained component and its parameter count. Training, resume, sampling, the card, the push
and evaluation read it back instead of working the family out again. Torch-free: the card reads it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hubtools.errors import ConfigError
from hubtools.runfolder.jsonio import read_json, write_json_atomic
from hubtools.runfolder.layout import RunFolder


class BaseModelRecord(BaseModel):
    """The base model of a run, as preflight resolved it."""

    model_config = ConfigDict(extra="ignore")  # a record of a newer hubtools reads fine

    repo_id: str = Field(description="Hub repo id after known moves, or the local pipeline folder")
    revision: str | None = Field(None, description="the revision asked for (branch, tag or commit)")
    commit: str | None = Field(None, description="the commit that revision resolved to (None: a local folder)")
    family: str = Field(description="the family that trains it (hubtools.families registry name)")
    pipeline_class: str = Field(description="model_index.json's _class_name")
    variant: str = Field("", description="the family's variant (e.g. dev or schnell), '' when it has none")
    trained_component: str = Field(description="the pipeline component training changes (unet, transformer)")
    parameter_count: int | None = Field(None, description="parameters of the trained component, counted from its "
                                                          "config on the meta device (None: no config)")
    denoiser_config: dict[str, Any] = Field(default_factory=dict, description="the trained component's config.json")

    @property
    def load_revision(self) -> str | None:
        """What every later load pins: the resolved commit, else (a local folder) the revision asked for."""
        return self.commit or self.revision

    def write(self, folder: RunFolder) -> None:
        write_json_atomic(folder.base_model, self.model_dump(mode="json"))

    @classmethod
    def read(cls, folder: RunFolder) -> BaseModelRecord | None:
        data = read_json(folder.base_model)
        return None if data is None else cls.model_validate(data)

    @classmethod
    def require(cls, folder: RunFolder) -> BaseModelRecord:
        """The record, or a ``ConfigError`` saying how to get one."""
        record = cls.read(folder)
        if record is None:
            raise ConfigError(f"run {folder.root} has no {folder.base_model.name} (the base model resolved before "
                              f"training): run `hubtools train {folder.root} --resume` once to record it")
        return record
