"""Distributed data parallel training: the CLI under ``torchrun --nproc_per_node 2`` (gloo on CPU).

Every global batch is split over the ranks (unevenly when it does not divide) and each rank's loss is
weighted by its share of the global batch, so that a DDP step is the single-process step: the two runs
must agree up to the floating-point order of the gradient reduction -- also when neither the global batch
nor the training set splits evenly over the processes. Configurations that cannot (a global batch with
fewer items than processes) stop with an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from equiframe.cli import main
from equiframe.datasets.nbody import NBodyConfig, generate_nbody
from equiframe.train import DistInfo, epoch_batches

# 63 training systems, global batch 25 over 2 processes: per-rank batches 13/12, 13/12 and 7/6; 33 validation
# and 31 test systems: evaluation sets that do not split evenly over 2 processes either (float64: the
# comparison is tight)
ARGS = ["train", "nbody", "--model", "gnn", "--hidden", "16", "--layers", "2", "--sims", "63", "33", "31",
        "--epochs", "2", "--batch-size", "25", "--seeds", "0", "--quiet", "--threads", "1", "--no-diagnostics",
        "--dtype", "float64"]


def _torchrun(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "equiframe",
           *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_torchrun_two_processes_matches_single_process_with_uneven_batches(tmp_path):
    root = str(tmp_path / "cache")
    generate_nbody(NBodyConfig(n_train=63, n_valid=33, n_test=31), root, progress=False)
    proc = _torchrun([*ARGS, "--data-root", root, "--out", str(tmp_path / "ddp")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "ddp" / "nbody" / "gnn@egnn-small" / "seed0"
    ddp = json.loads((run / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and ddp["epochs_run"] == 2
    assert not list(run.glob(".*tmp*"))
    assert main([*ARGS, "--data-root", root, "--out", str(tmp_path / "single")]) == 0
    single = json.loads((tmp_path / "single" / "nbody" / "gnn@egnn-small" / "seed0" / "metrics.json").read_text())
    assert single["world_size"] == 1
    for key in ("test", "best_val"):
        assert ddp[key]["mse"] == pytest.approx(single[key]["mse"], rel=1e-9), key
    rows = (run / "curves.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once (rank 0)
    # a last global batch with fewer items than processes: a clear error, no run
    bad = [a if a != "25" else "31" for a in ARGS]  # 63 = 2 x 31 + 1
    proc = _torchrun([*bad, "--data-root", root, "--out", str(tmp_path / "bad")])
    assert proc.returncode != 0 and "last global batch" in proc.stderr + proc.stdout


@pytest.mark.parametrize("n,batch", [(63, 25), (64, 32), (10, 3), (7, 7)])
def test_epoch_batches_split_the_single_process_batches(n, batch):
    one = epoch_batches(n, batch, seed=5, epoch=2, info=DistInfo())
    assert [w for _, w in one] == [1.0] * len(one)
    assert sorted(i for idx, _ in one for i in idx) == list(range(n))
    for W in (2, 3):
        if batch < W or 0 < n % batch < W:
            with pytest.raises(ValueError, match="batch"):
                epoch_batches(n, batch, seed=5, epoch=2, info=DistInfo(0, W, 0))
            continue
        ranks = [epoch_batches(n, batch, seed=5, epoch=2, info=DistInfo(r, W, 0)) for r in range(W)]
        assert all(len(r) == len(one) for r in ranks)
        for b, (glob, _) in enumerate(one):
            parts = [ranks[r][b] for r in range(W)]
            assert [i for idx, _ in parts for i in idx] == glob  # the global batch, in order
            assert all(len(idx) >= 1 for idx, _ in parts)
            assert max(len(idx) for idx, _ in parts) - min(len(idx) for idx, _ in parts) <= 1
            # weights W b_r / b: DDP's mean of the weighted gradients is the gradient of the global mean loss
            assert sum(w for _, w in parts) == pytest.approx(W)
            assert [w for _, w in parts] == pytest.approx([W * len(idx) / len(glob) for idx, _ in parts])


def test_single_process_order_is_the_samplers_order():
    """One process draws its batches in the order runs made before used (a DistributedSampler with one replica),
    so that their checkpoints continue on the same data order."""
    import torch  # noqa: PLC0415

    ds = torch.utils.data.TensorDataset(torch.arange(53))
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=4, drop_last=False)
    sampler.set_epoch(6)
    order = list(iter(sampler))
    assert [i for idx, _ in epoch_batches(53, 10, seed=4, epoch=6, info=DistInfo()) for i in idx] == order
