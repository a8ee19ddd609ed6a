"""Benchmark: overhead of tensor-frame layers over the same plain layers, and scaling with N.

Overhead: for each layer (and ``TFConv`` mode: ``auto`` and, for the attention layers, ``message``) and reps,
the plain PyG layer (A) and the same layer instance wrapped by ``TFConv`` (B) run alternately in one
process; the reported number is the median over pairs of ``time(B) / time(A)``, in CPU time of the process
and in wall time (absolute times drift 2-3x on a shared machine, the per-pair ratio much less).
A gets its edge features precomputed (global ``[x_j - x_i, |x_j - x_i|]``); B computes its local edge
geometry, edge layout and transport inside the timed call. The native ``TensorFrameConv`` is compared
with itself run without frames (``frames=None``: the same architecture as a plain, non-equivariant MPNN).

Scaling: forward time and peak resident memory (``ru_maxrss`` of a fresh subprocess per measurement)
for 10^4, 10^5, 10^6 nodes.

Usage::

    python benchmarks/bench_tensor_frames.py                      # full run, writes the Markdown file
    python benchmarks/bench_tensor_frames.py --no-scaling --threads 1 --repeats 9   # the overhead table
    python benchmarks/bench_tensor_frames.py --layers GATConv,GATConv:message --reps 1x0n+7x2n --repeats 3
    python benchmarks/bench_tensor_frames.py --quick              # small smoke run (no file written)
    python benchmarks/bench_tensor_frames.py --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from equiframe._machine import cpu_name
from equiframe.geometry import dense_knn
from equiframe.groups import random_orthogonal
from equiframe.nn.tensor_frames import TFConv, local_edge_geometry
from equiframe.nn.tf_conv import TensorFrameConv
from equiframe.reps import TensorReps

REPS = ["64x0n", "32x0n+16x1n", "16x0n+8x1n+4x2n", "1x0n+7x2n"]
# every layer of the issue's support list, plus the native layer; each row is (layer, TFConv mode)
LAYERS = [
    "GATConv", "GATConv:message", "GATv2Conv", "GATv2Conv:message", "TransformerConv", "TransformerConv:message",
    "PointTransformerConv", "PointTransformerConv:message", "PointNetConv", "EdgeConv", "GINConv", "GINEConv",
    "SAGEConv", "GCNConv", "TensorFrameConv",
]
HERE = Path(__file__).resolve().parent
TARGET = {"64x0n": 1.10}  # issue 3: <= 1.1x for all-scalar reps, <= 1.3x otherwise
TARGET_DEFAULT = 1.30


# ------------------------------------------------------------------------------------------------ graph
def knn_edges(pos: torch.Tensor, k: int) -> torch.Tensor:
    """k-NN graph sorted by receiver (``k`` edges per receiver, no self-loops): the library's dense k-NN
    (a k-d tree above ``KDTREE_MIN_POINTS`` points)."""
    n = pos.shape[0]
    nb = dense_knn(pos.cpu(), pos.cpu(), k, exclude_self=True)
    return torch.stack([nb.reshape(-1), torch.arange(n).repeat_interleave(k)]).to(pos.device)


def mlp(i: int, o: int, h: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))


def build(name: str, reps: TensorReps, d: int, hidden: int = 64):
    s = reps.size
    from torch_geometric.nn import (
        EdgeConv,
        GATConv,
        GATv2Conv,
        GCNConv,
        GINConv,
        GINEConv,
        PointNetConv,
        PointTransformerConv,
        SAGEConv,
        TransformerConv,
    )

    name = name.split(":")[0]
    if name == "GATConv":
        return GATConv(s, s, edge_dim=d + 1)
    if name == "GATv2Conv":
        return GATv2Conv(s, s, edge_dim=d + 1)
    if name == "TransformerConv":
        return TransformerConv(s, s, edge_dim=d + 1)
    if name == "PointTransformerConv":
        return PointTransformerConv(s, s, pos_nn=nn.Linear(d, s))
    if name == "PointNetConv":
        return PointNetConv(mlp(s + d, s, hidden))
    if name == "EdgeConv":
        return EdgeConv(mlp(2 * s, s, hidden))
    if name == "GINConv":
        return GINConv(mlp(s, s, hidden))
    if name == "GINEConv":
        return GINEConv(mlp(s, s, hidden), edge_dim=d + 1)
    if name == "SAGEConv":
        return SAGEConv(s, s)
    if name == "GCNConv":
        return GCNConv(s, s)
    if name == "TensorFrameConv":
        return TensorFrameConv(reps, reps, hidden_channels=hidden)
    raise ValueError(name)


#: layers whose plain call takes edge features (``edge_attr``, global ``[x_j - x_i, |x_j - x_i|]``)
EDGE_LAYERS = ("GATConv", "GATv2Conv", "TransformerConv", "GINEConv")


def callables(name, layer, reps, x, ei, frames, pos, ea):
    """(plain call A, tensor-frame call B, mode of B). ``name`` may carry a TFConv mode: ``"GATConv:message"``."""
    name, _, mode = name.partition(":")
    if name == "TensorFrameConv":
        return (lambda: layer(x, ei, None, pos)), (lambda: layer(x, ei, frames, pos)), "native"
    conv = TFConv(layer, reps, mode=mode or "auto")
    if name in ("PointNetConv", "PointTransformerConv"):
        a = lambda: layer(x, pos, ei)  # noqa: E731
    elif name in EDGE_LAYERS:
        a = lambda: layer(x, ei, edge_attr=ea)  # noqa: E731
    else:
        a = lambda: layer(x, ei)  # noqa: E731
    return a, (lambda: conv(x, ei, frames, pos)), conv.resolved_mode()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, backward: bool, device) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of one forward (no autograd) or forward+backward."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if backward:
        out = fn()
        out.square().mean().backward()
    else:
        with torch.no_grad():
            fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def overhead(args, device) -> list[dict]:
    d, n, k = 3, args.nodes, args.k
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(n, d, generator=gen).to(device)
    ei = knn_edges(pos, k)
    frames = random_orthogonal(n, d, generator=gen, dtype=torch.float32).to(device)
    ea = local_edge_geometry(pos, pos, None, ei[0], ei[1])
    rows = []
    layers = args.layers.split(",")
    unknown = [n for n in layers if n.split(":")[0] not in {m.split(":")[0] for m in LAYERS}]
    if unknown:
        raise SystemExit(f"--layers: unknown {unknown}; choose from {LAYERS}")
    for rs in args.reps:
        reps = TensorReps(rs, dim=d)
        x = torch.randn(n, reps.size, generator=gen).to(device)
        for name in layers:
            torch.manual_seed(0)
            layer = build(name, reps, d).to(device)
            a, b, mode = callables(name, layer, reps, x, ei, frames, pos, ea)
            row = {"layer": name.split(":")[0], "reps": rs, "size": reps.size, "mode": mode}
            for phase, bwd in (("fwd", False), ("fwdbwd", True)):
                for _ in range(args.warmup):
                    timed(a, bwd, device), timed(b, bwd, device)
                ta, tb = [], []
                for i in range(args.repeats):  # alternate the order: A B, B A, ...
                    if i % 2 == 0:
                        x_a = timed(a, bwd, device)
                        x_b = timed(b, bwd, device)
                    else:
                        x_b = timed(b, bwd, device)
                        x_a = timed(a, bwd, device)
                    layer.zero_grad(set_to_none=True)
                    ta.append(x_a), tb.append(x_b)
                row[phase] = {}
                for clock, k in (("wall", 0), ("cpu", 1)):
                    ratios = [y[k] / max(x_[k], 1e-9) for x_, y in zip(ta, tb)]
                    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
                    row[phase][clock] = {
                        "ratio": statistics.median(ratios),
                        "ratio_iqr": (q[0], q[2]),
                        "plain_ms": 1e3 * statistics.median(t[k] for t in ta),
                        "tf_ms": 1e3 * statistics.median(t[k] for t in tb),
                    }
            f, fb = row["fwd"], row["fwdbwd"]
            print(
                f"{name:30s} {rs:18s} size={reps.size:3d} mode={mode:7s} "
                f"fwd cpu {f['cpu']['ratio']:.2f}x wall {f['wall']['ratio']:.2f}x "
                f"({f['cpu']['plain_ms']:.0f} -> {f['cpu']['tf_ms']:.0f} ms cpu)  "
                f"fwd+bwd cpu {fb['cpu']['ratio']:.2f}x wall {fb['wall']['ratio']:.2f}x",
                flush=True,
            )
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ scaling
def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
    """Peak resident memory while a block runs (a thread samples /proc/self/statm every millisecond)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def scaling_child(spec: dict) -> dict:
    """``spec["what"] == "time"``: alternating plain/TF forward pairs; ``"mem_plain"``/``"mem_tf"``: the
    peak RSS increment of one forward (fresh process per variant, so no allocator reuse between them)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    d, n, k = 3, spec["n"], spec["k"]
    gen = torch.Generator().manual_seed(0)
    reps = TensorReps(spec["reps"], dim=d)
    pos = torch.rand(n, d, generator=gen)
    ei = knn_edges(pos, k).to(device)
    pos = pos.to(device)
    frames = random_orthogonal(n, d, generator=gen, dtype=torch.float32).to(device)
    x = torch.randn(n, reps.size, generator=gen).to(device)
    torch.manual_seed(0)
    if spec["layer"] == "TensorFrameConv":
        layer = TensorFrameConv(reps, reps, hidden_channels=spec["hidden"]).to(device)
        a, b = (lambda: layer(x, ei, None, pos)), (lambda: layer(x, ei, frames, pos))
    else:
        layer = build(spec["layer"], reps, d, spec["hidden"]).to(device)
        ea = local_edge_geometry(pos, pos, None, ei[0], ei[1]) if spec["layer"].split(":")[0] in EDGE_LAYERS else None
        a, b, _ = callables(spec["layer"], layer, reps, x, ei, frames, pos, ea)
    if spec["what"] == "time":
        ratios, ta, tb = [], [], []
        for i in range(spec["pairs"]):
            first, second = (a, b) if i % 2 == 0 else (b, a)
            t1, t2 = timed(first, False, device)[0], timed(second, False, device)[0]
            x_a, x_b = (t1, t2) if i % 2 == 0 else (t2, t1)
            ta.append(x_a), tb.append(x_b), ratios.append(x_b / x_a)
        return {"plain_s": statistics.median(ta), "tf_s": statistics.median(tb), "ratio": statistics.median(ratios),
                "pairs": spec["pairs"]}
    fn = a if spec["what"] == "mem_plain" else b
    if n < 10**6:  # warm-up (library buffers, lazy imports); big blocks go back to the OS after the call
        with torch.no_grad():
            fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with _RssSampler() as sampler, torch.no_grad():
        fn()
    out = {"peak_increment_mb": sampler.peak - sampler.base, "base_mb": sampler.base}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(spec: dict, timeout: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling(args) -> list[dict]:
    rows = []
    for n in args.scaling_nodes:
        for layer in args.scaling_layers.split(","):
            base = {"n": n, "k": args.scaling_k, "reps": args.scaling_reps, "layer": layer, "threads": args.threads,
                    "device": args.device, "hidden": args.scaling_hidden}
            row = {"n": n, "layer": layer}
            row["time"] = _child({**base, "what": "time", "pairs": 2 if n >= 10**6 else 5}, args.child_timeout)
            row["mem_plain"] = _child({**base, "what": "mem_plain"}, args.child_timeout)
            row["mem_tf"] = _child({**base, "what": "mem_tf"}, args.child_timeout)
            print("scaling", json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ report
def machine(args) -> str:
    lines = [
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}, torch_geometric {__import__('torch_geometric').__version__}, "
        f"Python {platform.python_version()}",
        f"- device: {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
    ]
    from equiframe import _native  # noqa: PLC0415

    st = _native.status()
    lines.append(f"- native rotation kernel (`EQUIFRAME_NATIVE={st['mode']}`): "
                 + ("built and used" if st["available"] else f"not used ({st['reason']})"))
    lines.append(f"- `THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')}` (1: torch's large "
                 "allocations on transparent huge pages, fewer first-touch page faults)")
    try:
        lines.append(f"- load average at start: {os.getloadavg()[0]:.1f} (shared machine)")
    except OSError:
        pass
    return "\n".join(lines)


def markdown(args, rows, srows, command) -> str:
    out = ["# Tensor Frames: overhead and scaling", "", "Machine:", "", machine(args), "",
           f"Command: `{command}`", ""]
    if rows:
        out += [
            f"## Overhead vs the same plain layer ({args.nodes} nodes, k={args.k} kNN graph, d=3, float32, "
            f"{args.repeats} pairs)",
            "",
            "Median over alternating A/B pairs of time(tensor frames) / time(plain), measured as CPU time of the "
            "process (`time.process_time`, immune to the other jobs' scheduling on a shared machine) and as "
            "wall time. `fwd` runs without autograd, `fwd+bwd` is forward + backward of a scalar loss. Absolute "
            "columns are median CPU ms of the forward. Target (issue 3): <= 1.10x for `64x0n`, <= 1.30x "
            "otherwise; `met` judges the CPU-time ratios, fwd and fwd+bwd.",
            "",
            "| layer | reps | size | mode | fwd (cpu) | fwd+bwd (cpu) | fwd (wall) | fwd+bwd (wall) | plain fwd ms | "
            "TF fwd ms | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            f, fb = r["fwd"], r["fwdbwd"]
            target = TARGET.get(r["reps"], TARGET_DEFAULT)
            met = "yes" if max(f["cpu"]["ratio"], fb["cpu"]["ratio"]) <= target else "**no**"
            out.append(
                f"| {r['layer']} | `{r['reps']}` | {r['size']} | {r['mode']} | {f['cpu']['ratio']:.2f}x | "
                f"{fb['cpu']['ratio']:.2f}x | {f['wall']['ratio']:.2f}x | {fb['wall']['ratio']:.2f}x | "
                f"{f['cpu']['plain_ms']:.1f} | {f['cpu']['tf_ms']:.1f} | {met} |"
            )
        out.append("")
    if srows:
        out += [
            f"## Scaling (forward, reps `{args.scaling_reps}`, k={args.scaling_k}, hidden {args.scaling_hidden})",
            "",
            "Time: medians over alternating plain/TF pairs in one process (5 pairs, 2 at 10^6 nodes). Memory: "
            "peak resident-memory increment during one forward in a fresh process, after one warm-up forward "
            "below 10^6 nodes (sampled every ms; inputs, graph and parameters excluded).",
            "",
            "| nodes | edges | layer | plain s | TF s | ratio | plain fwd peak MB | TF fwd peak MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in srows:
            t, mp, mt = r["time"], r["mem_plain"], r["mem_tf"]
            err = [v["error"] for v in (t, mp, mt) if "error" in v]
            if err:
                out.append(f"| {r['n']:,} | | {r['layer']} | {err[0]} | | | | |")
                continue
            key = "peak_cuda_mb" if "peak_cuda_mb" in mp else "peak_increment_mb"
            out.append(
                f"| {r['n']:,} | {r['n'] * args.scaling_k:,} | {r['layer']} | {t['plain_s']:.3f} | {t['tf_s']:.3f} | "
                f"{t['ratio']:.2f}x | {mp[key]:.0f} | {mt[key]:.0f} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=8192)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--reps", nargs="+", default=REPS)
    ap.add_argument("--layers", default=",".join(LAYERS),
                    help="comma list of layers, optionally with a TFConv mode (default: all of them)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-overhead", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--scaling-nodes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    ap.add_argument("--scaling-layers", default="TensorFrameConv,EdgeConv")
    ap.add_argument("--scaling-reps", default="8x0n+4x1n")
    ap.add_argument("--scaling-k", type=int, default=16)
    ap.add_argument("--scaling-hidden", type=int, default=16)
    ap.add_argument("--child-timeout", type=int, default=1800)
    ap.add_argument("--quick", action="store_true", help="small sizes, no file written")
    ap.add_argument("--out", default=str(HERE / "results" / "tensor_frames.md"))
    ap.add_argument("--json", default=None, help="also write the raw measurements to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(scaling_child(json.loads(args.child))))
        return
    torch.set_num_threads(args.threads)
    if args.quick:
        args.nodes, args.repeats, args.scaling_nodes = 1024, 3, [10**3, 10**4]
    device = torch.device(args.device)
    command = "python " + " ".join([os.path.relpath(__file__, HERE.parent)] + (argv or sys.argv[1:]))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [] if args.no_overhead else overhead(args, device)
    srows = [] if args.no_scaling else scaling(args)
    text = markdown(args, rows, srows, command)
    if hasattr(os, "getloadavg"):
        text += f"\nLoad average: {load0:.1f} at start, {os.getloadavg()[0]:.1f} at the end.\n"
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "scaling": srows, "command": command}, indent=1))
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
