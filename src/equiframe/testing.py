"""Equivariance testing tools, shipped so that users can test their own models.

:func:`assert_equivariant` draws random group elements (rotations *and* reflections, translations
for E(d)/SE(d)), transforms the typed inputs, and compares ``f(g x)`` with ``g f(x)`` output by
output. Dense inputs ``[B, ...]`` and ragged PyG inputs (with ``batch=``) get one independent
element per example. The report holds the per-output relative errors and, on request, both sides.

Example:
    >>> import torch
    >>> from equiframe import FrameAveraging
    >>> backbone = torch.nn.Linear(3, 3).double()      # moves every point: not equivariant
    >>> pos = torch.randn(4, 10, 3, dtype=torch.float64)
    >>> assert_equivariant(lambda pos: backbone(pos), {"pos": pos}, types={"pos": "pos"}, output="pos",
    ...                    group="E(3)")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: not E(3)-equivariant within rtol=1e-09...
    >>> fa = FrameAveraging(lambda pos: backbone(pos), group="E(3)", inputs={"pos": "pos"}, output="pos")
    >>> report = assert_equivariant(fa, {"pos": pos}, group="E(3)")   # FA declares its own types
    >>> report.errors["output"] < 1e-12
    True
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .groups import EuclideanGroup, GroupElement, SymmetricGroup, parse_group
from .reps import TensorReps, as_reps

__all__ = [
    "EquivarianceReport",
    "FRAMES",
    "declared_types",
    "equivariance_error",
    "assert_equivariant",
    "transform_inputs",
]

FRAMES = "frames"
"""Type of a tensor of local frames ``[N, d, d]`` (rows = axes): ``R -> R Q^T`` under ``g = (Q, s)``."""


@dataclass
class EquivarianceReport:
    """Per-output worst relative error ``max|f(gx) - g f(x)| / max|f(x)|`` over the trials.

    Attributes:
        errors: output name -> worst relative error.
        abs_errors: output name -> worst absolute error.
        sides: output name -> list of ``(f(g x), g f(x))`` pairs, one per trial (both sides, for
            inspection; empty with ``return_sides=False``).
        elements: the group elements used, one per trial: a :class:`GroupElement` (batched) for the
            Euclidean groups, a node permutation ``[N]`` for S_n.
        types: the input types that were applied (declared by the module or given).
        output_types: the output types that were checked.
    """

    errors: dict[str, float]
    abs_errors: dict[str, float]
    sides: dict[str, list[tuple[Tensor, Tensor]]] = field(default_factory=dict)
    elements: list = field(default_factory=list)
    types: dict[str, Any] = field(default_factory=dict)
    output_types: dict[str, Any] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def __str__(self) -> str:
        rows = ", ".join(f"{k}: rel {v:.3e} (abs {self.abs_errors[k]:.3e})" for k, v in self.errors.items())
        return f"EquivarianceReport({rows})"


# ------------------------------------------------------------------------------------------ declared types
def _signature(fn: Callable) -> dict[str, inspect.Parameter]:
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return {}


def _coordinates(fn: Callable, params: Mapping[str, inspect.Parameter]) -> tuple[str, str]:
    """Where the module's typed input and output live: ``"global"`` or ``"local"`` (in the node frames).

    A module may declare ``coordinates = ("global", "local")``; :class:`~equiframe.nn.ToLocal` and
    :class:`~equiframe.nn.ToGlobal` move between the two; any other module that takes ``frames`` works in
    the local frames (Tensor Frames layers); everything else in global coordinates.
    """
    declared = getattr(fn, "coordinates", None)
    if declared is not None:
        if not (isinstance(declared, tuple) and len(declared) == 2 and set(declared) <= {"global", "local"}):
            raise ValueError(f"coordinates: expected a pair of 'global'/'local', got {declared!r}")
        return declared
    try:
        from .nn import ToGlobal, ToLocal  # noqa: PLC0415
    except ImportError:  # pragma: no cover - nn is part of the package
        ToGlobal = ToLocal = ()  # noqa: N806
    if ToLocal and isinstance(fn, ToLocal):
        return ("global", "local")
    if ToGlobal and isinstance(fn, ToGlobal):
        return ("local", "global")
    return ("local", "local") if "frames" in params else ("global", "global")


def declared_types(fn: Callable) -> tuple[dict[str, Any], Any]:
    """The input types and output type(s) a module declares, as :func:`assert_equivariant` reads them.

    * ``reps_in`` / ``reps_out`` attributes (every equivariant module of equiframe): a mapping
      ``{input name: reps}`` (:class:`~equiframe.FrameAveraging`) or one reps for the module's first
      argument (``x``). Tensor Frames modules (a ``frames`` argument) take and return features in the
      local frames, which are invariant; their ``frames`` transform as ``R -> R Q^T`` and ``pos`` as points.
    * otherwise ``inputs`` / ``output`` attributes (the papers' models).

    Returns:
        ``(types, output)``: ``{name: TensorReps | str}`` and the output type(s) (a type, tuple or dict),
        ``output`` None if the module declares none.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a module or function, got {type(fn).__name__}")
    params = _signature(fn)
    reps_in, reps_out = getattr(fn, "reps_in", None), getattr(fn, "reps_out", None)
    types: dict[str, Any] = {}
    output: Any = None
    if callable(reps_in) and not isinstance(reps_in, (TensorReps, Mapping)):
        reps_in, reps_out = None, None  # a method, not a declaration
    if reps_in is not None or reps_out is not None:
        local_in, local_out = (c == "local" for c in _coordinates(fn, params))
        if isinstance(reps_in, Mapping):
            types.update(reps_in)
        elif isinstance(reps_in, (TensorReps, str)):
            first = next((n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)), "x")
            types[first] = TensorReps.invariant() if local_in else reps_in
        if reps_out is not None:
            output = TensorReps.invariant() if local_out else reps_out
        if "frames" in params:
            types.setdefault("frames", FRAMES)
            if "pos" in params:
                types.setdefault("pos", "pos")
    declared_in, declared_out = getattr(fn, "inputs", None), getattr(fn, "output", None)
    if not types and isinstance(declared_in, Mapping):
        types = dict(declared_in)
    if output is None and declared_out is not None and not callable(declared_out):
        output = declared_out
    return types, output


# ------------------------------------------------------------------------------------------ Euclidean actions
def _element_for(x: Tensor, g: GroupElement, batch: Tensor | None, num_examples: int, name: str):
    """The (Q, s) to apply to each row of x: per example, per node (ragged), or a single one."""
    if batch is not None:
        if x.shape[0] == batch.shape[0]:
            return g.Q[batch], g.s[batch]
        if x.shape[0] == num_examples:
            return g.Q, g.s
        raise ValueError(f"{name}: leading dimension {x.shape[0]} matches neither the nodes ({batch.shape[0]}) nor the examples ({num_examples})")
    if g.Q.dim() == 2:  # single element, unbatched input
        return g.Q, g.s
    if x.shape[0] != num_examples:
        raise ValueError(f"{name}: leading dimension {x.shape[0]} is not the batch size {num_examples}")
    extra = x.dim() - 2
    return (
        g.Q.reshape(num_examples, *([1] * extra), *g.Q.shape[-2:]),
        g.s.reshape(num_examples, *([1] * extra), g.s.shape[-1]),
    )


def _apply(x: Tensor, typ, g: GroupElement, batch, B, name):
    if typ is FRAMES or (isinstance(typ, str) and typ == FRAMES):
        Q, _ = _element_for(x, g, batch, B, name)
        return x @ Q.to(x.dtype).transpose(-1, -2)
    if typ.is_scalar:
        return x
    if typ.dim is not None and typ.dim != g.dim:
        raise ValueError(f"{name}: type {str(typ)!r} has dim {typ.dim}, but the group acts on dimension {g.dim}")
    Q, s = _element_for(x, g, batch, B, name)
    return typ.transform(x, Q.to(x.dtype), s.to(x.dtype) if typ.has_pos else None)


def _as_type(spec: Any, d: int | None, name: str):
    if isinstance(spec, str) and spec == FRAMES:
        return FRAMES
    return as_reps(spec, d, name)


def transform_inputs(
    inputs: Mapping[str, Any], types: Mapping[str, Any], g: GroupElement, *, batch: Tensor | None = None
) -> dict[str, Any]:
    """Apply ``g`` to every typed input (untyped inputs are returned unchanged)."""
    d = g.dim
    B = g.Q.shape[0] if g.Q.dim() == 3 else 1
    out = dict(inputs)
    for k, spec in types.items():
        if k in out and isinstance(out[k], Tensor):
            out[k] = _apply(out[k], _as_type(spec, d, k), g, batch, B, k)
    return out


# ------------------------------------------------------------------------------------------ S_n actions
def _permute_inputs(inputs: Mapping[str, Any], perm: Tensor, inv: Tensor, n: int) -> dict[str, Any]:
    """Relabel nodes: new node ``i`` is old node ``perm[i]``; per-node tensors are reordered, ``edge_index``
    is relabelled, everything else is unchanged."""
    out = dict(inputs)
    for k, v in inputs.items():
        if not isinstance(v, Tensor):
            continue
        if k == "edge_index":
            out[k] = inv[v]
        elif k != "batch" and v.dim() >= 1 and v.shape[0] == n:
            out[k] = v[perm]
    return out


def _flatten(out: Any) -> dict[str, Tensor]:
    if isinstance(out, Tensor):
        return {"output": out}
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return {str(i): v for i, v in enumerate(out)}
    raise TypeError(f"output: expected a tensor, tuple or dict, got {type(out).__name__}")


def _flatten_types(output: Any, d: int | None) -> dict[str, Any]:
    if isinstance(output, Mapping):
        return {str(k): _as_type(v, d, f"output[{k!r}]") for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return {str(i): _as_type(v, d, f"output[{i}]") for i, v in enumerate(output)}
    return {"output": _as_type(output, d, "output")}


def _default_group(fn: Callable):
    frames = getattr(fn, "frames", None)
    group = getattr(frames, "group", None) if frames is not None else None
    return group if isinstance(group, (EuclideanGroup, SymmetricGroup, str)) else "E(3)"


def equivariance_error(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    *,
    types: Mapping[str, Any] | None = None,
    output: Any = None,
    group: "str | EuclideanGroup | SymmetricGroup | None" = None,
    batch: Tensor | None = None,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
    return_sides: bool = True,
    translation_scale: float = 1.0,
    batched: bool | None = None,
) -> EquivarianceReport:
    """Measure ``f(g x)`` against ``g f(x)`` for random ``g``.

    Args:
        fn: the model, called as ``fn(**inputs)`` (plus ``batch=`` when given).
        inputs: keyword inputs (tensors, or anything passed through unchanged).
        types: input name -> type (a :class:`~equiframe.reps.TensorReps` or its string, ``"pos"``,
            ``"scalar"``, :data:`FRAMES`); by default read from the module (:func:`declared_types`:
            ``reps_in``/``reps_out``, else ``inputs``/``output``).
        output: the output type(s) (a type, or a tuple/dict of them); by default read from the module.
        group: the group to test: ``"O(3)"``, ``"SE(2)"``, ``"E(d)"`` (``d`` from the ``pos`` input),
            ``"S_n"`` (node relabelling), or a group object. Default: the module's frames' group, else ``"E(3)"``.
        batch: PyG batch vector for ragged inputs: one independent element per example.
        n_trials: number of random elements (per example) to try.
        generator: reproducible sampling.
        return_sides: keep ``(f(gx), g f(x))`` for each output and trial in :attr:`EquivarianceReport.sides`.
        translation_scale: standard deviation of the sampled translations (E(d), SE(d)).
        batched: dense inputs carry a leading batch dimension (one element per example); inferred
            from the ``pos`` input (``[B, N, d]`` vs ``[N, d]``) when not given.

    Shapes:
        S_n: per-node inputs ``[N, ...]`` are reordered, ``edge_index [2, E]`` relabelled; per-node outputs
        (leading dimension ``N``) are compared after reordering, others as they are.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable or module, got {type(fn).__name__}")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs: expected a dict of keyword inputs, got {type(inputs).__name__}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials: expected a positive integer, got {n_trials!r}")
    decl_types, decl_out = declared_types(fn)
    types = dict(types if types is not None else decl_types)
    output = output if output is not None else decl_out
    if output is None:
        raise ValueError("output: give the output type(s) (the module declares no reps_out/output)")
    group = _default_group(fn) if group is None else group
    if isinstance(group, str) and "(d)" in group.replace(" ", ""):
        dims = [v.shape[-1] for k, v in inputs.items() if isinstance(v, Tensor) and _is_pos(types.get(k))]
        if not dims:
            raise ValueError(f"group: {group!r} needs a 'pos' input to read the dimension from")
        G = parse_group(group, dim=dims[0])
    else:
        G = parse_group(group)
    if isinstance(G, SymmetricGroup):
        return _permutation_error(fn, inputs, types, output, batch, n_trials, generator, return_sides)
    d = G.dim
    call_kw = dict(inputs)
    resolved = {k: _as_type(v, d, k) for k, v in types.items()}
    if batch is not None:
        call_kw["batch"] = batch
        B = int(batch.max()) + 1 if batch.numel() else 0
        n_elem: tuple[int, ...] = (B,)
    else:
        if batched is None:
            pos_like = [v for k, v in inputs.items() if isinstance(v, Tensor) and _is_pos(types.get(k))]
            if resolved.get("frames") is FRAMES and "frames" in inputs:
                batched = False
            elif not pos_like:
                raise ValueError("batched: cannot infer whether dense inputs are batched (no 'pos' input); pass batched=True/False")
            else:
                batched = pos_like[0].dim() >= 3
        typed = [v for k, v in inputs.items() if isinstance(v, Tensor) and k in resolved and resolved[k] is not FRAMES
                 and not resolved[k].is_scalar]
        B = typed[0].shape[0] if batched and typed else 1
        n_elem = (B,) if batched else ()
    out_types = _flatten_types(output, d)

    with torch.no_grad():
        base = _flatten(fn(**call_kw))
    abs_errors = {k: 0.0 for k in base}
    sides: dict[str, list] = {k: [] for k in base}
    elements = []
    dtype = next((v.dtype for v in inputs.values() if isinstance(v, Tensor) and v.is_floating_point()), torch.float64)
    device = next((v.device for v in inputs.values() if isinstance(v, Tensor)), torch.device("cpu"))
    for _ in range(n_trials):
        g = G.sample(n_elem, generator=generator, dtype=torch.float64, translation_scale=translation_scale)
        elements.append(g)
        moved = transform_inputs(inputs, resolved, g.to(dtype=dtype, device=device), batch=batch)
        _trial(fn, moved, batch, base, out_types, abs_errors, sides, return_sides,
               lambda k, y: _apply(y, out_types[k], g.to(dtype=y.dtype, device=y.device), batch, B if n_elem else 1,
                                   f"output[{k}]"))
    return _report(base, abs_errors, sides if return_sides else {}, elements, resolved, out_types)


def _trial(fn, moved: dict, batch, base: Mapping[str, Tensor], out_types: Mapping[str, Any], abs_errors: dict,
           sides: dict, return_sides: bool, transform_output) -> None:
    """One trial of a check: run ``fn`` on the transformed inputs (``f(g.x)``) and record its distance to the
    transformed outputs (``g.f(x)``, given by ``transform_output(name, y)``) for every output."""
    if batch is not None:
        moved["batch"] = batch
    with torch.no_grad():
        lhs = _flatten(fn(**moved))
    for k, y in base.items():
        if k not in out_types:
            raise ValueError(f"output: the model returned {k!r}, which has no declared type")
        _record(k, lhs[k], transform_output(k, y), abs_errors, sides, return_sides)


def _is_pos(spec: Any) -> bool:
    if spec is None or (isinstance(spec, str) and spec == FRAMES):
        return False
    try:
        r = as_reps(spec)
    except (TypeError, ValueError):
        return False
    return not r.is_invariant and r.blocks == TensorReps("pos").blocks


def _record(k: str, lhs: Tensor, rhs: Tensor, abs_errors: dict, sides: dict, keep: bool) -> None:
    if lhs.shape != rhs.shape:
        raise ValueError(f"output[{k}]: shape {tuple(lhs.shape)} of f(g x) differs from {tuple(rhs.shape)} of g f(x)")
    diff = float((lhs - rhs).abs().max()) if lhs.numel() else 0.0
    if diff != diff:  # NaN
        diff = float("inf")
    abs_errors[k] = max(abs_errors[k], diff)
    if keep:
        sides[k].append((lhs, rhs))


def _report(base, abs_errors, sides, elements, types, out_types) -> EquivarianceReport:
    # relative to the output's scale; an output that is ~0 (e.g. by symmetry) is compared with the
    # model's overall output scale instead
    scales = {k: float(y.abs().max()) if y.numel() else 0.0 for k, y in base.items()}
    overall = max(scales.values(), default=0.0)
    errors = {k: abs_errors[k] / max(scales[k], 1e-3 * overall, 1e-30) for k in base}
    return EquivarianceReport(errors, abs_errors, sides, elements, dict(types), dict(out_types))


def _permutation_error(fn, inputs, types, output, batch, n_trials, generator, return_sides) -> EquivarianceReport:
    """S_n: relabel the nodes of every graph, compare ``f(p x)`` with ``p f(x)``."""
    resolved = {k: _as_type(v, None, k) for k, v in types.items()}
    for k, r in resolved.items():
        if r is FRAMES or not r.is_scalar:
            raise ValueError(f"types[{k!r}]: S_n permutes nodes; every typed input must be invariant ('scalar'), got {r}")
    out_types = _flatten_types(output, None)
    for k, r in out_types.items():
        if r is FRAMES or not r.is_scalar:
            raise ValueError(f"output[{k}]: S_n outputs must be invariant ('scalar') per node or per graph, got {r}")
    call_kw = dict(inputs)
    n = None
    if batch is not None:
        n = batch.shape[0]
        call_kw["batch"] = batch
    else:
        sizes = [v.shape[0] for k, v in inputs.items() if k in resolved and isinstance(v, Tensor) and v.dim()]
        ei = inputs.get("edge_index")
        n = sizes[0] if sizes else (int(ei.max()) + 1 if isinstance(ei, Tensor) and ei.numel() else 0)
    nodes = batch if batch is not None else torch.zeros(n, dtype=torch.long)
    G = SymmetricGroup()
    with torch.no_grad():
        base = _flatten(fn(**call_kw))
    abs_errors = {k: 0.0 for k in base}
    sides: dict[str, list] = {k: [] for k in base}
    elements = []
    device = next((v.device for v in inputs.values() if isinstance(v, Tensor)), torch.device("cpu"))
    for _ in range(n_trials):
        perm = G.sample(nodes.cpu(), generator=generator).to(device)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(n, device=device)
        elements.append(perm)
        moved = _permute_inputs(inputs, perm, inv, n)
        _trial(fn, moved, batch, base, out_types, abs_errors, sides, return_sides,
               lambda k, y: y[perm] if y.dim() >= 1 and y.shape[0] == n else y)
    return _report(base, abs_errors, sides if return_sides else {}, elements, resolved, out_types)


def _default_tol(inputs: Mapping[str, Any]) -> float:
    dts = [v.dtype for v in inputs.values() if isinstance(v, Tensor) and v.is_floating_point()]
    return 1e-9 if dts and all(dt == torch.float64 for dt in dts) else 1e-4


def assert_equivariant(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    *,
    types: Mapping[str, Any] | None = None,
    output: Any = None,
    group: "str | EuclideanGroup | SymmetricGroup | None" = None,
    batch: Tensor | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
    return_sides: bool = True,
    batched: bool | None = None,
) -> EquivarianceReport:
    """Raise ``AssertionError`` unless ``fn`` is equivariant: for every output, the worst error is
    within ``rtol`` relative to the output's scale (default 1e-9 for float64 inputs, 1e-4 otherwise)
    or within ``atol`` absolutely. An output that is ~0 (e.g. zero by symmetry) is measured relative
    to ``1e-3`` times the largest output scale of the model. Returns the report (with both sides).

    The types are read from the module when not given (:func:`declared_types`), so any module of
    equiframe that declares ``reps_in``/``reps_out`` is checked as it is: ``assert_equivariant(fa, {"pos": pos})``.

    See :func:`equivariance_error` for the arguments.
    """
    report = equivariance_error(
        fn, inputs, types=types, output=output, group=group, batch=batch, n_trials=n_trials,
        generator=generator, return_sides=return_sides, batched=batched,
    )
    tol = rtol if rtol is not None else _default_tol(inputs)
    bad = {k: v for k, v in report.errors.items() if not (v <= tol or report.abs_errors[k] <= atol)}
    if bad:
        name = group if group is not None else _default_group(fn)
        raise AssertionError(
            f"not {name}-equivariant within rtol={tol:g}: "
            + ", ".join(f"{k}: rel {v:.3e} (abs {report.abs_errors[k]:.3e})" for k, v in bad.items())
        )
    return report
