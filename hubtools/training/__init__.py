"""DreamBooth training: ``train_dreambooth(cfg, run_dir) -> TrainResult`` (see ``loop``)."""

from hubtools.training.loop import TrainResult, train_dreambooth

__all__ = ["TrainResult", "train_dreambooth"]
