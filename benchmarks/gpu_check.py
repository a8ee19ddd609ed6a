"""One-command GPU check: frames, Frame Averaging and Tensor Frames layers on CUDA.

    python benchmarks/gpu_check.py                 # on CUDA (exits with a message when there is none)
    python benchmarks/gpu_check.py --device cpu    # dry run of the same script on the CPU

For every piece it compares the device result with the CPU result in float64 (max abs difference),
measures the exact equivariance error on the device (float64, random rotations and reflections),
and times float32 calls (median of ``--rounds``, synchronised). Prints a table and writes it to
``benchmarks/results/gpu_check.md`` (``gpu_check_cpu.md`` for a CPU dry run).

The test suite's device-parametrised tests (the ``device`` fixture of ``tests/conftest.py``: equivariance and
bad-input tests of FA, the TF layers -- every PyG conv layer --, ToLocal/ToGlobal, the graph frames and models)
run their CUDA cases with ``python -m pytest tests -k cuda`` (skipped where there is no CUDA device).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe import FrameAveraging, PCAFrames, TensorReps, random_orthogonal  # noqa: E402
from equiframe.testing import equivariance_error  # noqa: E402


class PointNet(nn.Module):
    """A small non-equivariant PointNet with a per-point vector output."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.head = nn.Linear(2 * hidden, 3)

    def forward(self, pos):
        h = self.local(pos)
        return self.head(torch.cat([h, h.amax(-2, keepdim=True).expand_as(h)], -1))


def clouds(B: int, N: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(B, N, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    return (x + 0.3 * x.pow(2)) @ random_orthogonal(B, 3, generator=gen).transpose(-1, -2)


def timed(fn, device: torch.device, rounds: int) -> float:
    """Median seconds of ``rounds`` calls (after one warm-up), synchronised on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        fn()
        sync()
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def knn_edges(pos: torch.Tensor, k: int) -> torch.Tensor:
    from equiframe.geometry import knn_graph  # noqa: PLC0415

    return knn_graph(pos, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, ... or cpu (dry run)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device available here; nothing to check (use --device cpu for a dry run).")
        return
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device: expected cuda or cpu, got {args.device!r}")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    rows = ["| piece | device vs CPU, float64 (max abs diff) | equivariance error on device (float64) | time (float32) |",
            "|---|---|---|---|"]

    # ---- PCA frames (canonical and all, dense and ragged)
    X = clouds(256, 64, gen)
    for mode in ("all", "canonical"):
        frames = PCAFrames("E(3)", mode=mode)
        Fc, Fd = frames(X), frames(X.to(device))
        same = Fc.sizes.tolist() == Fd.sizes.cpu().tolist()
        diff = float((Fc.R - Fd.R.cpu()).abs().max()) if same else float("inf")
        small = clouds(100_000, 8, gen).float().to(device)
        t = timed(lambda: frames(small), device, args.rounds)
        rows.append(f"| pca frames, {mode} (256 x 64 points; timing 1e5 x 8) | {diff:.1e}{'' if same else ' (sizes differ)'} | - | {1e3 * t:.2f} ms |")

    # ---- Frame Averaging with a PointNet backbone
    net = PointNet().double()
    fa_c = FrameAveraging(net, frames=PCAFrames("E(3)"), inputs={"pos": "pos"}, output="1x1n")
    fa_d = FrameAveraging(net.to(device), frames=PCAFrames("E(3)"), inputs={"pos": "pos"}, output="1x1n")
    X = clouds(32, 128, gen)
    with torch.no_grad():
        yc = fa_c.to(cpu)(pos=X)
        yd = fa_d.to(device)(pos=X.to(device)).cpu()
    err = equivariance_error(fa_d, {"pos": X.to(device)}, generator=gen, n_trials=2).max_error
    fa32 = FrameAveraging(PointNet().to(device), frames=PCAFrames("E(3)"), inputs={"pos": "pos"}, output="1x1n")
    big = clouds(64, 1024, gen).float().to(device)
    t = timed(lambda: fa32(pos=big), device, args.rounds)
    rows.append(f"| FrameAveraging, PointNet, all 8 elements (32 x 128; timing 64 x 1024) | {float((yc - yd).abs().max()):.1e} | {err:.1e} | {1e3 * t:.2f} ms |")
    one = clouds(1, 1_000_000, gen)[0].float().to(device)
    ident = FrameAveraging(lambda pos, batch=None: pos, frames=PCAFrames("E(3)"), inputs={"pos": "pos"}, output="pos")
    zeros = torch.zeros(one.shape[0], dtype=torch.long, device=device)
    td = timed(lambda: ident(pos=one), device, args.rounds)
    tr = timed(lambda: ident(pos=one, batch=zeros), device, args.rounds)
    rows.append(f"| FrameAveraging, identity backbone, one 1e6-point cloud: dense / ragged | - | - | {1e3 * td:.2f} / {1e3 * tr:.2f} ms |")

    # ---- Tensor Frames layers
    from torch_geometric.nn import GCNConv  # noqa: PLC0415

    from equiframe.nn.tensor_frames import TFConv  # noqa: PLC0415

    reps = TensorReps("4x0n+2x1n+1x2n", dim=3)
    n = 500
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    ei = knn_edges(pos, 8)
    R = random_orthogonal(n, 3, generator=gen)
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    conv = TFConv(GCNConv(reps.size, reps.size), reps).double()
    with torch.no_grad():
        zc = conv(F, ei, R, pos)
        conv_d = conv.to(device)
        zd = conv_d(F.to(device), ei.to(device), R.to(device), pos.to(device)).cpu()
    inputs = {"x": F.to(device), "edge_index": ei.to(device), "frames": R.to(device), "pos": pos.to(device)}
    err = equivariance_error(conv_d, inputs, generator=gen, n_trials=2).max_error
    n32 = 100_000
    p32 = torch.randn(n32, 3, generator=gen)
    e32 = knn_edges(p32, 8).to(device)
    conv32 = TFConv(GCNConv(reps.size, reps.size), reps).to(device)
    args32 = (torch.randn(n32, reps.size, generator=gen).to(device), e32,
              random_orthogonal(n32, 3, generator=gen, dtype=torch.float32).to(device), p32.to(device))
    t = timed(lambda: conv32(*args32), device, args.rounds)
    rows.append(f"| TFConv(GCNConv), reps {reps} (500 nodes; timing 1e5 nodes, k = 8) | {float((zc - zd).abs().max()):.1e} | {err:.1e} | {1e3 * t:.2f} ms |")

    name = "gpu_check" if device.type == "cuda" else "gpu_check_cpu"
    title = f"GPU check on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU (dry run)'}"
    write_result(name, title, "\n".join(rows), command_line())


if __name__ == "__main__":
    main()
