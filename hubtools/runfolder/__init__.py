"""The run folder: one typed contract between the stages.

``layout`` names every path a stage writes and which of them a push publishes; ``records`` reads and writes
each stage's record (train result, samples, identifier report, concept manifest, eval result) as a typed
object; ``jsonio`` is the atomic JSON plumbing under both. Stages (``sample``, ``card``, ``publish``,
training, evaluation) depend on this package, never on each other, to learn where a file lives.
"""

from hubtools.runfolder.jsonio import read_json, read_jsonl, write_json_atomic
from hubtools.runfolder.layout import (
    CHECKPOINT_STATE_FILENAME, LORA_WEIGHTS_FILENAME, RunFolder, checkpoint_files, checkpoint_name, folder_files,
    is_managed, list_checkpoints, published_files,
)
from hubtools.runfolder.records import (
    ClassImagesUsed, IdentifierRecord, SampleCell, SamplesRecord, TrainResult, WeightFile, WidgetSample,
    read_concept_manifest, read_eval_result,
)

__all__ = [
    "CHECKPOINT_STATE_FILENAME", "LORA_WEIGHTS_FILENAME", "ClassImagesUsed", "IdentifierRecord", "RunFolder",
    "SampleCell", "SamplesRecord", "TrainResult", "WeightFile", "WidgetSample", "checkpoint_files", "checkpoint_name",
    "folder_files", "is_managed", "list_checkpoints", "published_files", "read_concept_manifest",
    "read_eval_result", "read_json", "read_jsonl", "write_json_atomic",
]
