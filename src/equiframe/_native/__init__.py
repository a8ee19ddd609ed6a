r"""Optional compiled CPU kernel for the tensor-frame hot path: one rotation per row.

:func:`rotate_rows` computes, for every row ``r``,

.. math::  y_r = \rho(M_r)\, x_{x_r}, \qquad M_r = R_{r_r} \text{ (or } R_{r_r}^\top),

with optional gather indices ``xidx`` (rows of ``x``) and ``ridx`` (rows of ``R``) fused into the same pass
(the per-edge transport ``rho(R_i) g_j`` reads ``x[src]`` and ``R[dst]`` without materialising either). It
is what :meth:`equiframe.TensorReps.to_local` / ``to_global`` use for ``[B, C]`` features with one matrix
per row on CPU, when it is available; otherwise they fall back to the pure-PyTorch path, which gives the
same values (up to float rounding: the kernel fuses multiply-adds).

The kernel (``rotate.cpp``, shipped with the package) is compiled on first use with the system C++
compiler (``$CXX``, else ``c++``/``g++``/``clang++``) into ``<cache>/native/`` (``$EQUIFRAME_CACHE``,
default ``~/.cache/equiframe``), keyed by a hash of the source, the compiler, the flags and the CPU (the
build uses ``-march=native``), and loaded with :mod:`ctypes` (no Python headers, no extension module,
about a second to build). The build is atomic (compile to a temporary name, then rename), so concurrent
processes are safe.

Control with ``$EQUIFRAME_NATIVE``: ``auto`` (default: use it when it builds, otherwise fall back
silently -- :func:`status` says why), ``0``/``off`` (never), ``1``/``require`` (raise if it cannot be
built). Scope: CPU tensors, float32/float64, ``d`` in {2, 3, 4}, tensor orders 0-2 (other reps use the
PyTorch path). Autograd: gradients flow to ``x`` (the backward pass is the same kernel with ``R^T``, so it
is differentiable again); when ``R`` or ``det`` need gradients (learned frames) the caller uses the
PyTorch path, which differentiates through the frames.

Threads: rows are split over ``torch.get_num_threads()`` threads for large inputs (ctypes releases the
GIL during the call).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DIMS",
    "MAX_ORDER",
    "available",
    "edge_geometry",
    "native_applies",
    "rotate",
    "rotate_rows",
    "status",
    "supports",
    "use_native",
]

MAX_ORDER = 2
DIMS = (2, 3, 4)
_SOURCE = Path(__file__).with_name("rotate.cpp")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_ABI = 2
_PARALLEL_MIN = 1 << 17  # entries of y below which one thread does the whole call

_lock = threading.Lock()
# build results per requested compiler ($CXX): {"lib", "reason", "path"}
_builds: dict[str, dict] = {}
# use_native(...) override of $EQUIFRAME_NATIVE for the current context (thread / task)
_state_path: dict = {}
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("equiframe_native", default=None)
_pool: dict = {"executor": None, "workers": 0}


def _mode() -> str:
    forced = _override.get()
    if forced is not None:
        return forced
    v = os.environ.get("EQUIFRAME_NATIVE", "auto").strip().lower()
    if v in ("0", "off", "false", "no"):
        return "off"
    if v in ("1", "require", "on", "true", "yes"):
        return "require"
    if v in ("", "auto"):
        return "auto"
    raise ValueError(f"EQUIFRAME_NATIVE: expected auto, 0/off or 1/require, got {v!r}")


def _compiler_request() -> str:
    """The compiler asked for: ``$CXX`` when set (then nothing else is tried), else the first found."""
    return os.environ.get("CXX", "").strip()


def _compiler() -> str | None:
    cxx = _compiler_request()
    if cxx:
        return shutil.which(cxx)
    for c in ("c++", "g++", "clang++"):
        if shutil.which(c):
            return shutil.which(c)
    return None


def _cpu_fingerprint() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _build() -> ctypes.CDLL:
    from ..datasets._cache import resolve_cache_dir  # noqa: PLC0415 (lazy: keeps `import equiframe` light)

    cxx = _compiler()
    if cxx is None:
        asked = _compiler_request()
        raise RuntimeError(f"no C++ compiler found ($CXX={asked!r} is not on PATH)" if asked else
                           "no C++ compiler found (set $CXX, or install g++)")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, cxx.encode(), " ".join(_FLAGS).encode(), platform.machine().encode(),
                    _cpu_fingerprint().encode()])
    ).hexdigest()[:16]
    out_dir = resolve_cache_dir() / "native"
    path = out_dir / f"rotate-{key}.so"
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rotate-", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            res = subprocess.run([cxx, *_FLAGS, str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                                 timeout=300)
            if res.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {res.stderr.strip()[-2000:]}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(path))
    if lib.equiframe_abi_version() != _ABI:
        raise RuntimeError(f"{path}: ABI version {lib.equiframe_abi_version()} != {_ABI}")
    p, i64, i = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "equiframe_rotate": [p, p, p, p, p, i, p, i64, i64, i64, i, p, i],
        "equiframe_edge_geometry": [p, p, p, p, p, p, i64, i64, i, i, ctypes.c_double],
    }
    for stem, argtypes in signatures.items():
        for suffix in ("_f32", "_f64"):
            fn = getattr(lib, stem + suffix)
            fn.restype, fn.argtypes = ctypes.c_int, argtypes
    _state_path["path"] = str(path)
    return lib


def _lib() -> ctypes.CDLL | None:
    mode = _mode()
    if mode == "off":
        return None
    key = _compiler_request()
    if key not in _builds:
        with _lock:
            if key not in _builds:
                try:
                    lib = _build()
                    _builds[key] = {"lib": lib, "reason": "ok", "path": _state_path.pop("path", None)}
                except Exception as err:  # noqa: BLE001 -- any failure means: use the PyTorch path
                    _builds[key] = {"lib": None, "reason": f"{type(err).__name__}: {err}", "path": None}
    state = _builds[key]
    if state["lib"] is None and mode == "require":
        raise RuntimeError(f"EQUIFRAME_NATIVE=require but the native kernel is unavailable: {state['reason']}")
    return state["lib"]


@contextlib.contextmanager
def use_native(enabled: bool | None):
    """Context manager: ``True`` requires the compiled kernel (``RuntimeError`` if it cannot be built),
    ``False`` uses the PyTorch path only, ``None`` decides by availability (like ``$EQUIFRAME_NATIVE``,
    which it overrides inside the block, for the current thread/task only).

    Example:
        >>> import torch
        >>> from equiframe.frames import random_local_frames
        >>> from equiframe.reps import TensorReps
        >>> reps = TensorReps("2x1n+1x2n", dim=3)
        >>> x, frames = torch.randn(8, reps.size), random_local_frames(8, 3)
        >>> with use_native(False):
        ...     y = reps.to_local(x, frames)   # pure PyTorch
        >>> torch.allclose(y, reps.to_local(x, frames), atol=1e-5)
        True
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True, False or None, got {enabled!r}")
    token = _override.set({True: "require", False: "off", None: "auto"}[enabled])
    try:
        yield
    finally:
        _override.reset(token)


def available() -> bool:
    """Whether the kernel is enabled (``$EQUIFRAME_NATIVE``) and built (builds it on the first call)."""
    return _lib() is not None


def status() -> dict:
    """``{"mode", "available", "reason", "path"}``: what :func:`available` decided and why."""
    mode = _mode()
    if mode == "off":
        return {"mode": mode, "available": False, "reason": "disabled by EQUIFRAME_NATIVE", "path": None}
    try:
        lib = _lib()
    except RuntimeError:  # mode "require" and no kernel: status reports, it does not raise
        lib = None
    state = _builds.get(_compiler_request(), {"reason": "not built yet", "path": None})
    return {"mode": mode, "available": lib is not None, "reason": state["reason"], "path": state["path"]}


def supports(x: Tensor, R: Tensor, max_order: int) -> bool:
    """Whether :func:`rotate_rows` handles these inputs (device, dtype, ``d``, orders, autograd on ``R``)."""
    return (
        x.device.type == "cpu"
        and R.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and R.dtype == x.dtype
        and R.shape[-1] in DIMS
        and max_order <= MAX_ORDER
        and not (torch.is_grad_enabled() and R.requires_grad)
        and available()
    )


def _as_ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there when needed."""
    _pool["executor"], _pool["workers"] = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    if _pool["executor"] is None or _pool["workers"] != workers:
        if _pool["executor"] is not None:
            _pool["executor"].shutdown(wait=False)
        _pool["executor"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="equiframe-native")
        _pool["workers"] = workers
    return _pool["executor"]


def _run(x: Tensor, R: Tensor, transpose: bool, det: Tensor | None, entries: Tensor, xidx: Tensor | None,
         ridx: Tensor | None, n_rows: int, out: Tensor | None = None) -> Tensor:
    """The raw call (no autograd): contiguous inputs, ``y`` ``[n_rows, C]`` (written into ``out`` if given)."""
    lib = _lib()
    assert lib is not None
    c = x.shape[1]
    y = torch.empty(n_rows, c, dtype=x.dtype) if out is None else out
    if n_rows == 0:
        return y
    fn = lib.equiframe_rotate_f32 if x.dtype == torch.float32 else lib.equiframe_rotate_f64
    args = (_as_ptr(x), _as_ptr(xidx), _as_ptr(R), _as_ptr(ridx), _as_ptr(det), int(transpose), _as_ptr(y))
    tail = (c, R.shape[-1], _as_ptr(entries), entries.shape[0])
    workers = min(torch.get_num_threads(), max(1, (n_rows * c) // _PARALLEL_MIN))
    if workers <= 1:
        rc = fn(*args, 0, n_rows, *tail)
        if rc != 0:
            raise RuntimeError(f"native rotate: unsupported dimension d={R.shape[-1]}")
        return y
    bounds = [n_rows * k // workers for k in range(workers + 1)]
    futures = [_executor(workers).submit(fn, *args, bounds[k], bounds[k + 1], *tail) for k in range(workers)]
    if any(f.result() != 0 for f in futures):
        raise RuntimeError(f"native rotate: unsupported dimension d={R.shape[-1]}")
    return y


class _Rotate(torch.autograd.Function):
    """``y = rho(M) x[xidx]`` with gradients for ``x`` only (``R``, ``det``, indices are constants)."""

    @staticmethod
    def forward(ctx, x, R, transpose, det, entries, xidx, ridx, n_rows):  # noqa: D102
        ctx.save_for_backward(R, det, entries, xidx, ridx)
        ctx.transpose, ctx.n_x = transpose, x.shape[0]
        return _run(x, R, transpose, det, entries, xidx, ridx, n_rows)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        R, det, entries, xidx, ridx = ctx.saved_tensors
        # rho(M)^T = rho(M^T) (Kronecker powers commute with transposition; det scales both alike)
        gx = _Rotate.apply(g.contiguous(), R, not ctx.transpose, det, entries, None, ridx, g.shape[0])
        if xidx is not None:
            gx = gx.new_zeros(ctx.n_x, gx.shape[1]).index_add_(0, xidx, gx)
        return gx, None, None, None, None, None, None, None


def _check_index(idx: Tensor, n: int, name: str) -> Tensor:
    """int64, contiguous, in ``[0, n)`` (the kernel reads memory at these rows: checked, not trusted)."""
    idx = idx.to(torch.int64).contiguous()
    if idx.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D index tensor, got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"{name}: indices must lie in [0, {n})")
    return idx


def rotate_rows(x: Tensor, R: Tensor, entries: Tensor, det: Tensor | None = None, *,
                xidx: Tensor | None = None, ridx: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``y[r] = rho(R[ridx[r]]) x[xidx[r]]`` (indices optional) with the compiled kernel.

    Args:
        x: ``[N, C]`` features (float32/float64, CPU); gradients flow to it.
        R: ``[M, d, d]`` matrices (no gradient; a transposed view ``R.transpose(-1, -2)`` of a contiguous
            tensor is read in place).
        entries: ``[n, 4]`` int32 rows ``(offset, order, count, pseudo)`` covering every channel
            (:attr:`equiframe.TensorReps._native_entries`).
        det: ``[M]`` factors of the pseudo blocks (``det R``); required when some entry is pseudo.
        xidx, ridx: ``[B]`` int64 row indices into ``x`` / ``R``; ``None`` = identity (then ``B`` = ``N`` /
            ``M``).
        out: optional ``[B, C]`` tensor to write into (used only without autograd and when it is contiguous
            with ``x``'s dtype; otherwise the result is copied into it).

    Shapes:
        x ``[N, C]``, R ``[M, d, d]``, det ``[M]``, xidx/ridx ``[B]`` -> ``[B, C]``
    """
    n_rows = xidx.shape[0] if xidx is not None else (ridx.shape[0] if ridx is not None else x.shape[0])
    if R.dim() != 3 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"R: expected [M, d, d], got {tuple(R.shape)}")
    transpose = False
    if not R.is_contiguous() and R.transpose(-1, -2).is_contiguous():
        R, transpose = R.transpose(-1, -2), True  # read R^T in place
    R = R.contiguous()
    x = x.contiguous()
    if det is not None:
        det = det.to(x.dtype).contiguous()
    if det is None and bool((entries[:, 3] != 0).any()):
        raise ValueError("det: required when some block is pseudo")
    if x.dim() != 2:
        raise ValueError(f"x: expected [N, C], got {tuple(x.shape)}")
    xidx = None if xidx is None else _check_index(xidx, x.shape[0], "xidx")
    ridx = None if ridx is None else _check_index(ridx, R.shape[0], "ridx")
    if det is not None and det.shape != (R.shape[0],):
        raise ValueError(f"det: expected shape [{R.shape[0]}], got {tuple(det.shape)}")
    if out is not None:
        if out.shape != (n_rows, x.shape[1]):
            raise ValueError(f"out: expected shape [{n_rows}, {x.shape[1]}], got {tuple(out.shape)}")
        direct = out.is_contiguous() and out.dtype == x.dtype and out.device.type == "cpu"
        if direct and not (torch.is_grad_enabled() and x.requires_grad):
            return _run(x, R, transpose, det, entries, xidx, ridx, n_rows, out)
        return out.copy_(_Rotate.apply(x, R, transpose, det, entries, xidx, ridx, n_rows))
    return _Rotate.apply(x, R, transpose, det, entries, xidx, ridx, n_rows)


_GEOMETRY_KINDS = {"rel": 1, "dist": 2, "rel_dist": 3}


def edge_geometry(pos_src: Tensor, pos_dst: Tensor, frames_dst: Tensor | None, src: Tensor, dst: Tensor,
                  kind: str = "rel_dist", eps: float = 1e-6) -> Tensor | None:
    """``[R_i (x_j - x_i), sqrt(|x_j - x_i|^2 + eps^2) - eps]`` per edge in one pass, or ``None`` when the
    kernel does not apply (then the caller computes it with PyTorch): no gradients (neither positions nor
    frames may require grad under grad mode), CPU, one float dtype, ``d`` in {2, 3, 4}.

    Shapes:
        pos_src ``[N_src, d]``, pos_dst ``[N_dst, d]``, frames_dst ``[N_dst, d, d]`` | None, src/dst ``[E]``
        -> ``[E, d + 1]`` / ``[E, d]`` / ``[E, 1]``
    """
    if kind not in _GEOMETRY_KINDS:
        return None
    ts = [t for t in (pos_src, pos_dst, frames_dst) if t is not None]
    d = pos_src.shape[-1]
    if (
        any(t.device.type != "cpu" or t.dtype != pos_src.dtype for t in ts)
        or pos_src.dtype not in (torch.float32, torch.float64)
        or d not in DIMS
        or pos_src.dim() != 2
        or pos_dst.shape[-1] != d
        or (torch.is_grad_enabled() and any(t.requires_grad for t in ts))
        or not available()
    ):
        return None
    lib = _lib()
    src = _check_index(src, pos_src.shape[0], "src")
    dst = _check_index(dst, pos_dst.shape[0], "dst")
    if frames_dst is not None and frames_dst.shape != (pos_dst.shape[0], d, d):
        raise ValueError(f"frames_dst: expected [{pos_dst.shape[0]}, {d}, {d}], got {tuple(frames_dst.shape)}")
    pos_src, pos_dst = pos_src.contiguous(), pos_dst.contiguous()
    R = None if frames_dst is None else frames_dst.contiguous()
    code = _GEOMETRY_KINDS[kind]
    width = (d if code & 1 else 0) + (1 if code & 2 else 0)
    e = src.shape[0]
    out = torch.empty(e, width, dtype=pos_src.dtype)
    fn = lib.equiframe_edge_geometry_f32 if pos_src.dtype == torch.float32 else lib.equiframe_edge_geometry_f64
    rc = fn(_as_ptr(pos_src), _as_ptr(pos_dst), _as_ptr(R), _as_ptr(src), _as_ptr(dst), _as_ptr(out), 0, e, d,
            code, float(eps))
    if rc != 0:
        raise RuntimeError(f"native edge_geometry: unsupported dimension d={d}")
    return out


# ------------------------------------------------------------------------------------------------ backend
_entries_cache: dict = {}


def _entries(reps) -> Tensor | None:
    """The kernel's block table of ``reps`` (``[n, 4]`` int32 rows ``(offset, order, count, pseudo)``), or
    ``None`` when some order is above :data:`MAX_ORDER`; cached per (hashable) reps."""
    if reps not in _entries_cache:
        rows = [[sl.start, b.order, b.mul, int(b.parity == "p")] for b, sl in reps.slices()]
        ok = bool(rows) and reps.max_order <= MAX_ORDER
        _entries_cache[reps] = torch.tensor(rows, dtype=torch.int32) if ok else None
    return _entries_cache[reps]


def native_applies(reps, x: Tensor, R: Tensor, det: Tensor | None = None) -> bool:
    """Whether :func:`rotate` runs the compiled kernel for these inputs (CPU, float32/64, ``d`` in
    :data:`DIMS`, orders up to :data:`MAX_ORDER`, no ``pos`` blocks, no gradient wanted for ``R``/``det``,
    enabled by :func:`use_native` / ``$EQUIFRAME_NATIVE``); callers with a faster PyTorch algorithm of
    their own use it to choose."""
    if reps.has_pos or _entries(reps) is None:
        return False
    if det is not None and torch.is_grad_enabled() and det.requires_grad:
        return False
    return supports(x, R, reps.max_order)


def rotate(
    reps,
    x: Tensor,
    R: Tensor,
    det: Tensor | None = None,
    *,
    transpose: bool = False,
    xidx: Tensor | None = None,
    ridx: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""Rotate typed features row by row: :math:`y_r = \rho(M_r)\, x_{xidx_r}`, :math:`M_r = R_{ridx_r}`
    (:math:`R_{ridx_r}^\top` with ``transpose=True``), with the compiled kernel when it applies
    (:func:`native_applies`) and PyTorch otherwise. The one entry point to the kernel.

    Args:
        reps: the :class:`~equiframe.TensorReps` of ``x`` (no ``pos`` blocks).
        x: ``[N, reps.size]`` features.
        R: ``[M, d, d]`` matrices.
        det: ``[M]`` ``det R`` for pseudo blocks (computed when needed and not given).
        transpose: use :math:`R^\top`.
        xidx, ridx: ``[B]`` row indices into ``x`` / ``R`` (``None``: identity).
        out: optional ``[B, reps.size]`` tensor to write into.

    Shapes:
        x ``[N, C]``, R ``[M, d, d]``, det ``[M]``, xidx/ridx ``[B]`` -> ``[B, C]``
    """
    if reps.has_pos:
        raise ValueError("reps: 'pos' blocks are affine; rotate them with reps.transform(x, R, shift)")
    need_det = any(b.parity == "p" for b in reps.blocks)
    if need_det and det is None:
        det = torch.linalg.det(R)
    M = R.transpose(-1, -2) if transpose else R
    if native_applies(reps, x, R, det):
        return rotate_rows(x, M, _entries(reps), det if need_det else None, xidx=xidx, ridx=ridx, out=out)
    xs = x if xidx is None else x.index_select(0, xidx)
    Ms = M if ridx is None else M.index_select(0, ridx)
    ds = None
    if need_det:
        ds = det if ridx is None else det.index_select(0, ridx)
    with use_native(False):
        y = reps.transform(xs, Ms, det=ds)
    return y if out is None else out.copy_(y)
