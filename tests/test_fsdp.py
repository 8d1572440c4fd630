"""FSDP2 (``--distributed fsdp``) on 2 CPU processes over gloo: sharded training gives the weights of one
process at the global batch, kill -9 of one process then ``--resume`` gives the weights of a run never
interrupted, and two "machines" (two torchrun agents meeting at 127.0.0.1) train as one machine does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

from test_distributed import assert_same_weights, free_port
from test_training_support import make_run, subprocess_env

UNET = "unet/diffusion_pytorch_model.safetensors"
TRAINER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import torch
    torch.set_num_threads(1)
    from hubtools.config import load_run_config
    from hubtools.training import checkpoints, train_dreambooth

    mode, run = sys.argv[1], Path(sys.argv[2])
    if mode == "kill-process-1-at-4":
        save = checkpoints.save_checkpoint

        def save_or_die(accelerator, folder, step, state, keep):
            if step == 4 and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            return save(accelerator, folder, step, state, keep)

        checkpoints.save_checkpoint = save_or_die
    result = train_dreambooth(load_run_config(run), run, resume=mode == "resume", progress=False)
    print(f"finished: {result.num_processes} processes", flush=True)
""")


def _launch(script, mode, run, *launcher):
    launcher = launcher or ("--standalone", "--nproc-per-node", "2")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, str(script), mode, str(run)],
                          env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300)


@pytest.mark.multiprocess
def test_fsdp_trains_as_one_process_resumes_exactly_after_kill_9_and_spans_two_machines(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    training = {"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 3, "learning_rate": 5e-4,
                "lr_scheduler": "cosine", "lr_warmup_steps": 2, "distributed": "fsdp", "batch_size": 1}
    runs = {name: make_run(tmp_path, name, training=training, prior={"enabled": False})[1]
            for name in ("reference", "killed", "machines")}
    one = make_run(tmp_path, "one", training={**training, "batch_size": 2}, prior={"enabled": False})[1]

    done = _launch(script, "fresh", runs["reference"])
    assert done.returncode == 0 and done.stdout.count("finished: 2 processes") == 2, done.stderr[-4000:]
    checkpoint = runs["reference"] / "checkpoints" / "checkpoint-000002"
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in (checkpoint / "sharded").iterdir()}
    assert not (checkpoint / "unet").exists()  # the weights are in the shards only

    # kill -9 of process 1 as it reaches the checkpoint of step 4: the launcher ends process 0 too
    killed = _launch(script, "kill-process-1-at-4", runs["killed"])
    assert killed.returncode != 0 and "finished" not in killed.stdout
    assert not (runs["killed"] / UNET).exists()
    resumed = _launch(script, "resume", runs["killed"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    expected, actual = load_file(runs["reference"] / UNET), load_file(runs["killed"] / UNET)
    assert max((expected[k] - actual[k]).abs().max().item() for k in expected) == 0.0

    # one process at batch 2: the same weights to float rounding (see test_distributed.MAX_DIFFERENCE)
    alone = subprocess.run([sys.executable, str(script), "fresh", str(one)], env=subprocess_env(), capture_output=True,
                           text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-4000:]
    assert_same_weights(runs["reference"] / UNET, one / UNET)

    # two machines of one process each, meeting at 127.0.0.1: the weights of one machine with two
    port = free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(node), "--master-addr", "127.0.0.1", "--master-port", str(port), str(script), "fresh",
         str(runs["machines"])], env=subprocess_env(ACCELERATE_USE_CPU="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    machines = load_file(runs["machines"] / UNET)
    assert max((expected[k] - machines[k]).abs().max().item() for k in expected) == 0.0


@pytest.mark.multiprocess
def test_a_lora_sharded_with_fsdp_trains_as_one_process_and_checkpoints_only_the_adapters(tmp_path):
    from hubtools.runfolder import LORA_WEIGHTS_FILENAME

    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    training = {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-3, "steps": 4,
                "checkpoint_every": 2, "distributed": "fsdp"}
    two = make_run(tmp_path, "two", training={**training, "batch_size": 1}, prior={"enabled": False})[1]
    one = make_run(tmp_path, "one", training={**training, "batch_size": 2}, prior={"enabled": False})[1]
    done = _launch(script, "fresh", two)
    assert done.returncode == 0 and done.stdout.count("finished: 2 processes") == 2, done.stderr[-4000:]
    alone = subprocess.run([sys.executable, str(script), "fresh", str(one)], env=subprocess_env(), capture_output=True,
                           text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-4000:]
    assert_same_weights(two / LORA_WEIGHTS_FILENAME, one / LORA_WEIGHTS_FILENAME)
    # the shards hold the adapters and their AdamW states, not the frozen UNet (~4 MB in fp32)
    shards = (two / "checkpoints" / "checkpoint-000002" / "sharded").glob("*.distcp")
    assert 0 < sum(path.stat().st_size for path in shards) < 2_000_000
