"""The same trainer under two CPU processes (DDP over gloo, launched by torchrun): sharded data, one writer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from test_training_support import make_run, subprocess_env

TRAINER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    torch.set_num_threads(1)
    from hubtools.config import load_run_config
    from hubtools.training import train_dreambooth

    run = Path(sys.argv[1])
    result = train_dreambooth(load_run_config(run), run, progress=False)
    print(f"process finished: num_processes={result.num_processes}", flush=True)
""")


@pytest.mark.slow
def test_two_cpu_processes_train_one_run(tmp_path):
    from diffusers import DiffusionPipeline

    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    _, run = make_run(tmp_path, "ddp", training={"steps": 4, "batch_size": 1, "checkpoint_every": 2,
                                                 "validation_every": 4},
                      prior={"num_class_images": 2})
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(run)],
        env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=400,
    )
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert launched.stdout.count("process finished: num_processes=2") == 2

    result = json.loads((run / "train_result.json").read_text())
    assert result["num_processes"] == 2 and result["steps_done"] == 4 and result["checkpoints"] == [2, 4]
    steps = [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # written by the main process only
    checkpoint = run / "checkpoints" / "checkpoint-000004"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert (run / "images" / "validation" / "step-000004.png").is_file()
    assert not [p for p in run.rglob("*") if p.name.startswith(".tmp")]
    DiffusionPipeline.from_pretrained(run, safety_checker=None, requires_safety_checker=False)
