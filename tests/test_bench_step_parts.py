"""benchmarks/bench_step_parts.py: its timer, on a stand-in script whose step parts are known (the real cases need
the diffusers scripts' own venv; that run is documented in benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_step_parts.py"

STAND_IN = '''
import time, torch
from standin_models import Denoiser, Vae

denoiser, vae = Denoiser(), Vae()
optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-3)
vae.encode(torch.ones(1))  # before the first step: not a step's encode
for _ in range(int(__import__("sys").argv[1])):
    latents = vae.encode(torch.ones(4))
    loss = denoiser(latents).pow(2).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
'''

MODELS = '''
import time, torch

def busy(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass

class Denoiser(torch.nn.Linear):
    def __init__(self):
        super().__init__(4, 4)
    def forward(self, x):
        busy(0.004)
        return super().forward(x)

class Vae:
    def encode(self, x):
        busy(0.002)
        return x
'''


def test_the_timer_splits_a_step_into_its_parts(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_step_parts", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "standin_models.py").write_text(MODELS)
    script = tmp_path / "train_stand_in.py"
    script.write_text(STAND_IN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    parts = module.timed_run(sys.executable, [str(script), "40"], script=True,
                             denoiser=("standin_models", "Denoiser"), vae=("standin_models", "Vae"),
                             env=env, run_dir=tmp_path)
    assert parts["steps"] == 40
    # forward 4 ms and encode 2 ms of busy CPU a step (the encode before the loop is not counted)
    assert 0.0039 < parts["forward"] < 0.006 and 0.0019 < parts["encode"] < 0.004
    assert 0 < parts["backward"] < parts["forward"]
    assert parts["step"] >= parts["forward"] + parts["encode"]
