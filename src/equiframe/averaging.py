r"""Frame Averaging: make any backbone invariant or equivariant (Puny et al., ICLR 2022).

.. math::
    \langle\Phi\rangle(X) = \sum_{g \in F(X)} w_g\, \rho_{\text{out}}(g)\, \Phi(g^{-1} \cdot X)

With an equivariant frame ``F(gX) = g F(X)`` the average is exactly invariant (scalar outputs) or
equivariant (typed outputs), whatever the backbone ``Phi``. A frame element ``(R, t)`` (rows of
``R`` = axes) is the group element ``g = (R^T, t)``, so ``g^{-1} x = R (x - t)`` are the local
coordinates the backbone sees and ``rho(g) y = R^T y`` (``+ t`` for positions) maps its outputs back.

The frame copies are folded into the batch dimension, so the backbone runs **once** on
``|F| * B`` examples: dense inputs become ``[M, N, ...]`` (``M = sum_b |F_b|``), ragged PyG inputs get a
batch vector over ``M`` graphs and an ``edge_index`` replicated with offsets.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

import torch
from torch import Tensor, nn

from .frames.base import Frame, Frames, all_finite
from .frames.laplacian import LaplacianFrames
from .frames.pca import PCAFrames, Tolerances
from .groups import EuclideanGroup, SymmetricGroup, parse_group
from .folding import (
    FoldedBatch,
    _fold_vectors,
    _fold_vectors_any,
    _fold_vectors_ragged,
    _to_local,
    _translate_precise,
    _unfold_vectors,
    _unfold_vectors_any,
    _unfold_vectors_ragged,
    _vector_only,
)
from .reps import TensorReps, as_reps
from ._checks import check_tensor

__all__ = ["FrameAveraging", "FoldedBatch", "SCALAR", "node_ranks"]

SCALAR = "scalar"
"""Spelling of the invariant type (``TensorReps("scalar")``): inputs/outputs of any shape that are
replicated / averaged, never transformed. ``"invariant"`` is accepted as well."""

TypeSpec = "str | TensorReps"


def _is_data(obj: Any) -> bool:
    try:
        from torch_geometric.data.data import BaseData  # noqa: PLC0415
    except ImportError:  # pragma: no cover - PyG is a dependency
        return False
    return isinstance(obj, BaseData)


def _structure(spec: Any, dim: int | None, name: str):
    """Parse an output declaration (one type, a tuple/list or a dict of types) into TensorReps."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"{name}: an empty dict declares no output")
        return {k: as_reps(v, dim, f"{name}[{k!r}]") for k, v in spec.items()}
    if isinstance(spec, (tuple, list)):
        if not spec:
            raise ValueError(f"{name}: an empty tuple declares no output")
        return tuple(as_reps(v, dim, f"{name}[{i}]") for i, v in enumerate(spec))
    return as_reps(spec, dim, name)


def _items(structure) -> list[tuple[Any, TensorReps]]:
    if isinstance(structure, Mapping):
        return list(structure.items())
    if isinstance(structure, tuple):
        return list(enumerate(structure))
    return [(None, structure)]


def _bind(structure, dim: int):
    if isinstance(structure, Mapping):
        return {k: v.with_dim(dim) for k, v in structure.items()}
    if isinstance(structure, tuple):
        return tuple(v.with_dim(dim) for v in structure)
    return structure.with_dim(dim)


_Fold = FoldedBatch  # the former private name (kept for existing callers)

_POS = TensorReps("pos")


class FrameAveraging(nn.Module):
    """Wrap any backbone so that it becomes exactly invariant/equivariant by frame averaging.

    Args:
        backbone: any ``nn.Module`` or callable, called with keyword arguments (or with one PyG
            ``Data`` when the wrapper is called with one).
        frames: the frame constructor, a :class:`~equiframe.frames.Frames` object:
            :class:`~equiframe.frames.PCAFrames` (O(d), SO(d), E(d), SE(d)) or
            :class:`~equiframe.frames.LaplacianFrames` (S_n). It holds the group, the mode and the sampling
            options. ``group=``, ``mode=``, ``n_samples=``, ``eval_mode=``, ``generator=``, ``tol=``,
            ``max_size=``, ``components=`` are a shortcut that builds it (give one or the other).
        group: ``"O(d)"``, ``"SO(d)"``, ``"E(d)"``, ``"SE(d)"`` for a concrete ``d`` (``"E(3)"``) or
            with a literal ``d`` (``"E(d)"``: the dimension is read from the data); or ``"S_n"``,
            node permutations of graphs (Laplacian frames, :func:`equiframe.frames.graph.laplacian_frame`),
            or a group object (:class:`~equiframe.groups.EuclideanGroup`, :class:`~equiframe.groups.SymmetricGroup`).
            Default ``"E(3)"``.
        inputs: how keyword inputs transform: a :class:`~equiframe.reps.TensorReps` or its string
            (``"1x1n"``, ``"2x0n+1x2n"``), ``"pos"`` (positions: rotate and translate) or ``"scalar"``
            (invariant, any shape: only replicated). Keyword inputs not listed pass through unchanged.
        output: the type of the backbone's output: a reps string, ``"pos"``, ``"scalar"``, or a
            tuple / dict of them matching a tuple / dict returned by the backbone. Scalars only =
            an invariant model.
        mode: ``"all"`` (full frames), ``"canonical"`` (minimal frames: one element on generic
            inputs) or ``"stochastic"`` (``n_samples`` sampled elements per example while training).
        n_samples: elements per example in stochastic mode (default 1).
        frame_from: the input the frame is computed from (default: the one input typed ``"pos"``).
        eval_mode: the mode used in ``eval()`` when ``mode="stochastic"`` (default ``"all"``).
        generator: ``torch.Generator`` for stochastic mode (reproducible sampling).
        tol, max_size: see :func:`equiframe.frames.pca_frame`. For ``"S_n"``, ``max_size`` is the largest
            frame averaged exactly; larger frames are sampled (``n_samples`` elements, default 1).
        components: ``"S_n"`` with ``mode="stochastic"`` only. ``"shuffled"``: while sampling in training, every
            graph's connected components come in a uniformly random order, i.e. samples of the component
            frame of :func:`~equiframe.frames.graph.shuffle_components`, so that a position-reading backbone
            sees every component at every offset; evaluation modes use the spectral frame unchanged.
            ``"sorted"`` (default): the spectral frame throughout.

    **Permutation frames** (``group="S_n"``): inputs are graphs (``edge_index=``, ``batch=``); all inputs
    and outputs are ``"scalar"`` (node features are reordered with the nodes, nothing rotates). The
    frame is computed from ``edge_index`` (plus the node input named by ``frame_from``, if given, as
    extra sort keys). Every copy handed to the backbone lists its nodes **in frame order**, so a
    backbone can read canonical node ids as ``arange(N) - ptr[batch]`` (:func:`node_ranks`). Modes:
    ``"all"`` = exact average for frames up to ``max_size`` elements, ``n_samples`` samples above;
    ``"stochastic"`` = ``n_samples`` samples per graph while training; ``"canonical"`` = one element.

    Calling conventions (``batch=`` and ``mask=`` are consumed by the wrapper and given to the backbone
    in folded form, ``edge_index=`` is replicated with offsets; the frame comes from ``frame_from``):

    * dense: ``fa(pos=[B, N, d], vel=[B, N, 3], mask=[B, N])`` or one cloud ``pos=[N, d]``;
      per-point inputs ``[B, N, C]``, per-example inputs ``[B, C]``;
    * ragged: ``fa(pos=[N, d], x=[N, F], edge_index=[2, E], batch=[N])``; per-node inputs
      ``[N, C]``, per-graph inputs ``[B, C]``; the backbone receives ``batch`` over ``M`` graphs;
    * PyG: ``fa(data)`` with a ``Data``/``Batch``; the backbone receives a ``Data`` with the
      declared attributes transformed, ``edge_index``, ``batch`` and ``ptr`` of the folded batch.

    Outputs are per example (``[M, C]`` -> ``[B, C]``) or per point (``[M, N, C]`` -> ``[B, N, C]``;
    ragged ``[N_rep, C]`` -> ``[N, C]``), mapped back with ``rho(g)`` and averaged with the frame weights.

    Attributes:
        frames: the frame constructor.
        reps_in: ``{input name: TensorReps}``, parsed once at construction (dimension-generic reps for a
            literal ``"E(d)"``).
        reps_out: the output type(s): a ``TensorReps``, or a tuple / dict of them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equiframe import FrameAveraging
        >>> from equiframe.frames import PCAFrames
        >>> class Backbone(nn.Module):          # any network: here an MLP on the flattened inputs, per cloud
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mlp = nn.Sequential(nn.Linear(5 * 7, 64), nn.SiLU(), nn.Linear(64, 5 * 3))
        ...     def forward(self, pos, vel, charge):
        ...         z = torch.cat([pos, vel, charge], -1).flatten(1)
        ...         return pos + self.mlp(z).view(pos.shape)
        >>> backbone = Backbone()
        >>> fa = FrameAveraging(backbone, frames=PCAFrames("E(3)", mode="canonical"),
        ...                     inputs={"pos": "pos", "vel": "1x1n", "charge": "1x0n"}, output="pos")
        >>> fa = FrameAveraging(backbone, group="E(3)",     # the same with all 8 elements, as a shortcut
        ...                     inputs={"pos": "pos", "vel": "1x1n", "charge": "1x0n"}, output="pos")
        >>> gen = torch.Generator().manual_seed(0)
        >>> pos, vel = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
        >>> charge = torch.randn(2, 5, 1, generator=gen)
        >>> y = fa(pos=pos, vel=vel, charge=charge)              # pos [B, N, 3]
        >>> y, frame = fa(pos=pos, vel=vel, charge=charge, return_frame=True)
        >>> frame.degenerate                                      # which examples had tied eigenvalues
        tensor([False, False])
    """

    def __init__(
        self,
        backbone: Callable[..., Any],
        group: "str | EuclideanGroup | SymmetricGroup | None" = None,
        inputs: Mapping[str, Any] | None = None,
        output: Any = SCALAR,
        mode: Literal["all", "canonical", "stochastic"] | None = None,
        n_samples: int | None = None,
        *,
        frames: Frames | None = None,
        frame_from: str | None = None,
        eval_mode: Literal["all", "canonical"] | None = None,
        generator: torch.Generator | None = None,
        tol: Tolerances | None = None,
        max_size: int | None = None,
        components: Literal["sorted", "shuffled"] | None = None,
    ):
        super().__init__()
        if not callable(backbone):
            raise TypeError(f"backbone: expected a callable or nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        shortcut = dict(group=group, mode=mode, n_samples=n_samples, eval_mode=eval_mode, generator=generator,
                        tol=tol, max_size=max_size, components=components)
        if frames is not None:
            if not isinstance(frames, Frames):
                raise TypeError(f"frames: expected a Frames object (PCAFrames, LaplacianFrames, ...), got {type(frames).__name__}")
            given = [k for k, v in shortcut.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]}: give either frames=... or the shortcut arguments {given}, not both")
        else:
            frames = _frames_from_shortcut(**shortcut)
        self.frames = frames
        self.permutation = isinstance(frames.group, SymmetricGroup)
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError(f"inputs: expected a dict {{name: type}}, got {type(inputs).__name__}")
        self.inputs = dict(inputs or {})
        for k in self.inputs:
            if not isinstance(k, str) or not k.isidentifier():
                raise ValueError(f"inputs: keys must be keyword-argument names, got {k!r}")
            if k in ("batch", "mask", "edge_index", "return_frame"):
                raise ValueError(f"inputs: {k!r} is consumed by the wrapper and cannot be typed")
        self.output = output
        dim = frames.group.dim if isinstance(frames.group, EuclideanGroup) else None
        # the types, parsed once (dimension-generic for a literal 'E(d)': bound per call, cached)
        self.reps_in: dict[str, TensorReps] = {k: as_reps(v, dim, f"inputs[{k!r}]") for k, v in self.inputs.items()}
        self.reps_out = _structure(output, dim, "output")
        self._bound: dict[int, tuple] = {}
        if self.permutation:
            for k, r in list(self.reps_in.items()) + [(f"output[{k!r}]" if k is not None else "output", r) for k, r in _items(self.reps_out)]:
                if not r.is_scalar:
                    raise ValueError(f"{k}: with group 'S_n' every input and output is 'scalar' (got {str(r)!r})")
            if frame_from is not None and frame_from not in self.inputs:
                raise ValueError(f"frame_from: {frame_from!r} is not one of the declared inputs {list(self.inputs)}")
            self.frame_from = frame_from
            return
        if frame_from is None:
            pos_like = [k for k, r in self.reps_in.items() if not r.is_invariant and r.blocks == _POS.blocks]
            if len(pos_like) != 1:
                raise ValueError(
                    "frame_from: give the input the frame is computed from; inputs declares "
                    f"{len(pos_like)} inputs of type 'pos' ({pos_like})"
                )
            frame_from = pos_like[0]
        elif not isinstance(frame_from, str) or frame_from not in self.inputs:
            raise ValueError(f"frame_from: {frame_from!r} is not one of the declared inputs {list(self.inputs)}")
        self.frame_from = frame_from

    # ------------------------------------------------------------------ the frames' options (shortcut view)
    @property
    def group(self):
        """The group: an :class:`EuclideanGroup`, ``"E(d)"``-style string (dimension from the data), or S_n."""
        return self.frames.group

    @property
    def mode(self) -> str:
        return self.frames.mode

    @property
    def eval_mode(self) -> str:
        return self.frames.eval_mode

    @property
    def n_samples(self) -> int:
        return self.frames.n_samples

    @property
    def max_size(self) -> int:
        return self.frames.max_size

    @property
    def tol(self) -> "Tolerances | None":
        return getattr(self.frames, "tol", None)

    @property
    def components(self) -> str:
        return getattr(self.frames, "components", "sorted")

    @property
    def generator(self) -> "torch.Generator | None":
        return self.frames.generator

    @generator.setter
    def generator(self, value: "torch.Generator | None") -> None:
        from .frames.base import check_generator  # noqa: PLC0415

        self.frames.generator = check_generator(value)

    # ------------------------------------------------------------------ introspection
    def types_for(self, dim: int) -> tuple[dict[str, TensorReps], Any]:
        """``(reps_in, reps_out)`` bound to dimension ``dim``."""
        if dim not in self._bound:
            self._bound[dim] = ({k: r.with_dim(dim) for k, r in self.reps_in.items()}, _bind(self.reps_out, dim))
        return self._bound[dim]

    def group_for(self, dim: int) -> EuclideanGroup:
        """The concrete group acting on ``dim``-dimensional data."""
        if self.permutation:
            raise ValueError("group: S_n does not act on a space of points")
        return self.frames.group_for(dim, self.frame_from)

    def extra_repr(self) -> str:
        return f"frames={self.frames!r}, inputs={self.inputs}, output={self.output!r}"

    # ------------------------------------------------------------------ frames
    def frame(self, pos: Tensor, *, mask: Tensor | None = None, batch: Tensor | None = None) -> Frame:
        """The frame used for ``pos`` in the current mode (training/eval aware)."""
        if self.permutation:
            raise ValueError("frame: S_n frames are computed from the graph; call the frames object with edge_index")
        return self.frames(pos, mask=mask, batch=batch, training=self.training, name=self.frame_from)

    # ------------------------------------------------------------------ forward
    def _current_mode(self) -> str:
        return self.frames.current_mode(self.training)

    def forward(self, *args, return_frame: bool = False, **kwargs):
        data_in = None
        if args:
            if len(args) == 1 and _is_data(args[0]) and not kwargs:
                data_in = args[0]
                kwargs = {k: data_in[k] for k in data_in.keys() if k in self.inputs or k in ("edge_index", "batch")}
                if kwargs.get("batch") is None:
                    kwargs["batch"] = torch.zeros(data_in.num_nodes, dtype=torch.long, device=_data_device(data_in))
                if kwargs.get("edge_index", 0) is None:
                    del kwargs["edge_index"]
            else:
                raise TypeError("FrameAveraging: call with keyword inputs (fa(pos=..., ...)) or with one PyG Data/Batch")
        for k, v in kwargs.items():
            if k in self.inputs and (k != self.frame_from or self.permutation) and isinstance(v, Tensor) and v.is_floating_point() and not all_finite(v):
                raise ValueError(f"{k}: contains NaN or inf")  # (the frames object checks frame_from)
        if self.permutation:
            fold, types, unbatched, d, frame = self._fold_permutation(kwargs)
            out_types = self.reps_out
        else:
            fold, types, out_types, unbatched, d, frame = self._fold_euclidean(kwargs)
        call = {}
        for k, v in kwargs.items():
            if k in types:
                call[k] = self._fold_input(k, v, types[k], fold)
            elif k == "edge_index" and not fold.dense:
                call[k] = fold.edge_index
            elif k in ("batch", "mask"):
                continue
            else:
                call[k] = v
        if fold.dense:
            if kwargs.get("mask") is not None:
                call["mask"] = kwargs["mask"][fold.index]
        else:
            call["batch"] = fold.new_batch
        if data_in is not None:
            from torch_geometric.data import Data  # noqa: PLC0415

            folded = Data(**call)
            folded.ptr = fold.new_ptr
            folded.num_graphs = fold.M
            out = self.backbone(folded)
        else:
            out = self.backbone(**call)
        result = self._unfold_outputs(out, out_types, fold, unbatched)
        return (result, frame) if return_frame else result

    def _fold_euclidean(self, kwargs: dict):
        if self.frame_from not in kwargs:
            raise ValueError(f"{self.frame_from}: missing input (the frame is computed from it)")
        pos = kwargs[self.frame_from]
        if not isinstance(pos, Tensor):
            raise TypeError(f"{self.frame_from}: expected a tensor, got {type(pos).__name__}")
        batch, mask = kwargs.get("batch"), kwargs.get("mask")
        if pos.dim() < 2:
            raise ValueError(f"{self.frame_from}: expected points [N, d] or [B, N, d], got shape {tuple(pos.shape)}")
        d = pos.shape[-1]
        self.group_for(d)
        types, out_types = self.types_for(d)
        unbatched = batch is None and pos.dim() == 2
        if unbatched:
            for k in types:
                if k in kwargs and isinstance(kwargs[k], Tensor):
                    kwargs[k] = kwargs[k][None]
            if isinstance(mask, Tensor):
                kwargs["mask"] = mask = mask[None]
            pos = kwargs[self.frame_from]
        frame = self.frames(pos, mask=mask, batch=batch, training=self.training, name=self.frame_from)
        fold = FoldedBatch.euclidean(frame, dense=batch is None, batch=batch, edge_index=kwargs.get("edge_index"))
        fold.points = pos.shape[-2] if batch is None else None
        return fold, types, out_types, unbatched, d, frame

    def _fold_permutation(self, kwargs: dict):
        edge_index, batch = kwargs.get("edge_index"), kwargs.get("batch")
        if edge_index is None:
            raise ValueError("edge_index: group 'S_n' needs the graph (edge_index=...)")
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")
        if batch is None:
            sizes = [v.shape[0] for k, v in kwargs.items() if k in self.inputs and isinstance(v, Tensor) and v.dim()]
            n = sizes[0] if sizes else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
            batch = kwargs["batch"] = torch.zeros(n, dtype=torch.long, device=edge_index.device)
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.is_floating_point():
            raise ValueError(f"batch: expected a 1-D integer tensor, got {getattr(batch, 'shape', batch)!r}")
        if batch.numel() == 0:
            raise ValueError("batch: empty graph batch (0 nodes)")
        if bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0:
            raise ValueError("batch: must be sorted and non-negative (as PyG batches are)")
        B = int(batch.max()) + 1
        counts = torch.bincount(batch, minlength=B)
        if bool((counts == 0).any()):
            raise ValueError(f"batch: graph(s) {(counts == 0).nonzero().flatten().tolist()} have no nodes")
        keys = None
        if self.frame_from is not None:
            if self.frame_from not in kwargs:
                raise ValueError(f"{self.frame_from}: missing input (the frame keys use it)")
            keys = kwargs[self.frame_from]
        dtype = next((v.dtype for k_, v in kwargs.items() if k_ in self.inputs and isinstance(v, Tensor) and v.is_floating_point()), torch.float32)
        frame, elements = self.frames(edge_index, batch, keys, training=self.training, num_graphs=B, weight_dtype=dtype)
        fold = FoldedBatch.permutation(elements, batch=batch, edge_index=edge_index, num_examples=B)
        return fold, self.reps_in, False, 0, (frame, elements)

    def _fold_input(self, name: str, x: Any, typ: TensorReps, fold: FoldedBatch) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if x.dim() == 0:
            raise ValueError(f"{name}: expected a tensor with a leading batch/node dimension, got a 0-d tensor")
        if fold.dense:
            if x.shape[0] != fold.B:
                raise ValueError(f"{name}: leading dimension {x.shape[0]} does not match the batch size {fold.B} of {self.frame_from}")
            if typ.is_scalar:
                _check_size(name, x, typ)
                return x[fold.index]
            frame = fold.frame
            per_point = x.dim() == 3
            if per_point and x.shape[1] != fold.points:
                raise ValueError(f"{name}: has {x.shape[1]} points, {self.frame_from} has {fold.points}")
            if x.dim() not in (2, 3):
                raise ValueError(f"{name}: expected [B, C] or [B, N, C] (dense input), got shape {tuple(x.shape)}")
            _check_size(name, x, typ)
            te = fold.example_t if typ.has_pos else None
            if fold.k is not None and _vector_only(typ) and (te is not None or not typ.has_pos):
                xc = _translate_precise(x, typ, te[:, None] if per_point else te) if typ.has_pos else x
                return _fold_vectors(xc, typ, frame, fold.k)
            if _vector_only(typ) and (te is not None or not typ.has_pos):  # any frame sizes: one gather, one bmm
                xc = _translate_precise(x, typ, te[:, None] if per_point else te) if typ.has_pos else x
                return _fold_vectors_any(xc, typ, frame, fold)
            R = frame.R[:, None] if per_point else frame.R
            if te is not None:  # centre once per example (float64), then gather and rotate
                xc = _translate_precise(x, typ, te[:, None] if per_point else te)
                return typ.to_local(xc[fold.index], R.to(x.dtype))
            t = frame.t[:, None] if per_point else frame.t
            return _to_local(x[fold.index], typ, R, t, name)
        # ragged: per node, per example, or per edge (inputs named edge_*)
        per_node = x.shape[0] == fold.N
        if per_node:
            rep = fold.new_batch
        elif x.shape[0] == fold.B:
            sel, rep = fold.index, None
        elif name.startswith("edge_") and fold.edge_index is not None and x.shape[0] == fold.num_edges:
            sel, rep = fold.edge_src, fold.edge_copy
        else:
            raise ValueError(
                f"{name}: leading dimension {x.shape[0]} matches neither the number of nodes ({fold.N}) "
                f"nor the number of examples ({fold.B})"
                + (" nor of edges (edge_* inputs)" if fold.edge_index is not None else "")
            )
        _check_size(name, x, typ)
        if per_node:
            if not typ.is_scalar and fold.k is not None and _vector_only(typ):
                return _fold_vectors_ragged(x, typ, fold.frame, fold, name)
            sel = fold.node_src
        if typ.is_scalar:
            return x[sel]
        frame = fold.frame
        if rep is None:
            return _to_local(x[sel], typ, frame.R, frame.t, name)
        return _to_local(x[sel], typ, frame.R[rep], frame.t[rep], name)

    def _unfold_outputs(self, out: Any, out_types, fold: FoldedBatch, unbatched: bool):
        if isinstance(out_types, Mapping):
            if not isinstance(out, Mapping):
                raise TypeError(f"backbone: returned {type(out).__name__}, but output declares a dict {list(out_types)}")
            missing = [k for k in out_types if k not in out]
            if missing:
                raise ValueError(f"backbone: output is missing keys {missing}")
            return {k: self._unfold_one(out[k], t, fold, f"output[{k!r}]", unbatched) for k, t in out_types.items()}
        if isinstance(out_types, tuple):
            if not isinstance(out, (tuple, list)) or len(out) != len(out_types):
                raise TypeError(f"backbone: expected a tuple of {len(out_types)} outputs, got {type(out).__name__}")
            return tuple(self._unfold_one(out[k], t, fold, f"output[{k}]", unbatched) for k, t in enumerate(out_types))
        return self._unfold_one(out, out_types, fold, "output", unbatched)

    def _unfold_one(self, y: Any, typ: TensorReps, fold: FoldedBatch, name: str, unbatched: bool) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name}: backbone returned {type(y).__name__}, expected a tensor")
        if y.dim() == 0:
            raise ValueError(f"{name}: backbone returned a 0-d tensor; expected one value per copy ([M, ...])")
        _check_size(name, y, typ)
        frame = fold.frame
        if fold.dense or y.shape[0] == fold.M:
            if y.shape[0] != fold.M:
                raise ValueError(f"{name}: leading dimension {y.shape[0]} is not the folded batch size {fold.M}")
            if fold.dense and _vector_only(typ) and (fold.example_t is not None or not typ.has_pos):
                if fold.k is not None:
                    out = _unfold_vectors(y, typ, frame, fold.k, fold.example_t)
                else:
                    out = _unfold_vectors_any(y, typ, frame, fold)
                return out[0] if unbatched else out
            if not typ.is_scalar:
                per_point = y.dim() == 3
                R = frame.R[:, None] if per_point else frame.R
                t = frame.t[:, None] if per_point else frame.t
                y = typ.to_global(y, R, t if typ.has_pos else None)
            out = fold.average(y)
            return out[0] if unbatched else out
        if y.shape[0] != fold.N_rep:
            raise ValueError(
                f"{name}: leading dimension {y.shape[0]} is neither the number of folded graphs ({fold.M}) "
                f"nor of folded nodes ({fold.N_rep})"
            )
        if not typ.is_scalar:
            if fold.k is not None and _vector_only(typ):
                return _unfold_vectors_ragged(y, typ, frame, fold)
            rep = fold.new_batch
            y = typ.to_global(y, frame.R[rep], frame.t[rep] if typ.has_pos else None)
        return fold.average_nodes(y)


def _frames_from_shortcut(group, mode, n_samples, eval_mode, generator, tol, max_size, components) -> Frames:
    """The frames object that the ``group=``/``mode=``/... shortcut of :class:`FrameAveraging` describes."""
    G = parse_group("E(3)" if group is None else group, dim=None) if not (
        isinstance(group, str) and "(d)" in group.replace(" ", "")
    ) else group
    mode = "all" if mode is None else mode
    opts = dict(eval_mode="all" if eval_mode is None else eval_mode, generator=generator,
                max_size=1024 if max_size is None else max_size)
    if isinstance(G, SymmetricGroup):
        if tol is not None:
            raise ValueError("tol: PCA tolerances do not apply to group 'S_n'")
        return LaplacianFrames(mode, n_samples=1 if n_samples is None else n_samples,
                               components="sorted" if components is None else components, **opts)
    if components is not None and components != "sorted":
        raise ValueError("components: only meaningful with group='S_n'")
    if n_samples is not None and mode != "stochastic":
        raise ValueError("n_samples: only meaningful with mode='stochastic'")
    return PCAFrames(G, mode, n_samples=1 if n_samples is None else n_samples, tol=tol, **opts)


def _data_device(data) -> torch.device:
    for _, v in data.items():
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")


def _check_size(name: str, x: Tensor, typ: TensorReps) -> None:
    """The last dimension of ``x`` against the declared type (the invariant type has any shape)."""
    if typ.is_invariant:
        return
    if x.dim() == 0 or x.shape[-1] != typ.size:
        raise ValueError(
            f"{name}: last dimension {tuple(x.shape)[-1:] or '()'} does not match the declared type {str(typ)!r} (size {typ.size})"
        )


def node_ranks(batch: Tensor) -> Tensor:
    """Position of every node inside its graph, for a sorted batch vector: ``arange(N) - ptr[batch]``.

    With ``FrameAveraging(group="S_n")`` the nodes of every copy come in frame order, so these are the
    canonical node identifiers (FA-GIN+ID).
    """
    check_tensor("batch", batch, ndim=1, integer=True)
    if batch.numel() and (int(batch.min()) < 0 or bool((batch[1:] < batch[:-1]).any())):
        raise ValueError("batch: expected a sorted batch vector of graph indices >= 0")
    counts = torch.bincount(batch)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return torch.arange(batch.shape[0], device=batch.device) - ptr[batch]
