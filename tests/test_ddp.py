"""Distributed data parallel training: the CLI under ``torchrun --nproc_per_node 2`` (gloo on CPU).

The global batch is split over the ranks and the DistributedSampler shards each epoch's permutation so
that the union of the ranks' batches is the single-process batch: the two runs must agree up to the
floating-point order of the gradient reduction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from equiframe.cli import main
from equiframe.datasets.nbody import NBodyConfig, generate_nbody

ARGS = ["train", "nbody", "--model", "gnn", "--hidden", "16", "--layers", "2", "--sims", "64", "32", "32",
        "--epochs", "2", "--batch-size", "32", "--seeds", "0", "--quiet", "--threads", "1", "--no-diagnostics"]


def test_torchrun_two_processes_matches_single_process(tmp_path):
    root = str(tmp_path / "cache")
    generate_nbody(NBodyConfig(n_train=64, n_valid=32, n_test=32), root, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "equiframe",
           *ARGS, "--data-root", root, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "ddp" / "nbody" / "gnn@egnn-small" / "seed0"
    ddp = json.loads((run / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["epochs_run"] == 2
    assert not list(run.glob(".*tmp*"))
    assert main([*ARGS, "--data-root", root, "--out", str(tmp_path / "single")]) == 0
    single = json.loads((tmp_path / "single" / "nbody" / "gnn@egnn-small" / "seed0" / "metrics.json").read_text())
    assert single["world_size"] == 1
    for key in ("test", "best_val"):
        assert ddp[key]["mse"] == pytest.approx(single[key]["mse"], rel=1e-4), key
    rows = (run / "curves.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once (rank 0)
