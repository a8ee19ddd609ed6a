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

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .averaging import SCALAR, _resolve
from .groups import EuclideanGroup, GroupElement

__all__ = ["EquivarianceReport", "equivariance_error", "assert_equivariant", "transform_inputs"]


@dataclass
class EquivarianceReport:
    """Per-output worst relative error ``max|f(gx) - g f(x)| / max|f(x)|`` over the trials.

    Attributes:
        errors: output name -> worst relative error.
        abs_errors: output name -> worst absolute error.
        sides: (when requested) output name -> list of ``(f(g x), g f(x))`` pairs, one per trial.
        elements: the group elements used, one :class:`GroupElement` (batched) per trial.
    """

    errors: dict[str, float]
    abs_errors: dict[str, float]
    sides: dict[str, list[tuple[Tensor, Tensor]]] = field(default_factory=dict)
    elements: list[GroupElement] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def __str__(self) -> str:
        rows = ", ".join(f"{k}: rel {v:.3e} (abs {self.abs_errors[k]:.3e})" for k, v in self.errors.items())
        return f"EquivarianceReport({rows})"


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
    if typ == SCALAR:
        return x
    Q, s = _element_for(x, g, batch, B, name)
    return typ.transform(x, Q.to(x.dtype), s.to(x.dtype) if typ.has_pos else None)


def transform_inputs(
    inputs: Mapping[str, Any], types: Mapping[str, Any], g: GroupElement, *, batch: Tensor | None = None
) -> dict[str, Any]:
    """Apply ``g`` to every typed input (untyped inputs are returned unchanged)."""
    d = g.dim
    B = g.Q.shape[0] if g.Q.dim() == 3 else 1
    out = dict(inputs)
    for k, spec in types.items():
        if k in out and isinstance(out[k], Tensor):
            out[k] = _apply(out[k], _resolve(spec, d, k), g, batch, B, k)
    return out


def _flatten(out: Any) -> dict[str, Tensor]:
    if isinstance(out, Tensor):
        return {"output": out}
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return {str(i): v for i, v in enumerate(out)}
    raise TypeError(f"output: expected a tensor, tuple or dict, got {type(out).__name__}")


def equivariance_error(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    *,
    types: Mapping[str, Any] | None = None,
    output: Any = None,
    group: "str | EuclideanGroup" = "E(3)",
    batch: Tensor | None = None,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
    return_sides: bool = False,
    translation_scale: float = 1.0,
    batched: bool | None = None,
) -> EquivarianceReport:
    """Measure ``f(g x)`` against ``g f(x)`` for random ``g``.

    Args:
        fn: the model, called as ``fn(**inputs)`` (plus ``batch=`` when given).
        inputs: keyword inputs (tensors, or anything passed through unchanged).
        types: input name -> type (reps string, ``"pos"``, ``"scalar"``); defaults to ``fn.inputs``
            when ``fn`` is a :class:`~equiframe.FrameAveraging`.
        output: the output type(s) (reps string / ``"pos"`` / ``"scalar"``, or a tuple/dict of them);
            defaults to ``fn.output``.
        group: the group to test (``"O(3)"``, ``"SE(2)"``, ...).
        batch: PyG batch vector for ragged inputs: one independent element per example.
        n_trials: number of random elements (per example) to try.
        generator: reproducible sampling.
        return_sides: keep ``(f(gx), g f(x))`` for each output and trial.
        batched: dense inputs carry a leading batch dimension (one element per example); inferred
            from the ``pos`` input (``[B, N, d]`` vs ``[N, d]``) when not given.
    """
    types = dict(types if types is not None else getattr(fn, "inputs", {}))
    output = output if output is not None else getattr(fn, "output", None)
    if output is None:
        raise ValueError("output: give the output type(s) (fn has no .output attribute)")
    if isinstance(group, str):
        dims = [v.shape[-1] for k, v in inputs.items() if isinstance(v, Tensor) and types.get(k) == "pos"]
        G = EuclideanGroup.parse(group, dim=dims[0] if dims and "(d)" in group else None)
    else:
        G = group
    d = G.dim
    call_kw = dict(inputs)
    if batch is not None:
        call_kw["batch"] = batch
        B = int(batch.max()) + 1 if batch.numel() else 0
        n_elem: tuple[int, ...] = (B,)
    else:
        if batched is None:
            pos_like = [v for k, v in inputs.items() if isinstance(v, Tensor) and str(types.get(k, "")).strip() == "pos"]
            if not pos_like:
                raise ValueError("batched: cannot infer whether dense inputs are batched (no 'pos' input); pass batched=True/False")
            batched = pos_like[0].dim() >= 3
        typed = [v for k, v in inputs.items() if isinstance(v, Tensor) and k in types and _resolve(types[k], d, k) != SCALAR]
        B = typed[0].shape[0] if batched and typed else 1
        n_elem = (B,) if batched else ()
    if isinstance(output, Mapping):
        out_types = {str(k): _resolve(v, d, f"output[{k!r}]") for k, v in output.items()}
    elif isinstance(output, (tuple, list)):
        out_types = {str(i): _resolve(v, d, f"output[{i}]") for i, v in enumerate(output)}
    else:
        out_types = {"output": _resolve(output, d, "output")}

    with torch.no_grad():
        base = _flatten(fn(**call_kw))
    errors = {k: 0.0 for k in base}
    abs_errors = {k: 0.0 for k in base}
    sides: dict[str, list] = {k: [] for k in base}
    elements = []
    diffs: dict[str, float] = {}
    dtype = next((v.dtype for v in inputs.values() if isinstance(v, Tensor) and v.is_floating_point()), torch.float64)
    for _ in range(n_trials):
        g = G.sample(n_elem, generator=generator, dtype=torch.float64, translation_scale=translation_scale)
        elements.append(g)
        moved = transform_inputs(inputs, types, g.to(dtype), batch=batch)
        if batch is not None:
            moved["batch"] = batch
        with torch.no_grad():
            lhs = _flatten(fn(**moved))
        for k, y in base.items():
            if k not in out_types:
                raise ValueError(f"output: the model returned {k!r}, which has no declared type")
            rhs = _apply(y, out_types[k], g.to(y.dtype), batch, B if n_elem else 1, f"output[{k}]")
            diff = float((lhs[k] - rhs).abs().max()) if lhs[k].numel() else 0.0
            abs_errors[k] = max(abs_errors[k], diff)
            diffs[k] = max(diffs.get(k, 0.0), diff)
            if return_sides:
                sides[k].append((lhs[k], rhs))
    # relative to the output's scale; an output that is ~0 (e.g. by symmetry) is compared with the
    # model's overall output scale instead
    scales = {k: float(y.abs().max()) if y.numel() else 0.0 for k, y in base.items()}
    overall = max(scales.values(), default=0.0)
    for k in base:
        errors[k] = diffs.get(k, 0.0) / max(scales[k], 1e-3 * overall, 1e-30)
    return EquivarianceReport(errors, abs_errors, sides if return_sides else {}, elements)


def _default_tol(inputs: Mapping[str, Any]) -> float:
    dts = [v.dtype for v in inputs.values() if isinstance(v, Tensor) and v.is_floating_point()]
    return 1e-9 if dts and all(dt == torch.float64 for dt in dts) else 1e-4


def assert_equivariant(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    *,
    types: Mapping[str, Any] | None = None,
    output: Any = None,
    group: "str | EuclideanGroup" = "E(3)",
    batch: Tensor | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
    return_sides: bool = False,
    batched: bool | None = None,
) -> EquivarianceReport:
    """Raise ``AssertionError`` unless ``fn`` is equivariant: for every output, the worst error is
    within ``rtol`` relative to the output's scale (default 1e-9 for float64 inputs, 1e-4 otherwise)
    or within ``atol`` absolutely. An output that is ~0 (e.g. zero by symmetry) is measured relative
    to ``1e-3`` times the largest output scale of the model. Returns the report.

    See :func:`equivariance_error` for the arguments.
    """
    report = equivariance_error(
        fn, inputs, types=types, output=output, group=group, batch=batch, n_trials=n_trials,
        generator=generator, return_sides=return_sides, batched=batched,
    )
    tol = rtol if rtol is not None else _default_tol(inputs)
    bad = {k: v for k, v in report.errors.items() if not (v <= tol or report.abs_errors[k] <= atol)}
    if bad:
        raise AssertionError(
            f"not {group}-equivariant within rtol={tol:g}: "
            + ", ".join(f"{k}: rel {v:.3e} (abs {report.abs_errors[k]:.3e})" for k, v in bad.items())
        )
    return report

